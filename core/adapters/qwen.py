"""Qwen2-VL and Qwen2.5-VL: M-RoPE positions computed chunk by chunk, exactly as one prefill would.

A one-shot prompt is `prefix <|vision_start|> video tokens <|vision_end|> question ...`. Video
token (t, row, col) of a video starting after `P` prefix tokens gets the M-RoPE ids
(P + floor(t * interval), P + row, P + col), where `interval` is 1 for Qwen2-VL and
tokens_per_second * temporal_patch_size / fps for Qwen2.5-VL. None of this needs the video's
length, so the stream can be endless. Where the text after the video starts is a rule of the
installed transformers version; it is probed once from the model's own `get_rope_index`.
"""

from __future__ import annotations

import numpy as np
import torch

from infinipot.adapters.base import Adapter, EncodedChunk, PromptParts
from infinipot.adapters.geometry import qwen_grid
from infinipot.errors import InfinipotError
from infinipot.layout import ChunkLayout

VIDEO_PAD = "<|video_pad|>"
PLACEHOLDER_QUESTION = "?"


class QwenAdapter(Adapter):
    """Both Qwen VL generations; they differ only in the temporal position interval."""

    position_axes = 3

    def __init__(self, model, processor, model_id: str, min_pixels: int | None = None,
                 max_pixels: int | None = None) -> None:
        super().__init__(model, processor, model_id)
        self.family = model.config.model_type  # "qwen2_vl" or "qwen2_5_vl"
        video_processor = processor.video_processor
        self.patch_size = video_processor.patch_size
        self.merge_size = video_processor.merge_size
        self.temporal_patch_size = video_processor.temporal_patch_size
        self.min_pixels = min_pixels or video_processor.size["shortest_edge"]
        self.max_pixels = max_pixels or video_processor.size["longest_edge"]
        self.text_start_rule = self._probe_text_start_rule()
        self._prefix_len = 0
        self._next_t = 0  # temporal grid index of the next chunk's first token
        self._grid: tuple[int, int] | None = None  # merged (rows, cols) of this stream
        self._interval = torch.tensor(1.0)
        # Temporal ids run temporal_base + floor((t - base_t) * interval): (prefix_len, 0) for original
        # positions; compact positions restart them after each compaction (rebase_positions).
        self._temporal_base = 0
        self._base_t = 0

    # --- geometry -------------------------------------------------------------------------
    def frame_multiple(self) -> int:
        return self.temporal_patch_size

    def tokens_per_frame(self, height: int, width: int) -> tuple[int, int]:
        return qwen_grid(self.processor.video_processor, height, width, self.min_pixels, self.max_pixels)

    # --- prompt ---------------------------------------------------------------------------
    def _render(self, question: str) -> tuple[str, str]:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if text.count(VIDEO_PAD) != 1:
            raise InfinipotError(
                f"the chat template of {self.model_id} does not place exactly one {VIDEO_PAD}: "
                "use the model's own processor files"
            )
        before, after = text.split(VIDEO_PAD)
        return before, after

    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor([self.tokenizer(text, add_special_tokens=False).input_ids], dtype=torch.long)

    def begin_stream(self, sample_fps: float) -> PromptParts:
        ids = self._ids(self._render(PLACEHOLDER_QUESTION)[0])
        self._prefix_len = ids.shape[1]
        self._next_t = 0
        self._temporal_base, self._base_t = self._prefix_len, 0
        self._grid = None
        self._interval = self._time_interval(sample_fps)
        return PromptParts(ids, self._text_positions(0, ids.shape[1]))

    def _time_interval(self, sample_fps: float) -> torch.Tensor:
        tokens_per_second = getattr(self.model.config.vision_config, "tokens_per_second", None)
        if self.family != "qwen2_5_vl" or tokens_per_second is None:
            return torch.tensor(1.0)
        # The same float32 arithmetic as the processor (second_per_grid_ts) and get_rope_index.
        second_per_grid = torch.tensor([self.temporal_patch_size / sample_fps], dtype=torch.float32)[0]
        return tokens_per_second * second_per_grid

    def _text_positions(self, start: int, count: int) -> torch.Tensor:
        return (torch.arange(count, dtype=torch.long) + start).unsqueeze(0).expand(3, count).contiguous()

    def next_positions(self, after: torch.Tensor, count: int) -> torch.Tensor:
        return self._text_positions(int(after.max()) + 1, count)

    def question(self, text: str) -> PromptParts:
        if self._grid is None:
            raise InfinipotError("no video has been streamed yet: stream a video before asking")
        ids = self._ids(self._render(text)[1])
        return PromptParts(ids, self._text_positions(self._question_start(), ids.shape[1]))

    def follow_up(self, text: str, start: torch.Tensor) -> PromptParts:
        # The answer's stop token never entered the cache, so the new turn first closes the answer.
        ids = self._ids(f"<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")
        return PromptParts(ids, self._text_positions(int(start.max()), ids.shape[1]))

    def _question_start(self) -> int:
        rows, cols = self._grid
        if self.text_start_rule == "spatial":
            return self._prefix_len + max(rows, cols)
        return self._largest_video_position() + 1

    def _largest_video_position(self) -> int:
        rows, cols = self._grid
        last_t = int(((self._next_t - 1 - self._base_t) * self._interval).long()) + self._temporal_base
        return max(last_t, self._prefix_len + rows - 1, self._prefix_len + cols - 1)

    def answer_position(self, prompt: PromptParts) -> torch.Tensor:
        # `generate` continues from the largest position of the whole prompt (its rope_deltas), which
        # under the "spatial" rule can be a video token's temporal id rather than the question's end.
        start = max(self._largest_video_position(), int(prompt.positions.max())) + 1
        return self._text_positions(start, 1)

    def video_end_position(self, frames: int, grid: tuple[int, int]) -> int | None:
        steps = -(-frames // self.temporal_patch_size)
        last_t = int(((steps - 1) * self._interval).long()) if steps else 0
        return self._prefix_len + max(last_t, grid[0] - 1, grid[1] - 1)

    def rebase_positions(self, next_start: int, pending: EncodedChunk) -> EncodedChunk:
        # Only the temporal axis is compacted; rows and columns keep prefix_len + row / col.
        first_t = int(pending.layout.frame.min())
        self._temporal_base, self._base_t = next_start, first_t
        rows, cols = self._grid
        layout = self._chunk_layout(first_t, self._next_t - first_t, rows, cols)
        return EncodedChunk(pending.embeds, layout.position.T.contiguous(), layout)

    def _probe_text_start_rule(self) -> str:
        """Ask the model's own get_rope_index where text resumes after a video.

        transformers 4.x resumes after the largest video position ("max"); 5.x resumes at the
        video start plus max(rows, cols) ("spatial"). A 4-step video of 1x1 tokens tells them apart.
        """
        config = self.model.config
        merge, steps = self.merge_size, 4
        ids = [config.vision_start_token_id] + [config.video_token_id] * steps + [config.vision_end_token_id]
        types = [0] + [2] * steps + [0]
        kwargs = {"second_per_grid_ts": torch.tensor([self.temporal_patch_size / 1.0])}
        if self.family != "qwen2_5_vl":
            kwargs = {}
        positions, _ = self.model.model.get_rope_index(
            torch.tensor([ids]), mm_token_type_ids=torch.tensor([types]),
            video_grid_thw=torch.tensor([[steps, merge, merge]]), **kwargs,
        )
        resumed = int(positions[0, 0, -1])
        interval = float(self._time_interval(1.0))
        if resumed == 1 + 1:
            return "spatial"
        if resumed == 1 + int((steps - 1) * interval) + 1:
            return "max"
        raise InfinipotError(
            f"this transformers version positions text after a video in an unknown way (probe gave {resumed}): "
            "install transformers 5.x"
        )

    # --- video ------------------------------------------------------------------------------
    def encode_chunk(self, frames: np.ndarray) -> EncodedChunk:
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
        rows, cols = rows // self.merge_size, cols // self.merge_size
        if self._grid is None:
            self._grid = (rows, cols)
        elif self._grid != (rows, cols):
            raise InfinipotError(f"frame size changed mid-stream ({self._grid} -> {(rows, cols)}): re-encode the video")
        layout = self._chunk_layout(self._next_t, steps, rows, cols)
        self._next_t += steps
        return EncodedChunk(embeds, layout.position.T.contiguous(), layout)

    def _chunk_layout(self, first_t: int, steps: int, rows: int, cols: int) -> ChunkLayout:
        t_index = torch.arange(first_t, first_t + steps, dtype=torch.long)
        # (index * interval).long() in float32, as get_vision_position_ids does for the whole video.
        temporal = ((t_index - self._base_t) * self._interval).long() + self._temporal_base
        t_grid, r_grid, c_grid = torch.meshgrid(
            t_index, torch.arange(rows), torch.arange(cols), indexing="ij"
        )
        pos_t = temporal.view(-1, 1, 1).expand(steps, rows, cols)
        position = torch.stack(
            [pos_t.reshape(-1), r_grid.reshape(-1) + self._prefix_len, c_grid.reshape(-1) + self._prefix_len], dim=1
        )
        return ChunkLayout(t_grid.reshape(-1), r_grid.reshape(-1), c_grid.reshape(-1), position)

    # --- model ------------------------------------------------------------------------------
    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model.model.language_model(
                inputs_embeds=embeds.to(self.device),
                position_ids=positions.to(self.device).unsqueeze(1),  # [3, batch=1, tokens]
                cache=cache,
                use_cache=True,
            )
            return self.model.lm_head(out.last_hidden_state[0, -1])

    def stream_state(self) -> dict:
        return {
            "prefix_len": self._prefix_len,
            "next_t": self._next_t,
            "grid": list(self._grid) if self._grid else None,
            "interval": float(self._interval),
            "temporal_base": self._temporal_base,
            "base_t": self._base_t,
        }

    def restore_stream_state(self, state: dict) -> None:
        self._prefix_len = int(state["prefix_len"])
        self._next_t = int(state["next_t"])
        self._grid = tuple(state["grid"]) if state["grid"] else None
        self._interval = torch.tensor(state["interval"], dtype=torch.float32)
        self._temporal_base = int(state.get("temporal_base", self._prefix_len))
        self._base_t = int(state.get("base_t", 0))
