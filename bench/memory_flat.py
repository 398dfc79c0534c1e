"""Memory stays flat: peak process memory for a 5-minute and a 60-minute video, infinipot vs full.

Each run is its own process, so each peak (ru_maxrss) belongs to one configuration only.
Prints the peaks and the ratio 60-min / 5-min per policy. Target: <= 1.10 for infinipot,
while full grows with length.

    python bench/memory_flat.py            # ~5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BUDGET = 2048


def child(policy: str, minutes: int) -> None:
    import torch

    from common import bench_model, bench_preset, bench_video
    from infinipot.adapters import load_adapter
    from infinipot.pipeline import VideoRequest, open_session, prepare_video, stream_video

    torch.set_num_threads(2)
    preset = bench_preset(bench_model(), policy, BUDGET)
    video = prepare_video(VideoRequest(bench_video(minutes)), preset)
    session = open_session(preset, adapter=load_adapter(preset, "cpu"))
    start = time.perf_counter()
    stats = stream_video(session, video)
    answer = session.ask("What happened?", max_new_tokens=4)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({
        "policy": policy, "minutes": minutes, "peak_rss_mib": peak_kib / 1024,
        "frames": stats.frames, "visual_tokens_seen": stats.visual_tokens_seen,
        "peak_cached_tokens": stats.peak_cached_tokens, "compressions": stats.compressions,
        "cache_mib": session.cache.kv_bytes() / 2**20, "seconds": time.perf_counter() - start,
        "answer_tokens": answer.tokens,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("POLICY", "MINUTES"), help=argparse.SUPPRESS)
    parser.add_argument("--minutes", nargs=2, type=int, default=[5, 60])
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    from common import bench_model, bench_video

    bench_model()
    for minutes in args.minutes:
        bench_video(minutes)
    results = {}
    for policy in ("infinipot", "full"):
        for minutes in args.minutes:
            run = subprocess.run([sys.executable, __file__, "--child", policy, str(minutes)],
                                 capture_output=True, text=True, check=True)
            results[policy, minutes] = json.loads(run.stdout.strip().splitlines()[-1])
            r = results[policy, minutes]
            print(f"{policy:>9} {minutes:>3} min: peak RSS {r['peak_rss_mib']:8.1f} MiB, KV cache {r['cache_mib']:7.1f} MiB, "
                  f"{r['visual_tokens_seen']:,} tokens seen, peak cached {r['peak_cached_tokens']:,}, "
                  f"{r['compressions']} compressions, {r['seconds']:.1f} s", flush=True)
    short, long = args.minutes
    for policy in ("infinipot", "full"):
        ratio = results[policy, long]["peak_rss_mib"] / results[policy, short]["peak_rss_mib"]
        print(f"{policy:>9}: peak memory {long}-min / {short}-min = {ratio:.3f}")


if __name__ == "__main__":
    main()
