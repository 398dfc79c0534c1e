"""Compressed caches on disk: a Session's KV cache and token layout in one safetensors file.

Encoding a video is the expensive part; a saved cache answers any number of questions later
without the video. The file is plain safetensors (loading never executes code). Its string
metadata holds one JSON document (where the cache came from, how it was compressed, the
stream's position state) with its own sha256, and a sha256 of every tensor, so a truncated,
damaged, newer or mismatched file is refused with one line that names what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from infinipot import __version__
from infinipot.adapters.base import Adapter
from infinipot.budget import CompressionSettings
from infinipot.cache import BudgetedCache
from infinipot.engine import Answer, Session, StreamStats
from infinipot.errors import InfinipotError
from infinipot.fingerprints import config_fields, model_identity, sha256_hex, tensor_digest, weights_fingerprint
from infinipot.layout import VisualLayout
from infinipot.presets import Preset, validated

logger = logging.getLogger(__name__)

FORMAT_NAME = "infinipot-kv-cache"
FORMAT_VERSION = 1
SUFFIX = ".ipv"
LAYOUT_FIELDS = ("frame", "row", "col", "position", "merged")
_REQUIRED_KEYS = {"preset", "model", "kv_dtype", "settings", "stats", "adapter_state", "prefix", "next_position",
                  "layout", "conversation", "checksums"}


@dataclass(frozen=True)
class Provenance:
    """What a cache came from, recorded beside the tensors."""

    preset: Preset
    video: dict | None = None  # fingerprints.describe_video(); None when unknown


@dataclass(frozen=True)
class CacheHeader:
    """The metadata of a cache file, read and checked without loading a tensor or a model."""

    path: Path
    size_bytes: int
    meta: dict

    def preset(self) -> Preset:
        """The preset the cache was made with, rebuilt from the file (no YAML needed)."""
        known = {field.name for field in dataclasses.fields(Preset)}
        fields = {key: value for key, value in self.meta["preset"].items() if key in known}
        if "spread_thresholds" in fields:
            fields["spread_thresholds"] = tuple(fields["spread_thresholds"])
        return validated(Preset(**fields))

    def provenance(self, preset: Preset | None = None) -> Provenance:
        return Provenance(preset or self.preset(), self.meta.get("video"))


# --- writing ------------------------------------------------------------------------------------
def check_writable(path: Path) -> None:
    """Fail now, not after an hour of streaming, if `path` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise InfinipotError(f"cache path is a directory: {path} — give a file name such as {path / 'video.ipv'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InfinipotError(f"directory does not exist: {parent} — create it first or choose another path")
    if not os.access(parent, os.W_OK):
        raise InfinipotError(f"cannot write to directory {parent} (permission denied): choose another path")


def save_session(session: Session, path: str | Path, provenance: Provenance) -> int:
    """Write `session`'s cache (and any chat turns) to `path` atomically; return the file size in bytes."""
    path = Path(path)
    check_writable(path)
    tensors = _tensors(session)
    text = json.dumps(_metadata(session, provenance, tensors), sort_keys=True)
    header = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "infinipot": text,
        "infinipot_sha256": sha256_hex(text.encode()),
    }
    _write_atomically(path, tensors, header)
    return path.stat().st_size


def _tensors(session: Session) -> dict[str, torch.Tensor]:
    if session.prefix_ids is None:
        raise InfinipotError("nothing to save: stream a video into the session first")
    tensors = {"prefix_ids": session.prefix_ids.to("cpu").contiguous()}
    for index, (layer, layout) in enumerate(zip(session.cache.kv.layers, session.cache.layouts)):
        tensors[f"layers.{index}.keys"] = layer.keys.detach().to("cpu").contiguous()  # [1, heads, seq, dim]
        tensors[f"layers.{index}.values"] = layer.values.detach().to("cpu").contiguous()
        for name in LAYOUT_FIELDS:
            tensors[f"layers.{index}.layout.{name}"] = getattr(layout, name).to("cpu").contiguous()
    return tensors


def _metadata(session: Session, provenance: Provenance, tensors: dict[str, torch.Tensor]) -> dict:
    adapter, cache = session.adapter, session.cache
    return {
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "preset": dataclasses.asdict(provenance.preset),
        "model": model_identity(adapter),
        "kv_dtype": str(tensors["layers.0.keys"].dtype).removeprefix("torch."),
        "settings": dataclasses.asdict(session.settings),
        "positions": session.positions,
        "video": provenance.video,
        "stats": session.stats.as_dict(),
        "adapter_state": adapter.stream_state(),
        "prefix": {"tokens": int(session.prefix_ids.shape[1]),
                   "text": adapter.tokenizer.decode(session.prefix_ids[0].tolist())},
        "next_position": _next_position(session),
        "layout": {
            "layers": len(cache.layouts),
            "kv_heads": cache.kv_heads,
            "head_dim": int(tensors["layers.0.keys"].shape[-1]),
            "position_axes": cache.position_axes,
            "grid": list(session.grid),
            "prefix_len": cache.prefix_len,
            "visual_tokens": [layout.tokens for layout in cache.layouts],
            "video_length": cache.video_length,
            "seq_length": cache.seq_length(),
            "kv_bytes": cache.kv_bytes(),
        },
        "conversation": [dataclasses.asdict(turn) for turn in session.turns],
        "checksums": {name: tensor_digest(tensor) for name, tensor in tensors.items()},
    }


def _next_position(session: Session) -> list[int]:
    """Where the next text token goes: after the conversation, else where a question starts."""
    if session.turns and session.next_turn_position is not None:
        return [int(value) for value in session.next_turn_position[:, -1]]
    return [int(value) for value in session.adapter.question("?").positions[:, 0]]


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Temporary file in the same directory, fsync, rename: never a partial file under `path`."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        os.chmod(temporary, _file_mode(path))
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException as error:  # also Ctrl-C: the temporary file goes, the old file stays
        temporary.unlink(missing_ok=True)
        if isinstance(error, (OSError, SafetensorError)):
            reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
            raise InfinipotError(
                f"could not write {path} ({reason}): free some space or choose another path"
            ) from error
        raise
    _fsync_directory(path.parent)


def _file_mode(path: Path) -> int:
    """The replaced file's permissions, else what a plain new file gets (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (not possible on every platform; then the OS decides)."""
    try:
        descriptor = os.open(directory if str(directory) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# --- reading ------------------------------------------------------------------------------------
def _damaged(path: Path, reason: str) -> InfinipotError:
    return InfinipotError(
        f"cache file {path} is damaged or truncated ({reason}): re-create it with `infinipot compress`"
    )


def looks_like_cache(path: Path) -> bool:
    """True for a `.ipv` path or a file whose safetensors header names this format (videos are not)."""
    path = Path(path)
    if path.suffix.lower() == SUFFIX:
        return True
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        head = handle.read(8 + 4096)
    return len(head) > 8 and head[8:9] == b"{" and FORMAT_NAME.encode() in head


def read_header(path: str | Path) -> CacheHeader:
    """Open a cache file and check its format, version and metadata checksum (no tensor is read)."""
    path = Path(path)
    if not path.exists():
        raise InfinipotError(f"cache file not found: {path} — check the path")
    if path.is_dir():
        raise InfinipotError(f"cache path is a directory: {path} — pass a .ipv file written by `infinipot compress`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            outer = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        reason = str(error).splitlines()[0]
        if not looks_like_cache(path):
            raise InfinipotError(f"{path} is not an infinipot cache ({reason}): pass a .ipv file written by "
                                 "`infinipot compress`") from error
        raise _damaged(path, f"not a readable safetensors file: {reason}") from error
    if outer.get("format") != FORMAT_NAME:
        raise InfinipotError(
            f"{path} is a safetensors file but not an infinipot cache (expected format {FORMAT_NAME!r}, "
            f"found {outer.get('format')!r}): pass a cache written by `infinipot compress`, or a video"
        )
    version = _format_version(path, outer.get("format_version"))
    text = outer.get("infinipot", "")
    if sha256_hex(text.encode()) != outer.get("infinipot_sha256"):
        raise _damaged(path, "its metadata does not match its checksum")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise _damaged(path, f"unreadable metadata: {error}") from error
    if not isinstance(meta, dict) or meta.get("format_version") != version:
        raise _damaged(path, "inconsistent metadata")
    missing = sorted(_REQUIRED_KEYS - set(meta))
    if missing:
        raise _damaged(path, f"its metadata lacks {', '.join(missing)}")
    return CacheHeader(path, path.stat().st_size, meta)


def _format_version(path: Path, raw: str | None) -> int:
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise _damaged(path, f"format version {raw!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise InfinipotError(
            f"{path} uses cache format {version} but infinipot {__version__} reads format {FORMAT_VERSION} at most: "
            "upgrade infinipot (pip install -U infinipot) or re-create the cache with this version"
        )
    if version < 1:
        raise _damaged(path, f"format version {version} does not exist")
    return version


def check_fits(header: CacheHeader, adapter: Adapter) -> None:
    """Refuse a cache made by another model family, config or weights, naming what differs."""
    made = header.meta["model"]
    name, loaded = header.path.name, f"{adapter.model_id} ({adapter.family})"
    fix = f"drop --preset to load the cache's own model ({made['id']}), or compress the video again with this one"
    if made["family"] != adapter.family:
        raise InfinipotError(f"{name} was made with a {made['family']} model ({made['id']}) but the loaded "
                             f"model is {loaded}: {fix}")
    found = config_fields(adapter)
    differs = [key for key in sorted(set(found) | set(made["config"])) if made["config"].get(key) != found.get(key)]
    if differs:
        detail = ", ".join(f"{key} {made['config'].get(key)!r} (found {found.get(key)!r})" for key in differs)
        raise InfinipotError(f"{name} was made with a model of another config than {loaded}: expected {detail}; {fix}")
    weights = weights_fingerprint(adapter)
    if made["weights_fingerprint"] != weights:
        raise InfinipotError(f"{name} was made with other weights ({made['id']}, fingerprint "
                             f"{made['weights_fingerprint']}) than the loaded {loaded} (fingerprint {weights}): {fix}")


def load_session(path: str | Path, adapter: Adapter, header: CacheHeader | None = None) -> Session:
    """A Session that answers from the cache in `path`, on the adapter's device and dtype."""
    header = header or read_header(path)
    check_fits(header, adapter)
    meta, layout = header.meta, header.meta["layout"]
    tensors = _read_tensors(header)
    _check_shapes(header, tensors, adapter)
    device, dtype = adapter.device, adapter.dtype
    if meta["kv_dtype"] != str(dtype).removeprefix("torch."):
        logger.warning("cache %s holds %s keys and values; converting to %s", header.path, meta["kv_dtype"], dtype)
    count = layout["layers"]
    keys = [tensors[f"layers.{i}.keys"].to(device, dtype) for i in range(count)]
    values = [tensors[f"layers.{i}.values"].to(device, dtype) for i in range(count)]
    layouts = [VisualLayout(*(tensors[f"layers.{i}.layout.{name}"] for name in LAYOUT_FIELDS)) for i in range(count)]
    cache = BudgetedCache.restore(keys, values, layouts, layout["prefix_len"])
    _restore_adapter(header, tensors["prefix_ids"], adapter)
    turns = [Answer(**turn) for turn in meta["conversation"]]
    next_turn = torch.tensor(meta["next_position"], dtype=torch.long).view(-1, 1) if turns else None
    session = Session.restore(adapter, _settings(meta["settings"]), cache, _stats(meta["stats"]),
                              tuple(layout["grid"]), turns, next_turn, meta.get("positions"))
    session.prefix_ids = tensors["prefix_ids"]
    return session


def _read_tensors(header: CacheHeader) -> dict[str, torch.Tensor]:
    """Every tensor of the file, each checked against its sha256."""
    checksums = header.meta["checksums"]
    expected = {"prefix_ids"} | {
        f"layers.{i}.{part}" for i in range(header.meta["layout"]["layers"])
        for part in ("keys", "values", *(f"layout.{name}" for name in LAYOUT_FIELDS))
    }
    tensors = {}
    try:
        with safe_open(str(header.path), framework="pt") as handle:
            names = set(handle.keys())
            if names != expected or set(checksums) != expected:
                missing = sorted(expected - names) or sorted(names - expected)
                raise _damaged(header.path, f"unexpected tensor set, e.g. {missing[:3]}")
            for name in sorted(expected):
                tensor = handle.get_tensor(name)
                if tensor_digest(tensor) != checksums[name]:
                    raise _damaged(header.path, f"tensor {name} does not match its checksum")
                tensors[name] = tensor
    except (SafetensorError, OSError) as error:
        raise _damaged(header.path, str(error).splitlines()[0]) from error
    return tensors


def _check_shapes(header: CacheHeader, tensors: dict[str, torch.Tensor], adapter: Adapter) -> None:
    layout = header.meta["layout"]
    seq, heads, dim = layout["seq_length"], adapter.kv_heads, adapter.head_dim
    for index, visual in enumerate(layout["visual_tokens"]):
        kv_shape = (1, heads, seq, dim)
        for part in ("keys", "values"):
            if tuple(tensors[f"layers.{index}.{part}"].shape) != kv_shape:
                raise _damaged(header.path, f"layers.{index}.{part} is not {list(kv_shape)}")
        frame = tensors[f"layers.{index}.layout.frame"]
        if tuple(frame.shape) != (heads, visual) or layout["prefix_len"] + visual > seq:
            raise _damaged(header.path, f"the layout of layer {index} does not match its keys")
    if tuple(tensors["prefix_ids"].shape) != (1, layout["prefix_len"]):
        raise _damaged(header.path, "the prompt prefix does not match the cache")


def _restore_adapter(header: CacheHeader, prefix_ids: torch.Tensor, adapter: Adapter) -> None:
    """Put the adapter where the stream ended, after checking it builds the same prompt prefix."""
    sample_fps = (header.meta.get("video") or {}).get("sample_fps") or 1.0
    prefix = adapter.begin_stream(sample_fps)
    if not torch.equal(prefix.ids.cpu(), prefix_ids):
        raise InfinipotError(
            f"{header.path.name} starts with a prompt prefix of {prefix_ids.shape[1]} tokens that this model's "
            f"tokenizer and chat template do not produce ({prefix.ids.shape[1]} tokens): use the model it was "
            f"made with ({header.meta['model']['id']})"
        )
    adapter.restore_stream_state(header.meta["adapter_state"])


def _settings(data: dict) -> CompressionSettings:
    known = {field.name for field in dataclasses.fields(CompressionSettings)}
    fields = {key: value for key, value in data.items() if key in known}
    if "spread_thresholds" in fields:
        fields["spread_thresholds"] = tuple(fields["spread_thresholds"])
    return CompressionSettings(**fields)


def _stats(data: dict) -> StreamStats:
    known = {field.name for field in dataclasses.fields(StreamStats)}
    return StreamStats(**{key: value for key, value in data.items() if key in known})


def verify(path: str | Path) -> CacheHeader:
    """Read every tensor and check it against its checksum (no model needed)."""
    header = read_header(path)
    _read_tensors(header)
    return header
