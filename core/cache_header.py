"""Reading a cache file's header: its format, version and metadata, checked before any tensor is read.

Every count and shape the metadata states is checked against the file's own tensor table
(which safetensors has checked against the file's size) before anything is allocated, so a
crafted file cannot make the reader allocate without bound; a type that is wrong anywhere is
"damaged", never a KeyError or TypeError.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

from infinipot.errors import InfinipotError

FORMAT_NAME = "infinipot-kv-cache"
FORMAT_VERSION = 2
LAYOUT_FIELDS = ("frame", "row", "col", "position", "merged", "marker")
_REQUIRED = {"settings": dict, "policy": dict, "model": dict, "kv_dtype": str, "state": dict, "layout": dict,
             "tensors": dict}
_LAYOUT_INTS = ("layers", "kv_heads", "head_dim", "position_axes", "prefix_len", "video_length", "seq_length",
                "kv_bytes")
MAX_LAYERS = 1024


@dataclass(frozen=True)
class CacheHeader:
    """The metadata of a cache file, read and checked without loading a tensor or a model."""

    path: Path
    size_bytes: int
    meta: dict


def damaged(path: Path, reason: str) -> InfinipotError:
    return InfinipotError(f"cache file {path} is damaged or truncated ({reason}): re-create it with "
                          "`infinipot compress`")


def tensor_names(layers: int) -> list[str]:
    parts = ("keys", "values", *(f"layout.{name}" for name in LAYOUT_FIELDS))
    return [f"layers.{index}.{part}" for index in range(layers) for part in parts]


def looks_like_cache(path: Path) -> bool:
    """True for a `.ipv` path or a regular file whose safetensors header names this format (videos are not)."""
    path = Path(path)
    if path.suffix.lower() == ".ipv":
        return True
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        with path.open("rb") as handle:
            head = handle.read(8 + 4096)
    except OSError:
        return False
    return len(head) > 8 and head[8:9] == b"{" and FORMAT_NAME.encode() in head


def _check_regular(path: Path) -> int:
    from infinipot.file_io import input_file

    return input_file(path, "cache file", "pass a .ipv file written by `infinipot compress`").st_size


def read_header(path: str | Path) -> CacheHeader:
    """Open a cache file and check its format, version, metadata checksum and tensor table."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    size = _check_regular(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            outer = handle.metadata() or {}
            table = {name: (handle.get_slice(name).get_dtype(), list(handle.get_slice(name).get_shape()))
                     for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        if not looks_like_cache(path):
            raise InfinipotError(f"{path} is not an infinipot cache ({reason}): pass a .ipv file written by "
                                 "`infinipot compress`") from None
        raise damaged(path, f"not a readable safetensors file: {reason}") from None
    if outer.get("format") != FORMAT_NAME:
        raise InfinipotError(
            f"{path} is a safetensors file but not an infinipot cache (expected format {FORMAT_NAME!r}, "
            f"found {str(outer.get('format'))[:40]!r}): pass a cache written by `infinipot compress`, or a video"
        )
    version = _format_version(path, outer.get("format_version"))
    meta = _metadata(path, outer, version)
    _check_table(path, meta, table)
    return CacheHeader(path, size, meta)


def _format_version(path: Path, raw: str | None) -> int:
    from infinipot import __version__

    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise damaged(path, f"format version {str(raw)[:20]!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise InfinipotError(
            f"{path} uses cache format {version} but infinipot {__version__} reads format {FORMAT_VERSION} at most: "
            "upgrade infinipot (pip install -U infinipot) or re-create the cache with this version"
        )
    if version == 1:
        raise InfinipotError(
            f"{path} was written by infinipot 0.1 (cache format 1), which placed questions after a Qwen video by a "
            "rule the models were not trained with: compress the video again with this version"
        )
    if version < 1:
        raise damaged(path, f"format version {version} does not exist")
    return version


def _metadata(path: Path, outer: dict, version: int) -> dict:
    import hashlib  # not infinipot.fingerprints, which imports torch: reading a header needs no torch

    text = outer.get("infinipot", "")
    if hashlib.sha256(text.encode()).hexdigest() != outer.get("infinipot_sha256"):
        raise damaged(path, "its metadata does not match its checksum")
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise damaged(path, f"unreadable metadata: {type(error).__name__}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != version:
        raise damaged(path, "inconsistent metadata")
    for key, kind in _REQUIRED.items():
        if not isinstance(meta.get(key), kind):
            raise damaged(path, f"its metadata lacks a valid `{key}`")
    layout = meta["layout"]
    for key in _LAYOUT_INTS:
        if not isinstance(layout.get(key), int) or isinstance(layout.get(key), bool) or layout[key] < 0:
            raise damaged(path, f"its layout has no valid `{key}`")
    tokens = layout.get("visual_tokens")
    if not isinstance(tokens, list) or not all(isinstance(n, int) and n >= 0 for n in tokens):
        raise damaged(path, "its layout has no valid `visual_tokens`")
    if not 0 < layout["layers"] <= MAX_LAYERS or len(tokens) != layout["layers"]:
        raise damaged(path, f"it claims {layout['layers']} layers")
    return meta


def _check_table(path: Path, meta: dict, table: dict[str, tuple[str, list[int]]]) -> None:
    """The tensors the metadata records (name, dtype, shape) are exactly the file's tensors."""
    layout, records = meta["layout"], meta["tensors"]
    expected = tensor_names(layout["layers"])
    if set(table) != set(expected) or set(records) != set(expected):
        missing = sorted(set(expected) ^ set(table)) or sorted(set(expected) ^ set(records))
        raise damaged(path, f"unexpected tensor set, e.g. {missing[:3]}")
    for name in expected:
        record = records[name]
        if not isinstance(record, dict) or [record.get("dtype"), record.get("shape")] != list(table[name]):
            raise damaged(path, f"tensor {name} is not the dtype and shape its checksum covers")
    heads, dim, seq, axes = layout["kv_heads"], layout["head_dim"], layout["seq_length"], layout["position_axes"]
    for index, visual in enumerate(layout["visual_tokens"]):
        for part in ("keys", "values"):
            if table[f"layers.{index}.{part}"][1] != [1, heads, seq, dim]:
                raise damaged(path, f"layers.{index}.{part} is not [1, {heads}, {seq}, {dim}]")
        shapes = {name: table[f"layers.{index}.layout.{name}"][1] for name in LAYOUT_FIELDS}
        if shapes["position"] != [heads, visual, axes] or any(shapes[n] != [heads, visual] for n in
                                                               ("frame", "row", "col", "merged", "marker")):
            raise damaged(path, f"the layout of layer {index} does not match its keys")
        if layout["prefix_len"] + visual > seq:
            raise damaged(path, f"layer {index} holds more tokens than its keys")
