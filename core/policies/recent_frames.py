"""The scaffold of the policies that keep the newest frames whole (TaR, VaN, InfiniPot-V).

r = max(1, floor(recent_ratio * frames the budget holds)) temporal steps are always kept; the
rest of the budget goes to the highest-scoring older tokens. Each subclass writes only `score`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from infinipot.lazy import torch

from infinipot.errors import InfinipotError
from infinipot.policies.base import LayerView, Policy, check_ratio, check_recent_fits, recent_mask
from infinipot.policies.base import select_forced_then_topk

if TYPE_CHECKING:
    from infinipot.budget import BudgetPlan

# The paper's r = 0.125 f (Sec. 4.1); the official code uses 0.25 (docs/design.md, "Deviations").
DEFAULT_RECENT_RATIO = 0.125


@dataclass(frozen=True)
class RecentFramesPolicy(Policy):
    recent_ratio: float = DEFAULT_RECENT_RATIO

    def __post_init__(self) -> None:
        check_ratio("recent_ratio", self.recent_ratio)

    def recent_frames(self, plan: BudgetPlan) -> int:
        """r, in temporal steps: a share of the steps the budget holds, at least one."""
        return max(1, int(self.recent_ratio * plan.budget_steps))

    def forced_room(self, keep: int) -> tuple[int, str]:
        """How many of `keep` tokens the recent frames may take, and what that share is called."""
        return keep, "the kept budget (`keep_ratio` x `budget`)"

    def check(self, plan: BudgetPlan) -> None:
        recent_tokens = self.recent_frames(plan) * plan.tokens_per_step
        room, what = self.forced_room(plan.keep_tokens)
        if recent_tokens > room:
            raise InfinipotError(
                f"the {self.recent_frames(plan)} recent frames hold {recent_tokens} tokens but {what} keeps only "
                f"{room}: raise {self.fix_settings()}, or lower `recent_ratio`"
            )

    def fix_settings(self) -> str:
        return "`keep_ratio` or `budget`"

    def select(self, layer: LayerView, keep: int, memory: dict) -> torch.Tensor:
        recent = recent_mask(layer.layout, self.recent_frames(layer.plan))
        room, what = self.forced_room(keep)
        check_recent_fits(recent, room, what, f"raise {self.fix_settings()}, or lower `recent_ratio`")
        return self.choose(layer, recent, keep, memory)

    def choose(self, layer: LayerView, recent: torch.Tensor, keep: int, memory: dict) -> torch.Tensor:
        """The recent frames, then the highest `score`s."""
        return select_forced_then_topk(self.score(layer, recent, memory), recent, keep)

    def score(self, layer: LayerView, recent: torch.Tensor, memory: dict) -> torch.Tensor:  # [heads, tokens]
        raise NotImplementedError
