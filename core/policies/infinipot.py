"""InfiniPot-V: TaR picks a share of the budget (the recent frames first), VaN fills the rest.

Of the `keep` tokens, floor(tar_ratio * keep) are chosen by TaR: the recent frames whole, then
the least redundant older tokens. The remaining slots go to the tokens with the highest
(pooled) value norm among those TaR did not take. The official code rounds the VaN share
instead ((1 - alpha) * C, rounded) and crashes when the recent frames do not fit; we floor the
TaR share and say what to change (docs/design.md, "Deviations").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from infinipot.lazy import torch

from infinipot.policies.base import LayerView, check_ratio, select_forced_then_topk
from infinipot.policies.tar import tar_scores
from infinipot.policies.van import PooledNorms

DEFAULT_TAR_RATIO = 0.5  # alpha, the paper's default


def tar_share(keep: int, tar_ratio: float) -> int:
    """How many of `keep` tokens TaR chooses (recent frames included): floor(tar_ratio * keep)."""
    # The tolerance keeps 0.29 * 100 = 28.999999999999996 from flooring to 28.
    return min(keep, math.floor(tar_ratio * keep + 1e-9))


@dataclass(frozen=True)
class Infinipot(PooledNorms):
    name = "infinipot"
    summary = "InfiniPot-V (default): TaR keeps the recent frames and what differs from them, VaN fills the rest"
    tar_ratio: float = DEFAULT_TAR_RATIO

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ratio("tar_ratio", self.tar_ratio)

    def forced_room(self, keep: int) -> tuple[int, str]:
        return tar_share(keep, self.tar_ratio), "the TaR share (`tar_ratio` x kept budget)"

    def fix_settings(self) -> str:
        return "`tar_ratio`, `keep_ratio` or `budget`"

    def choose(self, layer: LayerView, recent: torch.Tensor, keep: int, memory: dict) -> torch.Tensor:
        tar_keep = tar_share(keep, self.tar_ratio)
        scores = tar_scores(layer.keys, layer.layout, recent, layer.plan.grid)
        tar_kept = select_forced_then_topk(scores, recent, tar_keep)
        taken = torch.zeros_like(recent).scatter_(1, tar_kept, True)
        return select_forced_then_topk(self.van_scores(layer, memory), taken, keep)
