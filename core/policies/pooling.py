"""Average pooling of a layer's value-norm map before VaN ranks it.

Pooling turns single-token spikes into region-level saliency: a token scores high when its
neighbourhood does. Three ways to choose the pool of each layer:

- `none` (default; the released code runs without pooling).
- `quartile` (the official code's fixed schedule, by quarter of the layers): a 3-D pool of 7
  over (frame, row, col), then a 2-D pool of 5 over (row, col) within each frame, then a 1-D
  pool of 3 along the cache order, then none.
- `cv` (the paper, Sec. 3.2 and Algorithm 2): a 2-D spatial pool per frame whose size is
  inverse to the layer's coefficient of variation (CV = population std / mean of its value
  norms over all heads and tokens): 7 if CV < t1, 5 if t1 <= CV < t2, 3 if t2 <= CV < t3,
  else none. Low-CV layers (the lower ones, more spatial locality) get the large kernels.
  The paper's thresholds are model-specific and unpublished: a preset may give
  `cv_thresholds`; otherwise they are calibrated at the stream's first compression as the
  quartiles (25/50/75%) of that compression's per-layer CVs, then kept for the whole stream.

Averages cover only tokens that are present: after a compression a head's frames have holes,
and a hole must not count as a zero. Sums and counts are pooled separately and divided; the
zero padding at the borders adds nothing to either. The official code averages over holes and
over the zero padding, which drags border and sparse-region tokens down (docs/design.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Sequence

from infinipot.lazy import functional as F
from infinipot.lazy import torch

if TYPE_CHECKING:
    from infinipot.layout import VisualLayout

from infinipot.errors import InfinipotError
from infinipot.policies.base import grid_size

POOLINGS: tuple[str, ...] = ("none", "quartile", "cv")

# (kind, size) per quarter of the layers: kind is volume (frame, row, col), spatial (row, col)
# or sequence (cache order).
QUARTILE_SCHEDULE: tuple[tuple[str, int], ...] = (("volume", 7), ("spatial", 5), ("sequence", 3), ("none", 1))
PoolPlan = tuple[str, int]  # (kind, size); ("none", 1) when the layer is not pooled


def check_pooling(pooling: str, thresholds: tuple[float, ...] | None) -> None:
    if pooling not in POOLINGS:
        raise InfinipotError(f"unknown `pooling` {pooling!r}: choose one of {', '.join(POOLINGS)}")
    if thresholds is not None:
        if len(thresholds) != 3 or not all(a < b for a, b in zip(thresholds, thresholds[1:])) or thresholds[0] < 0:
            raise InfinipotError(
                f"`cv_thresholds` must be three ascending non-negative numbers (t1 < t2 < t3), got {list(thresholds)}"
            )


def layer_cv(norms: torch.Tensor) -> float:
    """Coefficient of variation (population std / mean) of one layer's norms ([heads, tokens])."""
    mean = norms.mean()
    return float(norms.std(correction=0) / mean) if norms.numel() and mean > 0 else 0.0


def calibrate_thresholds(cvs: Sequence[float]) -> tuple[float, float, float]:
    """t1 < t2 <= t3: the quartiles of the per-layer CVs (linear interpolation, deterministic)."""
    quartiles = torch.quantile(torch.tensor(list(cvs), dtype=torch.float64),
                               torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return tuple(round(float(value), 6) for value in quartiles)  # type: ignore[return-value]


def cv_pool_size(cv: float, thresholds: Sequence[float]) -> int:
    """The paper's rule: the lower the CV, the larger the pool."""
    for size, threshold in zip((7, 5, 3), thresholds):
        if cv < threshold:
            return size
    return 1


def pool_plans(pooling: str, norms: Sequence[torch.Tensor], thresholds: tuple[float, ...] | None,
               memory: dict) -> list[PoolPlan]:
    """The pool of every layer of one compression; `cv` records its thresholds and sizes in `memory`."""
    layers = len(norms)
    if pooling == "none":
        return [("none", 1)] * layers
    if pooling == "quartile":
        # layer * 4 // layers stays within the four quarters for any layer count (the official
        # code's layer // (layers // 4) runs past the schedule when 4 does not divide it).
        return [QUARTILE_SCHEDULE[min(3, index * 4 // max(layers, 1))] for index in range(layers)]
    cvs = [layer_cv(layer_norms) for layer_norms in norms]
    if thresholds is None:
        if "cv_thresholds" not in memory:  # first compression of the stream: calibrate once
            memory["cv_thresholds"] = list(calibrate_thresholds(cvs))
        thresholds = tuple(memory["cv_thresholds"])
    else:
        memory["cv_thresholds"] = list(thresholds)
    sizes = [cv_pool_size(cv, thresholds) for cv in cvs]
    memory["layer_cv"] = [round(cv, 6) for cv in cvs]
    memory["pool_sizes"] = sizes
    return [("spatial", size) if size > 1 else ("none", 1) for size in sizes]


def pool_value_norms(norms: torch.Tensor, layout: VisualLayout, plan: PoolPlan,
                     grid: tuple[int, int]) -> torch.Tensor:  # [heads, tokens]
    """The layer's norm map ([heads, tokens]) pooled as `plan` says."""
    kind, size = plan
    if kind == "none" or norms.shape[-1] == 0:
        return norms
    if kind == "sequence":
        # Every slot holds a token, so excluding the padding is the whole masking.
        pooled = F.avg_pool1d(norms.unsqueeze(1), size, stride=1, padding=size // 2, count_include_pad=False)
        return pooled.squeeze(1)
    kernel = (size, size, size) if kind == "volume" else (1, size, size)
    return _grid_pool(norms, layout, grid, kernel)


def _grid_pool(
    norms: torch.Tensor,  # [heads, tokens]
    layout: VisualLayout,
    grid: tuple[int, int],
    kernel: tuple[int, int, int],  # over (frame, row, col)
) -> torch.Tensor:  # [heads, tokens]
    """Masked average over a dense (frame, row, col) grid per head, read back at each token."""
    heads = norms.shape[0]
    rows, cols = grid_size(layout, grid)
    # Frames present anywhere in the layer, renumbered 0..F-1, so gaps left by compression
    # neither waste memory nor separate frames that are now neighbours.
    frames, dense_frame = torch.unique(layout.frame, return_inverse=True)
    shape = (frames.numel(), rows, cols)
    slot = (dense_frame * rows + layout.row) * cols + layout.col  # [heads, tokens]
    sums = norms.new_zeros(heads, frames.numel() * rows * cols).scatter_add_(1, slot, norms)
    counts = torch.zeros_like(sums).scatter_add_(1, slot, torch.ones_like(norms))

    def window_sum(dense: torch.Tensor) -> torch.Tensor:
        # Pad explicitly (the pool refuses a kernel wider than the unpadded grid);
        # divisor_override=1 makes the average pool a plain windowed sum.
        pad = [kernel[axis] // 2 for axis in (2, 2, 1, 1, 0, 0)]  # F.pad order: col, row, frame
        padded = F.pad(dense.view(heads, 1, *shape), pad)
        return F.avg_pool3d(padded, kernel, stride=1, divisor_override=1)

    pooled = (window_sum(sums) / window_sum(counts)).view(heads, -1)  # every token's own cell counts >= 1
    return pooled.gather(1, slot)
