"""Presets: one YAML per model, read into a frozen dataclass and validated once.

A preset is named (a file shipped in the package, `infinipot presets` lists them) or given as
a path to a YAML file of the same form. `model` is a Hugging Face id, a local directory, or
`tiny:FAMILY` for a tiny random checkpoint built on first use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from infinipot.budget import CompressionSettings
from infinipot.errors import InfinipotError
from infinipot.positions import POSITION_MODES

DEFAULT_PRESET = "qwen2.5-vl-7b"
FAMILIES = ("qwen2_5_vl", "qwen2_vl", "llava_onevision", "llava_next_video")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    family: str
    description: str = ""
    dtype: str = "bfloat16"
    fps: float = 1.0
    min_pixels: int | None = None
    max_pixels: int | None = None
    budget: int = 6000
    policy: str = "infinipot"
    keep_ratio: float = 0.75
    recent_ratio: float = 0.125
    tar_ratio: float = 0.5
    pooling: str = "none"
    spread_thresholds: tuple[float, float, float] = (0.6, 0.4, 0.2)
    chunk_frames: int = 16
    attn_implementation: str = "sdpa"
    positions: str | None = None  # original | compact (DESIGN.md §2); None: the family's default

    def compression(self) -> CompressionSettings:
        return CompressionSettings(
            policy=self.policy,
            budget_tokens=self.budget,
            keep_ratio=self.keep_ratio,
            recent_ratio=self.recent_ratio,
            tar_ratio=self.tar_ratio,
            pooling=self.pooling,
            spread_thresholds=tuple(self.spread_thresholds),
            chunk_frames=self.chunk_frames,
        )

    def with_overrides(self, **overrides) -> Preset:
        """A copy with the given fields replaced (None means: keep the preset's value), validated."""
        changes = {key: value for key, value in overrides.items() if value is not None}
        return validated(dataclasses.replace(self, **changes))


def validated(preset: Preset) -> Preset:
    where = f"preset {preset.name!r}"
    if preset.family not in FAMILIES:
        raise InfinipotError(f"{where}: unknown family {preset.family!r}: choose one of {', '.join(FAMILIES)}")
    if preset.dtype not in DTYPES:
        raise InfinipotError(f"{where}: unknown dtype {preset.dtype!r}: choose one of {', '.join(DTYPES)}")
    if not preset.fps > 0:
        raise InfinipotError(f"{where}: fps must be positive, got {preset.fps}")
    for name in ("min_pixels", "max_pixels"):
        value = getattr(preset, name)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise InfinipotError(f"{where}: {name} must be a positive integer, got {value!r}")
    if preset.min_pixels and preset.max_pixels and preset.min_pixels > preset.max_pixels:
        raise InfinipotError(f"{where}: min_pixels ({preset.min_pixels}) exceeds max_pixels ({preset.max_pixels})")
    if preset.positions is not None and preset.positions not in POSITION_MODES:
        raise InfinipotError(
            f"{where}: unknown positions {preset.positions!r}: choose one of {', '.join(POSITION_MODES)}"
        )
    preset.compression().validate()
    return preset


def _from_mapping(name: str, data: object, source: str) -> Preset:
    if not isinstance(data, dict):
        raise InfinipotError(f"{source} is not a YAML mapping of preset fields: see the presets shipped with infinipot")
    fields = {f.name: f for f in dataclasses.fields(Preset)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InfinipotError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(fields))}")
    for required in ("model", "family"):
        if required not in data:
            raise InfinipotError(f"{source}: missing required key {required!r}")
    typed = {}
    for key, value in data.items():
        typed[key] = _coerce(key, value, fields[key].type, source)
    if "spread_thresholds" in typed:
        typed["spread_thresholds"] = tuple(typed["spread_thresholds"])
    return validated(Preset(name=name, **typed))


def _coerce(key: str, value: object, annotation: str, source: str) -> object:
    """Check a YAML value against the field's annotation (a string under `from __future__`)."""
    if value is None and "None" in annotation:
        return None
    if annotation.startswith("float") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation.startswith("int") and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation in ("str", "str | None") and isinstance(value, str):
        return value
    if annotation.startswith("tuple") and isinstance(value, list) and len(value) == 3:
        return tuple(float(v) for v in value)
    raise InfinipotError(f"{source}: {key} has the wrong type ({value!r}); expected {annotation}")


def preset_names() -> list[str]:
    files = resources.files("infinipot.preset_files")
    return sorted(entry.name[: -len(".yaml")] for entry in files.iterdir() if entry.name.endswith(".yaml"))


def load_preset(name_or_path: str) -> Preset:
    """A shipped preset by name, or a YAML file by path."""
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise InfinipotError(f"preset file not found: {path}")
        return _from_mapping(path.stem, _read_yaml(path.read_text(), str(path)), str(path))
    if name_or_path not in preset_names():
        raise InfinipotError(
            f"unknown preset {name_or_path!r}: choose one of {', '.join(preset_names())} or give a YAML file path"
        )
    text = resources.files("infinipot.preset_files").joinpath(f"{name_or_path}.yaml").read_text()
    return _from_mapping(name_or_path, _read_yaml(text, name_or_path), f"preset {name_or_path!r}")


def _read_yaml(text: str, source: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InfinipotError(f"{source} is not valid YAML: {str(error).splitlines()[0]}") from error


def all_presets() -> list[Preset]:
    return [load_preset(name) for name in preset_names()]
