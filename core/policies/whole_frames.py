"""recent-frames: the newest frames whole, as many as the kept budget holds (SimpleStream's baseline).

SimpleStream (arXiv 2604.02317) feeds an unmodified model the last N frames and nothing else,
and with N = 4 it beats every memory method on OVO-Bench and StreamingBench, where recent
perception dominates. Unlike `recent` (a window of tokens, which cuts a frame in two), this keeps
whole temporal steps: floor(keep / p) of them, p tokens each; the keep mod p slots left over stay
empty, so the cache holds a little less than the kept budget (docs/design.md, "Policies").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infinipot.lazy import torch

from infinipot.errors import InfinipotError
from infinipot.policies.base import LayerView, Policy, select_forced_then_topk


def whole_steps_keep(keep: int, layers: Sequence[LayerView]) -> int:
    """Tokens of the whole temporal steps `keep` holds (p = the plan's tokens per step)."""
    per_step = layers[0].plan.tokens_per_step if layers else 1
    return keep // per_step * per_step


def newest_first(layer: LayerView, forced: torch.Tensor, keep: int) -> torch.Tensor:  # [heads, keep]
    """The `forced` tokens, then the newest frames' tokens (a frame's tokens in cache order)."""
    return select_forced_then_topk(layer.layout.frame.to(torch.float64), forced, keep)


def check_steps_fit(plan, steps: int, what: str, fix: str) -> None:
    """Refuse a kept budget that cannot hold `steps` whole temporal steps."""
    need = steps * plan.tokens_per_step
    if plan.keep_tokens < need:
        raise InfinipotError(f"{what} need {need} tokens ({steps} frames of {plan.tokens_per_step}) but the kept "
                             f"budget (`keep_ratio` x `budget`) is {plan.keep_tokens}: {fix}")


@dataclass(frozen=True)
class RecentWholeFrames(Policy):
    name = "recent-frames"
    summary = "the newest frames whole, as many as fit (SimpleStream's baseline)"

    def check(self, plan) -> None:
        check_steps_fit(plan, 1, "recent-frames", "raise `budget` or `keep_ratio`")

    def compress(self, layers: Sequence[LayerView], keep: int, memory: dict) -> list[torch.Tensor]:
        whole = whole_steps_keep(keep, layers)
        return [self.select(layer, whole, memory) for layer in layers]

    def select(self, layer: LayerView, keep: int, memory: dict) -> torch.Tensor:
        return newest_first(layer, torch.zeros_like(layer.layout.merged), keep)
