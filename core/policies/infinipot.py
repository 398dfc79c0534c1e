"""InfiniPot-V: TaR picks a share of the budget (the recent frames first), VaN fills the rest.

Of the `keep` tokens, floor(tar_ratio * keep) are chosen by TaR: the recent frames whole, then
the least redundant older tokens. The remaining slots go to the tokens with the highest
(pooled) value norm among those TaR did not take. The reference code rounds the VaN share
instead ((1 - alpha) * C, rounded) and crashes when the recent frames do not fit; we floor the
TaR share and say what to change.
"""

from __future__ import annotations

import math

import torch

from infinipot.layout import VisualLayout
from infinipot.policies.base import PolicySettings, check_recent_fits, recent_mask, select_forced_then_topk
from infinipot.policies.tar import tar_scores
from infinipot.policies.van import van_scores


def tar_share(keep: int, tar_ratio: float) -> int:
    """How many of `keep` tokens TaR chooses (recent frames included): floor(tar_ratio * keep)."""
    # The tolerance keeps 0.29 * 100 = 28.999999999999996 from flooring to 28.
    return min(keep, math.floor(tar_ratio * keep + 1e-9))


def infinipot(
    keys: torch.Tensor, values: torch.Tensor, layout: VisualLayout, keep: int, settings: PolicySettings
) -> torch.Tensor:  # [heads, keep]
    """TaR (recent frames + least redundant older tokens), then VaN for the remaining slots."""
    recent = recent_mask(layout, settings.recent_frames)
    tar_keep = tar_share(keep, settings.tar_ratio)
    check_recent_fits(recent, tar_keep, "the TaR share", "raise --tar-ratio or --keep-ratio, or lower --recent")
    tar_kept = select_forced_then_topk(tar_scores(keys, layout, recent, settings), recent, tar_keep)
    taken = torch.zeros_like(recent).scatter_(1, tar_kept, True)
    return select_forced_then_topk(van_scores(values, layout, settings), taken, keep)
