"""Decoding overlapped with the model: wall time of decoding alone, the model alone, and both overlapped.

On one synthetic 1920x1080, 30 fps H.264 file, in one run:
  decode   frames sampled at --fps, decoded by the file source and thrown away;
  model    the same frames, decoded beforehand, streamed through a Session (encode, prefill, compress);
  overlap  the file streamed through a Session with `Prefetched` decoding ahead in a background thread.
Prints the three wall times and overlap / max(decode, model). Target: <= 1.15 when decode and
model take about as long, which is what the model's frame size (--max-pixels) is chosen for.
On a CPU the two share the cores, so each gets one thread by default (--threads): on 2 cores,
one for decord and one for torch, as a GPU would leave the CPU to decoding.

    python bench/overlap.py                 # ~2 minutes on 2 CPU cores (the first run writes the video)
    python bench/overlap.py --device cuda --threads 4 --max-pixels 1003520
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT  # noqa: E402

from infinipot.sources import FrameChunk, Prefetched, SourceInfo, open_source  # noqa: E402
from infinipot.synthetic import write_test_video  # noqa: E402

WIDTH, HEIGHT, NATIVE_FPS = 1920, 1080, 30
MAX_PIXELS = 448 * 448  # the model's frame size: chosen so the tiny model takes about as long as decoding


def video_1080p30(seconds: int) -> Path:
    """The benchmark video, written once (libx264 through PyAV) and kept in bench/out."""
    path = OUT / f"synthetic-{seconds}s-1080p30.mp4"
    if not path.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(".tmp.mp4")
        write_test_video(scratch, seconds=seconds, fps=NATIVE_FPS, width=WIDTH, height=HEIGHT, codec="libx264")
        scratch.rename(path)
    return path


class Decoded:
    """A frame source over chunks decoded beforehand: the model's share of the work, without decoding."""

    def __init__(self, info: SourceInfo, chunks: list[FrameChunk]) -> None:
        self.info, self._chunks = info, chunks

    def chunks(self, chunk_frames: int) -> Iterator[FrameChunk]:
        return iter(self._chunks)

    def close(self) -> None:
        pass


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="video length (default 60)")
    parser.add_argument("--fps", type=float, default=1.0, help="sampling rate (default 1)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"model frame size cap (default {MAX_PIXELS})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="decoder threads, and model threads on a CPU (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts (default 3)")
    return parser.parse_args()


def measure(args: argparse.Namespace, video: Path) -> dict:
    """Fastest of --repeat runs of decode alone, model alone (frames decoded beforehand), and overlapped."""
    from infinipot import Session

    settings = dict(fps=args.fps, max_pixels=args.max_pixels, min_pixels=28 * 28 * 4, budget=4000)
    first = Session.from_preset("tiny", device=args.device, **settings)
    first.stream(open_source(video, fps=args.fps, end=4.0))  # load the weights, warm up
    chunk_frames = first.setup.plan.chunk_frames

    def session() -> Session:
        return Session.from_preset("tiny", device=args.device, model=first.model, **settings)

    def source():
        return open_source(video, fps=args.fps, decoder_threads=args.threads)

    best: dict = {"decode": math.inf, "model": math.inf, "overlap": math.inf}
    for _ in range(args.repeat):
        decode_s, chunks = timed(lambda: list(source().chunks(chunk_frames)))
        model_s, stats = timed(lambda: session().stream(Decoded(source().info, chunks)))
        del chunks
        prefetched = Prefetched(source(), depth=2)
        overlap_s, overlapped = timed(lambda: session().stream(prefetched))
        assert overlapped.frames == stats.frames, "the overlapped stream must see the same frames"
        best["decode"], best["model"] = min(best["decode"], decode_s), min(best["model"], model_s)
        if overlap_s < best["overlap"]:
            best.update(overlap=overlap_s, worker_decode=prefetched.decode_s, wait=prefetched.wait_s)
    best.update(frames=stats.frames, chunk_frames=chunk_frames)
    return best


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    video = video_1080p30(args.seconds)
    r = measure(args, video)
    print(f"video: {WIDTH}x{HEIGHT} {NATIVE_FPS} fps H.264, {args.seconds} s, sampled at {args.fps:g} fps"
          f" -> {r['frames']} frames, {r['chunk_frames']} a chunk; model: tiny random Qwen2.5-VL on {args.device},"
          f" frames resized to <= {args.max_pixels} px; {args.threads} decoder thread(s)"
          + (f", {args.threads} torch thread(s)" if args.device == "cpu" else "") + f"; fastest of {args.repeat}")
    print(f"decode alone  {r['decode']:7.2f} s  ({args.seconds / r['decode']:5.1f} s of video per second)")
    print(f"model alone   {r['model']:7.2f} s  ({r['frames'] / r['model']:5.1f} frames per second)")
    print(f"overlapped    {r['overlap']:7.2f} s  (worker decoding {r['worker_decode']:.2f} s,"
          f" model waited {r['wait']:.2f} s for frames)")
    print(f"decode / model = {r['decode'] / r['model']:.2f}; overlapped / max(decode, model) ="
          f" {r['overlap'] / max(r['decode'], r['model']):.3f} (target <= 1.15);"
          f" overlapped / (decode + model) = {r['overlap'] / (r['decode'] + r['model']):.3f}")


if __name__ == "__main__":
    main()
