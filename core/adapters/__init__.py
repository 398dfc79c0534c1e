"""Model adapters by family, and loading a model + processor from a preset."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from infinipot.adapters.base import Adapter, EncodedChunk, PromptParts
from infinipot.adapters.geometry import ModelGeometry, geometry
from infinipot.adapters.llava import FAMILIES as LLAVA_FAMILIES
from infinipot.adapters.llava import LlavaAdapter
from infinipot.adapters.qwen import QwenAdapter
from infinipot.errors import InfinipotError
from infinipot.hub import ensure_available
from infinipot.presets import Preset

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu", "mps")


def resolve_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise InfinipotError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InfinipotError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise InfinipotError("--device mps was asked for but MPS is not available: use --device cpu or auto")
    return torch.device(device)


def model_source(preset: Preset) -> str:
    """A directory or hub id for from_pretrained; builds the tiny checkpoint on first use."""
    if preset.model.startswith("tiny:"):
        from infinipot.tiny import BUILDERS, ensure_tiny_checkpoint

        family = preset.model.removeprefix("tiny:")
        if family not in BUILDERS:
            raise InfinipotError(f"no tiny checkpoint for {family!r}: choose one of {', '.join(BUILDERS)}")
        return str(ensure_tiny_checkpoint(family))
    ensure_available(preset.model)
    return preset.model


@contextmanager
def _loading(preset: Preset) -> Iterator[None]:
    """One clear line when the files of a model cannot be had."""
    try:
        yield
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InfinipotError(
            f"could not load model {preset.model!r} ({first_line}): download it first "
            f"(`hf download {preset.model}`) or point the preset's `model` to a local directory"
        ) from error


def load_processor(preset: Preset):
    from transformers import AutoProcessor

    with _loading(preset):
        return AutoProcessor.from_pretrained(model_source(preset))


def load_geometry(preset: Preset, height: int, width: int, processor=None) -> ModelGeometry:
    """Token grid, frame multiple and KV bytes per token from the config and processor: no weights."""
    from transformers import AutoConfig

    with _loading(preset):
        config = AutoConfig.from_pretrained(model_source(preset))
    _check_family(preset, config.model_type)
    processor = processor or load_processor(preset)
    return geometry(config, processor, getattr(torch, preset.dtype), height, width,
                    preset.min_pixels, preset.max_pixels)


def _check_family(preset: Preset, found: str) -> None:
    if found != preset.family:
        raise InfinipotError(
            f"preset {preset.name!r} says family {preset.family!r} but {preset.model!r} is a {found!r} model: "
            "fix the preset's `family`"
        )


def load_adapter(preset: Preset, device: str = "auto", processor=None) -> Adapter:
    """Load the preset's model and processor and wrap them in the family's adapter."""
    from transformers import AutoModelForImageTextToText

    target = resolve_device(device)
    processor = processor or load_processor(preset)
    with _loading(preset):
        model = AutoModelForImageTextToText.from_pretrained(
            model_source(preset), dtype=getattr(torch, preset.dtype), attn_implementation=preset.attn_implementation
        )
    found = model.config.model_type
    _check_family(preset, found)
    model.to(target).eval()
    logger.info("loaded %s (%s) on %s", preset.model, preset.dtype, target)
    if found in LLAVA_FAMILIES:  # frames are resized to the vision tower's square: no pixel limits
        return LlavaAdapter(model, processor, preset.model)
    return QwenAdapter(model, processor, preset.model, preset.min_pixels, preset.max_pixels)


__all__ = [
    "DEVICES", "Adapter", "EncodedChunk", "LlavaAdapter", "ModelGeometry", "PromptParts", "QwenAdapter",
    "load_adapter", "load_geometry", "load_processor", "resolve_device",
]
