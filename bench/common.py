"""Shared by the benchmarks: random models of real layer shapes, synthetic videos, sessions.

Everything goes through the public API (`infinipot.Session`, `infinipot.Model`), as a user's
code would. Models are random weights saved once under bench/out; no download.
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
FRAME_SIDE = 168  # 168x168 frames: 6x6 = 36 visual tokens per 2-frame step

# Text-model shapes: "kv" makes the KV cache dominate memory (16 KiB of fp32 KV per token, ~60 MB
# of weights); "7b" has the layer shape of Qwen2.5-VL-7B (hidden 3584, 4 KV heads of 128) but 2 layers,
# so per-layer ratios such as compression time / prefill time are those of the real model.
SHAPES = {
    "kv": dict(hidden_size=512, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=8,
               num_key_value_heads=4, mrope_section=[8, 12, 12]),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=2, num_attention_heads=28,
               num_key_value_heads=4, mrope_section=[16, 24, 24]),
}


def bench_model(shape: str = "kv") -> Path:
    """A random Qwen2.5-VL of the given text shape, built from the tiny checkpoint's processor and config."""
    from transformers import AutoConfig

    from infinipot.tiny import ensure_tiny_checkpoint

    dims = dict(SHAPES[shape])
    target = OUT / f"qwen2_5_vl-{shape}"
    if (target / "config.json").is_file():
        return target
    tiny = ensure_tiny_checkpoint("qwen2_5_vl")
    config = AutoConfig.from_pretrained(tiny)
    text = config.text_config
    text.rope_parameters["mrope_section"] = dims.pop("mrope_section")
    for key, value in dims.items():
        setattr(text, key, value)
    text.layer_types = ["full_attention"] * text.num_hidden_layers
    config.vision_config.out_hidden_size = text.hidden_size
    return save_random_model(config, tiny, target)


def save_random_model(config, processor_from: Path, target: Path) -> Path:
    """Random Qwen2.5-VL weights of `config` (seed 0) with the processor of `processor_from`, written
    to `target` through a scratch folder so an interrupted build never leaves a half model."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    scratch = target.with_suffix(".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(scratch)
    AutoProcessor.from_pretrained(processor_from).save_pretrained(scratch)
    scratch.rename(target)
    return target


def bench_settings(model_dir: Path, policy: str, budget: int, **settings):
    """Settings for the benchmark model: float32 on the CPU, 1 fps, frames up to 168x168 (36 tokens a step)."""
    from infinipot import load_preset

    return load_preset("tiny").replace(
        model=str(model_dir), name="bench", dtype="float32", fps=1.0, min_pixels=28 * 28 * 4,
        max_pixels=FRAME_SIDE * FRAME_SIDE, budget=budget, policy=policy, chunk_frames=16, **settings,
    )


def bench_video(minutes: int) -> Path:
    """A 168x168 synthetic video at 1 fps (mpeg4), written once."""
    from infinipot.synthetic import write_test_video

    path = OUT / f"synthetic-{minutes}min-{FRAME_SIDE}px.mp4"
    if not path.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        write_test_video(path, seconds=minutes * 60, fps=1, width=FRAME_SIDE, height=FRAME_SIDE)
    return path


def scene_video(minutes: int, width: int = 320, height: int = 240, fps: int = 4) -> Path:
    """The case of issue 12: libx264 at 4 fps, a textured background, one moving square, a new scene each minute."""
    import av

    from infinipot.synthetic import background, square_box

    path = OUT / f"scenes-{minutes}min-{width}x{height}-{fps}fps.mp4"
    if path.is_file():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp.mp4")
    texture = np.random.default_rng(0).integers(0, 24, size=(height, width, 3), dtype=np.uint8)
    with av.open(str(scratch), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for index in range(minutes * 60 * fps):
            if index % (60 * fps) == 0:  # a new scene each minute
                scene = background(width, height, seed=index // (60 * fps)) + texture
            frame = scene.copy()
            top, left, side = square_box(index, width, height)
            frame[top : top + side, left : left + side] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    scratch.rename(path)
    return path
