"""Model adapters, one module per family (see infinipot.families for the registry)."""

from infinipot.adapters.base import Adapter, EncodedChunk, PositionState, PromptParts, kv_bytes_per_token

__all__ = ["Adapter", "EncodedChunk", "PositionState", "PromptParts", "kv_bytes_per_token"]
