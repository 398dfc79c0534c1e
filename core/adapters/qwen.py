"""Qwen2-VL and Qwen2.5-VL: M-RoPE positions computed chunk by chunk, exactly as one prefill would.

A one-shot prompt is `prefix <|vision_start|> video tokens <|vision_end|> question ...`. Video
token (t, row, col) of a video starting after `P` prefix tokens gets the M-RoPE ids
(P + floor(t * interval), P + row, P + col), where `interval` is 1 for Qwen2-VL and
tokens_per_second * temporal_patch_size / fps for Qwen2.5-VL. None of this needs the video's
length, so the stream can be endless.

The text after the video starts at the video's largest position id + 1 on all three axes:
how both models were trained (Qwen's code, transformers up to 5.2, the InfiniPot-V code).
transformers 5.24's `get_rope_index` moves on by only max(rows, cols) after a video (a rule of
Qwen3-VL), which would put a long video's question on top of its first seconds; we do not
follow it (docs/design.md, "Positions").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from infinipot.adapters.base import Adapter, EncodedChunk, PositionState, PromptParts
from infinipot.errors import InfinipotError
from infinipot.layout import ChunkLayout

VIDEO_PAD = "<|video_pad|>"
PLACEHOLDER_QUESTION = "?"


@dataclass
class QwenPositions(PositionState):
    grid: tuple[int, int] | None = None  # merged (rows, cols) of this stream's frames
    interval: float = 1.0  # temporal position ids per temporal step (float32 arithmetic)
    # Temporal ids run temporal_base + floor((t - base_t) * interval): (prefix_len, 0) for original
    # positions; compact positions restart them after each compaction (`rebase`).
    temporal_base: int = 0
    base_t: int = 0


def smart_resize_grid(video_processor, height: int, width: int, min_pixels: int | None,
                      max_pixels: int | None) -> tuple[int, int]:
    """Merged (rows, cols) of a frame after `smart_resize` within the per-frame pixel limits."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor = video_processor.patch_size * video_processor.merge_size
    low = min_pixels or video_processor.size["shortest_edge"]
    high = max_pixels or video_processor.size["longest_edge"]
    resized_h, resized_w = smart_resize(height, width, factor=factor, min_pixels=low, max_pixels=high)
    return resized_h // factor, resized_w // factor


class QwenAdapter(Adapter):
    """Both Qwen VL generations; they differ only in the temporal position interval."""

    position_axes = 3
    state_class = QwenPositions

    def __init__(self, model, processor, model_id: str, min_pixels: int | None = None,
                 max_pixels: int | None = None) -> None:
        super().__init__(model, processor, model_id)
        video_processor = processor.video_processor
        self.merge_size = video_processor.merge_size
        self.temporal_patch_size = video_processor.temporal_patch_size
        self.min_pixels = min_pixels or video_processor.size["shortest_edge"]
        self.max_pixels = max_pixels or video_processor.size["longest_edge"]

    @classmethod
    def token_grid(cls, config, processor, height, width, min_pixels, max_pixels) -> tuple[int, int]:
        return smart_resize_grid(processor.video_processor, height, width, min_pixels, max_pixels)

    @classmethod
    def frame_multiple(cls, config, processor) -> int:
        return processor.video_processor.temporal_patch_size

    # --- prompt ---------------------------------------------------------------------------
    def _render(self, question: str) -> tuple[str, str]:
        return self.split_at_video(self.video_prompt(question), VIDEO_PAD)

    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor([self.tokenizer(text, add_special_tokens=False).input_ids], dtype=torch.long)

    def begin(self, sample_fps: float) -> tuple[QwenPositions, PromptParts]:
        ids = self._ids(self._render(PLACEHOLDER_QUESTION)[0])
        prefix = ids.shape[1]
        state = QwenPositions(prefix_len=prefix, largest=prefix - 1, interval=self._time_interval(sample_fps),
                              temporal_base=prefix, base_t=0)
        return state, PromptParts(ids, self.text_positions(0, prefix))

    def _time_interval(self, sample_fps: float) -> float:
        return self.time_interval(self.model.config, self.temporal_patch_size, sample_fps)

    @staticmethod
    def time_interval(config, temporal_patch_size: int, sample_fps: float) -> float:
        """Temporal position ids per temporal step: 1 for Qwen2-VL, tokens_per_second * seconds per step for 2.5."""
        tokens_per_second = getattr(config.vision_config, "tokens_per_second", None)
        if config.model_type != "qwen2_5_vl" or tokens_per_second is None:
            return 1.0
        # The same float32 arithmetic as the processor (second_per_grid_ts) and get_vision_position_ids.
        second_per_grid = torch.tensor([temporal_patch_size / sample_fps], dtype=torch.float32)[0]
        return float(tokens_per_second * second_per_grid)

    def question_ids(self, text: str, state: PositionState) -> torch.Tensor:
        return self._ids(self._render(text)[1])

    def follow_up(self, text: str, start: int) -> PromptParts:
        # The answer's stop token never entered the cache, so the new turn first closes the answer.
        ids = self._ids(f"<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")
        return PromptParts(ids, self.text_positions(start, ids.shape[1]))

    @classmethod
    def video_span(cls, config, processor, frames: int, grid: tuple[int, int], sample_fps: float) -> int:
        patch = processor.video_processor.temporal_patch_size
        steps = -(-frames // patch)
        interval = torch.tensor(cls.time_interval(config, patch, sample_fps), dtype=torch.float32)
        last_t = int(((steps - 1) * interval).long()) if steps else 0
        return max(last_t, grid[0] - 1, grid[1] - 1)

    # --- video ------------------------------------------------------------------------------
    def encode(self, frames: np.ndarray, state: QwenPositions) -> EncodedChunk:
        processed = self.processor.video_processor(
            videos=[frames], return_tensors="pt", do_sample_frames=False, cap_pixels_per_frame=False,
            size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
        )
        grid_thw = processed["video_grid_thw"]  # [1, 3]: temporal, patch rows, patch cols
        pixels = processed["pixel_values_videos"].to(self.device, self.dtype)
        with torch.inference_mode():
            features = self.model.model.get_video_features(pixels, grid_thw.to(self.device))
        embeds = torch.cat(features.pooler_output, dim=0).unsqueeze(0).to(self.dtype)
        steps, rows, cols = (int(x) for x in grid_thw[0])
        grid = (rows // self.merge_size, cols // self.merge_size)
        if state.grid is None:
            state.grid = grid
        elif tuple(state.grid) != grid:
            raise InfinipotError(f"frame size changed mid-stream ({tuple(state.grid)} -> {grid}): re-encode the video")
        layout = self._chunk_layout(state, state.steps, steps)
        state.steps += steps
        state.largest = max(state.largest, int(layout.position.max()))
        return EncodedChunk(embeds, layout.position.T.contiguous(), layout)

    def _chunk_layout(self, state: QwenPositions, first_t: int, steps: int) -> ChunkLayout:
        rows, cols = state.grid
        t_index = torch.arange(first_t, first_t + steps, dtype=torch.long)
        # (index * interval).long() in float32, as get_vision_position_ids does for the whole video.
        interval = torch.tensor(state.interval, dtype=torch.float32)
        temporal = ((t_index - state.base_t) * interval).long() + state.temporal_base
        t_grid, r_grid, c_grid = torch.meshgrid(t_index, torch.arange(rows), torch.arange(cols), indexing="ij")
        pos_t = temporal.view(-1, 1, 1).expand(steps, rows, cols)
        prefix = state.prefix_len
        position = torch.stack([pos_t.reshape(-1), r_grid.reshape(-1) + prefix, c_grid.reshape(-1) + prefix], dim=1)
        return ChunkLayout(t_grid.reshape(-1), r_grid.reshape(-1), c_grid.reshape(-1), position)

    def state_from_dict(self, data: dict) -> QwenPositions:
        state = super().state_from_dict(data)
        state.grid = tuple(state.grid) if state.grid is not None else None
        return state

    def restart_at(self, next_start: int, state: QwenPositions) -> None:
        # Only the temporal axis is compacted; rows and columns keep prefix_len + row / col.
        state.temporal_base, state.base_t = next_start, state.steps

    # --- model ------------------------------------------------------------------------------
    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache, extras: dict | None = None
                ) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model.model.language_model(
                inputs_embeds=embeds.to(self.device),
                position_ids=positions.to(self.device).unsqueeze(1),  # [3, batch=1, tokens]
                cache=cache,
                use_cache=True,
            )
            return self.model.lm_head(out.last_hidden_state[0, -1])


class Qwen2VLAdapter(QwenAdapter):
    family = "qwen2_vl"


class Qwen25VLAdapter(QwenAdapter):
    family = "qwen2_5_vl"
