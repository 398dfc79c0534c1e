"""LLaVA-OneVision and LLaVA-NeXT-Video: one frame at a time, 1-D RoPE positions.

A one-shot prompt is `prefix <video> x (frames * rows * cols [+ 1]) suffix`, every token one
position after the last. The vision tower encodes each frame on its own and pools it to a fixed
rows x cols grid (the processor resizes every frame to the tower's square), so frames can be
encoded chunk by chunk in any number (frame multiple 1):
- OneVision: SigLIP, bilinear 2x2 pooling to ceil(side / 2)^2 tokens (196 for 384/14), and ONE
  learned `image_newline` after the last frame of the whole video. A stream does not know its
  last frame, so the newline goes in front of the question (and is cropped with it), which is
  exactly what a one-shot prompt holds (docs/design.md, "Families").
- NeXT-Video: CLIP without its CLS token, average-pooled by `spatial_pool_stride` (144 tokens
  for 336/14); nothing closes the video.

Positions are 1-D: the model was trained on `max_position_embeddings` of them (32K for the
Qwen2 OneVision models, 4K for Vicuna NeXT-Video), which a video at 196 tokens a frame fills in
minutes, so `compact` is the default position mode (docs/design.md, "Positions"). Within one forward
the positions are always consecutive; transformers reads a jump there as a packed second
sequence and would mask across it.
"""


from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from infinipot.adapters.base import Adapter, EncodedChunk, PositionState, PromptParts
from infinipot.errors import InfinipotError
from infinipot.layout import ChunkLayout

PLACEHOLDER_QUESTION = "?"


@dataclass
class LlavaPositions(PositionState):
    prefix_ids: tuple[int, ...] = ()  # the prompt prefix, to check a question's template agrees


def llava_grid(config) -> tuple[int, int]:
    """(rows, cols) of one frame after the family's pooling; every frame is resized to the tower's square."""
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    if config.model_type == "llava_onevision":  # bilinear pooling to ceil(side / 2)
        pooled = math.ceil(side / 2)
    else:  # LLaVA-NeXT-Video: average pooling with kernel = stride
        pooled = side // config.spatial_pool_stride
    return pooled, pooled


class LlavaAdapter(Adapter):
    """Both LLaVA video families; they differ in pooling and in OneVision's closing newline."""

    position_axes = 1
    default_positions = "compact"
    state_class = LlavaPositions
    closes_with_newline = False

    def __init__(self, model, processor, model_id: str, min_pixels: int | None = None,
                 max_pixels: int | None = None) -> None:
        super().__init__(model, processor, model_id)  # frames are resized to the tower's square: no pixel limits
        self.video_token_id = int(model.config.video_token_id)
        self.grid = llava_grid(model.config)

    @classmethod
    def token_grid(cls, config, processor, height, width, min_pixels, max_pixels) -> tuple[int, int]:
        return llava_grid(config)

    @classmethod
    def frame_multiple(cls, config, processor) -> int:
        return 1

    # --- prompt ---------------------------------------------------------------------------
    def _split_prompt(self, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids before and after the one <video> placeholder of the chat prompt. ([1, n], [1, m])

        The whole prompt is tokenised as the processor tokenises it (BOS included) and split at
        the placeholder id: tokenising the two halves apart would differ for Llama tokenizers,
        which prefix a word-start mark to the second half that the full prompt does not have.
        """
        text = self.video_prompt(question)
        ids = torch.tensor([self.tokenizer(text).input_ids], dtype=torch.long)
        where = (ids[0] == self.video_token_id).nonzero().flatten()
        if where.numel() != 1:
            raise InfinipotError(
                f"the chat template of {self.model_id} does not place exactly one video token: "
                "use the model's own processor files"
            )
        split = int(where[0])
        return ids[:, :split], ids[:, split + 1 :]

    def begin(self, sample_fps: float) -> tuple[LlavaPositions, PromptParts]:
        prefix, _ = self._split_prompt(PLACEHOLDER_QUESTION)
        count = prefix.shape[1]
        state = LlavaPositions(prefix_len=count, largest=count - 1, prefix_ids=tuple(prefix[0].tolist()))
        return state, PromptParts(prefix, self.text_positions(0, count))

    def question_ids(self, text: str, state: LlavaPositions) -> torch.Tensor:
        prefix, suffix = self._split_prompt(text)
        if tuple(prefix[0].tolist()) != tuple(state.prefix_ids):
            raise InfinipotError(
                f"the chat template of {self.model_id} changes the text before the video with the question: "
                "use the model's own processor files"
            )
        if self.closes_with_newline:  # the video token slot that embed_ids fills with image_newline
            suffix = torch.cat([torch.tensor([[self.video_token_id]]), suffix], dim=1)
        return suffix

    def follow_up(self, text: str, start: int) -> PromptParts:
        tail = self.template_follow_up(text)
        ids = torch.tensor([self.tokenizer(tail, add_special_tokens=False).input_ids], dtype=torch.long)
        return PromptParts(ids, self.text_positions(start, ids.shape[1]))

    # --- video ------------------------------------------------------------------------------
    def encode(self, frames: np.ndarray, state: LlavaPositions) -> EncodedChunk:
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
        layout = self._chunk_layout(state.steps, len(frames), state.largest + 1)
        state.steps += len(frames)
        state.largest += count
        return EncodedChunk(features[:, :count].to(self.dtype), layout.position.T.contiguous(), layout)

    def _chunk_layout(self, first_frame: int, frames: int, first_position: int) -> ChunkLayout:
        rows, cols = self.grid
        frame, row, col = torch.meshgrid(
            torch.arange(first_frame, first_frame + frames), torch.arange(rows), torch.arange(cols), indexing="ij"
        )
        position = torch.arange(frames * rows * cols, dtype=torch.long) + first_position
        return ChunkLayout(frame.reshape(-1), row.reshape(-1), col.reshape(-1), position.unsqueeze(1))

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings; for OneVision a video placeholder outside the video is the closing image_newline.

        Only `question_ids` puts one there: the placeholder is a processor-only token the model never writes.
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

    # --- positions ----------------------------------------------------------------------------
    @classmethod
    def video_span(cls, config, processor, frames: int, grid: tuple[int, int], sample_fps: float) -> int:
        return frames * grid[0] * grid[1] + (1 if cls.closes_with_newline else 0) - 1

    def restart_at(self, next_start: int, state: LlavaPositions) -> None:
        state.largest = next_start - 1  # every token has its own position: the next one follows the cache

    def state_from_dict(self, data: dict) -> LlavaPositions:
        state = super().state_from_dict(data)
        state.prefix_ids = tuple(state.prefix_ids)
        return state

    # --- model ------------------------------------------------------------------------------
    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache, extras: dict | None = None
                ) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model.model.language_model(
                inputs_embeds=embeds.to(self.device),
                position_ids=positions.to(self.device),  # [axes=1, tokens] doubles as [batch=1, tokens]
                cache=cache,
                use_cache=True,
            )
            return self.model.lm_head(out.last_hidden_state[0, -1])


class OneVisionAdapter(LlavaAdapter):
    family = "llava_onevision"
    closes_with_newline = True


class NextVideoAdapter(LlavaAdapter):
    family = "llava_next_video"
