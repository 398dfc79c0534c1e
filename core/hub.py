"""Fail fast when a model is neither on disk nor reachable.

Without this, a machine with no network spends minutes in the hub client's retries (five
per file, for each of a processor's half-dozen files) before saying the same thing.
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

from infinipot.errors import InfinipotError

logger = logging.getLogger(__name__)


def is_cached(model_id: str) -> bool:
    """True when the model's config is already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model_id, "config.json")
    return isinstance(found, str)


def hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_available(model_id: str) -> None:
    """Raise one clear line if `model_id` (a hub id) can be neither read from disk nor downloaded."""
    if os.path.isdir(model_id) or is_cached(model_id):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub cannot be reached"
        raise InfinipotError(
            f"model {model_id!r} is not on this machine and {why}: download it where there is network "
            f"(`hf download {model_id}`) or point the preset's `model` to a local directory"
        )
    logger.info("%s is not cached; downloading from the hub", model_id)
