"""Plain references for the exactness contract: one forward of the model over the whole prompt.

The prompt is built the way any Hugging Face user builds it (the family's processor over the
chat prompt and all frames). The positions are those of the model's *training* rule, computed
here by a small independent implementation and passed explicitly to the model, because
transformers 5.24's `get_rope_index` follows another rule for the text after a Qwen2/2.5-VL
video (docs/design.md, "Positions"):

- Qwen2-VL / Qwen2.5-VL (M-RoPE): text tokens count up on all three axes; a video starting at
  position P gives token (t, row, col) the ids (P + floor(t * interval), P + row, P + col),
  interval = tokens_per_second * temporal_patch / fps in float32 (1 for Qwen2-VL); the text
  after the video resumes at the largest id so far + 1.
- Qwen3-VL: the prompt as Qwen's processor builds it (the template's vision-start, video pad,
  vision-end replaced whole by `<t seconds><|vision_start|> patch <|vision_end|>` per temporal
  patch; transformers 5.24's processor keeps an outer vision-start/end pair the model was not
  trained with, so the bare pad is passed). Text tokens count up on all three axes; a patch
  starting at P gives token (row, col) the ids (P, P + row, P + col) and the text after it
  resumes at P + max(rows, cols), one past the patch's largest id. Frames are sized per frame.
- LLaVA families (1-D RoPE): 0, 1, 2, ... over the whole prompt.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import DynamicCache
from transformers.video_utils import VideoMetadata

QUESTION = "What happened in the video?"


def one_shot_inputs(model, frames: np.ndarray, sample_fps: float, question: str = QUESTION,
                    turns: list[tuple[str, str]] = ()):
    """The processor's inputs for the chat prompt over all `frames` (sampled at `sample_fps`)."""
    processor = model.processor
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    metadata = VideoMetadata(total_num_frames=len(frames), fps=sample_fps, width=frames.shape[2],
                             height=frames.shape[1], frames_indices=list(range(len(frames))))
    kwargs = {"do_sample_frames": False}
    if model.settings.family.startswith("qwen"):
        kwargs["cap_pixels_per_frame"] = False
    if model.settings.family == "qwen3_vl":
        text = text.replace("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>")
        size = processor.video_processor.size  # per frame; the processor applies it to the clip
        low = model.settings.min_pixels or size["shortest_edge"]
        high = model.settings.max_pixels or size["longest_edge"]
        kwargs["size"] = {"shortest_edge": len(frames) * low, "longest_edge": len(frames) * high}
    return processor(text=[text], videos=[frames], video_metadata=[metadata], return_tensors="pt", **kwargs)


def qwen_positions(config, input_ids: torch.Tensor, grid_thw: torch.Tensor, merge: int, sample_fps: float
                   ) -> torch.Tensor:  # [3, 1, tokens]
    """The Qwen2/2.5-VL training rule, token by token (one video in the prompt)."""
    video_token = config.video_token_id
    steps, rows, cols = int(grid_thw[0]), int(grid_thw[1]) // merge, int(grid_thw[2]) // merge
    interval = np.float32(1.0)
    tokens_per_second = getattr(config.vision_config, "tokens_per_second", None)
    if config.model_type == "qwen2_5_vl" and tokens_per_second is not None:
        interval = np.float32(tokens_per_second) * np.float32(2.0 / sample_fps)
    ids = input_ids[0].tolist()
    out = []
    next_text = 0
    index = 0
    while index < len(ids):
        if ids[index] != video_token:
            out.append((next_text,) * 3)
            next_text += 1
            index += 1
            continue
        start = next_text
        for t in range(steps):
            temporal = start + int(np.float32(t) * interval)
            for row in range(rows):
                for col in range(cols):
                    out.append((temporal, start + row, start + col))
        index += steps * rows * cols
        next_text = max(max(position) for position in out) + 1
    return torch.tensor(out, dtype=torch.long).T.unsqueeze(1)


def qwen3_vl_positions(input_ids: torch.Tensor, token_types: torch.Tensor, grid_thw: torch.Tensor, merge: int
                       ) -> torch.Tensor:  # [3, 1, tokens]
    """The Qwen3-VL rule, token by token: every run of video tokens is one temporal patch."""
    rows, cols = int(grid_thw[1]) // merge, int(grid_thw[2]) // merge
    types = token_types[0].tolist()
    out, next_text, index = [], 0, 0
    while index < len(types):
        if types[index] == 0:
            out.append((next_text,) * 3)
            next_text += 1
            index += 1
            continue
        assert types[index : index + rows * cols] == [2] * (rows * cols), "a patch's video tokens are one run"
        for cell in range(rows * cols):
            out.append((next_text, next_text + cell // cols, next_text + cell % cols))
        index += rows * cols
        next_text += max(rows, cols)
    return torch.tensor(out, dtype=torch.long).T.unsqueeze(1)


def reference_positions(model, inputs, sample_fps: float, extra_text: int = 0) -> torch.Tensor:
    """Training-rule positions of the processor's prompt, plus `extra_text` text tokens appended after it."""
    config = model.config
    ids = inputs["input_ids"]
    if config.model_type.startswith("qwen"):
        merge = model.processor.video_processor.merge_size
        if config.model_type == "qwen3_vl":
            positions = qwen3_vl_positions(ids, inputs["mm_token_type_ids"], inputs["video_grid_thw"][0], merge)
        else:
            positions = qwen_positions(config, ids, inputs["video_grid_thw"][0], merge, sample_fps)
        last = int(positions.max())
        tail = torch.arange(last + 1, last + 1 + extra_text).view(1, 1, -1).expand(3, 1, -1)
        return torch.cat([positions, tail], dim=2)
    return torch.arange(ids.shape[1] + extra_text).unsqueeze(0)


def forward(model, inputs, positions: torch.Tensor, cache=None, ids: torch.Tensor | None = None):
    """One plain forward of the whole model with explicit positions."""
    extra = {key: value for key, value in inputs.items() if key not in ("input_ids", "attention_mask")}
    ids = inputs["input_ids"] if ids is None else ids
    if "mm_token_type_ids" in extra:  # appended tokens are text
        types = extra["mm_token_type_ids"]
        extra["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, ids.shape[1] - types.shape[1])], dim=1)
    with torch.no_grad():
        return model.adapter.model(input_ids=ids, position_ids=positions, cache=cache, use_cache=cache is not None,
                                   **extra)


def greedy(model, inputs, sample_fps: float, max_new_tokens: int) -> list[int]:
    """A plain greedy loop over the reference forward: each new token one past the previous position."""
    cache = DynamicCache()
    positions = reference_positions(model, inputs, sample_fps)
    logits = forward(model, inputs, positions, cache).logits[0, -1]
    position = int(positions.max()) + 1
    eos = model.adapter.eos_token_ids()
    generated: list[int] = []
    for _ in range(max_new_tokens):
        token = int(torch.argmax(logits))
        if token in eos:
            break
        generated.append(token)
        ids = torch.tensor([[token]])
        step = torch.full((3, 1, 1), position) if positions.dim() == 3 else torch.tensor([[position]])
        with torch.no_grad():
            logits = model.adapter.model(input_ids=ids, position_ids=step, cache=cache, use_cache=True).logits[0, -1]
        position += 1
    return generated
