"""The budgeted KV cache: per-layer KV buffers plus the layout of their visual tokens.

Sequence layout of every layer: [prefix | visual tokens | question and answer]. The prefix
(system prompt up to the vision-start token) is never compressed and is outside the budget.
Visual tokens are compressed per layer and per KV head; the question part is appended for an
answer and truncated afterwards, so every question sees the same video cache. The cache is the
only thing that changes its tensors: compression, compaction and truncation are its methods.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache

from infinipot.kv_buffer import BufferLayer
from infinipot.layout import ChunkLayout, VisualLayout
from infinipot.merging import merged_rows, time_order
from infinipot.policies import LayerView, Policy
from infinipot.policies.base import Selection
from infinipot.rope import KeyRotator

LAYOUT_FIELDS = ("frame", "row", "col", "position", "merged", "marker")
# At most this share of the kept budget goes to marker tokens (a frame's timestamp text), so a
# long stream's many partly kept frames cannot crowd out the visual tokens (docs/design.md, "Markers").
MARKER_SHARE = 0.125


@dataclass(frozen=True)
class CompressionResult:
    before: int  # visual tokens per head before
    after: int  # visual tokens per head after


@contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run a compression on one CPU thread: its ops are many and small, and measured on a 2-core machine with
    other work running, two threads made a compression 2-5x slower (threads waiting on each other)
    than one did (docs/design.md, "Memory"). A GPU is left alone."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class LayoutStore:
    """One layer's `VisualLayout`, in buffers sized once like the KV buffers (same capacity logic)."""

    def __init__(self, heads: int, axes: int, capacity: int, device: torch.device | str = "cpu") -> None:
        self.length = 0
        self._buffers = VisualLayout(
            frame=torch.empty(heads, capacity, dtype=torch.long, device=device),
            row=torch.empty(heads, capacity, dtype=torch.long, device=device),
            col=torch.empty(heads, capacity, dtype=torch.long, device=device),
            position=torch.empty(heads, capacity, axes, dtype=torch.long, device=device),
            merged=torch.empty(heads, capacity, dtype=torch.bool, device=device),
            marker=torch.empty(heads, capacity, dtype=torch.bool, device=device),
        )

    @property
    def view(self) -> VisualLayout:
        return VisualLayout(*(getattr(self._buffers, name)[:, : self.length] for name in LAYOUT_FIELDS))

    @property
    def device(self) -> torch.device:
        return self._buffers.frame.device

    def _reserve(self, capacity: int) -> None:
        current = self._buffers.frame.shape[1]
        if capacity <= current:
            return
        size = max(capacity, 2 * current)
        grown = {}
        for name in LAYOUT_FIELDS:
            old = getattr(self._buffers, name)
            new = old.new_empty(old.shape[0], size, *old.shape[2:])
            new[:, : self.length] = old[:, : self.length]
            grown[name] = new
        self._buffers = VisualLayout(**grown)

    def append(self, fresh: VisualLayout) -> None:
        self._reserve(self.length + fresh.tokens)
        for name in LAYOUT_FIELDS:
            getattr(self._buffers, name)[:, self.length : self.length + fresh.tokens] = getattr(fresh, name)
        self.length += fresh.tokens

    def replace(self, layout: VisualLayout) -> None:
        """Hold `layout` (the same heads, at most as long as the capacity allows) from slot 0."""
        self.length = 0
        self.append(layout.to(self.device))

    def to(self, device: torch.device | str) -> None:
        self._buffers = self._buffers.to(device)


class BudgetedCache:
    """Per-layer KV buffers (a transformers Cache) whose visual part is tracked token by token."""

    def __init__(self, num_layers: int, kv_heads: int, position_axes: int, capacity: int = 1024) -> None:
        self.kv = Cache(layers=[BufferLayer(capacity) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.kv_heads = kv_heads
        self.position_axes = position_axes
        self.prefix_len = 0
        self.stores = [LayoutStore(kv_heads, position_axes, capacity) for _ in range(num_layers)]
        self._scratch: torch.Tensor | None = None  # rows gathered during a compression, reused

    @property
    def layers(self) -> list[BufferLayer]:
        return self.kv.layers

    @property
    def layouts(self) -> list[VisualLayout]:
        return [store.view for store in self.stores]

    @property
    def visual_tokens(self) -> int:
        """Cached visual tokens per KV head (every head holds the same number)."""
        return self.stores[0].length

    @property
    def video_length(self) -> int:
        """Sequence length of prefix + visual tokens: where a question starts."""
        return self.prefix_len + self.visual_tokens

    def seq_length(self) -> int:
        return self.layers[0].length

    def reserve(self, capacity: int) -> None:
        """Size every buffer for `capacity` tokens now, so a stream never re-allocates them."""
        for layer in self.layers:
            layer.reserve(capacity)
        for store in self.stores:
            store._reserve(capacity)

    def mark_prefix(self) -> None:
        """Call after the prefix has been prefilled."""
        self.prefix_len = self.seq_length()

    def add_chunk(self, chunk: ChunkLayout) -> None:
        """Record the layout of a chunk that was just prefilled into every layer."""
        # Layouts live beside the keys (policies index keys with them), so a GPU cache keeps them on the GPU.
        device = self.layers[0].keys.device
        fresh = VisualLayout.for_chunk(self.kv_heads, chunk).to(device)
        for store in self.stores:
            if store.device != device:
                store.to(device)
            store.append(fresh)

    def compress(self, policy: Policy, keep: int, plan, memory: dict, rotator: KeyRotator | None = None,
                 extras: Sequence[Mapping[str, Any]] | None = None) -> CompressionResult:
        with one_thread_on_cpu(self.layers[0].keys.device):
            return self._compress(policy, keep, plan, memory, rotator, extras)

    @torch.inference_mode()
    def _compress(self, policy: Policy, keep: int, plan, memory: dict, rotator: KeyRotator | None = None,
                  extras: Sequence[Mapping[str, Any]] | None = None) -> CompressionResult:
        """Keep at most `keep` tokens per layer and head: the policy's choice of visual tokens, with every
        layer in view, plus the markers of the frames still present (docs/design.md, "Markers").

        `extras` (one mapping per layer) are per-token values over the whole sequence, `[heads, seq]`
        or tuples of them (a guidance prompt's attention); each view gets its visual tokens' share.
        Tokens a merging policy builds are made with `rotator` and inserted in time order.
        """
        before = self.visual_tokens
        if self.seq_length() != self.video_length:
            raise RuntimeError("compress() called with question tokens in the cache")
        start = self.prefix_len
        layouts = [store.view for store in self.stores]
        marker_count = int(layouts[0].marker[0].sum())  # the same in every layer and head
        marker_room = min(marker_count, math.ceil(MARKER_SHARE * keep))
        # Per layer and head, the slots of the visual tokens (markers sit at other slots in each head).
        visual = [None if marker_count == 0 else (~layout.marker).nonzero()[:, 1].view(layout.heads, -1)
                  for layout in layouts]
        views = [self._view(layer, layout, index, plan, slots, extras[index] if extras else None)
                 for index, (layer, layout, slots) in enumerate(zip(self.layers, layouts, visual))]
        # Markers may take more of the cache than their share of what is kept: never ask for more visual tokens
        # than there are.
        results = policy.compress(views, min(keep - marker_room, layouts[0].tokens - marker_count), memory)
        selections = [result.kept if isinstance(result, Selection) else result for result in results]
        merged = [self._merged(view, result, rotator) for view, result in zip(views, results)]
        if len({kept.shape[1] + (0 if extra is None else extra[2].tokens)
                for kept, extra in zip(selections, merged)}) != 1:
            raise RuntimeError(f"policy {policy.name} kept different numbers of tokens in different layers")
        if marker_count:
            selections = self._with_markers(selections, layouts, visual, marker_room)
        for layer, store, layout, kept, extra in zip(self.layers, self.stores, layouts, selections, merged):
            layer.keep_rows(start, kept, self._scratch_for(layer, kept.numel()))
            kept_layout = layout.gather(kept.to(store.device))
            if extra is not None:
                kept_layout = self._insert(layer, kept_layout, *extra)
            store.replace(kept_layout)
        return CompressionResult(before=before, after=self.visual_tokens)

    def _view(self, layer: BufferLayer, layout: VisualLayout, index: int, plan, slots,
              extras: Mapping[str, Any] | None) -> LayerView:
        end = self.video_length

        def visual_part(tensor: torch.Tensor) -> torch.Tensor:  # [heads, seq, ...] -> [heads, visual, ...]
            part = tensor[:, self.prefix_len : end]
            if slots is None:
                return part
            index_ = slots.to(part.device)
            return part.gather(1, index_.view(*index_.shape, *([1] * (part.dim() - 2))).expand(
                -1, -1, *part.shape[2:]))

        if slots is not None:  # policies see a frame's visual tokens only
            layout = layout.gather(slots)
        own = {name: tuple(visual_part(t) for t in value) if isinstance(value, tuple) else visual_part(value)
               for name, value in (extras or {}).items()}
        return LayerView(visual_part(layer.keys[0]), visual_part(layer.values[0]), layout, index, self.num_layers,
                         plan, own)

    @staticmethod
    def _merged(view: LayerView, result, rotator: KeyRotator | None):
        """Keys, values and layout of the tokens a Selection merges in (None when it merges none)."""
        if not isinstance(result, Selection) or result.merged is None or result.merged.count == 0:
            return None
        if rotator is None:
            raise RuntimeError("a merging policy needs the model's rotary geometry: set `merges` on the policy")
        return merged_rows(view, result.merged, rotator)

    def _insert(self, layer: BufferLayer, layout: VisualLayout, keys: torch.Tensor, values: torch.Tensor,
                merged: VisualLayout) -> VisualLayout:
        """Append merged rows after the kept ones, then move them to their place in time."""
        layer.update(keys.unsqueeze(0), values.unsqueeze(0))
        layout = layout.append(merged)
        order = time_order(layout)
        if order is None:
            return layout
        layer.keep_rows(self.prefix_len, order, self._scratch_for(layer, order.numel()))
        return layout.gather(order)

    @staticmethod
    def _with_markers(selections: list[torch.Tensor], layouts: list[VisualLayout], visual: list[torch.Tensor],
                      room: int) -> list[torch.Tensor]:
        """Map the policy's picks to cache slots and add the markers of the frames that keep the most tokens.

        Markers are kept per frame, the same frames in every layer and head, so every head of every
        layer holds as many tokens; frames are taken by how many of their tokens are kept (all
        layers and heads; the newer frame first on a tie) while their markers fit in `room`.
        """
        slots = [layer_visual.gather(1, kept) for layer_visual, kept in zip(visual, selections)]  # [heads, keep]
        kept_frames = torch.cat([layout.frame.gather(1, kept).flatten() for layout, kept in zip(layouts, slots)])
        frames, counts = kept_frames.unique(return_counts=True)
        order = sorted(zip(counts.tolist(), frames.tolist()), reverse=True)
        first = layouts[0]
        marker_frames = first.frame[0, first.marker[0]]
        chosen, used = [], 0
        for _, frame in order:
            size = int((marker_frames == frame).sum())
            if used + size <= room:
                chosen.append(frame)
                used += size
        chosen_frames = torch.tensor(chosen, dtype=first.frame.dtype, device=first.frame.device)
        result = []
        for layout, kept in zip(layouts, slots):
            marker_slots = layout.marker & torch.isin(layout.frame, chosen_frames)  # [heads, tokens]
            extra = marker_slots.nonzero()[:, 1].view(layout.heads, -1)
            result.append(torch.cat([kept, extra], dim=1).sort(dim=1).values)
        return result

    def _scratch_for(self, layer: BufferLayer, rows: int) -> torch.Tensor:
        dim = max(layer.key_buffer.shape[-1], layer.value_buffer.shape[-1])
        scratch = self._scratch
        if (scratch is None or scratch.shape[0] < rows or scratch.shape[1] < dim
                or scratch.dtype != layer.key_buffer.dtype or scratch.device != layer.key_buffer.device):
            scratch = layer.key_buffer.new_empty(rows, dim)
            self._scratch = scratch
        return scratch

    def compact(self, rotator: KeyRotator) -> int:
        """See `_compact` (one CPU thread, as a compression)."""
        with one_thread_on_cpu(self.layers[0].keys.device):
            return self._compact(rotator)

    @torch.inference_mode()
    def _compact(self, rotator: KeyRotator) -> int:
        """Renumber every layer's kept visual tokens compactly, turn their keys; return the next free position.

        The prefix holds positions 0 .. prefix_len - 1 in every family, so the video restarts at
        prefix_len (docs/design.md, "Positions").
        """
        start = next_start = self.prefix_len
        for layer, store in zip(self.layers, self.stores):
            layout = store.view
            dense = rotator.renumber(layout.position, start)  # [heads, visual, axes], the family's rule
            visual = layer.keys[0, :, start:]  # [heads, visual, head_dim], a view of the buffer
            visual.copy_(rotator.rotate(visual, layout.position, dense))
            store.replace(dataclasses.replace(layout, position=dense))
            if dense.shape[1]:
                next_start = max(next_start, int(dense[..., 0].max()) + 1)
        return next_start

    def largest_position(self) -> int:
        """The largest position id (any axis) a cached visual token holds; prefix_len - 1 when none."""
        largest = self.prefix_len - 1
        for store in self.stores:
            if store.length:
                largest = max(largest, int(store.view.position.max()))
        return largest

    def drop_visual_after(self, visual_tokens: int) -> None:
        """Forget the visual tokens after the first `visual_tokens` (a rolled-back tentative chunk)."""
        self.truncate(self.prefix_len + visual_tokens)
        for store in self.stores:
            store.length = min(store.length, visual_tokens)

    def truncate(self, length: int) -> None:
        """Drop everything after the first `length` tokens (a question and its answer)."""
        for layer in self.layers:
            layer.truncate(length)

    def kv_bytes(self) -> int:
        return sum(layer.keys.nbytes + layer.values.nbytes for layer in self.layers)

    def export(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[VisualLayout]]:
        """Per-layer keys, values (`[1, heads, seq, dim]` views) and layouts, for saving."""
        return [l.keys for l in self.layers], [l.values for l in self.layers], self.layouts

    @classmethod
    def restore(cls, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], layouts: Sequence[VisualLayout],
                prefix_len: int, capacity: int) -> BudgetedCache:
        """A cache rebuilt from saved per-layer keys, values and layouts."""
        heads, axes = layouts[0].heads, layouts[0].position.shape[-1]
        cache = cls(len(layouts), heads, axes, max(capacity, keys[0].shape[-2]))
        for layer, store, layer_keys, layer_values, layout in zip(cache.layers, cache.stores, keys, values, layouts):
            layer.load(layer_keys, layer_values)
            store.to(layer_keys.device)
            store.replace(layout)
        cache.prefix_len = prefix_len
        return cache
