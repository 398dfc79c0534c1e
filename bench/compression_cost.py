"""Compression is cheap: per cycle, the compression pass's time / the time to encode and prefill
the frames that filled the cache since the previous compression.

Target: <= 2% (the paper reports about 2% on a GPU). Prints the per-cycle median and the total.

    python bench/compression_cost.py [--minutes 10] [--policy infinipot] [--pooling none] [--shape kv|7b]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--policy", default="infinipot")
    parser.add_argument("--pooling", default="none")
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--shape", choices=["kv", "7b"], default="kv",
                        help="kv: a small KV-dominated model; 7b: Qwen2.5-VL-7B's layer shape, 2 layers")
    args = parser.parse_args()

    import torch

    from common import bench_model, bench_preset, bench_video
    from infinipot.adapters import load_adapter
    from infinipot.pipeline import VideoRequest, open_session, prepare_video, stream_video

    torch.set_num_threads(2)
    preset = bench_preset(bench_model(args.shape), args.policy, args.budget).with_overrides(pooling=args.pooling)
    video = prepare_video(VideoRequest(bench_video(args.minutes)), preset)
    session = open_session(preset, adapter=load_adapter(preset, "cpu"))
    stats = stream_video(session, video)
    ratios = [spent / work for spent, work in stats.cycles[1:]]  # the first cycle also pays warm-up
    timings = stats.timings
    total = timings["compress_s"] / (timings["encode_s"] + timings["prefill_s"])
    print(f"shape {args.shape}, policy {args.policy} (pooling {args.pooling}), budget {args.budget}, {args.minutes}-min video: "
          f"{stats.frames} frames, {stats.compressions} compressions")
    print(f"per cycle compression / (encode + prefill): median {statistics.median(ratios):.2%}, "
          f"max {max(ratios):.2%}; whole stream {total:.2%} "
          f"({timings['compress_s']:.2f} s of {timings['encode_s'] + timings['prefill_s']:.2f} s)")


if __name__ == "__main__":
    main()
