"""The budgeted KV cache: transformers' DynamicCache plus the layout of its visual tokens.

Sequence layout of every layer: [prefix | visual tokens | question and answer]. The prefix
(system prompt up to the vision-start token) is never compressed and is outside the budget.
Visual tokens are compressed per layer and per KV head; the question part is appended for an
answer and truncated afterwards, so every question sees the same video cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from infinipot.layout import ChunkLayout, VisualLayout
from infinipot.policies import Policy, PolicySettings


@dataclass(frozen=True)
class CompressionResult:
    before: int  # visual tokens per head before
    after: int  # visual tokens per head after


class BudgetedCache:
    """A DynamicCache whose visual part is tracked token by token and can be compressed."""

    def __init__(self, num_layers: int, kv_heads: int, position_axes: int) -> None:
        self.kv = DynamicCache()
        self.num_layers = num_layers
        self.kv_heads = kv_heads
        self.position_axes = position_axes
        self.prefix_len = 0
        self.layouts = [VisualLayout.empty(kv_heads, position_axes) for _ in range(num_layers)]

    @classmethod
    def restore(cls, keys: list[torch.Tensor], values: list[torch.Tensor], layouts: list[VisualLayout],
                prefix_len: int) -> BudgetedCache:
        """A cache rebuilt from saved per-layer keys and values (`[1, heads, seq, dim]`) and layouts."""
        cache = cls(len(layouts), layouts[0].heads, layouts[0].position.shape[-1])
        for index, (layer_keys, layer_values) in enumerate(zip(keys, values)):
            cache.kv.update(layer_keys, layer_values, index)
        cache.layouts = [layout.to(layer_keys.device) for layout, layer_keys in zip(layouts, keys)]
        cache.prefix_len = prefix_len
        return cache

    @property
    def visual_tokens(self) -> int:
        """Cached visual tokens per KV head (every head holds the same number)."""
        return self.layouts[0].tokens

    @property
    def video_length(self) -> int:
        """Sequence length of prefix + visual tokens: where a question starts."""
        return self.prefix_len + self.visual_tokens

    def seq_length(self) -> int:
        return self.kv.get_seq_length()

    def mark_prefix(self) -> None:
        """Call after the prefix has been prefilled."""
        self.prefix_len = self.seq_length()

    def add_chunk(self, chunk: ChunkLayout) -> None:
        """Record the layout of a chunk that was just prefilled into every layer."""
        # Layouts live beside the keys (policies index keys with them), so a GPU cache keeps them on the GPU.
        device = self.kv.layers[0].keys.device
        fresh = VisualLayout.for_chunk(self.kv_heads, chunk).to(device)
        self.layouts = [layout.to(device).append(fresh) for layout in self.layouts]

    def compress(self, policy: Policy, keep: int, settings: PolicySettings) -> CompressionResult:
        """Keep `keep` visual tokens per layer and head, chosen by `policy`.

        Every layer is scored before any is pruned, so a policy that needs all layers' scores
        can be fitted here later without reordering the loop.
        """
        before = self.visual_tokens
        if self.seq_length() != self.video_length:
            raise RuntimeError("compress() called with question tokens in the cache")
        selections = []
        for index, layer in enumerate(self.kv.layers):
            keys = layer.keys[0, :, self.prefix_len :]  # [heads, visual, dim]
            values = layer.values[0, :, self.prefix_len :]
            layer_settings = PolicySettings(**{**settings.__dict__, "layer": index, "num_layers": self.num_layers})
            kept = policy(keys, values, self.layouts[index], keep, layer_settings)  # [heads, keep]
            selections.append(kept)
        for index, (layer, kept) in enumerate(zip(self.kv.layers, selections)):
            layer.keys = self._keep(layer.keys, kept)
            layer.values = self._keep(layer.values, kept)
            self.layouts[index] = self.layouts[index].gather(kept.to(self.layouts[index].frame.device))
        return CompressionResult(before=before, after=self.visual_tokens)

    def _keep(self, states: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """[1, heads, seq, dim] -> prefix + the kept visual tokens (seq = prefix + visual exactly)."""
        prefix = states[:, :, : self.prefix_len]
        visual = states[0, :, self.prefix_len :]  # [heads, visual, dim]
        heads, tokens, dim = visual.shape
        # index_select over flattened rows copies whole rows: much faster than an expanded gather.
        rows = (kept.to(states.device) + torch.arange(heads, device=states.device).unsqueeze(1) * tokens).reshape(-1)
        chosen = visual.reshape(heads * tokens, dim).index_select(0, rows).view(1, heads, -1, dim)
        return torch.cat([prefix, chosen], dim=2)

    def truncate(self, length: int) -> None:
        """Drop everything after the first `length` tokens (a question and its answer)."""
        for layer in self.kv.layers:
            layer.keys = layer.keys[:, :, :length]
            layer.values = layer.values[:, :, :length]

    def kv_bytes(self) -> int:
        return sum(layer.keys.nbytes + layer.values.nbytes for layer in self.kv.layers)
