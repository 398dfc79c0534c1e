"""VaN (value norm): keep the tokens whose value vectors are largest, the semantically salient ones.

The score is each token's value L2 norm, optionally pooled over its neighbourhood (see
`pooling`). Pools are chosen with every layer's norms in hand (`cv` calibrates across layers),
so VaN overrides `compress`, not only `select`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from infinipot.lazy import torch

from infinipot.policies.base import LayerView, scoring_dtype
from infinipot.policies.pooling import QUARTILE_SCHEDULE, PoolPlan, check_pooling, pool_plans, pool_value_norms
from infinipot.policies.recent_frames import RecentFramesPolicy


def value_norms(values: torch.Tensor) -> torch.Tensor:  # [heads, tokens, dim] -> [heads, tokens]
    return values.to(scoring_dtype(values)).norm(dim=-1)


@dataclass(frozen=True)
class PooledNorms(RecentFramesPolicy):
    """A recent-frames policy that ranks (some of) its tokens by pooled value norm."""

    pooling: str = "none"
    cv_thresholds: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_pooling(self.pooling, self.cv_thresholds)

    def compress(self, layers: Sequence[LayerView], keep: int, memory: dict) -> list[torch.Tensor]:
        norms = [value_norms(layer.values) for layer in layers]
        plans = pool_plans(self.pooling, norms, self.cv_thresholds, memory)
        return [self.select(replace(layer, extras={**layer.extras, "norms": layer_norms, "pool": plan}), keep, memory)
                for layer, layer_norms, plan in zip(layers, norms, plans)]

    def van_scores(self, layer: LayerView, memory: dict) -> torch.Tensor:  # [heads, tokens]
        """Pooled value norms; the pool comes from `compress` (or, for one layer alone, from its own norms)."""
        norms = layer.extras.get("norms")
        if norms is None:
            norms = value_norms(layer.values)
        plan: PoolPlan | None = layer.extras.get("pool")
        if plan is None:
            if self.pooling == "quartile":
                plan = QUARTILE_SCHEDULE[min(3, layer.index * 4 // max(layer.num_layers, 1))]
            else:
                plan = pool_plans(self.pooling, [norms], self.cv_thresholds, dict(memory))[0]
        return pool_value_norms(norms, layer.layout, plan, layer.plan.grid)


@dataclass(frozen=True)
class Van(PooledNorms):
    name = "van"
    summary = "VaN alone: the recent frames, then the tokens with the largest (pooled) value norms"

    def score(self, layer: LayerView, recent: torch.Tensor, memory: dict) -> torch.Tensor:
        return self.van_scores(layer, memory)
