"""Position modes (docs/design.md, "Positions"): `original` keeps every token's rotary position,
`compact` renumbers the kept visual tokens densely after each compression.

Compact rule, the same for 1-D RoPE and M-RoPE: position axis 0 (the only axis of 1-D RoPE,
the temporal axis of M-RoPE) is renumbered per layer and per KV head, in cache order, to
start, start + 1, ... where equal values stay equal; the other axes keep their values.
- 1-D RoPE: every kept token gets its own position, so a head keeping C tokens holds exactly
  prefix_len .. prefix_len + C - 1, as if the kept tokens had been the whole video so far.
- M-RoPE: all tokens of one temporal step share a temporal id, so the kept steps get
  consecutive temporal ids while rows and columns keep theirs (they are bounded by the frame
  grid already, and keep the frame's spatial structure the model was trained on).
- M-RoPE whose row and column ids start at the temporal id (Qwen3-VL, `packed_positions`): each
  run of tokens sharing a temporal id (one text token, or what a head kept of one patch) moves,
  all axes together, to start one past the largest id of the run before it. A patch keeps its
  (t, t + row, t + col) shape and the text after it follows its largest id, as in training, so an
  uncompressed stream is left exactly where it was.
The cache turns its keys to the new positions (BudgetedCache.compact, infinipot.rope) and the
adapter continues the stream one past the largest position left.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


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


def packed_positions(position: torch.Tensor, start: int) -> torch.Tensor:
    """Runs of equal axis 0 moved on every axis, each to start one past the previous run's largest id.

    position: [heads, tokens, axes] long, axis 0 non-decreasing along tokens (cache order), every
    axis at least axis 0 (Qwen3-VL: text (p, p, p), a patch (t, t + row, t + col)).
    """
    heads, tokens = position.shape[:2]
    if tokens == 0:
        return position.clone()
    first = position[..., 0]  # [heads, tokens]
    starts_run = torch.ones_like(first, dtype=torch.bool)
    starts_run[:, 1:] = first[:, 1:] != first[:, :-1]
    run = starts_run.long().cumsum(dim=-1) - 1  # [heads, tokens]: which run of its head a token is in
    reach = position.max(dim=-1).values - first  # how far past its temporal id a token's ids go
    extent = torch.zeros_like(first).scatter_reduce(1, run, reach, reduce="amax")  # [heads, runs (padded)]
    width = extent + 1
    run_start = width.cumsum(dim=-1) - width + start
    return position + (run_start.gather(1, run) - first).unsqueeze(-1)


def largest_foreseen(mode: str, compresses: bool, axes: int, empty_end: int, full_end: int | None,
                     budget: int) -> int | None:
    """The largest position a stream will reach, when it can be foreseen.

    `empty_end`: where a video of no frames ends (prefix_len - 1); `full_end`: where the whole
    planned video ends with original positions (None when the length is unknown). In compact mode
    with compression a 1-D RoPE cache never holds more than prefix + budget positions; an M-RoPE
    one is bounded by its rows and columns too, which we do not foresee here.
    """
    if mode == "compact" and compresses:
        return empty_end + budget if axes == 1 else None
    return full_end


def warn_if_past_window(largest: int | None, window: int | None, mode: str, compresses: bool,
                        model_id: str) -> None:
    """Log a warning when the planned video's positions run past the model's trained window."""
    if largest is None or window is None or largest < window:
        return
    if mode == "compact" and compresses:
        fix = "lower `budget`"
    else:
        fix = "use `positions` compact" if mode == "original" else "use a `policy` that compresses"
    logger.warning("%s positions reach %d for this video but %s was trained on %d positions; answers may "
                   "degrade: %s", mode, largest, model_id, window, fix)
