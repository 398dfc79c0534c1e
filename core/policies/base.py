"""The policy interface: which cached visual tokens of one layer to keep, per KV head.

A policy is a pure function. It sees one layer's visual keys and values (the prefix is never
passed in), the layout of those tokens and how many to keep; it returns sorted token indices
per head. No model, no I/O, no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from infinipot.errors import InfinipotError
from infinipot.layout import VisualLayout


@dataclass(frozen=True)
class PolicySettings:
    """Knobs shared by all policies; each policy reads the ones it needs."""

    recent_frames: int = 1  # r: the newest frames kept whole
    tar_ratio: float = 0.5  # alpha: share of the kept tokens chosen by TaR (recent frames included)
    pooling: str = "none"  # VaN pooling: none | quartile | spread
    spread_thresholds: tuple[float, float, float] = (0.6, 0.4, 0.2)  # CV thresholds for pool 7 / 5 / 3
    layer: int = 0  # index of the layer being compressed
    num_layers: int = 1
    grid: tuple[int, int] = (1, 1)  # (rows, cols) of one frame's token grid


class Policy(Protocol):
    def __call__(
        self,
        keys: torch.Tensor,  # [heads, tokens, dim]
        values: torch.Tensor,  # [heads, tokens, dim]
        layout: VisualLayout,
        keep: int,
        settings: PolicySettings,
    ) -> torch.Tensor:  # [heads, keep] long, sorted ascending, unique per head
        ...


def recent_mask(layout: VisualLayout, recent_frames: int) -> torch.Tensor:
    """True for tokens of the `recent_frames` newest frames in this layer. [heads, tokens] bool"""
    newest = layout.frame.max()
    return layout.frame > newest - recent_frames


def sorted_topk(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` highest scores per row, in original order. Ties go to the earlier token."""
    # topk's tie order is unspecified; a stable descending sort makes selection deterministic.
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :keep]
    return torch.sort(order, dim=-1).values


def select_forced_then_topk(
    scores: torch.Tensor,  # [heads, tokens] float
    forced: torch.Tensor,  # [heads, tokens] bool: kept whatever their score
    keep: int,
) -> torch.Tensor:  # [heads, keep] long, sorted ascending
    """Keep every `forced` token, then the highest-scoring others, `keep` per head in all.

    Ties go to the earlier token. The caller guarantees at most `keep` forced tokens per head.
    """
    if keep > scores.shape[-1]:
        raise ValueError(f"cannot keep {keep} of {scores.shape[-1]} tokens")
    # Forced tokens rank at +inf, every score is clamped below that, and one stable sort ranks
    # the rest: a forced token outranks any score, and equal scores keep their original order.
    finite = scores.clamp(max=torch.finfo(scores.dtype).max)
    ranked = finite.masked_fill(forced, float("inf"))
    chosen = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[..., :keep]
    # Back to original order without a second sort: mark the chosen slots, read them in order.
    marked = torch.zeros_like(forced).scatter_(-1, chosen, True)
    return marked.nonzero()[:, -1].view(*scores.shape[:-1], keep)


def scoring_dtype(tensor: torch.Tensor) -> torch.dtype:
    """Score in at least float32 (half-precision norms and dot products lose ties and overflow)."""
    return torch.promote_types(tensor.dtype, torch.float32)


def grid_size(layout: VisualLayout, settings: PolicySettings) -> tuple[int, int]:
    """(rows, cols) of the frame grid: the configured grid, grown to fit any cell in the layout."""
    rows, cols = settings.grid
    if layout.tokens:
        rows = max(rows, int(layout.row.max()) + 1)
        cols = max(cols, int(layout.col.max()) + 1)
    return rows, cols


def check_recent_fits(recent: torch.Tensor, budget: int, budget_name: str, fix: str) -> None:
    """Raise when some head's recent tokens ([heads, tokens] bool) exceed `budget`."""
    most = int(recent.sum(dim=-1).max()) if recent.numel() else 0
    if most > budget:
        raise InfinipotError(f"the recent frames hold {most} tokens but {budget_name} keeps only {budget}: {fix}")
