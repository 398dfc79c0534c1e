"""The policy interface: which cached visual tokens of one layer to keep, per KV head.

A policy is a pure function. It sees one layer's visual keys and values (the prefix is never
passed in), the layout of those tokens and how many to keep; it returns sorted token indices
per head. No model, no I/O, no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

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
