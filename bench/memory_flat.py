"""Memory stays flat in fact, not only in tokens: peak process memory (RSS) against video length.

Two cases, each run in its own process so each peak (ru_maxrss) belongs to one configuration:
  scenes  issue 12's case: the tiny preset at --fps 1, budget 1500, on a 320x240, 4 fps libx264
          video (textured background, one moving square, a new scene each minute): 5 / 30 / 120 min
  kv      a KV-heavy random model (hidden 512, 8 layers, budget 2,048) on a 168x168 1-fps video,
          infinipot against full: 5 / 60 min
Prints every peak, RSS logged every --every frames, and the ratios long / short.
Targets: <= 1.10 for infinipot (scenes: 120 vs 5 min), while full grows with length.

    python bench/memory_flat.py --case scenes            # ~10 minutes on 2 CPU cores (the first run writes videos)
    python bench/memory_flat.py --case kv --minutes 5 60
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(case: str, policy: str, minutes: int, every: int) -> None:
    import torch

    from common import bench_model, bench_settings, bench_video, scene_video
    from infinipot import Session, load_preset

    torch.set_num_threads(2)
    if case == "scenes":
        settings, video = load_preset("tiny").replace(fps=1.0, budget=1500, policy=policy), scene_video(minutes)
    else:
        settings, video = bench_settings(bench_model(), policy, 2048), bench_video(minutes)
    session = Session(settings, device="cpu")
    log: list[tuple[int, float]] = []

    def watch(event) -> None:
        frames = getattr(event, "frames_done", None)
        if frames is not None and frames // every > len(log) - 1:
            log.append((frames, round(rss_mib(), 1)))

    start = time.perf_counter()
    stats = session.stream(video, on_event=watch)
    answer = session.ask("What happened?", max_new_tokens=4)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({
        "case": case, "policy": policy, "minutes": minutes, "peak_rss_mib": peak_kib / 1024, "frames": stats.frames,
        "visual_tokens_seen": stats.visual_tokens_seen, "peak_cached_tokens": stats.peak_cached_tokens,
        "compressions": stats.compressions, "cache_mib": session.cache.kv_bytes() / 2**20,
        "seconds": time.perf_counter() - start, "answer_tokens": answer.tokens, "rss_log": log,
    }))


def run(case: str, policy: str, minutes: int, every: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", case, policy, str(minutes), "--every", str(every)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{case} {policy} {minutes} min failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("CASE", "POLICY", "MINUTES"), help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=["scenes", "kv"], default="scenes")
    parser.add_argument("--minutes", nargs="+", type=int, default=None)
    parser.add_argument("--policies", default=None, help="comma-separated (default: infinipot for scenes, "
                        "infinipot,full for kv)")
    parser.add_argument("--every", type=int, default=400, help="log RSS every this many frames")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.every)
        return
    minutes = args.minutes or ([5, 30, 120] if args.case == "scenes" else [5, 60])
    policies = (args.policies or ("infinipot" if args.case == "scenes" else "infinipot,full")).split(",")
    from common import bench_model, bench_video, scene_video

    for length in minutes:  # write the videos (and the model) before anything is timed
        scene_video(length) if args.case == "scenes" else (bench_model(), bench_video(length))
    print(f"case {args.case}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    for policy in policies:
        peaks = {}
        for length in minutes:
            result = run(args.case, policy, length, args.every)
            peaks[length] = result["peak_rss_mib"]
            print(f"{policy:>9} {length:>4} min: peak RSS {result['peak_rss_mib']:8.1f} MiB, KV cache "
                  f"{result['cache_mib']:7.2f} MiB, {result['frames']:,} frames, peak cached "
                  f"{result['peak_cached_tokens']:,} tokens, {result['compressions']} compressions, "
                  f"{result['seconds']:.0f} s; RSS (frame, MiB): {result['rss_log']}", flush=True)
        short, long = minutes[0], minutes[-1]
        print(f"{policy:>9}: peak memory {long}-min / {short}-min = {peaks[long] / peaks[short]:.3f}", flush=True)


if __name__ == "__main__":
    main()
