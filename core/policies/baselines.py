"""Baseline policies: the sliding window and evenly spaced tokens."""

from __future__ import annotations

import torch

from infinipot.layout import VisualLayout
from infinipot.policies.base import PolicySettings


def recent(
    keys: torch.Tensor, values: torch.Tensor, layout: VisualLayout, keep: int, settings: PolicySettings
) -> torch.Tensor:
    """Keep the newest `keep` tokens (a sliding window)."""
    heads, tokens = layout.frame.shape
    kept = torch.arange(tokens - keep, tokens, device=keys.device)
    return kept.unsqueeze(0).expand(heads, keep).contiguous()


def uniform(
    keys: torch.Tensor, values: torch.Tensor, layout: VisualLayout, keep: int, settings: PolicySettings
) -> torch.Tensor:
    """Keep `keep` tokens evenly spaced over the cache (the same slots for every head)."""
    heads, tokens = layout.frame.shape
    # floor(i * tokens / keep) is strictly increasing for keep <= tokens: unique and sorted.
    kept = torch.arange(keep, device=keys.device) * tokens // keep
    return kept.unsqueeze(0).expand(heads, keep).contiguous()
