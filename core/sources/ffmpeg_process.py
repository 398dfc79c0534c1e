"""An `ffmpeg` process decoding any input to raw RGB frames on a pipe, read without ever blocking forever.

Two daemon threads serve the process: one keeps the tail of ffmpeg's stderr (never shown; it
feeds error messages) and learns the frame size from ffmpeg's own description of its output,
the other cuts stdout into frames and hands them over through a bounded queue, so a reader can
wait for a frame with a timeout (that is how a stalled source is noticed). The process runs in
its own process group and `close()` ends the whole group: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from typing import IO

import numpy as np

from infinipot.errors import InfinipotError

log = logging.getLogger(__name__)

MISSING_FFMPEG = (
    "the ffmpeg program is not installed (live sources, URLs and '-' are read with it)"
    " — install it: apt-get install ffmpeg (Debian/Ubuntu package ffmpeg)"
)
_QUEUE_BYTES = 64 * 1024 * 1024  # decoded frames buffered ahead of the reader, at most
_TERM_GRACE_S = 2.0  # between SIGTERM and SIGKILL
_OUTPUT_SIZE = re.compile(r"Video: rawvideo\b.*?,\s(\d+)x(\d+)\b")
_LEVEL = re.compile(r"^(?:\[[^\]]* @ 0x[0-9a-f]+\] )?\[(\w+)\] ")
_END = object()  # queued after the last frame


def find_ffmpeg() -> str:
    """Path of the `ffmpeg` binary; InfinipotError naming the Debian package when it is missing."""
    binary = shutil.which("ffmpeg")
    if binary is None:
        raise InfinipotError(MISSING_FFMPEG)
    return binary


class FfmpegFrames:
    """One running `ffmpeg` whose stdout carries rgb24 frames; `args` must write rawvideo rgb24 to pipe:1.

    `args` are run as given (args[0] is the binary); they must log at `level+info` so the output
    size line and the error lines can be recognised. `stdin`: None inherits this process's
    standard input (for '-'), anything else is passed to Popen.
    """

    def __init__(self, args: list[str], name: str, stdin: int | IO | None = subprocess.DEVNULL,
                 hint: str = "check the address and that the source is sending") -> None:
        self.name = name
        self.hint = hint  # the fix named when ffmpeg cannot open the input
        self._stderr_tail: deque[str] = deque(maxlen=40)
        self._size: tuple[int, int] | None = None
        self._size_known = threading.Event()
        self._frames: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        log.debug("starting %s", " ".join(args))
        try:
            self._process = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             start_new_session=True)  # its own group: close() ends it all
        except FileNotFoundError as err:
            raise InfinipotError(MISSING_FFMPEG) from err
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="ffmpeg-stderr", daemon=True)
        self._stderr_thread.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait_for_size(self, timeout: float) -> tuple[int, int]:
        """(width, height) of the frames, once ffmpeg has opened the input; starts reading frames.

        InfinipotError when ffmpeg exits first (with its reason) or says nothing within `timeout`.
        """
        deadline = time.monotonic() + timeout
        while not self._size_known.wait(0.05):
            if self._process.poll() is not None:
                self._stderr_thread.join(1.0)  # let the last lines in
                if self._size is None:
                    raise InfinipotError(f"ffmpeg cannot read {self.name}: {self.error_line()} — {self.hint}")
                break
            if time.monotonic() > deadline:
                raise InfinipotError(
                    f"no video from {self.name} within {timeout:g} s — check that it is sending,"
                    " or wait longer (--stall-timeout): a stream joined mid-way shows nothing until its next"
                    " keyframe"
                )
        width, height = self._size
        self._frames = queue.Queue(maxsize=max(2, _QUEUE_BYTES // (width * height * 3)))
        self._reader = threading.Thread(target=self._read_frames, args=(width, height), name="ffmpeg-frames",
                                        daemon=True)
        self._reader.start()
        return width, height

    def next_frame(self, timeout: float) -> np.ndarray | None:
        """The next frame ([H, W, 3] uint8), None after the last one; queue.Empty after `timeout` s without one."""
        item = self._frames.get(timeout=timeout)
        if item is _END:
            self._frames.put(_END)  # stay at the end for later calls
            return None
        return item

    def exit_code(self, timeout: float = 5.0) -> int | None:
        """ffmpeg's exit status once it has ended (None if it is still running after `timeout`)."""
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def error_line(self) -> str:
        """ffmpeg's most telling error line, without its level and component tags (or its last line)."""
        self._stderr_thread.join(0.5)
        lines = list(self._stderr_tail)
        errors = [line for line in lines if (m := _LEVEL.match(line)) and m.group(1) in ("error", "fatal")]
        plain = [line for line in errors if line.startswith(("[error]", "[fatal]"))]  # ffmpeg's own, not a codec's
        chosen = _LEVEL.sub("", (plain or errors or lines or ["it exited without a message"])[0]).strip()
        return chosen.removeprefix(f"{self.name}: ")  # ffmpeg names the input; the caller's message already does

    def close(self) -> None:
        """End the process group (SIGTERM, then SIGKILL after a grace period) and both threads."""
        self._stop.set()
        self._wake_reader()
        process = self._process
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(_TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        for thread in (self._reader, self._stderr_thread):
            if thread is not None:
                thread.join(2.0)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()

    def _wake_reader(self) -> None:
        """Put the end marker first in line, so a `next_frame` waiting in another thread returns now."""
        for _ in range(3):
            try:
                while True:
                    self._frames.get_nowait()
            except queue.Empty:
                pass
            try:
                self._frames.put_nowait(_END)
                return
            except queue.Full:
                continue

    def _read_stderr(self) -> None:
        output_seen = False
        for raw in self._process.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self._stderr_tail.append(line)
            log.debug("ffmpeg: %s", line)
            output_seen = output_seen or "Output #0" in line
            if output_seen and self._size is None and (match := _OUTPUT_SIZE.search(line)):
                self._size = int(match.group(1)), int(match.group(2))
                self._size_known.set()

    def _read_frames(self, width: int, height: int) -> None:
        frame_bytes = width * height * 3
        try:
            while True:  # after close() it still drains the pipe, so a terminated ffmpeg never blocks writing
                data = self._process.stdout.read(frame_bytes)
                if len(data) < frame_bytes:  # end of output (a partial last frame is dropped)
                    break
                self._put(np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3))
        except (OSError, ValueError) as err:  # the pipe closed under us by close()
            log.debug("frame reader stopped: %s", err)
        self._put(_END)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._frames.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
