"""The GPU benchmark: memory against video length and where the time goes, for three real model shapes.

Random weights in the real configurations of Qwen2.5-VL-7B, LLaVA-OneVision-7B and Qwen3-VL-8B
(the config values are written below; nothing is downloaded), in bf16 with the attention
implementation a user gets (sdpa), built directly on the device. Each model streams synthetic
videos of --minutes at 1 fps under a --budget token budget; per model and length it records
torch.cuda.max_memory_allocated / max_memory_reserved and milliseconds per frame split into
decode, encode, prefill and compression, and prints:

  flat      peak allocated and reserved, longest / shortest video (target: within 5%)
  capped    peak allocated - weights at the budget (target: <= 1.5 GiB at a 6K budget)
  share     compression / (encode + prefill) (target: <= 2%)

All figures go to a JSON file (--out). Sized to finish in about 10 minutes on one H200 with the
defaults; --dry-run runs the same code on the tiny models and short videos (CI runs it on the CPU).

    python bench/gpu.py                               # cuda, 1 / 10 / 60 minutes, budget 6000
    python bench/gpu.py --device cpu --dry-run        # the script itself, in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT  # noqa: E402

GIB = 2**30

# Real configurations (Hugging Face config.json of each model; the fields that set compute and memory).
REAL = {
    "qwen2.5-vl-7b": {  # Qwen/Qwen2.5-VL-7B-Instruct
        "family": "qwen2_5_vl", "preset": "qwen2.5-vl-7b",
        "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000,
                     rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                       window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
    },
    "llava-onevision-7b": {  # llava-hf/llava-onevision-qwen2-7b-ov-hf (Qwen2-7B + SigLIP so400m at 384 px)
        "family": "llava_onevision", "preset": "llava-onevision-7b",
        "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152128, max_position_embeddings=32768),
        "vision": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
                       image_size=384, patch_size=14),
    },
    "qwen3-vl-8b": {  # Qwen/Qwen3-VL-8B-Instruct
        "family": "qwen3_vl", "preset": "qwen3-vl-8b",
        "text": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144),
        "vision": dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                       deepstack_visual_indexes=[8, 16, 24], patch_size=16),
    },
}
TINY_PRESETS = {"qwen2_5_vl": "tiny", "llava_onevision": "tiny-llava-onevision", "qwen3_vl": "tiny-qwen3-vl"}


def build(name: str, device: str, dry_run: bool):
    """(Model, weights bytes) for one benchmark model: real shapes on `device` in bf16, or the tiny one."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from infinipot import Model, load_preset
    from infinipot.families import FAMILIES
    from infinipot.tiny import ensure_tiny_checkpoint

    spec = REAL[name]
    tiny = ensure_tiny_checkpoint(spec["family"])
    config = AutoConfig.from_pretrained(tiny)
    settings = load_preset(FAMILIES[spec["family"]].tiny_preset if dry_run else spec["preset"])
    dtype = torch.float32 if dry_run else torch.bfloat16
    if not dry_run:
        _real_config(config, spec)
    settings = settings.replace(model=f"bench:{name}", dtype=str(dtype).removeprefix("torch."),
                                attn_implementation="sdpa")
    processor = AutoProcessor.from_pretrained(tiny)
    if spec["family"] == "llava_onevision" and not dry_run:  # frames resized to the real tower's square
        processor.video_processor.size = {"height": 384, "width": 384}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = AutoModelForImageTextToText.from_config(config, attn_implementation="sdpa", dtype=dtype)
    finally:
        torch.set_default_dtype(previous)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return Model.wrap(settings, model, processor), weights


def _real_config(config, spec: dict) -> None:
    text, vision = config.get_text_config(), config.vision_config
    for key, value in spec["text"].items():
        setattr(text, key, value)
    text.layer_types = ["full_attention"] * text.num_hidden_layers
    for key, value in spec["vision"].items():
        setattr(vision, key, value)


def video(minutes: float, dry_run: bool) -> Path:
    from infinipot.synthetic import write_test_video

    width, height = (112, 84) if dry_run else (640, 360)
    path = OUT / f"gpu-{minutes:g}min-{width}x{height}.mp4"
    if not path.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(".tmp.mp4")
        write_test_video(scratch, seconds=minutes * 60, fps=1, width=width, height=height)
        scratch.rename(path)
    return path


def measure(model, weights: int, path: Path, budget: int, device: str) -> dict:
    import torch

    from infinipot import Session

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    session = Session(model.settings.replace(budget=budget, fps=1.0), model=model)
    started = time.perf_counter()
    stats = session.stream(path)
    session.ask("What happened in the video?", max_new_tokens=8)
    if cuda:
        torch.cuda.synchronize()
    timings, frames = stats.timings, max(stats.frames, 1)
    work = timings["encode_s"] + timings["prefill_s"]
    result = {
        "frames": stats.frames, "seconds": round(time.perf_counter() - started, 2),
        "visual_tokens_seen": stats.visual_tokens_seen, "peak_cached_tokens": stats.peak_cached_tokens,
        "compressions": stats.compressions, "weights_gib": weights / GIB,
        "ms_per_frame": {key.removesuffix("_s"): 1000 * value / frames for key, value in timings.items()},
        "compression_share": timings["compress_s"] / work if work else 0.0,
        "kv_cache_gib": session.cache.kv_bytes() / GIB,
    }
    if cuda:
        result["max_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
        result["max_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    session.close()
    return result


def verdict(name: str, runs: dict) -> dict:
    """The three targets, from the shortest and the longest video."""
    lengths = sorted(runs, key=float)
    short, long = runs[lengths[0]], runs[lengths[-1]]
    out = {"compression_share_max": max(run["compression_share"] for run in runs.values())}
    if "max_allocated_gib" in long:
        out["allocated_ratio"] = long["max_allocated_gib"] / short["max_allocated_gib"]
        out["reserved_ratio"] = long["max_reserved_gib"] / short["max_reserved_gib"]
        out["over_weights_gib"] = long["max_allocated_gib"] - long["weights_gib"]
    text = ", ".join(f"{key} {value:.3f}" for key, value in out.items())
    print(f"{name}: {text}  (targets: ratios <= 1.05, over weights <= 1.5 GiB at 6K, share <= 0.02)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default=",".join(REAL))
    parser.add_argument("--minutes", nargs="+", type=float, default=None, help="video lengths (default 1 10 60)")
    parser.add_argument("--budget", type=int, default=None, help="token budget (default 6000; 96 with --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="tiny models and 8-32 s videos: checks the script")
    parser.add_argument("--out", type=Path, default=OUT / "gpu.json")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu --dry-run to check the script")
    minutes = args.minutes or ([8 / 60, 16 / 60, 32 / 60] if args.dry_run else [1, 10, 60])
    budget = args.budget or (96 if args.dry_run else 6000)
    report = {"device": args.device, "dry_run": args.dry_run, "budget": budget, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None, "models": {}}
    for name in args.models.split(","):
        model, weights = build(name, args.device, args.dry_run)
        runs = {}
        for length in minutes:
            runs[f"{length:g}"] = measure(model, weights, video(length, args.dry_run), budget, args.device)
            print(f"{name} {length:g} min: {json.dumps(runs[f'{length:g}'])}", flush=True)
        report["models"][name] = {"runs": runs, "targets": verdict(name, runs)}
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out} (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
