"""HERMES (arXiv 2601.14724): the KV cache as a memory hierarchy, by layer depth.

Per layer, over its T cached video tokens (the prefix stays, outside the budget):
- recency R_i = minmax(exp(-k (T - 1 - i) / (T - 1))), i the token's slot (cache order is time order);
- attention A = minmax(attention of a fixed guidance prompt over the tokens, averaged over the
  prompt's tokens and all heads), the prompt asked at the next position like a question;
- score S = (1 - a) A + a R, with a and k set by depth: the shallowest 10% of layers a = 1,
  k = 20 (sensory memory: recency); the deepest 30% a = 0 (long-term memory: attention); in
  between, at depth p in [0, 1) within that band, a = 0.75 - 0.6 p, k = 20 - 12 p (`qwen`) or
  a = 1 - 0.9 p, k = 20 - 19.5 p (`llava`, the released LLaVA-OneVision code);
- smoothing from the top layer down: S~_l = (1 - λ) S_l + λ S~_{l+1}, λ = 0.1 / 0.3 / 0.4 for
  the shallow / middle / deep band of layer l;
- each layer keeps its top-scoring tokens in time order, the same in every KV head; a deep layer
  keeps one fewer and appends a summary token: value = mean of the evicted values, key = mean of
  the evicted keys each turned to the summary's position (infinipot.merging).
Dense re-indexing of positions is the stream's `compact` mode (the paper's "eager" re-indexing);
with `original` positions nothing is re-indexed (its "lazy" mode re-indexes only near the window,
which Qwen's time-based M-RoPE ids do not reach for hours; a warning says when they will).

Choices the paper leaves open, and ours (docs/design.md, "Policies"):
- The guidance prompts are the released code's three: a "local" one for the shallow band, a
  "global" one for the deep band and both joined for the middle band; that code also folds the
  last question and answer into them, which makes them question-dependent: we keep them fixed.
  They are asked as questions (the chat template closes the video first); the code appends raw text.
- Cross-layer smoothing matches tokens by identity (frame, row, col), not by slot: after the first
  compression layers keep different tokens, and the code's linear interpolation by slot mixes
  unrelated tokens. A token the layer above no longer holds, and every summary token, keeps its own score.
- The summary is made at the position after the layer's newest kept token (the code's rule),
  capped at the newest position cached so the stream's positions never move; its other M-RoPE
  axes are that kept token's. Earlier summaries compete like any token and, once evicted, enter
  the new summary with weight 1 like any evicted token (as the code does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infinipot.lazy import torch

from infinipot.errors import InfinipotError
from infinipot.policies.base import LayerView, MergedTokens, Policy, Selection
from infinipot.policies.guided import every_head, layer_attention, minmax, selection, top_in_time_order

LOCAL_PROMPT = ("Describe the current scene in detail, focusing on specific objects, fine-grained actions, "
                "and spatial relationships.")
GLOBAL_PROMPT = ("Summarize the video narrative, identifying main characters, key events, timeline changes, "
                 "and the overall theme.")
SHALLOW_TENTHS, DEEP_TENTHS = 1, 3  # the shallowest 10% and the deepest 30% of the layers
SMOOTHING = {"shallow": 0.1, "middle": 0.3, "deep": 0.4}
PROMPT_OF = {"shallow": 0, "deep": 1, "middle": 2}  # index into guidance()
SCHEDULES = ("qwen", "llava")


@dataclass(frozen=True)
class Band:
    kind: str  # shallow | middle | deep
    recency_weight: float  # a
    decay: float  # k


def layer_band(index: int, num_layers: int, schedule: str) -> Band:
    """The depth band of a layer and its recency weight and decay (the module docstring's schedule)."""
    # Integer arithmetic: the code's int(L * (1 - 0.3)) floors 62.99... for L = 90.
    shallow_end = num_layers * SHALLOW_TENTHS // 10
    deep_start = num_layers * (10 - DEEP_TENTHS) // 10
    if index < shallow_end:
        return Band("shallow", 1.0, 20.0)
    if index >= deep_start:
        return Band("deep", 0.0, 0.0)
    depth = (index - shallow_end) / (deep_start - shallow_end)
    if schedule == "llava":
        return Band("middle", 1.0 - 0.9 * depth, 20.0 - 19.5 * depth)
    return Band("middle", 0.75 - 0.6 * depth, 20.0 - 12.0 * depth)


def recency(tokens: int, decay: float, device) -> torch.Tensor:  # [tokens] float64
    slot = torch.arange(tokens, dtype=torch.float64, device=device)
    return minmax(torch.exp(-decay * (tokens - 1 - slot) / max(tokens - 1, 1)))


def identity(layer: LayerView) -> torch.Tensor:  # [tokens] long; -1 for merged tokens
    """Which frame cell each slot holds (head 0: every head of a HERMES layer holds the same tokens)."""
    layout = layer.layout
    key = (layout.frame[0] * 65536 + layout.row[0]) * 65536 + layout.col[0]
    return torch.where(layout.merged[0], torch.full_like(key, -1), key)


def matches(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of `lower`'s identities, its slot in `upper` and whether it is there (merged tokens never are)."""
    if upper.numel() == 0:
        return torch.zeros_like(lower), torch.zeros_like(lower, dtype=torch.bool)
    order = torch.argsort(upper)
    ranked = upper[order]
    where = torch.searchsorted(ranked, lower).clamp(max=ranked.numel() - 1)
    return order[where], (ranked[where] == lower) & (lower >= 0)


def summary_token(layer: LayerView, kept: torch.Tensor) -> MergedTokens:
    """One token summarising every evicted token: their mean value, and mean key at the summary's position."""
    layout, heads = layer.layout, layer.layout.heads
    evicted = torch.ones(layout.tokens, dtype=torch.bool, device=kept.device)
    evicted[kept] = False
    sources = evicted.nonzero().flatten()
    newest = kept[-1] if kept.numel() else torch.tensor(layout.tokens - 1, device=kept.device)
    position = layout.position[:, newest].clone()  # [heads, axes]
    position[:, 0] = torch.minimum(position[:, 0] + 1, layout.position[:, :, 0].max(dim=1).values)
    weights = torch.full((heads, 1, sources.numel()), 1.0 / sources.numel(), dtype=torch.float64)
    return MergedTokens(every_head(sources, heads).unsqueeze(1), weights, position.unsqueeze(1),
                        torch.full((heads, 1), -1, dtype=torch.long, device=position.device))


@dataclass(frozen=True)
class Hermes(Policy):
    name = "hermes"
    summary = "HERMES: recency in shallow layers, guidance-prompt attention in deep ones, deep-layer summary tokens"
    merges = True
    depth_schedule: str = "qwen"
    cross_layer_smoothing: bool = True
    summary_tokens: bool = True

    def __post_init__(self) -> None:
        if self.depth_schedule not in SCHEDULES:
            raise InfinipotError(f"unknown `depth_schedule` {self.depth_schedule!r}: choose one of "
                                 f"{', '.join(SCHEDULES)}")

    def guidance(self) -> tuple[str, ...]:
        return (LOCAL_PROMPT, GLOBAL_PROMPT, f"{LOCAL_PROMPT}; {GLOBAL_PROMPT}")

    def scores(self, layer: LayerView) -> torch.Tensor:  # [tokens] float64, before smoothing
        band = layer_band(layer.index, layer.num_layers, self.depth_schedule)
        attention = minmax(layer_attention(layer, PROMPT_OF[band.kind]))
        weight = band.recency_weight
        return (1 - weight) * attention + weight * recency(layer.layout.tokens, band.decay, attention.device)

    def smoothed(self, layers: Sequence[LayerView]) -> list[torch.Tensor]:
        """Every layer's scores, smoothed from the top layer down by token identity."""
        scores = [self.scores(layer) for layer in layers]
        if not self.cross_layer_smoothing:
            return scores
        for index in range(len(layers) - 2, -1, -1):
            lower, upper = layers[index], layers[index + 1]
            share = SMOOTHING[layer_band(lower.index, lower.num_layers, self.depth_schedule).kind]
            slot, found = matches(identity(lower), identity(upper).to(scores[index].device))
            if found.any():
                above = scores[index + 1][slot]
                scores[index] = torch.where(found, (1 - share) * scores[index] + share * above, scores[index])
        return scores

    def compress(self, layers: Sequence[LayerView], keep: int, memory: dict) -> list[Selection]:
        results = []
        for layer, scores in zip(layers, self.smoothed(layers)):
            tokens, heads = layer.layout.tokens, layer.layout.heads
            deep = layer_band(layer.index, layer.num_layers, self.depth_schedule).kind == "deep"
            if tokens <= keep or not (deep and self.summary_tokens):
                results.append(selection(top_in_time_order(scores, min(keep, tokens)), heads, None))
                continue
            kept = top_in_time_order(scores, keep - 1)
            results.append(selection(kept, heads, summary_token(layer, kept)))
        return results

    def select(self, layer: LayerView, keep: int, memory: dict) -> torch.Tensor:
        """One layer alone: its own scores (no smoothing, no summary), `keep` tokens in every head."""
        return every_head(top_in_time_order(self.scores(layer), keep), layer.layout.heads)
