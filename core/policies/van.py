"""VaN (value norm): keep the tokens whose value vectors are largest, the semantically salient ones.

The score is each token's value L2 norm, optionally pooled over its neighbourhood first
(see `pooling`).
"""

from __future__ import annotations

import torch

from infinipot.layout import VisualLayout
from infinipot.policies.base import (
    PolicySettings,
    check_recent_fits,
    recent_mask,
    scoring_dtype,
    select_forced_then_topk,
)
from infinipot.policies.pooling import pool_value_norms


def van_scores(
    values: torch.Tensor,  # [heads, tokens, dim]
    layout: VisualLayout,
    settings: PolicySettings,
) -> torch.Tensor:  # [heads, tokens]
    """Value L2 norm of every token, pooled as `settings.pooling` asks."""
    norms = values.to(scoring_dtype(values)).norm(dim=-1)
    return pool_value_norms(norms, layout, settings)


def van(
    keys: torch.Tensor, values: torch.Tensor, layout: VisualLayout, keep: int, settings: PolicySettings
) -> torch.Tensor:  # [heads, keep]
    """The recent frames, then the older tokens with the highest (pooled) value norm."""
    recent = recent_mask(layout, settings.recent_frames)
    check_recent_fits(recent, keep, "the budget", "raise --keep-ratio or lower --recent")
    return select_forced_then_topk(van_scores(values, layout, settings), recent, keep)
