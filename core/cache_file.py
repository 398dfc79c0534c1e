"""Compressed caches on disk: a Session's KV cache, token layout and stream state in one safetensors file.

Encoding a video is the expensive part; a saved cache answers any number of questions later
without the video, and can go on streaming. The file is plain safetensors (loading never
executes code). Its string metadata holds one JSON document (where the cache came from, its
settings, the stream's whole state) with its own sha256, and for every tensor its dtype, shape
and a sha256 of its bytes, so a truncated, damaged, edited, newer or mismatched file is refused
with one line naming what was expected, before anything the file's numbers ask for is allocated
(docs/design.md, "Cache files").

Format 2 (infinipot 0.2): the stream state as one object; questions resume one past the
largest position (the Qwen training rule). Format-1 files carried the old rule's next position
and are refused with the fix (compress the video again).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from infinipot import __version__
from infinipot.cache_header import (
    FORMAT_NAME, FORMAT_VERSION, LAYOUT_FIELDS, CacheHeader, damaged, read_header, tensor_names, looks_like_cache,
)
from infinipot.errors import InfinipotError
from infinipot.file_io import check_writable, write_atomically

if TYPE_CHECKING:
    from infinipot.model import Model
    from infinipot.session import Session
    from infinipot.settings import Settings

logger = logging.getLogger(__name__)
SUFFIX = ".ipv"
__all__ = ["SUFFIX", "CacheHeader", "check_fits", "check_writable", "load_session", "looks_like_cache",
           "read_header", "save_session", "verify"]


# --- writing ------------------------------------------------------------------------------------
def save_session(session: Session, path: str | Path) -> int:
    """Write `session`'s cache and state to `path` atomically; return the file size in bytes."""
    from infinipot.fingerprints import sha256_hex, tensor_record

    path = Path(path)
    check_writable(path)
    if session.state is None or session.cache is None:
        raise InfinipotError("nothing to save: stream a video into the session first")
    tensors = _tensors(session)
    meta = _metadata(session, tensors)
    meta["tensors"] = {name: tensor_record(tensor) for name, tensor in tensors.items()}
    text = json.dumps(meta, sort_keys=True)
    header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "infinipot": text,
              "infinipot_sha256": sha256_hex(text.encode())}
    write_atomically(path, lambda temporary: _save(tensors, temporary, header))
    return path.stat().st_size


def _save(tensors, temporary: Path, header: dict) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(temporary), metadata=header)


def _tensors(session: Session) -> dict:
    keys, values, layouts = session.cache.export()
    tensors = {}
    for index, (layer_keys, layer_values, layout) in enumerate(zip(keys, values, layouts)):
        tensors[f"layers.{index}.keys"] = layer_keys.detach().to("cpu").contiguous()  # [1, heads, seq, dim]
        tensors[f"layers.{index}.values"] = layer_values.detach().to("cpu").contiguous()
        for name in LAYOUT_FIELDS:
            tensors[f"layers.{index}.layout.{name}"] = getattr(layout, name).to("cpu").contiguous()
    return tensors


def _metadata(session: Session, tensors: dict) -> dict:
    from infinipot.fingerprints import model_identity

    cache, adapter = session.cache, session.model.adapter
    first_keys = tensors["layers.0.keys"]
    return {
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": session.settings.as_dict(),
        "policy": session.policy.describe(),
        "model": model_identity(adapter),
        "kv_dtype": str(first_keys.dtype).removeprefix("torch."),
        "state": session.state.as_dict(),
        "prefix_text": adapter.tokenizer.decode(session.state.prefix_ids),
        "layout": {
            "layers": len(cache.layers), "kv_heads": cache.kv_heads, "head_dim": int(first_keys.shape[-1]),
            "position_axes": cache.position_axes, "prefix_len": cache.prefix_len,
            "visual_tokens": [layout.tokens for layout in cache.layouts], "video_length": cache.video_length,
            "seq_length": cache.seq_length(), "kv_bytes": cache.kv_bytes(),
        },
    }


# --- reading ------------------------------------------------------------------------------------
def verify(path: str | Path) -> CacheHeader:
    """Read every tensor and check it against its record (no model needed)."""
    header = read_header(path)
    _read_tensors(header)
    return header


def _read_tensors(header: CacheHeader) -> dict:
    """Every tensor of the file, each checked against its dtype, shape and sha256."""
    from safetensors import SafetensorError, safe_open

    from infinipot.fingerprints import tensor_record

    records = header.meta["tensors"]
    tensors = {}
    try:
        with safe_open(str(header.path), framework="pt") as handle:
            for name in tensor_names(header.meta["layout"]["layers"]):
                tensor = handle.get_tensor(name)
                if tensor_record(tensor) != records[name]:
                    raise damaged(header.path, f"tensor {name} does not match its checksum")
                tensors[name] = tensor
    except (SafetensorError, OSError) as error:
        raise damaged(header.path, str(error).splitlines()[0][:200]) from error
    return tensors


def check_fits(header: CacheHeader, model: Model) -> None:
    """Refuse a cache made by another model family, config or weights, naming what differs."""
    from infinipot.fingerprints import config_fields, weights_fingerprint

    made = header.meta["model"]
    adapter = model.adapter
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


def load_session(path: str | Path, *, device: str = "auto", model: Model | None = None,
                 preset: str | Settings | None = None, header: CacheHeader | None = None) -> Session:
    """A Session that answers from (and can go on streaming into) the cache in `path`."""
    from infinipot.cache import BudgetedCache
    from infinipot.layout import VisualLayout
    from infinipot.session import Session
    from infinipot.stream_setup import StreamSetup, TEXT_ROOM
    from infinipot.stream_state import StreamState
    from infinipot.streamer import Streamer

    header = header or read_header(path)
    settings = _settings(header, preset)
    session = Session(settings, model=model, device=device)
    check_fits(header, session.model)
    adapter = session.model.adapter
    _check_against_model(header, adapter)
    tensors = _read_tensors(header)
    meta, count = header.meta, header.meta["layout"]["layers"]
    if meta["kv_dtype"] != str(adapter.dtype).removeprefix("torch."):
        logger.warning("cache %s holds %s keys and values; converting to %s", header.path, meta["kv_dtype"],
                       adapter.dtype)
    keys = [tensors[f"layers.{i}.keys"].to(adapter.device, adapter.dtype) for i in range(count)]
    values = [tensors[f"layers.{i}.values"].to(adapter.device, adapter.dtype) for i in range(count)]
    layouts = [VisualLayout(*(tensors[f"layers.{i}.layout.{name}"] for name in LAYOUT_FIELDS)).to(adapter.device)
               for i in range(count)]
    try:
        state = StreamState.from_dict(meta["state"], adapter.state_from_dict(meta["state"]["positions"]))
    except (KeyError, TypeError, ValueError) as error:
        raise damaged(header.path, f"unreadable stream state ({type(error).__name__})") from None
    _check_prefix(header, state, adapter)
    cache = BudgetedCache.restore(keys, values, layouts, state.prefix_len,
                                  state.prefix_len + state.plan.budget_tokens + TEXT_ROOM)
    session.state, session.cache = state, cache
    session.setup = StreamSetup(settings, state.plan, session.model.geometry(1, 1), state.position_mode, None,
                                state.sample_fps)
    session._streamer = Streamer(adapter, cache, state, session.policy)
    return session


def _settings(header: CacheHeader, preset: str | Settings | None) -> Settings:
    from infinipot.presets import load_preset
    from infinipot.settings import settings_from_mapping

    saved = dict(header.meta["settings"])
    knobs = saved.pop("knobs", {}) or {}
    try:
        made_with = settings_from_mapping({**saved, **knobs}, f"the settings saved in {header.path.name}")
    except InfinipotError as error:
        raise damaged(header.path, str(error)[:200]) from None
    if preset is None:
        return made_with
    chosen = load_preset(preset) if isinstance(preset, str) else preset
    # Another preset may load the model from elsewhere; the compression settings stay the cache's own.
    return made_with.replace(model=chosen.model, family=chosen.family, name=chosen.name,
                             description=chosen.description, attn_implementation=chosen.attn_implementation,
                             dtype=chosen.dtype, min_pixels=chosen.min_pixels, max_pixels=chosen.max_pixels)


def _check_against_model(header: CacheHeader, adapter) -> None:
    """Counts and shapes the metadata claims must match the model before any tensor is read."""
    layout = header.meta["layout"]
    text = adapter.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    expected = {"layers": text.num_hidden_layers, "kv_heads": text.num_key_value_heads, "head_dim": head_dim,
                "position_axes": adapter.position_axes}
    for key, value in expected.items():
        if layout[key] != value:
            raise damaged(header.path, f"it claims {key} {layout[key]} but the model has {value}")


def _check_prefix(header: CacheHeader, state, adapter) -> None:
    """The model's tokenizer and chat template must build the same prompt prefix as the one cached."""
    _, prefix = adapter.begin(state.sample_fps)
    if prefix.ids[0].tolist() != list(state.prefix_ids):
        raise InfinipotError(
            f"{header.path.name} starts with a prompt prefix of {state.prefix_len} tokens that this model's "
            f"tokenizer and chat template do not produce ({prefix.ids.shape[1]} tokens): use the model it was "
            f"made with ({header.meta['model']['id']})"
        )
