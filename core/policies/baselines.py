"""Baselines: no compression, the sliding window, and evenly spaced tokens."""

from __future__ import annotations

from dataclasses import dataclass

from infinipot.lazy import torch

from infinipot.policies.base import LayerView, Policy


@dataclass(frozen=True)
class Full(Policy):
    name = "full"
    summary = "no compression: the accuracy ceiling (memory grows with the video)"
    compresses = False


@dataclass(frozen=True)
class Recent(Policy):
    name = "recent"
    summary = "a sliding window: the newest tokens"

    def select(self, layer: LayerView, keep: int, memory: dict) -> torch.Tensor:
        heads, tokens = layer.layout.frame.shape
        kept = torch.arange(tokens - keep, tokens, device=layer.keys.device)
        return kept.unsqueeze(0).expand(heads, keep).contiguous()


@dataclass(frozen=True)
class Uniform(Policy):
    name = "uniform"
    summary = "evenly spaced tokens over the cache"

    def select(self, layer: LayerView, keep: int, memory: dict) -> torch.Tensor:
        heads, tokens = layer.layout.frame.shape
        # floor(i * tokens / keep) is strictly increasing for keep <= tokens: unique and sorted.
        kept = torch.arange(keep, device=layer.keys.device) * tokens // keep
        return kept.unsqueeze(0).expand(heads, keep).contiguous()
