"""What the session reads frames from: a frame source, whatever is behind it (a file, a pipe, a camera).

A source says what it can before decoding anything (`info`: size, sampling rate, how much video
there is when that is known), then yields decoded frames a chunk at a time with their video
times. Only the chunk being handed over (plus a bounded read-ahead) is ever in memory, so a
source of any length streams in fixed memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class SourceInfo:
    """What is known about a source before its frames are decoded."""

    name: str  # a path or URL, for messages
    width: int  # native frame size in pixels
    height: int
    sample_fps: float  # frames delivered per second of video (the real rate, after any capping)
    start: float = 0.0  # video time of the window's start, in seconds
    seconds_total: float | None = None  # length of the window read; None for an endless source
    frames_total: int | None = None  # frames that will be delivered; None when unknown (live)
    live: bool = False
    description: dict = field(default_factory=dict)  # fingerprint and sampling, recorded in cache files


@dataclass(frozen=True)
class FrameChunk:
    """Consecutive decoded frames of a source."""

    frames: np.ndarray  # [n, H, W, 3] uint8 RGB at native size
    timestamps: np.ndarray  # [n] float64: video time of each frame, in seconds
    first: int  # index of the first frame among all frames the source delivers (0-based)
    end_seconds: float  # video time covered once these frames are seen (window start + seconds so far)


class FrameSource(Protocol):
    info: SourceInfo

    def chunks(self, chunk_frames: int) -> Iterator[FrameChunk]:
        """Decoded frames, `chunk_frames` at a time, in order (the last chunk may be shorter)."""
        ...

    def close(self) -> None:
        """Stop decoding and release the file, process or thread behind the source."""
        ...
