"""Video input: probe a file, plan which frames to sample, decode them a chunk at a time.

The frame count follows qwen-vl-utils' recipe (frames at `fps`, a multiple of the temporal
patch, evenly spaced native indices) so a user's numbers mean the same as there, minus its
768-frame and total-pixel caps: the KV budget, not the sampler, decides what is forgotten.
Memory does not grow with video length: the plan is two small index arrays and only one chunk
of decoded frames exists at a time.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import decord
import numpy as np
from decord._ffi.base import DECORDError

from infinipot.errors import InfinipotError

log = logging.getLogger(__name__)

_DECODER_THREADS = 2  # our machines have 2 cores; decord's default (0) takes them all
_EPS = 1e-6  # slack for float seconds * fps landing a hair off an integer frame index

# decord reports unreadable input as RuntimeError (open) or DECORDError (missing stream, bad data).
_DECODE_ERRORS = (DECORDError, RuntimeError)


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learned about a video file."""

    path: Path
    duration_s: float  # frame_count / native_fps, as qwen-vl-utils computes it
    native_fps: float
    frame_count: int
    width: int
    height: int


@dataclass(frozen=True)
class FramePlan:
    """Which native frames to decode, decided before any decoding."""

    indices: np.ndarray  # [n] int64 native frame indices, non-decreasing
    timestamps: np.ndarray  # [n] float64 seconds of each sampled frame
    fps: float  # the sampling rate asked for
    start: float | None = None  # sampled window in seconds; plan_frames always sets both
    end: float | None = None

    @property
    def frames(self) -> int:
        return int(self.indices.shape[0])

    @property
    def seconds(self) -> float:
        """Video time covered: the window's length (the sampled timestamps' span if unset)."""
        if self.start is not None and self.end is not None:
            return self.end - self.start
        return float(self.timestamps[-1] - self.timestamps[0]) if self.frames else 0.0


@dataclass(frozen=True)
class FrameChunk:
    """A run of consecutive planned frames, decoded."""

    frames: np.ndarray  # [n, H, W, 3] uint8 RGB at native size
    timestamps: np.ndarray  # [n] float64 seconds
    first: int  # index of this chunk's first frame within the plan (0-based)


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide what FFmpeg and decord's C++ print on file descriptor 2 while a file is opened.

    A bad file makes them print their own lines ("moov atom not found", "ERROR opening") before
    ours; Python cannot catch those, so the descriptor itself is pointed at /dev/null meanwhile.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _open_reader(path: Path) -> decord.VideoReader:
    try:
        with _native_stderr_silenced():
            return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=_DECODER_THREADS)
    except _DECODE_ERRORS as err:
        log.debug("decord could not open %s: %s", path, err)
        raise InfinipotError(
            f"cannot decode video: {path} — not a video decord can read (wrong file type or damaged);"
            " check it plays, or convert it to mp4 (H.264)"
        ) from err


def probe(path: str | Path) -> VideoInfo:
    """Open `path` with decord and read its frame count, frame rate and size."""
    path = Path(path)
    if not path.exists():
        raise InfinipotError(f"video not found: {path} — check the path")
    if path.is_dir():
        raise InfinipotError(f"video path is a directory: {path} — pass a video file inside it")
    if path.stat().st_size == 0:
        raise InfinipotError(f"video file is empty (0 bytes): {path} — it was not written completely; re-create it")
    reader = _open_reader(path)
    frame_count = len(reader)
    if frame_count <= 0:
        raise InfinipotError(f"video has no frames: {path} — check it plays in a video player")
    native_fps = float(reader.get_avg_fps())
    if not (math.isfinite(native_fps) and native_fps > 0):
        raise InfinipotError(
            f"video has no usable frame rate (fps={native_fps}): {path} — re-encode it at a fixed frame rate"
        )
    try:
        height, width = reader[0].shape[:2]  # decoding one frame also proves the stream decodes
    except _DECODE_ERRORS as err:
        log.debug("decord could not decode frame 0 of %s: %s", path, err)
        raise InfinipotError(f"cannot decode the first frame of {path} — the file is damaged; re-create it") from err
    return VideoInfo(path, frame_count / native_fps, native_fps, frame_count, int(width), int(height))


def _native_range(info: VideoInfo, start: float, end: float) -> tuple[int, int]:
    """First and last native frame inside [start, end] (qwen-vl-utils: ceil / floor)."""
    first = math.ceil(start * info.native_fps - _EPS)
    last = min(math.floor(end * info.native_fps + _EPS), info.frame_count - 1)
    if last < first:  # the window falls between two frames: take the one on screen at `start`
        first = last = min(math.floor(start * info.native_fps + _EPS), info.frame_count - 1)
    return first, last


def _window(info: VideoInfo, start: float | None, end: float | None) -> tuple[float, float]:
    start_s = 0.0 if start is None else float(start)
    end_s = info.duration_s if end is None else float(end)
    if not start_s >= 0:
        raise InfinipotError(f"start must be >= 0 seconds, got {start} — pass a start inside the video")
    if not end_s <= info.duration_s + _EPS:
        raise InfinipotError(
            f"end {end_s:g} s is past the end of the video ({info.duration_s:g} s)"
            f" — pass an end <= {info.duration_s:g}"
        )
    if not start_s < end_s:
        raise InfinipotError(
            f"start ({start_s:g} s) must be before end ({end_s:g} s) — the video is {info.duration_s:g} s long"
        )
    return start_s, min(end_s, info.duration_s)


def plan_frames(
    info: VideoInfo,
    fps: float,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
    frame_multiple: int = 2,
    min_frames: int = 4,
) -> FramePlan:
    """Choose the native frames to sample from [start, end] at `fps`.

    n = round(seconds * fps / frame_multiple) * frame_multiple, then raised to `min_frames`,
    lowered to the native frames in the window and to `max_frames`, always a multiple of
    `frame_multiple` (the temporal patch). A window with fewer native frames than that repeats
    its last frame, as the Qwen processor pads.
    """
    if not fps > 0:
        raise InfinipotError(f"fps must be positive, got {fps} — pass e.g. fps=1")
    if frame_multiple < 1:
        raise InfinipotError(
            f"frame_multiple must be >= 1, got {frame_multiple} — use the model's temporal patch size"
        )
    if max_frames is not None and max_frames < frame_multiple:
        raise InfinipotError(
            f"max_frames ({max_frames}) is below the frame multiple ({frame_multiple})"
            f" — pass max_frames >= {frame_multiple}"
        )
    start_s, end_s = _window(info, start, end)
    first, last = _native_range(info, start_s, end_s)
    native = last - first + 1

    def floor_to(x: float) -> int:
        return int(x // frame_multiple) * frame_multiple

    n = round((end_s - start_s) * fps / frame_multiple) * frame_multiple
    n = max(n, math.ceil(min_frames / frame_multiple) * frame_multiple)
    n = max(min(n, floor_to(native)), frame_multiple)
    if max_frames is not None:
        n = min(n, floor_to(max_frames))

    if native < frame_multiple:
        indices = np.concatenate([np.arange(first, last + 1), np.full(frame_multiple - native, last)])
    else:
        indices = np.linspace(first, last, n).round()
    indices = indices.astype(np.int64)  # [n]
    timestamps = indices / info.native_fps  # [n] float64
    indices.flags.writeable = False
    timestamps.flags.writeable = False
    return FramePlan(indices, timestamps, float(fps), start_s, end_s)


def iter_chunks(info: VideoInfo, plan: FramePlan, chunk_frames: int) -> Iterator[FrameChunk]:
    """Decode the planned frames `chunk_frames` at a time, in order; the last chunk may be shorter.

    The reader is opened on the first `next()`, so building the iterator costs nothing, and only
    the chunk being yielded is held in memory.
    """
    if chunk_frames < 1:
        raise InfinipotError(f"chunk_frames must be positive, got {chunk_frames} — pass an even number such as 8")
    if plan.frames and (plan.indices[0] < 0 or plan.indices[-1] >= info.frame_count):
        raise InfinipotError(
            f"frame plan reaches frame {int(plan.indices[-1])} but {info.path} has {info.frame_count} frames"
            " — build the plan with plan_frames on this video's info"
        )
    return _decode_chunks(info, plan, chunk_frames)


def _decode_chunks(info: VideoInfo, plan: FramePlan, chunk_frames: int) -> Iterator[FrameChunk]:
    reader = None
    for first in range(0, plan.frames, chunk_frames):
        if reader is None:
            reader = _open_reader(info.path)
        indices = plan.indices[first : first + chunk_frames]  # [c]
        try:
            frames = reader.get_batch(indices.tolist()).asnumpy()  # [c, H, W, 3] uint8
        except _DECODE_ERRORS as err:
            log.debug("decord failed on frames %s of %s: %s", indices, info.path, err)
            raise InfinipotError(
                f"cannot decode frames {int(indices[0])}-{int(indices[-1])} of {info.path} — the file is damaged;"
                " re-encode it or pass an end before the damage"
            ) from err
        yield FrameChunk(frames, plan.timestamps[first : first + chunk_frames].copy(), first)
