"""Fingerprints: recognise a model, its weights and a video cheaply, to tell whether a cache fits.

A saved cache is only valid for the model that made it (same config, same weights) and it
records which video it came from. None of these need more than a few MiB of reading.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
import torch

from infinipot.adapters.base import Adapter


CONFIG_FIELDS = ("model_type", "num_hidden_layers", "num_key_value_heads", "head_dim", "hidden_size", "vocab_size")
_MIB = 1 << 20
_FINGERPRINT_VALUES = 16  # leading values of every parameter that go into the weights fingerprint


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return sha256_hex(memoryview(flat.view(torch.uint8).numpy()))


def config_fields(adapter: Adapter) -> dict:
    """The text-config fields a cache's tensors depend on."""
    config = adapter.text_config
    fields = {name: getattr(config, name, None) for name in CONFIG_FIELDS}
    fields["head_dim"] = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return fields


def weights_fingerprint(adapter: Adapter) -> str:
    """A cheap digest of the weights: the leading values of every parameter, rounded to bfloat16.

    Rounding makes a bfloat16 checkpoint loaded in float32 match the same one loaded in bfloat16.
    """
    heads = [param.detach().reshape(-1)[:_FINGERPRINT_VALUES].to("cpu", torch.bfloat16)
             for param in adapter.model.parameters()]
    return tensor_digest(torch.cat(heads))[:16]


def model_identity(adapter: Adapter) -> dict:
    config = config_fields(adapter)
    return {
        "id": adapter.model_id,
        "family": adapter.family,
        "dtype": str(adapter.dtype).removeprefix("torch."),
        "config": config,
        "config_fingerprint": sha256_hex(json.dumps(config, sort_keys=True).encode())[:16],
        "weights_fingerprint": weights_fingerprint(adapter),
    }


def video_fingerprint(path: Path, duration_s: float) -> dict:
    """Size, duration and a sha256 of the first and last MiB: enough to recognise the file cheaply."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(_MIB))
        if size > _MIB:
            handle.seek(max(_MIB, size - _MIB))
            digest.update(handle.read(_MIB))
    return {"name": path.name, "size_bytes": size, "duration_s": duration_s, "head_tail_sha256": digest.hexdigest()}


# safetensors' names for the dtypes a cache holds
_SAFETENSORS_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


def tensor_record(tensor: torch.Tensor) -> dict:
    """What a cache file records of a tensor: its dtype (safetensors' name), shape and a sha256 of its bytes."""
    return {"dtype": _SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape), "sha256": tensor_digest(tensor)}
