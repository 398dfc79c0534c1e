"""sink: the first frames of the stream, and the newest ones (StreamingLLM's attention sinks, on frames).

StreamingLLM (arXiv 2309.17453) keeps the first few tokens, which soak up attention whatever
they hold, plus a window of the newest. Here the unit is a frame: the `sink_frames` oldest
temporal steps still cached (after the first compression, the stream's first steps) are kept
whole, and the rest of the kept budget goes to the newest steps, whole, as in recent-frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infinipot.lazy import torch

from infinipot.errors import InfinipotError
from infinipot.policies.base import LayerView, Policy
from infinipot.policies.whole_frames import check_steps_fit, newest_first, whole_steps_keep

DEFAULT_SINK_FRAMES = 1


def oldest_frames(frame: torch.Tensor, count: int) -> torch.Tensor:  # [heads, tokens] bool
    """True for the tokens of each head's `count` oldest distinct frames."""
    mask = torch.zeros_like(frame, dtype=torch.bool)
    for head in range(frame.shape[0]):
        distinct = torch.unique(frame[head])  # sorted ascending
        if distinct.numel():
            mask[head] = frame[head] <= distinct[min(count, distinct.numel()) - 1]
    return mask


@dataclass(frozen=True)
class Sink(Policy):
    name = "sink"
    summary = "the first frames of the stream plus the newest (StreamingLLM's attention sinks, on frames)"
    sink_frames: int = DEFAULT_SINK_FRAMES

    def __post_init__(self) -> None:
        if not 0 < self.sink_frames <= 4096:
            raise InfinipotError(f"`sink_frames` must be between 1 and 4096, got {self.sink_frames}")

    def check(self, plan) -> None:
        check_steps_fit(plan, self.sink_frames + 1, f"{self.sink_frames} sink frames and one recent frame",
                        "raise `budget` or `keep_ratio`, or lower `sink_frames`")

    def compress(self, layers: Sequence[LayerView], keep: int, memory: dict) -> list[torch.Tensor]:
        whole = whole_steps_keep(keep, layers)
        return [self.select(layer, whole, memory) for layer in layers]

    def select(self, layer: LayerView, keep: int, memory: dict) -> torch.Tensor:
        sinks = oldest_frames(layer.layout.frame, self.sink_frames) & ~layer.layout.merged
        most = int(sinks.sum(dim=-1).max()) if sinks.numel() else 0
        if most > keep:
            raise InfinipotError(f"the {self.sink_frames} sink frames hold {most} tokens but only {keep} are kept: "
                                 "raise `budget` or `keep_ratio`, or lower `sink_frames`")
        return newest_first(layer, sinks, keep)
