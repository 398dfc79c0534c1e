"""Where each cached visual token came from: the metadata that travels beside the KV tensors.

Every KV head of every layer keeps its own set of visual tokens, so the layout is stored per
head. A token is identified by its frame (the temporal grid index the model sees: for Qwen one
index covers two video frames), its (row, col) cell in that frame's token grid, and the rotary
position its key was rotated with. Compression gathers the same indices from the KV tensors and
from the layout, so the two never drift apart.

Two kinds of cached tokens are not a frame's visual tokens: `merged` ones summarise several
(for merging policies), and `marker` ones are text a family writes between frames (Qwen3-VL's
`<t seconds>` and vision start/end), which belong to their frame (row = col = -1) and are kept
exactly while any of that frame's tokens is kept (docs/design.md, "Markers").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VisualLayout:
    """Per-head metadata for the cached visual tokens of one layer."""

    frame: torch.Tensor  # [heads, tokens] long: temporal grid index
    row: torch.Tensor  # [heads, tokens] long: cell row in the frame's token grid
    col: torch.Tensor  # [heads, tokens] long: cell column
    position: torch.Tensor  # [heads, tokens, axes] long: rotary position ids (axes=3 for M-RoPE, 1 for 1-D)
    merged: torch.Tensor  # [heads, tokens] bool: token summarises several (merging policies)
    marker: torch.Tensor  # [heads, tokens] bool: text between frames, kept with its frame

    @property
    def heads(self) -> int:
        return self.frame.shape[0]

    @property
    def tokens(self) -> int:
        return self.frame.shape[1]

    @classmethod
    def empty(cls, heads: int, axes: int, device: torch.device | str = "cpu") -> VisualLayout:
        long = dict(dtype=torch.long, device=device)
        return cls(
            frame=torch.empty(heads, 0, **long),
            row=torch.empty(heads, 0, **long),
            col=torch.empty(heads, 0, **long),
            position=torch.empty(heads, 0, axes, **long),
            merged=torch.empty(heads, 0, dtype=torch.bool, device=device),
            marker=torch.empty(heads, 0, dtype=torch.bool, device=device),
        )

    @classmethod
    def for_chunk(cls, heads: int, chunk: ChunkLayout) -> VisualLayout:
        """The same chunk layout for every head (a fresh chunk has not been compressed yet)."""

        def per_head(t: torch.Tensor) -> torch.Tensor:
            return t.unsqueeze(0).expand(heads, *t.shape).clone()

        count, device = chunk.frame.shape[0], chunk.frame.device
        marker = chunk.marker if chunk.marker is not None else torch.zeros(count, dtype=torch.bool, device=device)
        return cls(
            frame=per_head(chunk.frame),
            row=per_head(chunk.row),
            col=per_head(chunk.col),
            position=per_head(chunk.position),
            merged=torch.zeros(heads, count, dtype=torch.bool, device=device),
            marker=per_head(marker),
        )

    def append(self, other: VisualLayout) -> VisualLayout:
        return VisualLayout(
            frame=torch.cat([self.frame, other.frame], dim=1),
            row=torch.cat([self.row, other.row], dim=1),
            col=torch.cat([self.col, other.col], dim=1),
            position=torch.cat([self.position, other.position], dim=1),
            merged=torch.cat([self.merged, other.merged], dim=1),
            marker=torch.cat([self.marker, other.marker], dim=1),
        )

    def gather(self, kept: torch.Tensor) -> VisualLayout:
        """Keep `kept` ([heads, keep] token indices) for each head."""
        axes = self.position.shape[-1]
        return VisualLayout(
            frame=self.frame.gather(1, kept),
            row=self.row.gather(1, kept),
            col=self.col.gather(1, kept),
            position=self.position.gather(1, kept.unsqueeze(-1).expand(-1, -1, axes)),
            merged=self.merged.gather(1, kept),
            marker=self.marker.gather(1, kept),
        )

    def to(self, device: torch.device | str) -> VisualLayout:
        return VisualLayout(
            self.frame.to(device),
            self.row.to(device),
            self.col.to(device),
            self.position.to(device),
            self.merged.to(device),
            self.marker.to(device),
        )


@dataclass(frozen=True)
class ChunkLayout:
    """The layout of one freshly encoded chunk, in the order its tokens enter the cache."""

    frame: torch.Tensor  # [tokens] long
    row: torch.Tensor  # [tokens] long
    col: torch.Tensor  # [tokens] long
    position: torch.Tensor  # [tokens, axes] long
    marker: torch.Tensor | None = None  # [tokens] bool; None: no markers in this chunk

    @property
    def tokens(self) -> int:
        return self.frame.shape[0]
