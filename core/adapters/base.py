"""The adapter interface: everything that differs between model families, and nothing else.

An adapter turns prompt text and video frames into input embeddings with their exact rotary
positions, runs the language model over them into a cache, and tells the engine the geometry
of the KV cache. It never sees a policy or a budget.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from infinipot.adapters.geometry import kv_bytes_per_token
from infinipot.errors import InfinipotError
from infinipot.layout import ChunkLayout


@dataclass(frozen=True)
class EncodedChunk:
    """One chunk of frames, ready to prefill."""

    embeds: torch.Tensor  # [1, tokens, hidden]
    positions: torch.Tensor  # [axes, tokens] long
    layout: ChunkLayout


@dataclass(frozen=True)
class PromptParts:
    """A tokenised piece of the prompt with its positions."""

    ids: torch.Tensor  # [1, tokens] long
    positions: torch.Tensor  # [axes, tokens] long


class Adapter(ABC):
    """One model family. Holds the loaded model and processor and the position state of one stream."""

    family: str
    position_axes: int  # 3 for M-RoPE, 1 for 1-D RoPE
    default_positions: str = "original"  # position mode when the preset names none (DESIGN.md §2)

    def __init__(self, model: torch.nn.Module, processor, model_id: str) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model_id = model_id

    # --- geometry -------------------------------------------------------------------------
    @property
    def text_config(self):
        return self.model.config.get_text_config()

    @property
    def num_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def kv_heads(self) -> int:
        return self.text_config.num_key_value_heads

    @property
    def head_dim(self) -> int:
        config = self.text_config
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def kv_bytes_per_token(self) -> int:
        """Bytes one cached token costs across all layers and KV heads (keys and values)."""
        return kv_bytes_per_token(self.model.config, self.dtype)

    @abstractmethod
    def frame_multiple(self) -> int:
        """Frames per temporal token (chunks must hold a multiple of this many frames)."""

    @abstractmethod
    def tokens_per_frame(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of one temporal token grid for a video of this native size."""

    # --- prompt ---------------------------------------------------------------------------
    @abstractmethod
    def begin_stream(self, sample_fps: float) -> PromptParts:
        """Reset the position state for a new video and return the prompt prefix (never compressed)."""

    @abstractmethod
    def encode_chunk(self, frames: np.ndarray) -> EncodedChunk:
        """Encode the next frames of the stream (`[n, H, W, 3]` uint8) with their exact positions."""

    @abstractmethod
    def question(self, text: str) -> PromptParts:
        """The prompt suffix that closes the video and asks `text`, positioned after the video."""

    @abstractmethod
    def next_positions(self, after: torch.Tensor, count: int) -> torch.Tensor:
        """Positions `[axes, count]` of `count` text tokens following the token at `after` ([axes])."""

    def answer_position(self, prompt: PromptParts) -> torch.Tensor:
        """Position `[axes, 1]` of the first generated token, as the model's own `generate` places it."""
        return self.next_positions(prompt.positions[:, -1], 1)

    # --- compact positions (infinipot.positions) ----------------------------------------------
    def video_end_position(self, frames: int, grid: tuple[int, int]) -> int | None:
        """Largest position a one-shot prompt of `frames` frames of `grid` tokens gives before the question.

        Call after `begin_stream`. None when the family cannot foresee it (no window warning then).
        """
        return None

    def rebase_positions(self, next_start: int, pending: EncodedChunk) -> EncodedChunk:
        """After a compaction: continue the stream at `next_start` (axis 0 of the positions).

        `pending` was encoded but not yet prefilled; it comes back moved to start at `next_start`,
        and the chunks after it follow it.
        """
        raise InfinipotError(f"{self.family} has no compact positions: use --positions original")

    def rotary_embedding(self) -> torch.nn.Module:
        """The language model's rotary-embedding module (its inv_freq and rope type)."""
        return self.model.model.language_model.rotary_emb

    def follow_up(self, text: str, start: torch.Tensor) -> PromptParts:
        """The next chat turn: close the previous answer and ask `text`, the first token at `start` ([axes])."""
        raise InfinipotError(
            f"multi-turn chat is not available for {self.family} models yet: ask single questions with `infinipot ask`"
        )

    # --- model ------------------------------------------------------------------------------
    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids.to(self.device))

    @abstractmethod
    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """Run the language model over `embeds` into `cache`; return the last token's logits `[vocab]`."""

    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config):
            eos = getattr(source, "eos_token_id", None)
            if eos is not None:
                ids.update([eos] if isinstance(eos, int) else eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def stream_state(self) -> dict:
        """The position state of the stream, to save beside a cache."""
        return {}

    def restore_stream_state(self, state: dict) -> None:
        """Restore what `stream_state` returned."""
