"""Decoding that overlaps the model: a frame source whose chunks are decoded ahead by a background thread.

The worker may hold at most `depth` chunks at once: a chunk counts from the moment its decoding
starts until the consumer asks for the chunk after it (by then it is done with it). So with
depth 2 the worker decodes chunk k+1 while the model works on chunk k, and at most depth + 1
chunks exist even while the consumer's loop variable still holds the previous one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

from infinipot.errors import InfinipotError
from infinipot.sources.base import FrameChunk, FrameSource, SourceInfo

log = logging.getLogger(__name__)

_END = object()  # queued after the last chunk
_POLL_S = 0.1  # how often a waiting thread looks at the stop flag
_JOIN_S = 5.0  # close() waits this long for a worker in the middle of decoding a chunk


class _Failure:
    """An exception raised in the worker, carried to the consumer to be raised there unchanged."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetched:
    """`source`, decoded `depth` chunks ahead in a background thread; itself a FrameSource.

    `decode_s`: seconds the worker spent decoding; `wait_s`: seconds the consumer waited for a
    chunk (near zero when decoding keeps up with the model). `warnings`, `skipped_seconds` and
    `ended_by` are the wrapped source's. An exception in the worker is raised in the consumer.
    """

    def __init__(self, source: FrameSource, depth: int = 2) -> None:
        if depth < 1:
            raise InfinipotError(f"prefetch depth must be at least 1, got {depth} — pass depth=2")
        self.source = source
        self.info: SourceInfo = source.info
        self.depth = depth
        self.decode_s = 0.0
        self.wait_s = 0.0
        self._permits = threading.Semaphore(depth)
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def warnings(self) -> list[str]:
        return getattr(self.source, "warnings", [])

    @property
    def skipped_seconds(self) -> float:
        return getattr(self.source, "skipped_seconds", 0.0)

    @property
    def ended_by(self) -> str | None:
        return getattr(self.source, "ended_by", None)

    def chunks(self, chunk_frames: int) -> Iterator[FrameChunk]:
        """The source's chunks, in order, decoded ahead; a source streams once."""
        if self._thread is not None:
            raise InfinipotError("a prefetched source streams only once — open the source again")
        chunks = self.source.chunks(chunk_frames)  # bad arguments fail here, in the caller
        self._thread = threading.Thread(target=self._work, args=(chunks,), name="infinipot-decode", daemon=True)
        self._thread.start()
        return self._consume()

    def close(self) -> None:
        """Stop the worker (it finishes at most the chunk it is decoding) and close the source."""
        self._stop.set()
        self._permits.release()  # wake a worker waiting for room
        self.source.close()  # a live source stops waiting for frames now
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_S)
            if thread.is_alive():
                log.warning("the decoding thread is still busy; it stops after the current chunk")

    def _work(self, chunks: Iterator[FrameChunk]) -> None:
        try:
            while self._take_permit():
                started = time.perf_counter()
                chunk = next(chunks, _END)
                self.decode_s += time.perf_counter() - started
                self._queue.put(chunk)
                if chunk is _END:
                    return
        except BaseException as err:  # noqa: BLE001 — carried to the consumer and raised there
            self._queue.put(_Failure(err))
        finally:
            close = getattr(chunks, "close", None)  # a generator's clean-up runs in the thread that iterated it
            if close is not None:
                close()

    def _take_permit(self) -> bool:
        while not self._stop.is_set():
            if self._permits.acquire(timeout=_POLL_S):
                return not self._stop.is_set()
        return False

    def _consume(self) -> Iterator[FrameChunk]:
        holding = False
        try:
            while True:
                if holding:
                    self._permits.release()  # asking for the next chunk: the consumer is done with the last
                started = time.perf_counter()
                item = self._next_item()
                self.wait_s += time.perf_counter() - started
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                holding = True
                yield item
        finally:
            self.close()

    def _next_item(self) -> object:
        while True:
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive() and self._queue.empty():
                    return _END  # stopped by close() without an end marker

    def __enter__(self) -> Prefetched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
