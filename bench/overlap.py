"""Decoding overlapped with the model: wall time of decoding alone, the model alone, and both overlapped.

On one synthetic 1920x1080, 30 fps H.264 file (libx264 through PyAV, 60 s), each round runs:
  decode   frames sampled at --fps, decoded by the file source and kept;
  model    those frames streamed through a Session (resize, encode, prefill, compress), no decoding;
  overlap  the file streamed through a Session, whose `Prefetched` worker decodes two chunks ahead;
  idle     the same overlap with a model that only sleeps as long as the model took (as a model on
           a GPU leaves the CPU to decoding): what remains is the cost of the overlap machinery.
Prints each round's overlap / max(decode, model) and the median round's times. Target: <= 1.15
where decode and model take about as long; the model's frame size (--max-pixels, default 448x448
for the tiny random Qwen2.5-VL) is chosen for that. On a CPU both share the cores, so each gets
one thread by default (--threads): on 2 cores, one for FFmpeg's decoder (PyAV, decoding in order
in the worker thread, nothing further ahead than `Prefetched` asks) and one for torch. Timings
swing with whatever else runs on the machine; compare rounds, and read the idle line.

    python bench/overlap.py                 # ~2 minutes on 2 CPU cores (the first run writes the video)
    python bench/overlap.py --device cuda --threads 4 --max-pixels 1003520
"""

from __future__ import annotations

import argparse
import logging
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
        yield from self._chunks  # a generator: the Session's prefetching worker closes what it iterates

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
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the four runs, back to back; the median round is reported (default 3)")
    return parser.parse_args()


def measure(args: argparse.Namespace, video: Path) -> list[dict]:
    """Each round: decode alone, model alone (frames decoded beforehand), overlapped, overlapped with an idle model."""
    from infinipot import Session

    settings = dict(fps=args.fps, max_pixels=args.max_pixels, min_pixels=28 * 28 * 4, budget=4000)
    first = Session.from_preset("tiny", device=args.device, **settings)
    first.stream(open_source(video, fps=args.fps, end=4.0))  # load the weights, warm up
    chunk_frames = first.setup.plan.chunk_frames

    def session() -> Session:
        return Session.from_preset("tiny", device=args.device, model=first.model, **settings)

    def source():
        return open_source(video, fps=args.fps, decoder_threads=args.threads)

    rounds = []
    for _ in range(args.rounds):
        decode_s, chunks = timed(lambda: list(source().chunks(chunk_frames)))
        model_s, stats = timed(lambda: session().stream(Decoded(source().info, chunks)))
        del chunks
        overlap_s, overlapped = timed(lambda: session().stream(source()))  # the Session prefetches files itself
        assert overlapped.frames == stats.frames, "the overlapped stream must see the same frames"
        idle_s = timed(lambda: idle_model(source(), chunk_frames, model_s / stats.frames))[0]
        rounds.append(dict(decode=decode_s, model=model_s, overlap=overlap_s, idle=idle_s, frames=stats.frames,
                           chunk_frames=chunk_frames, worker_decode=overlapped.timings["decode_s"],
                           wait=overlapped.timings["decode_wait_s"], ratio=overlap_s / max(decode_s, model_s)))
    return rounds


def idle_model(source, chunk_frames: int, seconds_per_frame: float) -> None:
    """Overlapped decoding with a consumer that only waits as long as the model took: a model that
    leaves the CPU alone, as one on a GPU does, so what is left is the overlap machinery itself."""
    for chunk in Prefetched(source, depth=2).chunks(chunk_frames):
        time.sleep(seconds_per_frame * len(chunk.frames))


def report(args: argparse.Namespace, rounds: list[dict]) -> None:
    r = sorted(rounds, key=lambda run: run["ratio"])[len(rounds) // 2]  # the median round
    print(f"video: {WIDTH}x{HEIGHT} {NATIVE_FPS} fps H.264, {args.seconds} s, sampled at {args.fps:g} fps"
          f" -> {r['frames']} frames, {r['chunk_frames']} a chunk; model: tiny random Qwen2.5-VL on {args.device},"
          f" frames resized to <= {args.max_pixels} px; {args.threads} decoder thread(s)"
          + (f", {args.threads} torch thread(s)" if args.device == "cpu" else ""))
    print("rounds (overlapped / max(decode, model)): " + ", ".join(f"{run['ratio']:.3f}" for run in rounds))
    print(f"median round: decode alone {r['decode']:.2f} s ({args.seconds / r['decode']:.1f} s of video per second),"
          f" model alone {r['model']:.2f} s ({r['frames'] / r['model']:.1f} frames per second)")
    print(f"  overlapped {r['overlap']:.2f} s (worker decoding {r['worker_decode']:.2f} s,"
          f" model waited {r['wait']:.2f} s for frames)")
    print(f"  overlapped with a model that leaves the CPU alone (sleeps as long): {r['idle']:.2f} s"
          f" = {r['idle'] / max(r['decode'], r['model']):.3f} x max(decode, model)")
    print(f"  decode / model = {r['decode'] / r['model']:.2f}; overlapped / max(decode, model) = {r['ratio']:.3f}"
          f" (target <= 1.15); overlapped / (decode + model) = {r['overlap'] / (r['decode'] + r['model']):.3f}")


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    report(args, measure(args, video_1080p30(args.seconds)))


if __name__ == "__main__":
    main()
