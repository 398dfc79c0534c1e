"""TaR (temporal-axis redundancy): keep the older tokens that differ most from what the model sees now.

For an older token at cell (row, col), redundancy is its mean cosine similarity with the keys of
the recent frames at the same cell; the TaR score is minus that. Tokens are matched by the
layout's (row, col), not by slot: after a few compressions each head's slots are scrambled, and
comparing slot i with slot i of a recent frame (as the reference code does) would compare
unrelated cells (docs/design.md, "Deviations").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass

from infinipot.lazy import functional as F
from infinipot.lazy import torch

if TYPE_CHECKING:
    from infinipot.layout import VisualLayout

from infinipot.policies.base import LayerView, grid_size, scoring_dtype
from infinipot.policies.recent_frames import RecentFramesPolicy


def tar_scores(
    keys: torch.Tensor,  # [heads, tokens, dim] post-RoPE
    layout: VisualLayout,
    recent: torch.Tensor,  # [heads, tokens] bool
    grid: tuple[int, int],
) -> torch.Tensor:  # [heads, tokens]: -mean cos with the recent keys at the same cell; 0 for recent tokens
    """TaR score of every token; higher = less redundant with the recent frames.

    A cell that no recent token of this head covers scores 0 (neutral): nothing says the token is
    redundant, nor that it is new. With recent frames kept whole this only happens when the
    recent frames' own grid is smaller than an older frame's.
    """
    heads, tokens, dim = keys.shape
    rows, cols = grid_size(layout, grid)
    cells = rows * cols
    unit = F.normalize(keys.to(scoring_dtype(keys)), dim=-1)  # [heads, tokens, dim]
    cell = layout.row * cols + layout.col  # [heads, tokens]

    # cos is linear in the recent key, so the mean over recent frames is one dot product with
    # the per-cell sum of unit recent keys, divided by how many recent frames hold that cell.
    # Rows of a flattened [heads * cells, dim] table: index_add_/index_select copy whole rows, far
    # faster than scatter/gather with an index expanded over dim. Only the recent tokens (about an
    # eighth) are added, in cache order, so each cell's sum is the same as adding every token would give.
    row_base = torch.arange(heads, device=keys.device).unsqueeze(1) * cells  # [heads, 1]
    rows_of_cell = (cell + row_base).reshape(-1)  # [heads * tokens]
    recent_at = recent.reshape(-1).nonzero().squeeze(1)
    recent_rows = rows_of_cell.index_select(0, recent_at)
    recent_sum = unit.new_zeros(heads * cells, dim)
    recent_sum.index_add_(0, recent_rows, unit.reshape(-1, dim).index_select(0, recent_at))
    recent_count = unit.new_zeros(heads * cells)
    recent_count.index_add_(0, recent_rows, unit.new_ones(recent_rows.shape[0]))

    at_cell = recent_sum.index_select(0, rows_of_cell).view(heads, tokens, dim)
    count = recent_count.index_select(0, rows_of_cell).view(heads, tokens)
    similarity = (unit * at_cell).sum(dim=-1) / count.clamp(min=1)
    scores = -similarity
    return scores.masked_fill(recent | (count == 0), 0.0)


@dataclass(frozen=True)
class Tar(RecentFramesPolicy):
    name = "tar"
    summary = "TaR alone: the recent frames, then the older tokens least redundant with them"

    def score(self, layer: LayerView, recent: torch.Tensor, memory: dict) -> torch.Tensor:
        return tar_scores(layer.keys, layer.layout, recent, layer.plan.grid)
