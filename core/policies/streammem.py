"""StreamMem (arXiv 2508.15717): attention from the chat template's answer turn, plus one prototype per new frame.

- Proxy query: the tokens that close the video and open the model's answer turn
  (`<|vision_end|><|im_end|>\\n<|im_start|>assistant\\n` for Qwen), asked at the next position
  like a question with no text; their attention over the cached visual tokens (old and new),
  averaged over the proxy's tokens and all heads, is each token's importance in that layer.
- Each layer keeps its most important tokens, the same in every KV head, in time order.
- Every frame that arrived since the last compression gets one prototype token: key and value
  are the frame's keys (each turned to the prototype's position) and values, weighted by the
  frame's importances normalised to sum to 1. Prototypes count in the budget.

Choices the paper leaves open, and ours (docs/design.md, "Policies"):
- Importance is averaged over all heads (top-k per layer), not per KV head.
- The proxy is what the model's own chat template writes after the video when the question is
  empty (derived per family, so it also fits LLaVA's templates).
- A prototype is made at the position of its frame's middle token (in cache order); at most
  half the kept budget goes to prototypes (the newest frames get them first), and once made
  they compete for the budget like any token. Which frames are new is kept in the policy memory.
- The paper compresses after every clip; here compression runs when the budget is reached, as
  for every policy, and a clip is everything streamed since the last compression.
- Not done: the input filter that averages consecutive frames with embedding cosine > 0.95 (it
  changes what is prefilled, not what is kept, and `compare` feeds every policy the same
  encoding), and YaRN position extension (compact positions keep positions in range instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infinipot.lazy import torch

from infinipot.policies.base import LayerView, MergedTokens, Policy, Selection
from infinipot.policies.guided import every_head, layer_attention, selection, top_in_time_order

PROXY_QUERY = ""  # a question with no text: the chat template's closing of the video and its answer turn
LAST_FRAME = "streammem_last_frame"  # policy memory: the newest frame at the last compression


def new_frames(layer: LayerView, after: int, most: int) -> list[int]:
    """The newest `most` frames after frame `after` (visual tokens of head 0), oldest first."""
    layout = layer.layout
    frames = torch.unique(layout.frame[0][~layout.merged[0] & (layout.frame[0] > after)])
    return frames[-most:].tolist() if most > 0 else []


def prototypes(layer: LayerView, importance: torch.Tensor, frames: list[int]) -> MergedTokens | None:
    """One token per frame: its keys and values weighted by normalised importance."""
    if not frames:
        return None
    layout, heads = layer.layout, layer.layout.heads
    visual = ~layout.merged[0]
    members = [(visual & (layout.frame[0] == frame)).nonzero().flatten() for frame in frames]
    width = max(member.numel() for member in members)
    sources = torch.zeros(len(frames), width, dtype=torch.long, device=importance.device)
    weights = torch.zeros(len(frames), width, dtype=torch.float64, device=importance.device)
    for index, member in enumerate(members):
        share = importance[member]
        total = share.sum()
        sources[index, : member.numel()] = member
        weights[index, : member.numel()] = share / total if total > 0 else 1.0 / member.numel()
    middles = torch.stack([member[member.numel() // 2] for member in members])
    position = layout.position[:, middles]  # [heads, frames, axes]
    frame = torch.tensor(frames, dtype=torch.long, device=position.device)
    return MergedTokens(sources.unsqueeze(0).expand(heads, -1, -1).contiguous(),
                        weights.unsqueeze(0).expand(heads, -1, -1).contiguous(), position,
                        frame.unsqueeze(0).expand(heads, -1).contiguous())


@dataclass(frozen=True)
class StreamMem(Policy):
    name = "streammem"
    summary = "StreamMem: attention from the chat template's answer turn, plus one prototype token per new frame"
    merges = True
    frame_prototypes: bool = True

    def guidance(self) -> tuple[str, ...]:
        return (PROXY_QUERY,)

    def compress(self, layers: Sequence[LayerView], keep: int, memory: dict) -> list[Selection]:
        after = int(memory.get(LAST_FRAME, -1))
        frames = new_frames(layers[0], after, keep // 2) if self.frame_prototypes else []
        results = []
        for layer in layers:
            importance = layer_attention(layer, 0)
            if layer.layout.tokens <= keep:
                results.append(selection(top_in_time_order(importance, layer.layout.tokens),
                                         layer.layout.heads, None))
                continue
            kept = top_in_time_order(importance, keep - len(frames))
            results.append(selection(kept, layer.layout.heads, prototypes(layer, importance, frames)))
        visual = ~layers[0].layout.merged[0]
        if bool(visual.any()):
            memory[LAST_FRAME] = max(after, int(layers[0].layout.frame[0][visual].max()))
        return results

    def select(self, layer: LayerView, keep: int, memory: dict) -> torch.Tensor:
        """One layer alone: its most attended tokens (no prototypes), `keep` in every head."""
        return every_head(top_in_time_order(layer_attention(layer, 0), keep), layer.layout.heads)
