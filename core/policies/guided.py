"""What the attention policies (HERMES, StreamMem) share: a guidance prompt's attention, min-max scaling, ranking.

The engine runs each prompt a policy names (`Policy.guidance`) over the cache before a
compression and hands every layer the attention of the prompt's tokens over its visual tokens,
averaged over the prompt's tokens and over the query heads of each KV head
(`LayerView.extras["guidance"]`, one `[kv_heads, tokens]` tensor per prompt; infinipot.streamer).
Both papers average over all heads, so every KV head of a layer keeps the same tokens.
"""

from __future__ import annotations

from infinipot.lazy import torch

from infinipot.policies.base import LayerView, MergedTokens, Selection

MINMAX_EPSILON = 1e-6  # as the HERMES code: (x - min) / (max - min + 1e-6)


def layer_attention(layer: LayerView, prompt: int) -> torch.Tensor:  # [tokens] float64
    """The `prompt`-th guidance prompt's attention over this layer's tokens, averaged over heads.

    A view without guidance (a policy called outside the engine) scores every token alike, so
    ties keep the earlier token; the engine always provides it.
    """
    attention = layer.extras.get("guidance")
    if not attention:
        return torch.zeros(layer.layout.tokens, dtype=torch.float64, device=layer.keys.device)
    return attention[prompt].to(torch.float64).mean(dim=0)


def minmax(scores: torch.Tensor) -> torch.Tensor:
    """Scores scaled to [0, 1) by their own range (flat scores become 0)."""
    if scores.numel() == 0:
        return scores
    low, high = scores.min(), scores.max()
    return (scores - low) / (high - low + MINMAX_EPSILON)


def top_in_time_order(scores: torch.Tensor, keep: int) -> torch.Tensor:  # [keep] long, ascending
    """The `keep` highest scores' slots in cache (time) order; ties go to the earlier token."""
    chosen = torch.sort(scores, descending=True, stable=True).indices[:keep]
    return torch.sort(chosen).values


def every_head(kept: torch.Tensor, heads: int) -> torch.Tensor:  # [keep] -> [heads, keep]
    return kept.unsqueeze(0).expand(heads, -1).contiguous()


def selection(kept: torch.Tensor, heads: int, merged: MergedTokens | None) -> Selection:
    """One layer's Selection: the same kept slots and merged tokens in every KV head."""
    return Selection(every_head(kept, heads), merged)
