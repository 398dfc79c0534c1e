"""LLaVA-OneVision and LLaVA-NeXT-Video: one frame at a time, 1-D RoPE positions.

A one-shot prompt is `prefix <video> x (frames * rows * cols [+ 1]) suffix`, every token one
position after the last. The vision tower encodes each frame on its own and pools it to a fixed
rows x cols grid (the processor resizes every frame to the tower's square), so frames can be
encoded chunk by chunk in any number (frame multiple 1):
- OneVision: SigLIP, bilinear 2x2 pooling to ceil(side / 2)^2 tokens (196 for 384/14), and ONE
  learned `image_newline` after the last frame of the whole video. A stream does not know its
  last frame, so the newline goes in front of the question (and is cropped with it), which is
  exactly what a one-shot prompt holds (DESIGN.md §4).
- NeXT-Video: CLIP without its CLS token, average-pooled by `spatial_pool_stride` (144 tokens
  for 336/14); nothing closes the video.

Positions are 1-D: the model was trained on `max_position_embeddings` of them (32K for the
Qwen2 OneVision models, 4K for Vicuna NeXT-Video), which a video at 196 tokens a frame fills in
minutes, so `compact` is the default position mode (infinipot.positions). Within one forward
the positions are always consecutive; transformers reads a jump there as a packed second
sequence and would mask across it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from infinipot.adapters.base import Adapter, EncodedChunk, PromptParts
from infinipot.adapters.geometry import llava_grid
from infinipot.errors import InfinipotError
from infinipot.layout import ChunkLayout

PLACEHOLDER_QUESTION = "?"
ANSWER_MARK = "@@infinipot-answer@@"  # markers for rendering a conversation template
QUESTION_MARK = "@@infinipot-question@@"
FAMILIES = ("llava_onevision", "llava_next_video")


class LlavaAdapter(Adapter):
    """Both LLaVA video families; they differ in pooling and in OneVision's closing newline."""

    position_axes = 1
    default_positions = "compact"

    def __init__(self, model, processor, model_id: str) -> None:
        super().__init__(model, processor, model_id)
        self.family = model.config.model_type
        if self.family not in FAMILIES:
            raise InfinipotError(f"{model_id} is a {self.family!r} model, not one of {', '.join(FAMILIES)}")
        self.video_token_id = int(model.config.video_token_id)
        self.closes_with_newline = self.family == "llava_onevision"
        self.grid = llava_grid(model.config)
        self._prefix_ids: torch.Tensor | None = None  # [1, prefix] long
        self._next_position = 0  # position of the next video token
        self._frames = 0  # frames streamed so far (the next frame's index)

    # --- geometry -------------------------------------------------------------------------
    def frame_multiple(self) -> int:
        return 1

    def tokens_per_frame(self, height: int, width: int) -> tuple[int, int]:
        return self.grid  # every frame is resized to the vision tower's square

    # --- prompt ---------------------------------------------------------------------------
    def _split_prompt(self, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids before and after the one <video> placeholder of the chat prompt. ([1, n], [1, m])

        The whole prompt is tokenised as the processor tokenises it (BOS included) and split at
        the placeholder id: tokenising the two halves apart would differ for Llama tokenizers,
        which prefix a word-start mark to the second half that the full prompt does not have.
        """
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = torch.tensor([self.tokenizer(text).input_ids], dtype=torch.long)
        where = (ids[0] == self.video_token_id).nonzero().flatten()
        if where.numel() != 1:
            raise InfinipotError(
                f"the chat template of {self.model_id} does not place exactly one video token: "
                "use the model's own processor files"
            )
        split = int(where[0])
        return ids[:, :split], ids[:, split + 1 :]

    def _positions(self, start: int, count: int) -> torch.Tensor:
        return (torch.arange(count, dtype=torch.long) + start).unsqueeze(0)  # [1, count]

    def begin_stream(self, sample_fps: float) -> PromptParts:
        prefix, _ = self._split_prompt(PLACEHOLDER_QUESTION)
        self._prefix_ids = prefix
        self._next_position = prefix.shape[1]
        self._frames = 0
        return PromptParts(prefix, self._positions(0, prefix.shape[1]))

    def question(self, text: str) -> PromptParts:
        if self._frames == 0:
            raise InfinipotError("no video has been streamed yet: stream a video before asking")
        prefix, suffix = self._split_prompt(text)
        if self._prefix_ids is not None and not torch.equal(prefix, self._prefix_ids):
            raise InfinipotError(
                f"the chat template of {self.model_id} changes the text before the video with the question: "
                "use the model's own processor files"
            )
        if self.closes_with_newline:  # the video token slot that embed_ids fills with image_newline
            suffix = torch.cat([torch.tensor([[self.video_token_id]]), suffix], dim=1)
        return PromptParts(suffix, self._positions(self._next_position, suffix.shape[1]))

    def next_positions(self, after: torch.Tensor, count: int) -> torch.Tensor:
        return self._positions(int(after.max()) + 1, count)

    def follow_up(self, text: str, start: torch.Tensor) -> PromptParts:
        """The chat template's own text between an answer and the next generation prompt.

        A two-turn conversation with marker strings is rendered and the text after the first
        answer's marker taken, so each family's turn format (OneVision's `<|im_end|>` turns,
        NeXT-Video's `USER:`/`ASSISTANT:`) comes from its template, not from code here.
        """
        messages = [
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PLACEHOLDER_QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": ANSWER_MARK}]},
            {"role": "user", "content": [{"type": "text", "text": QUESTION_MARK}]},
        ]
        rendered = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if rendered.count(ANSWER_MARK) != 1 or rendered.count(QUESTION_MARK) != 1:
            raise InfinipotError(f"the chat template of {self.model_id} cannot hold a conversation: ask single questions")
        tail = rendered.split(ANSWER_MARK, 1)[1].replace(QUESTION_MARK, text)
        ids = torch.tensor([self.tokenizer(tail, add_special_tokens=False).input_ids], dtype=torch.long)
        return PromptParts(ids, self._positions(int(start.max()), ids.shape[1]))

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings; for OneVision a video placeholder outside the video is the closing image_newline.

        Only `question` puts one there: the placeholder is a processor-only token the model never writes.
        """
        embeds = super().embed_ids(ids)  # [1, tokens, hidden]
        if not self.closes_with_newline:
            return embeds
        slots = (ids.to(embeds.device) == self.video_token_id).unsqueeze(-1)  # [1, tokens, 1]
        if not bool(slots.any()):
            return embeds
        newline = self.model.model.image_newline.to(embeds.device, embeds.dtype)  # [hidden]
        with torch.no_grad():
            return torch.where(slots, newline, embeds)

    # --- video ------------------------------------------------------------------------------
    def encode_chunk(self, frames: np.ndarray) -> EncodedChunk:
        processed = self.processor.video_processor(videos=[frames], return_tensors="pt", do_sample_frames=False)
        pixels = processed["pixel_values_videos"].to(self.device, self.dtype)  # [1, frames, 3, H, W]
        with torch.inference_mode():
            features = self.model.model.get_video_features(pixels).pooler_output  # [1, tokens (+1), hidden]
        rows, cols = self.grid
        count = len(frames) * rows * cols
        expected = count + (1 if self.closes_with_newline else 0)
        if features.shape[1] != expected:
            raise InfinipotError(
                f"{self.model_id} gave {features.shape[1]} video tokens for {len(frames)} frames, expected {expected}: "
                "the processor's frame size must match the vision tower's image_size"
            )
        layout = self._chunk_layout(self._frames, len(frames), self._next_position)
        self._frames += len(frames)
        self._next_position += count
        return EncodedChunk(features[:, :count].to(self.dtype), layout.position.T.contiguous(), layout)

    def _chunk_layout(self, first_frame: int, frames: int, first_position: int) -> ChunkLayout:
        rows, cols = self.grid
        frame, row, col = torch.meshgrid(
            torch.arange(first_frame, first_frame + frames), torch.arange(rows), torch.arange(cols), indexing="ij"
        )
        position = torch.arange(frames * rows * cols, dtype=torch.long) + first_position
        return ChunkLayout(frame.reshape(-1), row.reshape(-1), col.reshape(-1), position.unsqueeze(1))

    # --- positions ----------------------------------------------------------------------------
    def video_end_position(self, frames: int, grid: tuple[int, int]) -> int | None:
        rows, cols = grid
        closing = 1 if self.closes_with_newline else 0
        return self._prefix_len() + frames * rows * cols + closing - 1

    def _prefix_len(self) -> int:
        return 0 if self._prefix_ids is None else self._prefix_ids.shape[1]

    def rebase_positions(self, next_start: int, pending: EncodedChunk) -> EncodedChunk:
        count = pending.layout.tokens
        position = torch.arange(count, dtype=torch.long) + next_start  # [tokens]
        self._next_position = next_start + count
        layout = dataclasses.replace(pending.layout, position=position.unsqueeze(1))
        return dataclasses.replace(pending, positions=position.unsqueeze(0), layout=layout)

    # --- model ------------------------------------------------------------------------------
    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model.model.language_model(
                inputs_embeds=embeds.to(self.device),
                position_ids=positions.to(self.device),  # [axes=1, tokens] doubles as [batch=1, tokens]
                cache=cache,
                use_cache=True,
            )
            return self.model.lm_head(out.last_hidden_state[0, -1])

    def stream_state(self) -> dict:
        return {
            "prefix_ids": None if self._prefix_ids is None else self._prefix_ids[0].tolist(),
            "next_position": self._next_position,
            "frames": self._frames,
        }

    def restore_stream_state(self, state: dict) -> None:
        prefix = state["prefix_ids"]
        self._prefix_ids = None if prefix is None else torch.tensor([prefix], dtype=torch.long)
        self._next_position = int(state["next_position"])
        self._frames = int(state["frames"])
