"""Decoding video files with PyAV: index a stream's frames, then decode the ones asked for, in order, on one thread.

Why sequential and in the caller's thread: a decoder that runs ahead in its own thread (decord's)
buffers frames while the model works, so memory grew with the file's length, and which frames of a
damaged file failed depended on timing. Here nothing is decoded until a frame is asked for, frames
come out in order, and only the frames asked for are converted to RGB: the same input gives the
same frames, damaged or not, and memory holds one frame beyond what the caller keeps.

A frame is delivered only if it decodes cleanly. When a frame does not come out of the decoder,
or comes out flagged corrupt (concealed by the decoder), it and every frame after it until a
keyframe decodes are treated as lost: they are predicted from damaged pictures and would show the
scene smeared or frozen. (A stream with no later keyframe, such as one coded with intra refresh,
therefore loses the rest of the file after a damaged frame; the loss is reported, not hidden.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from infinipot.errors import InfinipotError

log = logging.getLogger(__name__)

DECODE_ERRORS = (av.error.FFmpegError,)  # what PyAV raises for unreadable input, I/O errors included
# Containers whose index locates keyframes exactly: skipping ahead by seeking is safe there.
_SEEKABLE = {"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}


@dataclass(frozen=True)
class StreamIndex:
    """Every frame of a file's video stream, from one demux pass (no decoding): how to find and name frames."""

    stream: int  # the video stream's index in the container
    time_base: Fraction  # unit of `pts`
    pts: np.ndarray  # [frames] int64 presentation timestamps, increasing: frame k has pts[k]
    keyframes: np.ndarray  # [keys] int64 numbers of the frames that start a group of pictures, increasing
    average_rate: float  # the container's average frame rate (0.0 when it has none)
    seekable: bool  # whether seeking to a keyframe is exact in this container

    @property
    def frame_count(self) -> int:
        return int(self.pts.shape[0])

    def is_keyframe(self, number: int) -> bool:
        at = int(np.searchsorted(self.keyframes, number))
        return at < len(self.keyframes) and int(self.keyframes[at]) == number

    def keyframe_before(self, number: int) -> int:
        """The last keyframe at or before frame `number` (0 when none is)."""
        at = int(np.searchsorted(self.keyframes, number, side="right"))
        return int(self.keyframes[at - 1]) if at else 0


def cannot_read(path: Path) -> InfinipotError:
    return InfinipotError(f"cannot decode video: {path} — not a video FFmpeg can read (wrong file type or damaged);"
                          " check it plays, or convert it to mp4 (H.264)")


def open_container(path: Path) -> av.container.InputContainer:
    """`path` opened by PyAV with FFmpeg's log switched off; InfinipotError if it is not a container FFmpeg reads.

    FFmpeg's log level is process-wide and other libraries set it (torchvision turns it on at import),
    so it is switched off at every open: a damaged file would print a line per bad packet.
    """
    av.logging.set_level(None)
    try:
        container = av.open(str(path), mode="r")
    except (*DECODE_ERRORS, OSError) as err:
        log.debug("PyAV could not open %s: %s", path, err)
        raise cannot_read(path) from err
    if container.format.name == "tty":  # FFmpeg shows any text file as ANSI art
        container.close()
        raise InfinipotError(f"cannot decode video: {path} — FFmpeg reads it as text, not video; pass a video file")
    return container


def read_index(container: av.container.InputContainer, path: Path) -> StreamIndex:
    """Demux the best video stream of `container` once (reading packets, decoding nothing) and index its frames."""
    stream = container.streams.best("video")
    if stream is None:
        raise InfinipotError(f"no video stream in {path} — pass a file with video (this one may be audio only)")
    stamps, keys = [], []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:  # end-of-stream markers; frames an edit list cuts
                continue
            stamps.append(packet.pts if packet.pts is not None else packet.dts)
            keys.append(packet.is_keyframe)
    except DECODE_ERRORS as err:  # a damaged container: index what could be read
        log.debug("demuxing %s stopped early after %d packets: %s", path, len(stamps), err)
    if any(stamp is None for stamp in stamps):
        raise InfinipotError(f"video frames carry no timestamps: {path} — remux it: ffmpeg -i IN -c copy OUT.mp4")
    pts, first = np.unique(np.array(stamps, dtype=np.int64), return_index=True)  # sorted, duplicates dropped
    keyframes = np.flatnonzero(np.array(keys, dtype=bool)[first]) if len(stamps) else np.zeros(0, np.int64)
    rate, base = stream.average_rate or stream.guessed_rate, stream.time_base  # Fraction; AVRational from PyAV 19
    return StreamIndex(stream.index, Fraction(base.numerator, base.denominator) if base else Fraction(1, 1), pts,
                       keyframes.astype(np.int64), float(rate) if rate else 0.0, container.format.name in _SEEKABLE)


class _SeekMissed(Exception):
    """A seek did not land on the keyframe asked for: this container's seeks are not exact."""


class SequentialDecoder:
    """Frames of one video file by number, asked for in non-decreasing order, decoded on the calling thread.

    Between two frames asked for it decodes forward; when a keyframe lies between the two it seeks
    to that keyframe instead (in containers whose index makes seeks exact), so sampling 1 frame in
    30 costs at most a group of pictures per frame. The file is opened on the first request.
    """

    def __init__(self, path: Path, index: StreamIndex, size: tuple[int, int], threads: int = 2) -> None:
        self.path, self.index, self.threads = path, index, threads
        self.width, self.height = size  # frames are delivered at this size (a stream may change size midway)
        self._container: av.container.InputContainer | None = None
        self._seekable = index.seekable
        self._frames: Iterator[tuple[int, av.VideoFrame]] | None = None
        self._pending: tuple[int, av.VideoFrame | None] = (-1, None)  # the last frame taken from the decoder
        self._last: tuple[int, np.ndarray] | None = None  # the last frame delivered, for a plan that repeats it

    def frame(self, number: int) -> np.ndarray | None:
        """Frame `number` as [H, W, 3] uint8 RGB, or None when it did not decode cleanly."""
        if self._last is not None and self._last[0] == number:
            return self._last[1]
        decoded = self.decoded(number)
        if decoded is None:
            return None
        rgb = decoded.to_ndarray(format="rgb24", width=self.width, height=self.height)  # [H, W, 3] uint8
        self._last = (number, rgb)
        return rgb

    def decoded(self, number: int) -> av.VideoFrame | None:
        """Frame `number` as FFmpeg decoded it (not converted), or None when it did not decode cleanly."""
        if self._frames is None:
            self._open()
        self._seek_toward(number)
        while self._pending[0] < number:
            try:
                self._pending = next(self._frames, (self.index.frame_count, None))
            except _SeekMissed:
                log.debug("seeking in %s is not exact; decoding it from the start without seeking", self.path)
                self._seekable = False
                self.close()
                self._open()
        found, frame = self._pending
        return frame if found == number else None

    def close(self) -> None:
        """Release the file; a later request opens it again and decodes from the start."""
        if self._frames is not None:
            self._frames.close()
            self._frames = None
        if self._container is not None:
            self._container.close()
            self._container = None
        self._restart(-1)

    def _open(self) -> None:
        self._container = open_container(self.path)
        self._stream = self._container.streams[self.index.stream]
        self._stream.thread_type, self._stream.thread_count = "AUTO", max(0, self.threads)
        self._restart(-1)
        self._frames = self._decoded(None)

    def _restart(self, before: int) -> None:
        """Forget decoding state: the next frame out comes after frame `before`."""
        self._pending, self._last = (before, None), None

    def _seek_toward(self, number: int) -> None:
        keyframe = self.index.keyframe_before(number)
        if not self._seekable or keyframe <= self._pending[0] + 1:
            return  # decoding on from here costs no more than from the keyframe
        self._frames.close()
        self._container.seek(int(self.index.pts[keyframe]), stream=self._stream, backward=True)
        self._restart(keyframe - 1)
        self._frames = self._decoded(keyframe)

    def _decoded(self, keyframe: int | None) -> Iterator[tuple[int, av.VideoFrame]]:
        """(number, frame) of each frame that decodes cleanly, in order, from the keyframe just sought to.

        Loss is read from what comes out, not from errors (frame threads report an error a few
        packets late): a frame missing from the output, or flagged corrupt, taints every frame after
        it until a keyframe comes out clean.
        """
        previous, tainted = (-1 if keyframe is None else keyframe - 1), False
        for packet in self._container.demux(self._stream):
            if keyframe is not None and packet.size:
                if packet.pts != self.index.pts[keyframe]:
                    raise _SeekMissed
                keyframe = None
            try:
                frames = self._stream.decode(packet)  # the empty packets at the end flush the decoder
            except DECODE_ERRORS as err:
                log.debug("a packet of %s did not decode (near frame %s): %s", self.path, previous + 1, err)
                continue
            for frame in frames:
                number = self._number(frame.pts)
                if number is None or number <= previous:
                    continue  # not a frame of the index, or out of order: never delivered
                if frame.is_corrupt or number > previous + 1:
                    log.debug("frames %d-%d of %s did not decode cleanly", previous + 1, number, self.path)
                    tainted = True
                if tainted and not frame.is_corrupt and self.index.is_keyframe(number):
                    tainted = False  # a keyframe depends on no earlier frame
                previous = number
                if not tainted:
                    yield number, frame

    def _number(self, pts: int | None) -> int | None:
        """The frame number with presentation timestamp `pts`; None if no frame has it."""
        at = int(np.searchsorted(self.index.pts, pts)) if pts is not None else -1
        return at if 0 <= at < self.index.frame_count and self.index.pts[at] == pts else None
