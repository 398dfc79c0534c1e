"""One door to every kind of source: a file, '-' (a container on stdin), a URL, a capture device."""

from __future__ import annotations

import functools
import logging
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

from infinipot.errors import InfinipotError
from infinipot.sources.base import FrameSource
from infinipot.sources.ffmpeg_process import find_ffmpeg
from infinipot.sources.file import open_file
from infinipot.sources.live import STDIN, LiveSource
from infinipot.video import DECODER_THREADS

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_DEMUXER_SCHEMES = {"rtsp", "rtsps"}  # read by ffmpeg's RTSP demuxer, not listed among its protocols
_CAPTURE = "/dev/video"


def _as_text(spec: str | Path) -> str:
    """`spec` as typed: 'https:/x' (what Path makes of 'https://x') gets its second slash back."""
    text = str(spec)
    match = _SCHEME.match(text)
    if match and not match.group(2) and text[match.end():].startswith("/") and not os.path.lexists(text):
        return f"{match.group(1)}://{text[match.end() + 1:]}"
    return text


def _url_scheme(text: str) -> str | None:
    match = _SCHEME.match(text)
    return match.group(1).lower() if match and match.group(2) else None


def is_live_spec(spec: str | Path) -> bool:
    """Whether `spec` is read as a stream ('-', a URL other than file://, /dev/videoN); no I/O at all."""
    text = _as_text(spec)
    scheme = _url_scheme(text)
    return text == STDIN or (scheme is not None and scheme != "file") or text.startswith(_CAPTURE)


def open_source(spec: str | Path, fps: float, start: float | None = None, end: float | None = None,
                max_frames: int | None = None, frame_multiple: int = 2, duration: float | None = None,
                stall_timeout: float = 30.0, *, input_options: dict | None = None,
                stdin: int | IO | None = None, open_timeout: float | None = None,
                decoder_threads: int = DECODER_THREADS) -> FrameSource:
    """Open `spec` as a frame source: a FileSource for a file, a LiveSource for anything ffmpeg streams.

    A live source has no window (start/end are refused); `duration` and `max_frames` bound it and
    `stall_timeout` ends it when nothing comes. `input_options`, `stdin` and `open_timeout` go to
    LiveSource; `decoder_threads` (PyAV's codec threads, for files) to FileSource.
    Non-regular paths (FIFO, directory, socket, device) are refused without opening them.
    """
    text = _as_text(spec)
    if _url_scheme(text) == "file":
        text = unquote(urlparse(text).path)
    if not is_live_spec(text):
        return open_file(text, fps, start, end, max_frames, frame_multiple, duration, decoder_threads)
    if start is not None or end is not None:
        raise InfinipotError(f"--start/--end pick a window of a video file; {_describe(text)} is read live"
                             " — limit it with --duration instead")
    if text.startswith(_CAPTURE):
        _check_capture_device(text)
    elif text != STDIN:
        _check_scheme(text)
    return LiveSource(text, fps, duration, max_frames, stall_timeout, input_options, stdin, open_timeout)


def _describe(text: str) -> str:
    return "stdin" if text == STDIN else text


def _check_capture_device(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise InfinipotError(
            f"capture device not found: {path} — check the camera is connected (ls /dev/video*)") from None
    if not stat.S_ISCHR(mode):
        raise InfinipotError(f"{path} is not a capture device — pass a camera such as /dev/video0")


def _check_scheme(url: str) -> None:
    scheme = _url_scheme(url)
    if scheme in _DEMUXER_SCHEMES or scheme in input_protocols():
        return
    raise InfinipotError(f"ffmpeg cannot read {scheme}:// URLs: {url} — use rtsp, rtmp, udp, tcp, srt or http(s)"
                         " (ffmpeg -protocols lists what it reads)")


@functools.lru_cache(maxsize=1)
def input_protocols() -> frozenset[str]:
    """The URL schemes the installed ffmpeg reads (`ffmpeg -protocols`, Input section)."""
    try:
        listing = subprocess.run([find_ffmpeg(), "-hide_banner", "-protocols"], capture_output=True, text=True,
                                 timeout=15, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        raise InfinipotError(
            f"could not run ffmpeg to list what it reads ({err}) — check `ffmpeg -protocols` works") from err
    section = listing.split("Input:", 1)[-1].split("Output:", 1)[0]
    return frozenset(word.strip().lower() for word in section.split() if word.strip())
