"""What a model does to a video's size and memory, read from its config and processor alone.

Loading a config and a processor takes a fraction of a second and no weights, so the token
grid, the frame multiple and the bytes a cached token costs are known before the model loads:
an impossible budget fails in milliseconds, not after minutes of loading a 7B model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LLAVA_FAMILIES = ("llava_onevision", "llava_next_video")


@dataclass(frozen=True)
class ModelGeometry:
    rows: int  # token grid of one temporal step
    cols: int
    frame_multiple: int  # video frames per temporal step
    kv_bytes_per_token: int  # keys + values of one token across all layers and KV heads

    @property
    def tokens_per_frame(self) -> int:
        return self.rows * self.cols


def qwen_grid(video_processor, height: int, width: int, min_pixels: int | None, max_pixels: int | None
              ) -> tuple[int, int]:
    """Merged (rows, cols) of a frame after `smart_resize` within the per-frame pixel limits."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor = video_processor.patch_size * video_processor.merge_size
    low = min_pixels or video_processor.size["shortest_edge"]
    high = max_pixels or video_processor.size["longest_edge"]
    resized_h, resized_w = smart_resize(height, width, factor=factor, min_pixels=low, max_pixels=high)
    return resized_h // factor, resized_w // factor


def llava_grid(config) -> tuple[int, int]:
    """(rows, cols) of one frame after the family's pooling; every frame is resized to the tower's square."""
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    if config.model_type == "llava_onevision":  # bilinear pooling to ceil(side / 2)
        pooled = math.ceil(side / 2)
    else:  # LLaVA-NeXT-Video: average pooling with kernel = stride
        pooled = side // config.spatial_pool_stride
    return pooled, pooled


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    itemsize = torch.empty((), dtype=dtype).element_size()
    return text.num_hidden_layers * text.num_key_value_heads * head_dim * 2 * itemsize


def geometry(config, processor, dtype: torch.dtype, height: int, width: int,
             min_pixels: int | None = None, max_pixels: int | None = None) -> ModelGeometry:
    if config.model_type in LLAVA_FAMILIES:
        rows, cols = llava_grid(config)
        multiple = 1
    else:
        video_processor = processor.video_processor
        rows, cols = qwen_grid(video_processor, height, width, min_pixels, max_pixels)
        multiple = video_processor.temporal_patch_size
    return ModelGeometry(rows, cols, multiple, kv_bytes_per_token(config, dtype))
