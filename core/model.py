"""A model named by settings: its config and processor first (cheap), its weights when first needed.

Loading a config and a processor takes a fraction of a second and no weights, so the token
grid, the frame multiple and the bytes a cached token costs are known before the weights load:
an impossible budget fails in milliseconds, not after minutes of loading a 7B model. A `Model`
is shared: its adapter holds no stream state, so one loaded model serves any number of
sessions, one after another or interleaved.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infinipot.errors import InfinipotError
from infinipot.families import get_family
from infinipot.settings import Settings

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu", "mps")
# The settings a loaded model depends on: two sessions may share a Model when these agree.
MODEL_FIELDS = ("model", "family", "dtype", "attn_implementation", "min_pixels", "max_pixels")


@dataclass(frozen=True)
class Geometry:
    """What a model does to frames of one size, from its config and processor alone."""

    grid: tuple[int, int]  # (rows, cols) of one temporal step's tokens
    frame_multiple: int  # video frames per temporal step
    kv_bytes_per_token: int  # keys + values of one token across all layers and KV heads
    position_axes: int
    default_positions: str
    window: int | None  # max_position_embeddings: the positions the model was trained on
    marker_tokens_per_step: int = 0  # text a temporal step may bring besides its visual tokens, at most


def resolve_device(device: str):
    import torch

    if device not in DEVICES:
        raise InfinipotError(f"unknown `device` {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InfinipotError("`device` cuda was asked for but no CUDA GPU is visible: use cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise InfinipotError("`device` mps was asked for but MPS is not available: use cpu or auto")
    return torch.device(device)


def looks_local(model: str) -> bool:
    """A path, not a hub id: absolute, relative with ./ or ../, home-relative, or an existing folder."""
    return model.startswith(("/", "./", "../", "~")) or os.path.isdir(model) or model.count("/") > 1


class Model:
    """The model of some settings; see the module docstring for what is loaded when."""

    def __init__(self, settings: Settings, device: str = "auto") -> None:
        self.settings = settings
        self.device_name = device
        self.family = get_family(settings.family)
        self._source: str | None = None
        self._config = None
        self._processor = None
        self._adapter = None

    @classmethod
    def wrap(cls, settings: Settings, model, processor) -> Model:
        """A Model around a transformers model and processor you already hold (in memory, any device).

        Nothing is loaded from `settings.model`; the family's adapter wraps `model` as it is.
        """
        wrapped = cls(settings, device=str(next(model.parameters()).device))
        wrapped._source, wrapped._config, wrapped._processor = settings.model, model.config, processor
        wrapped._check_family(model.config.model_type)
        wrapped._adapter = wrapped.family.adapter_class()(model.eval(), processor, settings.model,
                                                          settings.min_pixels, settings.max_pixels)
        return wrapped

    @property
    def model_id(self) -> str:
        return self.settings.model

    def serves(self, settings: Settings) -> bool:
        """True when `settings` need exactly this model (same weights, dtype and frame sizing)."""
        return all(getattr(settings, name) == getattr(self.settings, name) for name in MODEL_FIELDS)

    @property
    def source(self) -> str:
        """A directory or hub id for from_pretrained; builds the tiny checkpoint on first use."""
        if self._source is None:
            self._source = _model_source(self.settings.model)
        return self._source

    @property
    def config(self):
        if self._config is None:
            from transformers import AutoConfig

            with _loading(self.settings.model):
                self._config = AutoConfig.from_pretrained(self.source)
            self._check_family(self._config.model_type)
        return self._config

    @property
    def processor(self):
        if self._processor is None:
            from transformers import AutoProcessor

            with _loading(self.settings.model):
                self._processor = AutoProcessor.from_pretrained(self.source)
        return self._processor

    def geometry(self, height: int, width: int) -> Geometry:
        import torch

        from infinipot.adapters.base import kv_bytes_per_token

        cls, config, settings = self.family.adapter_class(), self.config, self.settings
        grid = cls.token_grid(config, self.processor, height, width, settings.min_pixels, settings.max_pixels)
        return Geometry(grid, cls.frame_multiple(config, self.processor),
                        kv_bytes_per_token(config, getattr(torch, settings.dtype)), cls.position_axes,
                        cls.default_positions, getattr(config.get_text_config(), "max_position_embeddings", None),
                        cls.marker_tokens_per_step(config, self.processor))

    @property
    def loaded(self) -> bool:
        return self._adapter is not None

    @property
    def adapter(self):
        """The family's adapter around the loaded weights (loads them on first use)."""
        if self._adapter is None:
            self._adapter = self._load()
        return self._adapter

    def _load(self):
        import torch
        from transformers import AutoModelForImageTextToText

        target = resolve_device(self.device_name)
        settings = self.settings
        processor = self.processor
        with _loading(settings.model):
            model = AutoModelForImageTextToText.from_pretrained(
                self.source, dtype=getattr(torch, settings.dtype), attn_implementation=settings.attn_implementation
            )
        self._check_family(model.config.model_type)
        model.to(target).eval()
        logger.info("loaded %s (%s) on %s", settings.model, settings.dtype, target)
        return self.family.adapter_class()(model, processor, settings.model, settings.min_pixels, settings.max_pixels)

    def _check_family(self, found: str) -> None:
        if found != self.settings.family:
            raise InfinipotError(
                f"settings {self.settings.name!r} say family `{self.settings.family}` but {self.settings.model!r} is "
                f"a {found!r} model: fix the preset's `family`"
            )


def _model_source(model: str) -> str:
    if model.startswith("tiny:"):
        from infinipot.families import FAMILIES
        from infinipot.tiny import ensure_tiny_checkpoint

        family = model.removeprefix("tiny:")
        if family not in FAMILIES:
            raise InfinipotError(f"no tiny checkpoint for {family!r}: choose one of {', '.join(FAMILIES)}")
        return str(ensure_tiny_checkpoint(family))
    if looks_local(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise InfinipotError(f"model folder not found: {path} — check the path, or give a hub id such as "
                                 "Qwen/Qwen2.5-VL-7B-Instruct")
        if not (path / "config.json").is_file():
            raise InfinipotError(f"{path} has no config.json: point `model` to the folder a model was saved or "
                                 "downloaded into")
        return str(path)
    from infinipot.hub import ensure_available

    ensure_available(model)
    return model


@contextmanager
def _loading(model: str) -> Iterator[None]:
    """One clear line when the files of a model cannot be had."""
    try:
        yield
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise InfinipotError(
            f"could not load model {model!r} ({first_line}): download it first "
            f"(`hf download {model}`) or point `model` to a local directory"
        ) from error
