"""The adapter interface: everything that differs between model families, and nothing else.

An adapter is a stateless translator for one loaded model: it turns prompt text and video
frames into input embeddings with their exact rotary positions and runs the language model
over them into a cache. Where a stream stands (the next temporal step, the largest position so
far, ...) lives in a `PositionState` the session owns and passes in, so one loaded model can
serve several sessions, one after another or interleaved (docs/design.md, "Program shape").
An adapter never sees a policy or a budget.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from infinipot.errors import InfinipotError
from infinipot.layout import ChunkLayout


ANSWER_MARK = "@@infinipot-answer@@"  # markers for rendering a conversation template
QUESTION_MARK = "@@infinipot-question@@"


@dataclass(frozen=True)
class EncodedChunk:
    """One chunk of frames, ready to prefill."""

    embeds: torch.Tensor  # [1, tokens, hidden]
    positions: torch.Tensor  # [axes, tokens] long
    layout: ChunkLayout
    # Per-chunk inputs the language model needs beyond embeddings (Qwen3-VL's DeepStack features).
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptParts:
    """A tokenised piece of the prompt with its positions."""

    ids: torch.Tensor  # [1, tokens] long
    positions: torch.Tensor  # [axes, tokens] long


@dataclass
class PositionState:
    """Where a stream stands, as far as positions go. Owned by the session, saved with the cache."""

    prefix_len: int  # tokens of the prompt prefix, positions 0 .. prefix_len - 1
    largest: int  # largest position id (any axis) of the video so far: text resumes at largest + 1
    steps: int = 0  # temporal steps streamed (the next step's index)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Adapter(ABC):
    """One model family around one loaded model and its processor."""

    family: ClassVar[str]
    position_axes: ClassVar[int]  # 3 for M-RoPE, 1 for 1-D RoPE
    default_positions: ClassVar[str] = "original"  # position mode when the settings name none
    state_class: ClassVar[type[PositionState]] = PositionState

    def __init__(self, model: torch.nn.Module, processor, model_id: str) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model_id = model_id

    # --- geometry, from the config and processor alone (no weights) ---------------------------
    @classmethod
    @abstractmethod
    def token_grid(cls, config, processor, height: int, width: int, min_pixels: int | None,
                   max_pixels: int | None) -> tuple[int, int]:
        """(rows, cols) of one temporal step's tokens for frames of this native size."""

    @classmethod
    @abstractmethod
    def frame_multiple(cls, config, processor) -> int:
        """Video frames per temporal step (chunks hold a multiple of this many frames)."""

    # --- the loaded model ---------------------------------------------------------------------
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

    def rotary_embedding(self) -> torch.nn.Module:
        """The language model's rotary-embedding module (its inv_freq and rope type)."""
        return self.model.model.language_model.rotary_emb

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids.to(self.device))

    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config):
            eos = getattr(source, "eos_token_id", None)
            if eos is not None:
                ids.update([eos] if isinstance(eos, int) else eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    # --- a stream -------------------------------------------------------------------------------
    @abstractmethod
    def begin(self, sample_fps: float) -> tuple[PositionState, PromptParts]:
        """A fresh stream's position state and its prompt prefix (never compressed)."""

    @abstractmethod
    def encode(self, frames: np.ndarray, state: PositionState) -> EncodedChunk:
        """Encode the stream's next frames (`[n, H, W, 3]` uint8) at their exact positions; advances `state`."""

    def marker_tokens(self, frames: int, state: PositionState) -> int:
        """Text tokens a chunk of `frames` frames brings besides its visual tokens (Qwen3-VL's timestamps)."""
        return 0

    @classmethod
    def marker_tokens_per_step(cls, config, processor) -> int:
        """The most `marker_tokens` one temporal step brings, for the budget plan (no weights needed)."""
        return 0

    @abstractmethod
    def question_ids(self, text: str, state: PositionState) -> torch.Tensor:
        """Token ids `[1, n]` that close the video and ask `text`, ending with the answer prompt."""

    def question(self, text: str, state: PositionState) -> PromptParts:
        """The question, starting one past the largest position so far on every axis (the training rule)."""
        if state.steps == 0:
            raise InfinipotError("no video has been streamed yet: stream a video before asking")
        ids = self.question_ids(text, state)
        return PromptParts(ids, self.text_positions(state.largest + 1, ids.shape[1]))

    def video_prompt(self, question: str) -> str:
        """The chat template's text for one user turn of a video and `question`, ready for the answer."""
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def split_at_video(self, text: str, *placeholders: str) -> tuple[str, str]:
        """`text` before and after the video: at the first of `placeholders` that occurs exactly once
        (the processor replaces that whole string); a template placing none of them once is refused."""
        placeholder = next((mark for mark in placeholders if text.count(mark) == 1), None)
        if placeholder is None:
            raise InfinipotError(f"the chat template of {self.model_id} does not place exactly one {placeholders[-1]}: "
                                 "use the model's own processor files")
        before, after = text.split(placeholder)
        return before, after

    def template_follow_up(self, text: str) -> str:
        """The chat template's own text between an answer and the next generation prompt, asking `text`.

        A two-turn conversation with marker strings is rendered and the text after the first
        answer's marker taken, so each family's turn format (`<|im_end|>` turns, Vicuna's
        `USER:`/`ASSISTANT:`) comes from its template, not from code here.
        """
        messages = [
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": ANSWER_MARK}]},
            {"role": "user", "content": [{"type": "text", "text": QUESTION_MARK}]},
        ]
        rendered = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if rendered.count(ANSWER_MARK) != 1 or rendered.count(QUESTION_MARK) != 1:
            raise InfinipotError(f"the chat template of {self.model_id} cannot hold a conversation: ask single questions")
        return rendered.split(ANSWER_MARK, 1)[1].replace(QUESTION_MARK, text)

    def follow_up(self, text: str, start: int) -> PromptParts:
        """The next chat turn: close the previous answer and ask `text`, the first token at `start`."""
        raise InfinipotError(
            f"multi-turn chat is not available for {self.family} models: ask single questions with `infinipot ask`"
        )

    def text_positions(self, start: int, count: int) -> torch.Tensor:
        """Positions `[axes, count]` of `count` text tokens from `start` (every axis alike)."""
        return (torch.arange(count, dtype=torch.long) + start).unsqueeze(0).expand(self.position_axes, count).contiguous()

    def restart_at(self, next_start: int, state: PositionState) -> None:
        """Compact positions: the stream's next chunk starts at `next_start` on axis 0 (after a compaction).

        `state.largest` already holds the largest position left in the cache.
        """
        raise InfinipotError(f"{self.family} has no compact positions: use `positions` original")

    @classmethod
    def video_span(cls, config, processor, frames: int, grid: tuple[int, int], sample_fps: float) -> int:
        """Largest position offset from the video's first position that `frames` frames reach in one prompt."""
        raise NotImplementedError

    def state_from_dict(self, data: dict) -> PositionState:
        names = {f.name for f in dataclasses.fields(self.state_class)}
        missing = names - set(data)
        if missing:
            raise InfinipotError(f"the saved stream state lacks {', '.join(sorted(missing))}: compress the video again")
        return self.state_class(**{key: data[key] for key in names})

    # --- the language model ---------------------------------------------------------------------
    @abstractmethod
    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache, extras: dict | None = None
                ) -> torch.Tensor:
        """Run the language model over `embeds` into `cache`; return the last token's logits `[vocab]`."""

    def guidance_attention(self, prompt: PromptParts, cache) -> list[torch.Tensor]:
        """Per layer, how much `prompt`'s tokens attend to each cached token: `[kv_heads, cached]` float32.

        The prompt is run over `cache` like a question (its tokens are appended: the caller
        truncates them), and at every layer the softmax attention of its post-RoPE queries over
        all keys (causal among the prompt's own tokens) is averaged over the prompt's tokens and
        over the query heads that share each KV head (docs/design.md, "Policies"). The queries
        are recomputed in a forward hook from the attention module's own input, projection,
        optional q_norm and rotary embedding, so the fast attention kernels stay in use; a test
        checks the result against transformers' eager attention weights.
        """
        layers = self.model.model.language_model.layers
        captured: dict[int, torch.Tensor] = {}
        handles = [layer.self_attn.register_forward_hook(_attention_catcher(cache, captured), with_kwargs=True)
                   for layer in layers]
        try:
            self.forward(self.embed_ids(prompt.ids), prompt.positions, cache)
        finally:
            for handle in handles:
                handle.remove()
        return [captured[index] for index in range(len(layers))]


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes one cached token costs across all layers and KV heads (keys and values)."""
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    itemsize = torch.empty((), dtype=dtype).element_size()
    return text.num_hidden_layers * text.num_key_value_heads * head_dim * 2 * itemsize


def _attention_catcher(cache, captured: dict[int, torch.Tensor]):
    """A forward hook for an attention module that stores its prompt's mean attention per KV head."""

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # [1, new, hidden]
        cos, sin = kwargs["position_embeddings"]  # [1, new, head_dim]
        batch, new, _ = hidden.shape
        query = module.q_proj(hidden).view(batch, new, -1, module.head_dim)
        if getattr(module, "q_norm", None) is not None:  # Qwen3: RMS norm per head before RoPE
            query = module.q_norm(query)
        query = query.transpose(1, 2).float()  # [1, heads, new, dim]
        half = query.shape[-1] // 2
        turned = torch.cat((-query[..., half:], query[..., :half]), dim=-1)
        query = query * cos.unsqueeze(1).float() + turned * sin.unsqueeze(1).float()
        keys = cache.layers[module.layer_idx].keys.float()  # [1, kv_heads, cached + new, dim]
        kv_heads, length = keys.shape[1], keys.shape[2]
        grouped = query.view(kv_heads, -1, new, query.shape[-1])  # [kv_heads, group, new, dim]
        logits = grouped @ keys[0].unsqueeze(1).transpose(-1, -2) * module.scaling  # [kv, group, new, length]
        first = length - new  # the prompt's own tokens: causal among themselves
        future = torch.arange(length, device=keys.device) > (torch.arange(new, device=keys.device) + first)[:, None]
        weights = logits.masked_fill(future, float("-inf")).softmax(dim=-1)
        captured[module.layer_idx] = weights.mean(dim=(1, 2))  # [kv_heads, length]

    return hook
