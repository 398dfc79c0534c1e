"""Shared by the benchmarks: a small random Qwen2.5-VL whose KV cache dominates memory, and videos."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from infinipot.synthetic import write_test_video
from infinipot.tiny import ensure_tiny_checkpoint

OUT = Path(__file__).resolve().parent / "out"
FRAME_SIDE = 168  # 168x168 frames: 6x6 = 36 visual tokens per 2-frame step


def bench_model() -> Path:
    """Hidden 512, 8 layers, 8 heads, 4 KV heads: 16 KiB of fp32 KV per token, ~60 MB of weights.

    Built from the tiny checkpoint's processor and config (same code path as a preset), scaled up.
    """
    from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    target = OUT / "qwen2_5_vl-h512-l8"
    if (target / "config.json").is_file():
        return target
    tiny = ensure_tiny_checkpoint("qwen2_5_vl")
    config = AutoConfig.from_pretrained(tiny)
    text = config.text_config
    text.hidden_size, text.intermediate_size = 512, 1024
    text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads = 8, 8, 4
    text.layer_types = ["full_attention"] * 8
    text.rope_parameters["mrope_section"] = [8, 12, 12]  # head_dim 64 -> 32 frequencies
    config.vision_config.out_hidden_size = 512
    torch.manual_seed(0)
    scratch = target.with_suffix(".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(scratch)
    AutoProcessor.from_pretrained(tiny).save_pretrained(scratch)
    scratch.rename(target)
    return target


def bench_video(minutes: int) -> Path:
    path = OUT / f"synthetic-{minutes}min-{FRAME_SIDE}px.mp4"
    if not path.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        write_test_video(path, seconds=minutes * 60, fps=1, width=FRAME_SIDE, height=FRAME_SIDE)
    return path


def bench_preset(model_dir: Path, policy: str, budget: int):
    from infinipot.presets import Preset, validated

    return validated(Preset(
        name="bench", model=str(model_dir), family="qwen2_5_vl", dtype="float32", fps=1.0,
        min_pixels=28 * 28 * 4, max_pixels=FRAME_SIDE * FRAME_SIDE, budget=budget, policy=policy, chunk_frames=16,
    ))
