"""A frame source being streamed: its chunks, in order, and the one a question's moment cut in two.

The session reads a source through this so it can stop at any video time (`until`) and later go
on exactly where it stopped: the chunk that straddles the moment is kept whole, pending, and
handed out again on the next read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from infinipot.sources.base import FrameChunk, FrameSource


class SourceReader:
    def __init__(self, source: FrameSource, chunk_frames: int) -> None:
        self.source = source
        self._chunks: Iterator[FrameChunk] = iter(source.chunks(chunk_frames))
        self.pending: FrameChunk | None = None
        self.ended = False
        self.decode_s = 0.0  # time spent waiting for the source (decoding, when not overlapped)

    def next(self) -> FrameChunk | None:
        """The next chunk (the pending one first); None at the end of the source."""
        if self.pending is not None:
            chunk, self.pending = self.pending, None
            return chunk
        if self.ended:
            return None
        start = time.perf_counter()
        try:
            return next(self._chunks)
        except StopIteration:
            self.ended = True
            return None
        finally:
            self.decode_s += time.perf_counter() - start

    def put_back(self, chunk: FrameChunk) -> None:
        self.pending = chunk

    def close(self) -> None:
        self.ended = True
        self.pending = None
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self.source.close()


def frames_until(chunk: FrameChunk, until: float, frame_multiple: int) -> int:
    """How many leading frames of `chunk` lie at or before `until`, in whole temporal steps."""
    inside = int(np.searchsorted(chunk.timestamps, until + 1e-9, side="right"))
    return inside // frame_multiple * frame_multiple


def seconds_at(chunk: FrameChunk, frames: int, sample_fps: float) -> float:
    """Video time covered once the first `frames` frames of `chunk` are seen."""
    if frames >= len(chunk.frames):
        return chunk.end_seconds
    return float(chunk.timestamps[frames - 1]) + 1.0 / sample_fps if frames else float(chunk.timestamps[0])
