"""Decoding around damage: a decord reader that returns what decodes of a damaged file, and says what did not.

decord decodes ahead of the frame asked for, so an error from damaged data can surface while
it decodes an intact frame shortly before the damage; which frames fail then varies from run to
run. A frame that fails is therefore tried once more on a fresh reader, until several frames
in a row have failed (a damaged stretch), where retrying would only cost a reopen per frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

import decord
import numpy as np

from infinipot.video import DECODE_ERRORS, decode_batch, open_reader

log = logging.getLogger(__name__)

_DAMAGED_RUN = 3  # consecutive unreadable frames after which retries stop until a frame decodes


class TolerantReader:
    """Reads native frames of `path` with decord, dropping the ones that do not decode."""

    def __init__(self, path: Path, threads: int) -> None:
        self.path, self.threads = path, threads
        self._reader: decord.VideoReader | None = None
        self._failing = 0  # frames in a row that did not decode, even on a fresh reader

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frames at native `indices` that decode ([k, H, W, 3] uint8) and which did ([c] bool)."""
        try:
            frames = decode_batch(self._open(), indices)  # [c, H, W, 3]
            self._failing = 0
            return frames, np.ones(len(indices), dtype=bool)
        except DECODE_ERRORS as err:
            log.debug("frames %d-%d of %s did not decode together (%s); decoding one by one",
                      indices[0], indices[-1], self.path, err)
        self._reader = None  # start afresh: the error may have come from decoding ahead
        decoded: dict[int, np.ndarray | None] = {}
        for index in indices.tolist():
            if index not in decoded:
                decoded[index] = self._one(index)
        readable = np.array([decoded[index] is not None for index in indices.tolist()])  # [c]
        if not readable.any():
            return np.empty((0, 0, 0, 3), np.uint8), readable
        return np.stack([decoded[index] for index in indices[readable].tolist()]), readable

    def _one(self, index: int) -> np.ndarray | None:
        attempts = 1 if self._failing >= _DAMAGED_RUN else 2
        for attempt in range(attempts):
            try:
                frame = decode_batch(self._open(), [index])[0]  # [H, W, 3]
            except DECODE_ERRORS as err:
                log.debug("frame %d of %s did not decode (attempt %d): %s", index, self.path, attempt + 1, err)
                if attempts > 1:
                    self._reader = None
                continue
            self._failing = 0
            return frame
        self._failing += 1
        return None

    def _open(self) -> decord.VideoReader:
        if self._reader is None:
            self._reader = open_reader(self.path, self.threads)
        return self._reader
