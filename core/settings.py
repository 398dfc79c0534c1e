"""The settings of a stream, in one typed schema: each default is written here once.

A preset YAML, the keyword arguments of `Session.from_preset`, the CLI's flags and a cache
file's metadata all become a `Settings` through `settings_from_mapping` / `Settings.replace`,
so one loader checks every value's type and range. Policy knobs (`tar_ratio`, `pooling`, ...)
belong to the policies that read them (infinipot.policies); here they are kept as given, by
name, and the chosen policy checks them.

Errors name the setting in backticks (`keep_ratio`); the CLI turns those into its flags.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infinipot.budget import normalize_budget
from infinipot.errors import InfinipotError

DTYPES = ("float32", "bfloat16", "float16")
POSITION_MODES = ("original", "compact")


def _doc(text: str, **extra: Any) -> dict:
    return {"doc": text, **extra}


@dataclass(frozen=True)
class Settings:
    """Everything that decides how a video is streamed, compressed and answered."""

    model: str = field(metadata=_doc("Hugging Face id, local directory, or tiny:FAMILY"))
    family: str = field(metadata=_doc("model family (infinipot.families)"))
    name: str = field(default="custom", metadata=_doc("preset name, for messages and cache files"))
    description: str = field(default="", metadata=_doc("one line shown by `infinipot presets`"))
    dtype: str = field(default="bfloat16", metadata=_doc("weights and KV dtype", choices=DTYPES))
    attn_implementation: str = field(default="sdpa", metadata=_doc("transformers attention implementation"))
    fps: float = field(default=1.0, metadata=_doc("frames sampled per second of video"))
    min_pixels: int | None = field(default=None, metadata=_doc("per-frame pixel floor (Qwen); None: processor's"))
    max_pixels: int | None = field(default=None, metadata=_doc("per-frame pixel cap (Qwen); None: processor's"))
    budget: int | str = field(default=6000, metadata=_doc("visual-token budget M: tokens or memory (2GiB)"))
    policy: str = field(default="infinipot", metadata=_doc("compression policy (infinipot.policies)"))
    keep_ratio: float = field(default=0.75, metadata=_doc("share of the budget each compression keeps (C/M)"))
    chunk_frames: int = field(default=16, metadata=_doc("frames encoded and prefilled at a time"))
    positions: str | None = field(default=None, metadata=_doc("original | compact; None: the family's default",
                                                              choices=POSITION_MODES))
    knobs: Mapping[str, Any] = field(default_factory=dict, metadata=_doc("policy knobs by name"))

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied (None keeps a value); policy knobs may be passed by name."""
        changes = {key: value for key, value in changes.items() if value is not None}
        known = _FIELD_TYPES.keys() - {"knobs"}
        knobs = {key: changes.pop(key) for key in list(changes) if key not in known and key != "knobs"}
        knobs.update(changes.pop("knobs", {}) or {})
        typed = {key: coerce(key, value, _FIELD_TYPES[key]) for key, value in changes.items()}
        if "budget" in typed:
            typed["budget"] = normalize_budget(typed["budget"])
        if knobs:
            typed["knobs"] = {**self.knobs, **check_knobs(knobs)}
        return validate(dataclasses.replace(self, **typed))

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["knobs"] = dict(self.knobs)
        return data


_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(Settings)
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))


def field_doc(name: str) -> str:
    return {f.name: f for f in dataclasses.fields(Settings)}[name].metadata.get("doc", "")


def settings_from_mapping(data: object, source: str, base: Settings | None = None) -> Settings:
    """Typed settings from a YAML/JSON mapping; unknown keys and wrong types are refused with `source`."""
    if not isinstance(data, Mapping):
        raise InfinipotError(f"{source} is not a mapping of settings: see the presets shipped with infinipot")
    from infinipot.policies import knob_names

    data = dict(data)
    data.pop("base", None)
    unknown = sorted(str(key) for key in data if key not in FIELDS and key not in knob_names())
    if unknown:
        known = sorted(set(FIELDS) - {"knobs"} | set(knob_names()))
        raise InfinipotError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
    try:
        if base is None:
            for required in ("model", "family"):
                if required not in data:
                    raise InfinipotError(f"missing required key `{required}`")
            base = Settings(model=_text("model", data["model"]), family=_text("family", data["family"]))
        return base.replace(**data)
    except InfinipotError as error:
        raise InfinipotError(f"{source}: {error}") from None


def _text(key: str, value: object) -> str:
    return coerce(key, value, str)


def coerce(key: str, value: object, expected: Any) -> Any:
    """`value` as type `expected` (int, float, str, a tuple of floats, a union with None), or a one-line error."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return coerce(key, value, option)
                except InfinipotError:
                    continue
        raise _wrong_type(key, value, " or ".join(_type_name(o) for o in options if o is not type(None)))
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise InfinipotError(f"`{key}` must be a finite number, got {value!r}")
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(coerce(key, item, float) for item in value)
    elif origin in (Mapping, dict) or expected is Mapping:
        if isinstance(value, Mapping):
            return dict(value)
    else:
        return value
    raise _wrong_type(key, value, _type_name(expected))


def _type_name(expected: Any) -> str:
    return getattr(expected, "__name__", str(expected))


def _wrong_type(key: str, value: object, expected: str) -> InfinipotError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:40] + "…"
    return InfinipotError(f"`{key}` has the wrong type ({shown}); expected {expected}")


def check_knobs(knobs: Mapping[str, Any]) -> dict:
    """Policy knobs typed by the policies that declare them; unknown names refused."""
    from infinipot.policies import knob_types

    types_by_name = knob_types()
    checked = {}
    for key, value in knobs.items():
        if key not in types_by_name:
            raise InfinipotError(f"unknown setting `{key}`: known policy knobs are {', '.join(sorted(types_by_name))}")
        checked[key] = coerce(key, value, types_by_name[key])
    return checked


def validate(settings: Settings) -> Settings:
    """Range checks that need no model; the policy checks its own knobs."""
    from infinipot.families import family_names
    from infinipot.policies import policy_class

    if settings.family not in family_names():
        raise InfinipotError(f"unknown family `{settings.family}`: choose one of {', '.join(family_names())}")
    _choice("dtype", settings.dtype, DTYPES)
    if settings.positions is not None:
        _choice("positions", settings.positions, POSITION_MODES)
    if not 0 < settings.fps <= 1000:
        raise InfinipotError(f"`fps` must be a positive number of frames per second (at most 1000), got {settings.fps:g}")
    for name in ("min_pixels", "max_pixels"):
        value = getattr(settings, name)
        if value is not None and value <= 0:
            raise InfinipotError(f"`{name}` must be a positive integer, got {value}")
    if settings.min_pixels and settings.max_pixels and settings.min_pixels > settings.max_pixels:
        raise InfinipotError(f"`min_pixels` ({settings.min_pixels}) exceeds `max_pixels` ({settings.max_pixels})")
    if not 0 < settings.keep_ratio < 1:  # C = M would leave no room for the next frames after a compression
        raise InfinipotError(f"`keep_ratio` must be in (0, 1) so that each compression leaves room for new "
                             f"frames (0.75 is the paper's), got {settings.keep_ratio:g}")
    if not 0 < settings.chunk_frames <= 4096:
        raise InfinipotError(f"`chunk_frames` must be between 1 and 4096, got {settings.chunk_frames}")
    normalize_budget(settings.budget)
    policy_class(settings.policy).from_knobs(settings.knobs)  # the policy checks its knobs
    return settings


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InfinipotError(f"unknown `{name}` {value!r}: choose one of {', '.join(choices)}")
