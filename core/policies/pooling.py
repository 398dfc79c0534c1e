"""Average pooling of one layer's value-norm map before VaN ranks it.

Pooling turns single-token spikes into region-level saliency: a token scores high when its
neighbourhood does. Two ways to pick the pool per layer:

- `quartile` (the reference code's fixed schedule, by quarter of the layers): a 3-D pool of 7
  over (frame, row, col), then a 2-D pool of 5 over (row, col) within each frame, then a 1-D
  pool of 3 along the cache order, then none.
- `spread` (the paper's idea): a 2-D spatial pool whose size follows the layer's norm spread,
  measured as the coefficient of variation (population std / mean) over all heads and tokens
  of the layer: cv >= t7 -> 7, >= t5 -> 5, >= t3 -> 3, else no pooling. High spread means a
  map dominated by isolated spikes, so it gets the widest pool; a flat map is left nearly as
  is. (We could not check the paper's exact rule; the thresholds are descending, so a larger
  spread must mean a larger pool.)

Averages cover only tokens that are present: after a compression a head's frames have holes,
and a hole must not count as a zero. Sums and counts are pooled separately and divided; the
zero padding at the borders adds nothing to either. The reference code averages over holes and
over the zero padding, which drags border and sparse-region tokens down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infinipot.layout import VisualLayout
from infinipot.policies.base import PolicySettings, grid_size

POOLINGS: tuple[str, ...] = ("none", "quartile", "spread")

# (kind, size) per quarter of the layers: kind is volume (frame, row, col), spatial (row, col)
# or sequence (cache order).
QUARTILE_SCHEDULE: tuple[tuple[str, int], ...] = (("volume", 7), ("spatial", 5), ("sequence", 3), ("none", 1))


def pool_plan(norms: torch.Tensor, settings: PolicySettings) -> tuple[str, int]:
    """(kind, size) of the pool for this layer; ("none", 1) when it is not pooled."""
    if settings.pooling == "none":
        return "none", 1
    if settings.pooling == "quartile":
        # layer * 4 // layers stays within the four quarters for any layer count (the
        # reference's layer // (layers // 4) runs past the schedule when 4 does not divide it).
        quarter = min(3, settings.layer * 4 // max(settings.num_layers, 1))
        return QUARTILE_SCHEDULE[quarter]
    if settings.pooling == "spread":
        size = spread_pool_size(norms, settings.spread_thresholds)
        return ("spatial", size) if size > 1 else ("none", 1)
    raise ValueError(f"unknown pooling {settings.pooling!r}: choose one of {', '.join(POOLINGS)}")


def spread_pool_size(norms: torch.Tensor, thresholds: tuple[float, float, float]) -> int:
    """Pool size 7, 5, 3 or 1 from the coefficient of variation of a layer's norms ([heads, tokens])."""
    mean = norms.mean()
    cv = float(norms.std(correction=0) / mean) if norms.numel() and mean > 0 else 0.0
    for size, threshold in zip((7, 5, 3), thresholds):
        if cv >= threshold:
            return size
    return 1


def pool_value_norms(
    norms: torch.Tensor,  # [heads, tokens]
    layout: VisualLayout,
    settings: PolicySettings,
) -> torch.Tensor:  # [heads, tokens]
    """The layer's norm map, pooled as `settings.pooling` asks."""
    kind, size = pool_plan(norms, settings)
    if kind == "none" or norms.shape[-1] == 0:
        return norms
    if kind == "sequence":
        # Every slot holds a token, so excluding the padding is the whole masking.
        pooled = F.avg_pool1d(norms.unsqueeze(1), size, stride=1, padding=size // 2, count_include_pad=False)
        return pooled.squeeze(1)
    kernel = (size, size, size) if kind == "volume" else (1, size, size)
    return _grid_pool(norms, layout, settings, kernel)


def _grid_pool(
    norms: torch.Tensor,  # [heads, tokens]
    layout: VisualLayout,
    settings: PolicySettings,
    kernel: tuple[int, int, int],  # over (frame, row, col)
) -> torch.Tensor:  # [heads, tokens]
    """Masked average over a dense (frame, row, col) grid per head, read back at each token."""
    heads = norms.shape[0]
    rows, cols = grid_size(layout, settings)
    # Frames present anywhere in the layer, renumbered 0..F-1, so gaps left by compression
    # neither waste memory nor separate frames that are now neighbours.
    frames, dense_frame = torch.unique(layout.frame, return_inverse=True)
    grid = (frames.numel(), rows, cols)
    slot = (dense_frame * rows + layout.row) * cols + layout.col  # [heads, tokens]
    sums = norms.new_zeros(heads, frames.numel() * rows * cols).scatter_add_(1, slot, norms)
    counts = torch.zeros_like(sums).scatter_add_(1, slot, torch.ones_like(norms))

    def window_sum(dense: torch.Tensor) -> torch.Tensor:
        # Pad explicitly (the pool refuses a kernel wider than the unpadded grid);
        # divisor_override=1 makes the average pool a plain windowed sum.
        pad = [kernel[axis] // 2 for axis in (2, 2, 1, 1, 0, 0)]  # F.pad order: col, row, frame
        padded = F.pad(dense.view(heads, 1, *grid), pad)
        return F.avg_pool3d(padded, kernel, stride=1, divisor_override=1)

    pooled = (window_sum(sums) / window_sum(counts)).view(heads, -1)  # every token's own cell counts >= 1
    return pooled.gather(1, slot)
