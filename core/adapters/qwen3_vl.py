"""Qwen3-VL: time written as text, interleaved M-RoPE, DeepStack; each temporal patch its own block.

The one-shot prompt, as Qwen's processor builds it (the template's
`<|vision_start|><|video_pad|><|vision_end|>` replaced whole by the patches):

    prefix <t0 seconds><|vision_start|> patch 0 <|vision_end|><t1 seconds><|vision_start|> patch 1 ... question

t is the mean time of the patch's two frames, written `{t:.1f}`, counted from the stream's first
frame. transformers 5.24's processor keeps the template's outer vision-start/end around the
patches as well; the model was not trained so (docs/design.md, "Families": Qwen3-VL).

Positions (Qwen3-VL's `get_rope_index`): text takes ordinary positions, p on all three axes; a
patch starting at the running position P gives its token (row, col) the ids (P, P + row, P + col)
and the running position moves on by max(rows, cols). So the vision-end token after a patch sits
one past the patch's largest id, and text after the video starts at the largest id so far + 1:
the base class's question rule is Qwen3-VL's own. Positions grow by max(rows, cols) plus the
marker text per patch, not by seconds; `original` stays the default (see `default_positions`).

Each patch's timestamp, vision start and vision end are markers (docs/design.md, "Markers"):
cached with the patch's frame index, row = col = -1; the policies never see them and the cache
keeps them per patch, the same patches in every layer and head. DeepStack: the vision tower's
features from three of its layers are added to the hidden states at the visual positions after
the first three decoder layers, so each chunk carries its own features and visual mask
(`EncodedChunk.extras`); without them the language model silently skips DeepStack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from infinipot.adapters.base import Adapter, EncodedChunk, PositionState, PromptParts
from infinipot.errors import InfinipotError
from infinipot.layout import ChunkLayout

VIDEO_PAD, VISION_START, VISION_END = "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
PLACEHOLDER_QUESTION = "?"
# The budget plan reserves room for timestamps up to this many integer digits (below 100,000 s,
# 27 hours); a stream past that brings one token more a patch per digit.
TIMESTAMP_DIGITS = 5


@dataclass
class Qwen3VLPositions(PositionState):
    grid: tuple[int, int] | None = None  # merged (rows, cols) of this stream's frames
    sample_fps: float = 1.0  # frames per second of the stream: the timestamps' clock


def frame_pixel_limits(video_processor, min_pixels: int | None, max_pixels: int | None) -> tuple[int, int]:
    """Per-frame pixel floor and cap: the settings', else the processor's `size` read per frame.

    Qwen3VLVideoProcessor applies its `size` to a whole clip; qwen-vl-utils, and its class defaults
    (128 and 768 merged tokens a frame), mean them per frame, which is how a stream can use them.
    """
    size = video_processor.size
    return min_pixels or size["shortest_edge"], max_pixels or size["longest_edge"]


def frame_grid(video_processor, height: int, width: int, min_pixels: int | None,
               max_pixels: int | None) -> tuple[int, int]:
    """Merged (rows, cols) of one temporal patch of frames this size, as the video processor resizes them."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    low, high = frame_pixel_limits(video_processor, min_pixels, max_pixels)
    patch = video_processor.temporal_patch_size
    factor = video_processor.patch_size * video_processor.merge_size
    resized_h, resized_w = smart_resize(patch, height, width, temporal_factor=patch, factor=factor,
                                        min_pixels=patch * low, max_pixels=patch * high)
    return resized_h // factor, resized_w // factor


def timestamp(step: int, sample_fps: float, temporal_patch: int) -> str:
    """The text before patch `step`: the mean time of its first and last frame, as the processor writes it."""
    first, last = step * temporal_patch / sample_fps, (step * temporal_patch + temporal_patch - 1) / sample_fps
    return f"<{(first + last) / 2:.1f} seconds>"


class Qwen3VLAdapter(Adapter):
    """Qwen3-VL (2B, 4B, 8B dense): one marked block per temporal patch, DeepStack per chunk."""

    family = "qwen3_vl"
    position_axes = 3
    # Positions grow ~max(rows, cols) + 11 a patch: a 262,144-position window lasts ~5 h at 1 fps
    # with 128-token patches, and a warning says so before a longer file; compact is for beyond.
    default_positions = "original"
    state_class = Qwen3VLPositions

    def __init__(self, model, processor, model_id: str, min_pixels: int | None = None,
                 max_pixels: int | None = None) -> None:
        super().__init__(model, processor, model_id)
        video_processor = processor.video_processor
        self.min_pixels, self.max_pixels = frame_pixel_limits(video_processor, min_pixels, max_pixels)
        self.temporal_patch = video_processor.temporal_patch_size
        self.merge_size = video_processor.merge_size
        config = model.config
        self.video_token_id = int(config.video_token_id)
        self.vision_start_id, self.vision_end_id = int(config.vision_start_token_id), int(config.vision_end_token_id)

    @classmethod
    def token_grid(cls, config, processor, height, width, min_pixels, max_pixels) -> tuple[int, int]:
        return frame_grid(processor.video_processor, height, width, min_pixels, max_pixels)

    @classmethod
    def frame_multiple(cls, config, processor) -> int:
        return processor.video_processor.temporal_patch_size

    @classmethod
    def marker_tokens_per_step(cls, config, processor) -> int:
        """Timestamp tokens of the longest timestamp planned for, plus vision start and end."""
        tokenizer = processor.tokenizer
        longest = max(len(tokenizer(f"<{'9' * digits}.9 seconds>", add_special_tokens=False).input_ids)
                      for digits in range(1, TIMESTAMP_DIGITS + 1))
        return longest + 2

    @classmethod
    def video_span(cls, config, processor, frames: int, grid: tuple[int, int], sample_fps: float) -> int:
        steps = -(-frames // processor.video_processor.temporal_patch_size)
        return steps * (cls.marker_tokens_per_step(config, processor) + max(grid)) - 1  # at most

    # --- prompt ---------------------------------------------------------------------------
    def _render(self, question: str) -> tuple[str, str]:
        """The chat prompt's text before and after the video, which Qwen's processor replaces whole."""
        return self.split_at_video(self.video_prompt(question), VISION_START + VIDEO_PAD + VISION_END, VIDEO_PAD)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def begin(self, sample_fps: float) -> tuple[Qwen3VLPositions, PromptParts]:
        ids = torch.tensor([self._ids(self._render(PLACEHOLDER_QUESTION)[0])], dtype=torch.long)
        count = ids.shape[1]
        state = Qwen3VLPositions(prefix_len=count, largest=count - 1, sample_fps=float(sample_fps))
        return state, PromptParts(ids, self.text_positions(0, count))

    def question_ids(self, text: str, state: PositionState) -> torch.Tensor:
        return torch.tensor([self._ids(self._render(text)[1])], dtype=torch.long)

    def follow_up(self, text: str, start: int) -> PromptParts:
        """The chat template's own text between an answer and the next generation prompt."""
        ids = torch.tensor([self._ids(self.template_follow_up(text))])
        return PromptParts(ids, self.text_positions(start, ids.shape[1]))

    # --- video ------------------------------------------------------------------------------
    def marker_tokens(self, frames: int, state: Qwen3VLPositions) -> int:
        steps = range(state.steps, state.steps + frames // self.temporal_patch)
        return sum(len(self._ids(timestamp(step, state.sample_fps, self.temporal_patch))) + 2 for step in steps)

    def encode(self, frames: np.ndarray, state: Qwen3VLPositions) -> EncodedChunk:
        # Per-frame limits times the frame count: the processor's clip-wide sizing, per frame.
        count = len(frames)
        processed = self.processor.video_processor(
            videos=[frames], return_tensors="pt", do_sample_frames=False, cap_pixels_per_frame=False,
            size={"shortest_edge": count * self.min_pixels, "longest_edge": count * self.max_pixels},
        )
        grid_thw = processed["video_grid_thw"]  # [1, 3]: temporal patches, patch rows, patch cols
        steps, rows, cols = (int(x) for x in grid_thw[0])
        self._check_grid(state, (rows // self.merge_size, cols // self.merge_size))
        with torch.inference_mode():
            features = self.model.model.get_video_features(processed["pixel_values_videos"].to(self.device, self.dtype),
                                                           grid_thw.to(self.device))
            visual = torch.cat(features.pooler_output, dim=0).to(self.dtype)  # [steps * rows * cols, hidden]
            deepstack = [torch.cat(level, dim=0).to(self.dtype) for level in features.deepstack_features]
            ids, layout = self._lay_out(state, steps)
            is_visual = ids == self.video_token_id  # [tokens]
            embeds = self.embed_ids(ids.unsqueeze(0)).masked_scatter(is_visual.view(1, -1, 1).to(self.device), visual)
        extras = {"visual_pos_masks": is_visual.unsqueeze(0), "deepstack_visual_embeds": deepstack}
        return EncodedChunk(embeds, layout.position.T.contiguous(), layout, extras)

    def _check_grid(self, state: Qwen3VLPositions, grid: tuple[int, int]) -> None:
        if state.grid is None:
            state.grid = grid
        elif tuple(state.grid) != grid:
            raise InfinipotError(f"frame size changed mid-stream ({tuple(state.grid)} -> {grid}): re-encode the video")

    def _lay_out(self, state: Qwen3VLPositions, steps: int) -> tuple[torch.Tensor, ChunkLayout]:
        """Token ids and layout of the chunk's patches, each `<t seconds><|vision_start|> patch <|vision_end|>`.

        Advances `state`: a patch starts one past the largest position so far, its visual tokens at
        (P, P + row, P + col), its vision end at P + max(rows, cols), the new largest.
        """
        rows, cols = state.grid
        cells = rows * cols
        cell_row, cell_col = torch.arange(rows).repeat_interleave(cols), torch.arange(cols).repeat(rows)
        parts = []
        for step in range(state.steps, state.steps + steps):
            text = self._ids(timestamp(step, state.sample_fps, self.temporal_patch)) + [self.vision_start_id]
            first = state.largest + 1
            start = first + len(text)  # P
            end = start + max(rows, cols)  # the vision end
            lead = torch.arange(first, start)
            parts.append((
                torch.tensor(text + [self.video_token_id] * cells + [self.vision_end_id]),
                torch.cat([lead.unsqueeze(1).expand(-1, 3),
                           torch.stack([torch.full((cells,), start), start + cell_row, start + cell_col], dim=1),
                           torch.full((1, 3), end)]),
                torch.cat([torch.full((len(text),), -1), cell_row, torch.tensor([-1])]),
                torch.cat([torch.full((len(text),), -1), cell_col, torch.tensor([-1])]),
                torch.full((len(text) + cells + 1,), step),
            ))
            state.largest = end
        state.steps += steps
        ids, position, row, col, frame = (torch.cat(column) for column in zip(*parts))
        return ids, ChunkLayout(frame, row, col, position, marker=row < 0)

    def state_from_dict(self, data: dict) -> Qwen3VLPositions:
        state = super().state_from_dict(data)
        state.grid = tuple(state.grid) if state.grid is not None else None
        return state

    def restart_at(self, next_start: int, state: Qwen3VLPositions) -> None:
        """Nothing to move: compaction packs every axis (infinipot.positions.packed_positions), and the
        next patch starts one past `state.largest`, the largest id left, like any text after a patch."""

    # --- model ------------------------------------------------------------------------------
    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache, extras: dict | None = None
                ) -> torch.Tensor:
        extras = extras or {}
        mask, deepstack = extras.get("visual_pos_masks"), extras.get("deepstack_visual_embeds")
        with torch.inference_mode():
            out = self.model.model.language_model(
                inputs_embeds=embeds.to(self.device),
                position_ids=positions.to(self.device).unsqueeze(1),  # [3, batch=1, tokens]
                cache=cache,
                use_cache=True,
                visual_pos_masks=None if mask is None else mask.to(self.device),
                deepstack_visual_embeds=None if deepstack is None else [level.to(self.device) for level in deepstack],
            )
            return self.model.lm_head(out.last_hidden_state[0, -1])
