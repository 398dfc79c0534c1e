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
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infinipot.decoding import SequentialDecoder, StreamIndex, open_container, read_index
from infinipot.errors import InfinipotError

log = logging.getLogger(__name__)

# FFmpeg's codec threads per decoder ("AUTO": frame and slice threading). Measured on 2 loaded cores:
# 2 decoded the 30-min 320x240 scenes file at 1 fps 1.3-1.6x faster than 1 and as fast as FFmpeg's
# own choice (0); on a 1080p30 file sampled by seeking, 1 and 2 were within the noise. 1 leaves a
# core to the model (bench/overlap.py --threads 1).
DECODER_THREADS = 2
_EPS = 1e-6  # slack for float seconds * fps landing a hair off an integer frame index
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # also 'https:/x', what Path makes of 'https://x'


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learned about a video file."""

    path: Path
    duration_s: float  # frame_count / native_fps, as qwen-vl-utils computes it
    native_fps: float  # the container's average rate
    frame_count: int
    width: int
    height: int
    # [frame_count] float64 seconds from the first frame, set only for a variable-frame-rate file
    # (None: frame k is at k / native_fps). Sampling then goes by these times, not by index.
    frame_times: np.ndarray | None = field(default=None, compare=False, repr=False)
    # Every frame's timestamp and the keyframes, for the decoder (None: read again when decoding).
    index: StreamIndex | None = field(default=None, compare=False, repr=False)

    @property
    def variable_frame_rate(self) -> bool:
        return self.frame_times is not None


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


def open_decoder(info: VideoInfo, threads: int = DECODER_THREADS) -> SequentialDecoder:
    """A decoder of `info`'s file that delivers frames at its probed size (it opens the file on first use)."""
    if info.index is None:
        with open_container(info.path) as container:
            index = read_index(container, info.path)
    else:
        index = info.index
    return SequentialDecoder(info.path, index, (info.width, info.height), threads)


_NOT_REGULAR = [
    (stat.S_ISDIR, "is a directory", "pass a video file inside it"),
    (stat.S_ISFIFO, "is a named pipe (FIFO), not a file",
     "pipe it in as a stream instead: '-' reads stdin (… - < FIFO)"),
    (stat.S_ISSOCK, "is a socket, not a file", "pass a video file"),
    (stat.S_ISCHR, "is a device, not a file", "read a capture device as a live source (/dev/videoN)"),
    (stat.S_ISBLK, "is a block device, not a file", "pass a video file"),
]


def check_video_file(path: str | Path) -> Path:
    """`path` as a Path if it names a regular, non-empty file; else InfinipotError with the real reason.

    Only `stat` is called: opening a FIFO to look at it would block until a writer appears.
    """
    text = str(path)
    if _URL.match(text) and not os.path.lexists(text):
        url = text if "://" in text else text.replace(":/", "://", 1)
        raise InfinipotError(f"{url} is a URL, not a video file — read URLs as live sources (open_source)")
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InfinipotError(f"video not found: {path} — check the path") from None
    except OSError as err:
        raise InfinipotError(
            f"cannot read video path {path}: {err.strerror} — check the path and its permissions") from err
    for test, what, fix in _NOT_REGULAR:
        if test(mode):
            raise InfinipotError(f"video path {what}: {path} — {fix}")
    if not stat.S_ISREG(mode):
        raise InfinipotError(f"video path is not a regular file: {path} — pass a video file")
    if path.stat().st_size == 0:
        raise InfinipotError(f"video file is empty (0 bytes): {path} — it was not written completely; re-create it")
    return path


def _first_frame_shape(index: StreamIndex, path: Path) -> tuple[int, int]:
    """(height, width) of the first frame that decodes among a few spread over the file.

    Decoding proves the stream decodes; a file damaged only in places is read around the damage
    later, so only a file none of whose probed frames decode is refused here.
    """
    decoder = SequentialDecoder(path, index, (0, 0), threads=1)
    try:
        for number in dict.fromkeys(np.linspace(0, index.frame_count - 1, min(index.frame_count, 9)).round()
                                    .astype(int).tolist()):
            frame = decoder.decoded(number)
            if frame is not None:
                return frame.height, frame.width
    finally:
        decoder.close()
    raise InfinipotError(f"cannot decode any frame of {path} — it is damaged or not a video; check it plays,"
                         " or convert it to mp4 (H.264)")


def _frame_times(index: StreamIndex, native_fps: float) -> np.ndarray | None:
    """Each frame's time from the first, in seconds, when they stray from k / native_fps by half a frame or more."""
    times = (index.pts - index.pts[0]).astype(np.float64) * float(index.time_base)  # [frame_count]
    if np.max(np.abs(times - np.arange(index.frame_count) / native_fps)) < 0.5 / native_fps:
        return None  # constant frame rate: index k is at k / native_fps, as the recipe assumes
    times.flags.writeable = False
    return times


def probe(path: str | Path) -> VideoInfo:
    """Read `path`'s frame count, frame rate, size and (if variable) frame times: one demux pass, one frame decoded."""
    path = check_video_file(path)
    with open_container(path) as container:
        index = read_index(container, path)
    if index.frame_count <= 0:
        raise InfinipotError(f"video has no frames: {path} — check it plays in a video player")
    native_fps = index.average_rate
    if not (math.isfinite(native_fps) and native_fps > 0):
        raise InfinipotError(
            f"video has no usable frame rate (fps={native_fps}): {path} — re-encode it at a fixed frame rate"
        )
    height, width = _first_frame_shape(index, path)
    times = _frame_times(index, native_fps)
    return VideoInfo(path, index.frame_count / native_fps, native_fps, index.frame_count, int(width), int(height),
                     times, index)


def _native_range(info: VideoInfo, start: float, end: float) -> tuple[int, int]:
    """First and last native frame inside [start, end] (qwen-vl-utils: ceil / floor)."""
    if info.frame_times is not None:
        return _native_range_by_time(info.frame_times, start, end)
    first = math.ceil(start * info.native_fps - _EPS)
    last = min(math.floor(end * info.native_fps + _EPS), info.frame_count - 1)
    if last < first:  # the window falls between two frames: take the one on screen at `start`
        first = last = min(math.floor(start * info.native_fps + _EPS), info.frame_count - 1)
    return first, last


def _native_range_by_time(times: np.ndarray, start: float, end: float) -> tuple[int, int]:
    """The same by each frame's own time, for a variable frame rate."""
    first = int(np.searchsorted(times, start - _EPS, side="left"))
    last = min(int(np.searchsorted(times, end + _EPS, side="right")) - 1, len(times) - 1)
    if last < first:
        first = last = max(0, int(np.searchsorted(times, start + _EPS, side="right")) - 1)
    return first, last


def _nearest_frames(times: np.ndarray, first: int, last: int, n: int) -> np.ndarray:
    """n frames of [first, last] nearest to n instants evenly spaced in time (ties: the earlier frame).

    A frame that stays on screen long is picked more than once, as a fixed-rate camera would film it.
    """
    targets = np.linspace(times[first], times[last], n)  # [n] seconds
    after = np.searchsorted(times, targets, side="left").clip(first, last)  # [n] first frame at or past
    before = (after - 1).clip(first, last)
    return np.where(targets - times[before] <= times[after] - targets, before, after)


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
    its last frame, as the Qwen processor pads. A variable-frame-rate file is sampled at instants
    evenly spaced in time (the nearest frame to each), not at evenly spaced indices.
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

    indices, timestamps = _pick_frames(info, first, last, n, frame_multiple)
    indices.flags.writeable = False
    timestamps.flags.writeable = False
    return FramePlan(indices, timestamps, float(fps), start_s, end_s)


def _pick_frames(info: VideoInfo, first: int, last: int, n: int, frame_multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """n native frames of [first, last] and their times: evenly spaced indices, or instants for a VFR file."""
    native = last - first + 1
    if native < frame_multiple:
        indices = np.concatenate([np.arange(first, last + 1), np.full(frame_multiple - native, last)])
    elif info.frame_times is None:
        indices = np.linspace(first, last, n).round()
    else:
        indices = _nearest_frames(info.frame_times, first, last, n)
    indices = indices.astype(np.int64)  # [n]
    if info.frame_times is None:
        return indices, indices / info.native_fps  # [n] float64
    return indices, info.frame_times[indices]  # [n] float64, a fresh copy


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
    decoder = None
    try:
        for first in range(0, plan.frames, chunk_frames):
            decoder = decoder or open_decoder(info)
            indices = plan.indices[first : first + chunk_frames]  # [c]
            frames = [decoder.frame(int(i)) for i in indices]
            if any(frame is None for frame in frames):
                raise InfinipotError(
                    f"cannot decode frames {int(indices[0])}-{int(indices[-1])} of {info.path} — the file is damaged;"
                    " re-encode it or pass an end before the damage (or stream it with open_file, which skips damage)")
            yield FrameChunk(np.stack(frames), plan.timestamps[first : first + chunk_frames].copy(), first)
    finally:
        if decoder is not None:
            decoder.close()
