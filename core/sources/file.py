"""Video files, read with PyAV: the frames planned by `infinipot.video`, decoded in order, chunk by chunk.

Decoding is sequential and happens only when a chunk is asked for (`infinipot.decoding`), so at
most one chunk exists (plus `Prefetched`'s bounded read-ahead) and a damaged file loses the same
frames on every run. A file damaged in places still streams: a temporal group (`frame_multiple`
consecutive planned frames, the pair a Qwen vision tower encodes together) with any frame that
does not decode cleanly is dropped whole, so every chunk stays a multiple of the group and
nothing is made up: repeating the last good frame over a damaged minute would tell the model the
scene stood still. Timestamps and `end_seconds` stay true, so the gap shows; `skipped_seconds`
and a warning line say how much was lost. Only a file with no readable frame is refused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from infinipot.errors import InfinipotError
from infinipot.fingerprints import video_fingerprint
from infinipot.sources.base import FrameChunk, SourceInfo
from infinipot.decoding import SequentialDecoder
from infinipot.video import DECODER_THREADS, FramePlan, VideoInfo, open_decoder, plan_frames, probe

log = logging.getLogger(__name__)


class FileSource:
    """A window of a video file sampled at a rate; `info` is known before any frame is decoded.

    `warnings`: one-line notes for the user (sampling capped at the file's own rate, skipped
    damage). `skipped_seconds` / `skipped_frames`: video lost to damage so far. A damaged file
    may deliver fewer than `info.frames_total` frames.
    """

    def __init__(self, video: VideoInfo, plan: FramePlan, frame_multiple: int = 2,
                 warnings: list[str] | None = None, decoder_threads: int = DECODER_THREADS) -> None:
        self.video = video
        self.decoder_threads = decoder_threads  # FFmpeg's codec threads; 1 leaves a core to the model on 2 CPUs
        self.plan = plan
        self.frame_multiple = frame_multiple
        self.warnings: list[str] = list(warnings or [])
        self.skipped_seconds = 0.0
        self.skipped_frames = 0
        self._closed = False
        seconds = plan.seconds
        sample_fps = plan.frames / seconds if seconds > 0 else plan.fps
        self.info = SourceInfo(
            name=str(video.path), width=video.width, height=video.height, sample_fps=sample_fps,
            start=plan.start or 0.0, seconds_total=seconds, frames_total=plan.frames,
            description={
                **video_fingerprint(video.path, video.duration_s), "width": video.width, "height": video.height,
                "native_fps": video.native_fps, "fps": plan.fps, "sample_fps": sample_fps,
                "start": plan.start, "end": plan.end, "frames": plan.frames,
                "variable_frame_rate": video.variable_frame_rate,
            },
        )

    def chunks(self, chunk_frames: int) -> Iterator[FrameChunk]:
        """Decoded frames in order, `chunk_frames` planned frames at a time (fewer where damage was dropped)."""
        if chunk_frames < 1:
            raise InfinipotError(f"chunk_frames must be positive, got {chunk_frames} — pass an even number such as 8")
        return self._chunks(chunk_frames)

    def _chunks(self, chunk_frames: int) -> Iterator[FrameChunk]:
        plan, start = self.plan, self.info.start
        step = plan.seconds / plan.frames  # each sampled frame stands for this much video
        delivered, damaged = 0, []
        decoder = open_decoder(self.video, self.decoder_threads)
        try:
            for first in range(0, plan.frames, chunk_frames):
                if self._closed:
                    return
                positions = np.arange(first, min(first + chunk_frames, plan.frames))  # [c] plan positions
                frames, kept = self._decode(decoder, positions)  # [k, H, W, 3], [k]
                if len(kept) < len(positions):
                    lost = np.setdiff1d(positions, kept)
                    damaged.extend(plan.timestamps[lost].tolist())
                    self.skipped_frames += len(lost)
                    self.skipped_seconds = self.skipped_frames * step
                if len(kept):
                    end = start + min(plan.seconds, (positions[-1] + 1) * step)
                    yield FrameChunk(frames, plan.timestamps[kept].copy(), delivered, end)
                    delivered += len(kept)
            if delivered == 0:
                raise InfinipotError(f"no frame of {self.video.path} decodes — the file is damaged; re-create it")
        finally:
            decoder.close()
            if damaged:
                self.warnings.append(
                    f"skipped {self.skipped_seconds:.1f} s of damaged video in {self.video.path.name}"
                    f" (unreadable frames between {min(damaged):.1f} s and {max(damaged):.1f} s)")

    def _decode(self, decoder: SequentialDecoder, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frames at plan `positions` that decode, and their positions; whole temporal groups only.

        Frames are written straight into the chunk's array, so a chunk is never held twice.
        """
        out = np.empty((len(positions), self.video.height, self.video.width, 3), np.uint8)  # [c, H, W, 3]
        kept: list[int] = []
        for group in range(0, len(positions), self.frame_multiple):
            members = positions[group : group + self.frame_multiple]
            frames = [decoder.frame(int(self.plan.indices[position])) for position in members]
            if all(frame is not None for frame in frames):
                out[len(kept) : len(kept) + len(members)] = frames
                kept.extend(members.tolist())
        if len(kept) < len(positions):
            out = out[: len(kept)].copy()  # a damaged chunk: give back the rows no frame filled
        return out, np.array(kept, dtype=np.int64)

    def close(self) -> None:
        """Stop before the next chunk (the decoder lives inside `chunks` and goes with it)."""
        self._closed = True

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_file(path: str | Path, fps: float, start: float | None = None, end: float | None = None,
              max_frames: int | None = None, frame_multiple: int = 2, duration: float | None = None,
              decoder_threads: int = DECODER_THREADS) -> FileSource:
    """Probe `path` and plan its frames; InfinipotError on a bad file or window.

    `duration` reads at most that many seconds from `start` (a shorter file is read to its end).
    """
    video = probe(path)
    if duration is not None:
        if not (math.isfinite(duration) and duration > 0):
            raise InfinipotError(
                f"duration must be a positive number of seconds, got {duration} — pass e.g. --duration 10m")
        if end is not None:
            raise InfinipotError("pass either an end or a duration, not both — --end 60 or --duration 60")
        end = min(video.duration_s, (start or 0.0) + duration)
    plan = plan_frames(video, fps, start, end, max_frames, frame_multiple=frame_multiple)
    if plan.frames == 0:
        raise InfinipotError(f"no frames to read in {path} — widen --start/--end")
    return FileSource(video, plan, frame_multiple, _rate_warnings(video, plan), decoder_threads)


def _rate_warnings(video: VideoInfo, plan: FramePlan) -> list[str]:
    """A note when the file has fewer frames than the rate asked for: it is sampled at its own rate."""
    sample_fps = plan.frames / plan.seconds if plan.seconds > 0 else plan.fps
    if plan.fps <= video.native_fps * (1 + 1e-3) or sample_fps >= plan.fps * (1 - 1e-3):
        return []
    return [f"the video has {video.native_fps:.3g} fps; sampling at {sample_fps:.3g} fps, not {plan.fps:g}"]
