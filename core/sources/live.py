"""Live sources: a URL, a capture device or a container on stdin, read by an `ffmpeg` process.

ffmpeg (command built with ffmpeg-python) decodes the input and samples it with its `fps`
filter, so only the frames the model will see cross the pipe, as raw RGB at native size.
The frame size comes from ffmpeg's own description of its output, printed once it has opened
the input: one connection serves both, which matters for inputs that cannot be opened twice
(stdin, a listen-once TCP peer, some cameras), and `ffprobe` adds no second start-up delay.
Frame k is at start + k / fps: live video has no timeline of its own we could trust.

A live source ends cleanly, never with an exception, once frames have come: when the input
ends (`ended_by` "eof"), fails ("error: …"), sends nothing for `stall_timeout` s ("stall"), or
reaches `duration` / `max_frames`. What was read is kept; `warnings` says why it ended early.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import IO

import ffmpeg
import numpy as np

from infinipot.errors import InfinipotError
from infinipot.sources.base import FrameChunk, SourceInfo
from infinipot.sources.ffmpeg_process import FfmpegFrames, find_ffmpeg

log = logging.getLogger(__name__)

STDIN = "-"
# A pipe cannot seek: an mp4 whose index sits at its end (the default) cannot be read from one.
_STDIN_HINT = "pipe a streamable container: MPEG-TS, Matroska, or MP4 written with -movflags +faststart"


def ffmpeg_command(spec: str, fps: float, input_options: dict | None = None) -> list[str]:
    """The ffmpeg command line that reads `spec` and writes its first video stream as rgb24 at `fps`."""
    options = dict(input_options or {})
    if isinstance(options.get("video_size"), str):  # ffmpeg-python wants (width, height) here
        options["video_size"] = tuple(options["video_size"].split("x", 1))
    if spec.startswith("/dev/video"):
        options.setdefault("f", "v4l2")
    source = "pipe:0" if spec == STDIN else spec
    stream = ffmpeg.input(source, **options)["v:0"]
    args = stream.output("pipe:1", format="rawvideo", pix_fmt="rgb24", vf=f"fps={fps:.10g}").compile(
        cmd=find_ffmpeg())
    return [args[0], "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info", *args[1:]]


def _probe_seconds(input_options: dict | None) -> float:
    """How long ffmpeg may study a live input before it says what it found (its analyzeduration, 5 s by default)."""
    try:
        return float((input_options or {}).get("analyzeduration", 5_000_000)) / 1e6
    except (TypeError, ValueError):
        return 5.0


def _check_settings(fps: float, duration: float | None, max_frames: int | None, stall_timeout: float) -> None:
    if not (math.isfinite(fps) and fps > 0):
        raise InfinipotError(f"fps must be a positive number, got {fps} — pass e.g. --fps 1")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise InfinipotError(
            f"duration must be a positive number of seconds, got {duration} — pass e.g. --duration 10m")
    if max_frames is not None and max_frames < 1:
        raise InfinipotError(f"max_frames must be at least 1, got {max_frames} — pass e.g. --max-frames 600")
    if not (math.isfinite(stall_timeout) and stall_timeout > 0):
        raise InfinipotError(f"stall timeout must be a positive number of seconds, got {stall_timeout}"
                             " — pass e.g. --stall-timeout 30")


class LiveSource:
    """Frames of a stream as they arrive, sampled at `fps`; `info` is known once ffmpeg has opened it.

    `stdin` (only for '-'): where the container comes from; None reads this process's standard input.
    `input_options`: extra ffmpeg input options, e.g. {"rtsp_transport": "tcp"}. `open_timeout`:
    how long to wait for ffmpeg to open the input; by default `stall_timeout` plus its probing
    time (`analyzeduration`, 5 s unless given).
    """

    def __init__(self, spec: str, fps: float, duration: float | None = None, max_frames: int | None = None,
                 stall_timeout: float = 30.0, input_options: dict | None = None,
                 stdin: int | IO | None = None, open_timeout: float | None = None) -> None:
        _check_settings(fps, duration, max_frames, stall_timeout)
        if spec == STDIN and stdin is None and os.isatty(0):
            raise InfinipotError("'-' reads a video from standard input, but it is a terminal"
                                 " — pipe one in: cat video.ts | infinipot … -")
        self.name = "stdin" if spec == STDIN else spec
        self.fps, self.duration, self.max_frames, self.stall_timeout = fps, duration, max_frames, stall_timeout
        self.warnings: list[str] = []
        self.ended_by: str | None = None  # "eof" | "stall" | "duration" | "max_frames" | "closed" | "error: …"
        self.frames_read = 0
        self._lock = threading.Lock()
        self._closed = False
        pipe_in = stdin if spec == STDIN else subprocess.DEVNULL  # None: inherit our standard input
        hint = _STDIN_HINT if spec == STDIN else "check the address and that the source is sending"
        self._process = FfmpegFrames(ffmpeg_command(spec, fps, input_options), self.name, pipe_in, hint)
        try:
            if open_timeout is None:
                open_timeout = stall_timeout + _probe_seconds(input_options)
            width, height = self._process.wait_for_size(open_timeout)
        except BaseException:
            self.close()
            raise
        self.info = SourceInfo(
            name=self.name, width=width, height=height, sample_fps=float(fps), start=0.0,
            seconds_total=duration, frames_total=None, live=True,
            description={"name": self.name, "live": True, "width": width, "height": height, "fps": float(fps),
                         "sample_fps": float(fps), "duration": duration, "opened_at": time.time()},
        )

    @property
    def seconds_read(self) -> float:
        return self.frames_read / self.fps

    def chunks(self, chunk_frames: int) -> Iterator[FrameChunk]:
        """Frames as they arrive, `chunk_frames` at a time; the last chunk holds what came before the end."""
        if chunk_frames < 1:
            raise InfinipotError(f"chunk_frames must be positive, got {chunk_frames} — pass an even number such as 8")
        return self._chunks(chunk_frames)

    def _chunks(self, chunk_frames: int) -> Iterator[FrameChunk]:
        try:
            while self.ended_by is None:
                frames = self._collect(chunk_frames)
                if frames:
                    first, count = self.frames_read, len(frames)
                    times = (first + np.arange(count)) / self.fps  # [count] float64
                    self.frames_read += count
                    yield FrameChunk(np.stack(frames), times, first, (first + count) / self.fps)
            if self.frames_read == 0 and self.ended_by != "closed":
                raise InfinipotError(f"no frame came from {self.name} ({self.ended_by})"
                                     " — check that it is sending video")
        finally:
            self.close()

    def _collect(self, chunk_frames: int) -> list[np.ndarray]:
        """Up to `chunk_frames` frames; fewer when the stream ends (then `ended_by` is set)."""
        frames: list[np.ndarray] = []
        limit, reason = self._frame_limit()
        while len(frames) < chunk_frames and self.ended_by is None:
            if self.frames_read + len(frames) >= limit:
                self._end(reason)
                break
            try:
                frame = self._process.next_frame(self.stall_timeout)
            except queue.Empty:
                self._end("stall", f"{self.name}: no frame for {self.stall_timeout:g} s, the stream stalled;"
                          f" ended after {self._seconds(len(frames)):.1f} s of video"
                          " (wait longer with --stall-timeout)")
                break
            if frame is None:
                self._end_of_output(len(frames))
                break
            frames.append(frame)
        return frames

    def _frame_limit(self) -> tuple[float, str]:
        """How many frames to read at most, and the reason recorded when that many are read."""
        limits = [(math.inf, "eof")]
        if self.duration is not None:
            limits.append((max(1, math.ceil(self.duration * self.fps - 1e-9)), "duration"))
        if self.max_frames is not None:
            limits.append((self.max_frames, "max_frames"))
        return min(limits, key=lambda limit: limit[0])

    def _seconds(self, pending: int) -> float:
        return (self.frames_read + pending) / self.fps

    def _end_of_output(self, pending: int) -> None:
        if self._closed:
            return  # close() ended it; ended_by says "closed"
        code = self._process.exit_code()
        seconds = self._seconds(pending)
        if code not in (0, None):
            line = self._process.error_line()
            self._end(f"error: {line}", f"{self.name}: the stream failed after {seconds:.1f} s of video: {line}")
        elif self.duration is not None and seconds < self.duration:
            self._end("eof", f"{self.name}: the stream ended after {seconds:.1f} s of the {self.duration:g} s asked")
        else:
            self._end("eof")

    def _end(self, reason: str, warning: str | None = None) -> None:
        if self.ended_by is None:
            self.ended_by = reason
            log.info("%s: stream ended (%s)", self.name, reason)
            if warning:
                self.warnings.append(warning)

    def close(self) -> None:
        """Stop ffmpeg (its whole process group) and the threads reading it; safe to call twice, from any thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.ended_by is None:
            self.ended_by = "closed"
        self._process.close()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
