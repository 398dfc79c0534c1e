"""Presets: named settings shipped as YAML files (presets/*.yaml), or a YAML file of your own.

A preset file holds settings keys (infinipot.settings) and policy knobs, flat. `base: NAME`
starts from a shipped preset and changes only what the file says, so a local copy of a model
is two lines: `base: qwen2.5-vl-7b` and `model: /models/Qwen2.5-VL-7B-Instruct`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from infinipot.errors import InfinipotError
from infinipot.settings import Settings, settings_from_mapping

DEFAULT_PRESET = "qwen2.5-vl-7b"
MAX_PRESET_BYTES = 1 << 20


def preset_names() -> list[str]:
    files = resources.files("infinipot.preset_files")
    return sorted(entry.name[: -len(".yaml")] for entry in files.iterdir() if entry.name.endswith(".yaml"))


def load_preset(name_or_path: str | Path, _seen: tuple[str, ...] = ()) -> Settings:
    """A shipped preset by name, or a YAML file by path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")) or path.exists():
        data = _read_yaml(_read_file(path), str(path))
        name, source = path.stem, str(path)
    else:
        if text not in preset_names():
            raise InfinipotError(
                f"unknown preset {text!r}: choose one of {', '.join(preset_names())} or give a YAML file path"
            )
        data = _read_yaml(resources.files("infinipot.preset_files").joinpath(f"{text}.yaml").read_text(), text)
        name, source = text, f"preset {text!r}"
    base = None
    if isinstance(data, dict) and "base" in data:
        parent = data["base"]
        if not isinstance(parent, str) or parent in _seen or parent == name:
            raise InfinipotError(f"{source}: `base` must name another preset (not itself), got {parent!r}")
        base = load_preset(parent, (*_seen, name))
    settings = settings_from_mapping(data, source, base)
    return settings.replace(name=name)


def _read_file(path: Path) -> str:
    """The text of a preset file, refusing what is not a regular, small, UTF-8 file."""
    from infinipot.file_io import input_file

    info = input_file(path, "preset file", "give a .yaml file")
    if info.st_size > MAX_PRESET_BYTES:
        raise InfinipotError(f"preset file {path} is {info.st_size:,} bytes; a preset is a few lines: check the path")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InfinipotError(f"preset file {path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None


def _read_yaml(text: str, source: str) -> object:
    import yaml

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # refuse aliases before anything is built
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise InfinipotError(f"{source} uses YAML anchors or aliases, which presets do not allow: write "
                                     "each value out")
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InfinipotError(f"{source} is not valid YAML: {str(error).splitlines()[0][:120]}") from None


def all_presets() -> list[Settings]:
    return [load_preset(name) for name in preset_names()]
