"""KV storage that is allocated once: a transformers cache layer over fixed buffers.

transformers' DynamicLayer re-makes the whole cache with `torch.cat` on every forward; with
chunks arriving for hours and a compression every few chunks, that pattern fragments the heap
(glibc's arenas, the CUDA caching allocator) so a process whose cache is a few MiB grows by
GiB (docs/design.md, "Memory"). A `BufferLayer` is sized once for prefix + budget + the room a
question and answer need; new tokens are copied into place and compression compacts rows in
place. It grows (by doubling) only when something really needs more room: the `full` policy,
or an unusually long question.

Attention sees `keys`/`values` as views `[1, heads, length, dim]` of the buffers: exactly the
tokens a DynamicLayer would hold, in the same order.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class BufferLayer(DynamicLayer):
    """A cache layer whose keys and values live in buffers `[1, heads, capacity, dim]`."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = max(1, capacity)
        self.length = 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, dim = key_states.shape
        self.device = key_states.device
        self.key_buffer = key_states.new_empty(batch, heads, self.capacity, dim)
        self.value_buffer = value_states.new_empty(batch, heads, self.capacity, value_states.shape[-1])
        self.is_initialized = True
        self._refresh()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        count = key_states.shape[-2]
        self.reserve(self.length + count)
        self.key_buffer[:, :, self.length : self.length + count].copy_(key_states)
        self.value_buffer[:, :, self.length : self.length + count].copy_(value_states)
        self.length += count
        self._refresh()
        return self.keys, self.values

    def reserve(self, capacity: int) -> None:
        """Make room for `capacity` tokens (the only place a buffer is ever re-allocated)."""
        if capacity <= self.capacity:
            return
        self.capacity = max(capacity, 2 * self.capacity)
        if self.key_buffer is None:
            return
        for name in ("key_buffer", "value_buffer"):
            old = getattr(self, name)
            grown = old.new_empty(*old.shape[:2], self.capacity, old.shape[-1])
            grown[:, :, : self.length].copy_(old[:, :, : self.length])
            setattr(self, name, grown)
        self._refresh()

    def _refresh(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def get_seq_length(self) -> int:
        return self.length

    def truncate(self, length: int) -> None:
        """Forget every token from `length` on (the buffers keep their size)."""
        self.length = min(self.length, max(0, length))
        if self.is_initialized:
            self._refresh()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0:
            self.truncate(self.length + tokens_to_remove)

    @torch.inference_mode()
    def keep_rows(self, start: int, kept: torch.Tensor, scratch: torch.Tensor) -> None:
        """Compact in place: of the tokens from `start`, keep `kept` (`[heads, keep]`, distinct) per head.

        Tokens before `start` (the prefix) stay; the kept ones move to start, start + 1, ... in
        the order given (sorted keeps cache order; a permutation reorders), and the layer ends
        there. `scratch` is a reusable `[>= heads * keep, dim]` buffer: rows are gathered into it
        and copied back, so nothing the size of the cache is allocated. The copy back is one strided
        copy (each head's kept rows land on a contiguous run), several times faster than index_copy_.
        """
        heads, keep = kept.shape
        for buffer in (self.key_buffer, self.value_buffer):
            dim = buffer.shape[-1]
            flat = buffer[0].view(heads * self.capacity, dim)  # rows of every head
            base = torch.arange(heads, device=flat.device).unsqueeze(1) * self.capacity  # [heads, 1]
            source = (kept.to(flat.device) + start + base).reshape(-1)
            rows = scratch[: heads * keep, :dim]
            torch.index_select(flat, 0, source, out=rows)
            buffer[0, :, start : start + keep].copy_(rows.view(heads, keep, dim))
        self.length = start + keep
        self._refresh()

    @torch.inference_mode()
    def load(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Fill an empty layer with saved keys and values (`[1, heads, seq, dim]`)."""
        self.capacity = max(self.capacity, keys.shape[-2])
        self.length = 0
        self.lazy_initialization(keys, values)
        self.update(keys, values)
