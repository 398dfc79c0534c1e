"""Position modes (DESIGN.md §2): `original` keeps every token's rotary position, `compact`
renumbers the kept visual tokens densely after each compression.

Compact rule, the same for 1-D RoPE and M-RoPE: position axis 0 (the only axis of 1-D RoPE,
the temporal axis of M-RoPE) is renumbered per layer and per KV head, in cache order, to
start, start + 1, ... where equal values stay equal; the other axes keep their values.
- 1-D RoPE: every kept token gets its own position, so a head keeping C tokens holds exactly
  prefix_len .. prefix_len + C - 1, as if the kept tokens had been the whole video so far.
- M-RoPE: all tokens of one temporal step share a temporal id, so the kept steps get
  consecutive temporal ids while rows and columns keep theirs (they are bounded by the frame
  grid already, and keep the frame's spatial structure the model was trained on).
The keys are then turned to their new positions (infinipot.rope) and the adapter is told
where the next chunk starts: one past the largest axis-0 position left in the cache.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import torch

from infinipot.errors import InfinipotError
from infinipot.rope import KeyRotator

if TYPE_CHECKING:
    from infinipot.adapters.base import Adapter
    from infinipot.cache import BudgetedCache

logger = logging.getLogger(__name__)

POSITION_MODES = ("original", "compact")


def check_position_mode(mode: str) -> str:
    if mode not in POSITION_MODES:
        raise InfinipotError(f"unknown positions mode {mode!r}: choose one of {', '.join(POSITION_MODES)}")
    return mode


def dense_positions(position: torch.Tensor, start: int) -> torch.Tensor:
    """Axis 0 renumbered start, start + 1, ... per head, equal values kept equal.

    position: [heads, tokens, axes] long, axis 0 non-decreasing along tokens (cache order).
    """
    if position.shape[1] == 0:
        return position.clone()
    first = position[..., 0]  # [heads, tokens]
    steps = (first[:, 1:] != first[:, :-1]).long()
    rank = torch.cat([torch.zeros_like(first[:, :1]), steps.cumsum(dim=-1)], dim=-1)
    dense = position.clone()
    dense[..., 0] = rank + start
    return dense


def compact_cache(cache: BudgetedCache, rotator: KeyRotator) -> int:
    """Renumber every layer's kept visual tokens densely and turn their keys; return the next free position.

    The prefix holds positions 0 .. prefix_len - 1 in every family, so the video restarts at prefix_len.
    """
    start = cache.prefix_len
    next_start = start
    for index, layer in enumerate(cache.kv.layers):
        layout = cache.layouts[index]
        dense = dense_positions(layout.position, start)  # [heads, visual, axes]
        keys = layer.keys[0, :, start:]  # [heads, visual, head_dim]
        turned = rotator.rotate(keys, layout.position, dense)
        layer.keys = torch.cat([layer.keys[:, :, :start], turned.unsqueeze(0)], dim=2)
        cache.layouts[index] = dataclasses.replace(layout, position=dense)
        if dense.shape[1]:
            next_start = max(next_start, int(dense[..., 0].max()) + 1)
    return next_start


def warn_if_past_window(
    adapter: Adapter, mode: str, frames: int | None, grid: tuple[int, int], compresses: bool, budget: int
) -> int | None:
    """Log a warning when the planned video's positions run past the model's trained window.

    Returns the largest video position foreseen (None when it cannot be foreseen). In compact
    mode with compression a 1-D RoPE cache never holds more than prefix + budget positions.
    """
    window = getattr(adapter.text_config, "max_position_embeddings", None)
    if window is None or frames is None:
        return None
    if mode == "compact" and compresses:
        if adapter.position_axes != 1:
            return None
        empty = adapter.video_end_position(0, grid)  # a video of no frames, then `budget` dense positions
        largest = None if empty is None else empty + budget
        fix = "lower --budget"
    else:
        largest = adapter.video_end_position(frames, grid)
        fix = "use --positions compact" if mode == "original" else "use a --policy that compresses"
    if largest is not None and largest >= window:
        logger.warning(
            "%s positions reach %d for this video but %s was trained on %d positions; answers may degrade: %s",
            mode, largest, adapter.model_id, window, fix,
        )
    return largest
