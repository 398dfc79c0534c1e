"""The front door: a Session streams a video into a budgeted cache and answers questions from it.

    from infinipot import Session
    session = Session.from_preset("qwen2.5-vl-7b", budget="6k")
    session.stream("movie.mp4")
    print(session.ask("What happened?").text)
    session.save("movie.ipv")                  # later: Session.load("movie.ipv")

Everything that can be checked without the model's weights (the settings, the video, the budget
against the model's token grid) is checked before they load. A session can be asked at any
point and then go on streaming (`stream(until=...)`, `feed`), and its whole state is one
object (`state`) saved with its cache. Several sessions may share one loaded `Model`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infinipot.asking import Answering
from infinipot.errors import InfinipotError
from infinipot.model import Geometry, Model
from infinipot.policies import Policy, make_policy
from infinipot.settings import Settings
from infinipot.stream_state import StreamState, StreamStats
from infinipot.stream_setup import StreamSetup, plan_stream, start_stream
from infinipot.streamer import Checkpoint
from infinipot.reader import SourceReader, frames_until, seconds_at

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """One step of a stream, for progress displays."""

    frames_done: int
    frames_total: int | None
    video_seconds: float  # covered since the window's start
    seconds_total: float | None
    cached_tokens: int
    budget_tokens: int  # 0 when the policy never compresses
    compressions: int
    kv_bytes_per_token: int


@dataclass(frozen=True)
class Loading:
    """The model's weights are being loaded (`done` False), or are loaded (`done` True)."""

    model_id: str
    done: bool


Event = Progress | Loading


class Session(Answering):
    """One stream into a budgeted cache, and any number of questions about it (asking: infinipot.asking)."""

    def __init__(self, settings: Settings, model: Model | None = None, device: str = "auto") -> None:
        if model is not None and not model.serves(settings):
            raise InfinipotError(f"the model given ({model.model_id}, {model.settings.dtype}) is not the one these "
                                 f"settings name ({settings.model}, {settings.dtype}): pass a matching model or none")
        self.settings = settings
        self.model = model or Model(settings, device)
        self.policy: Policy = make_policy(settings.policy, settings.knobs)
        self.setup: StreamSetup | None = None  # decided before the weights load
        self.state: StreamState | None = None
        self.cache = None
        self._streamer = None
        self._reader: SourceReader | None = None
        self._tentative: Checkpoint | None = None
        self._leftover: tuple[np.ndarray, np.ndarray] | None = None  # frames short of a temporal step
        self._stopped_at: float | None = None  # the video time `stream(until=...)` stopped at

    @classmethod
    def from_preset(cls, preset: str | Settings = "qwen2.5-vl-7b", *, device: str = "auto",
                    model: Model | None = None, **overrides) -> Session:
        """A session from a shipped preset's name, a YAML path or Settings, with settings overridden by keyword."""
        from infinipot.presets import load_preset

        settings = load_preset(preset) if isinstance(preset, str) else preset
        return cls(settings.replace(**overrides), model=model, device=device)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", model: Model | None = None,
             preset: str | Settings | None = None) -> Session:
        """A session around a cache file written by `save` (or `infinipot compress`)."""
        from infinipot.cache_file import load_session

        return load_session(path, device=device, model=model, preset=preset)

    # --- streaming ----------------------------------------------------------------------------
    def open(self, video, *, fps: float | None = None, start: float | None = None, end: float | None = None,
             max_frames: int | None = None, **source_options) -> StreamSetup:
        """Open `video` (a path, URL, '-' or a FrameSource) and check it against the settings and the model's
        token grid, without loading the weights."""
        if self.setup is not None or self.state is not None:
            raise InfinipotError("this session already holds a stream: continue it with stream() or feed(), "
                                 "or start a new session for another video")
        from infinipot.sources import open_source

        geometry_probe = self.model.geometry  # config + processor only
        if hasattr(video, "chunks") and hasattr(video, "info"):  # a FrameSource of your own
            source = video
        else:
            source = open_source(video, fps=fps if fps is not None else self.settings.fps, start=start, end=end,
                                 max_frames=max_frames, frame_multiple=self._frame_multiple(), **source_options)
        try:
            self.setup = plan_stream(self.settings, self.policy, self.model, source.info, geometry_probe)
        except BaseException:
            source.close()
            raise
        from infinipot.sources import Prefetched

        # Decode ahead in a worker thread (at most two chunks), so decoding overlaps the model.
        self._reader = SourceReader(Prefetched(source, depth=2), self.setup.plan.chunk_frames)
        return self.setup

    def _frame_multiple(self) -> int:
        cls = self.model.family.adapter_class()
        return cls.frame_multiple(self.model.config, self.model.processor)

    def stream(self, video=None, *, until: float | None = None, on_event: Callable[[Event], None] | None = None,
               **open_options) -> StreamStats:
        """Stream `video` (or go on with the open one) to its end, or up to video time `until` (seconds).

        Stopping at `until` answers from frames up to that time; the next call goes on from there
        and ends in exactly the state a single call would have reached.
        """
        if video is not None:
            self.open(video, **open_options)
        elif open_options:
            raise InfinipotError(f"{', '.join(open_options)} only apply when a video is opened: pass the video too")
        if self._reader is None:
            raise InfinipotError("nothing to stream: pass a video (a file, a URL, '-') or feed() frames")
        self._begin(on_event)
        self._settle()
        self._stopped_at = None
        try:
            self._read_until(until, on_event)
        except BaseException:
            if self._reader.ended:
                self._reader.close()
            raise
        return self.state.stats

    def _read_until(self, until: float | None, on_event) -> None:
        reader, plan = self._reader, self.setup.plan
        while (chunk := reader.next()) is not None:
            if until is not None and float(chunk.timestamps[-1]) > until + 1e-9:
                reader.put_back(chunk)
                count = frames_until(chunk, until, plan.frame_multiple)
                if count:
                    end = seconds_at(chunk, count, self.state.sample_fps)
                    self._tentative = self._streamer.add_tentative(chunk.frames[:count], min(end, until),
                                                                   timestamps=chunk.timestamps[:count])
                self._stopped_at = until
                break
            self._streamer.add(chunk.frames, chunk.end_seconds, timestamps=chunk.timestamps)
            self._after_chunk(on_event)
        if until is not None and self._stopped_at is None and self.state.asked_at > until:
            self._stopped_at = until  # the source ended inside the moment's last frame: still asked at `until`
        timings = self.state.stats.timings
        timings["decode_wait_s"] = reader.decode_s  # time the model waited for frames
        timings["decode_s"] = float(getattr(reader.source, "decode_s", reader.decode_s))
        if reader.ended and reader.pending is None:
            self._finish_source()

    def _finish_source(self) -> None:
        reader = self._reader
        stats = self.state.stats
        stats.skipped_seconds = float(getattr(reader.source, "skipped_seconds", 0.0) or 0.0)
        if stats.frames == 0:
            raise InfinipotError(f"{reader.source.info.name} yielded no frames: check the window and the source")

    def _after_chunk(self, on_event) -> None:
        if on_event is not None:
            on_event(self.progress())

    def progress(self) -> Progress:
        stats, setup = self.state.stats, self.setup
        info = setup.source
        return Progress(stats.frames, info.frames_total if info else None, stats.video_seconds,
                        info.seconds_total if info else None, self.cache.visual_tokens,
                        setup.plan.budget_tokens if setup.plan.compress else 0, stats.compressions,
                        setup.geometry.kv_bytes_per_token)

    def feed(self, frames: np.ndarray, timestamps: np.ndarray | None = None,
             on_event: Callable[[Event], None] | None = None) -> None:
        """Stream frames you decoded yourself (`[n, H, W, 3]` uint8 RGB; timestamps in seconds, or fps spacing).

        Frames short of a whole temporal step wait for the next call (or `finish`).
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InfinipotError(f"frames must be uint8 RGB of shape [n, height, width, 3], got {frames.dtype} "
                                 f"{list(frames.shape)}")
        if self.setup is None:
            self.setup = plan_stream(self.settings, self.policy, self.model, None, self.model.geometry,
                                     frame_size=(frames.shape[1], frames.shape[2]))
        if timestamps is None:
            done = self.state.stats.frames if self.state else 0
            timestamps = (np.arange(len(frames)) + done) / self.settings.fps
        self._begin(on_event)
        self._settle()
        self._stopped_at = None
        self._feed_steps(frames, np.asarray(timestamps, dtype=np.float64), on_event)

    def _feed_steps(self, frames: np.ndarray, timestamps: np.ndarray, on_event) -> None:
        if self._leftover is not None:
            frames = np.concatenate([self._leftover[0], frames])
            timestamps = np.concatenate([self._leftover[1], timestamps])
            self._leftover = None
        plan = self.setup.plan
        whole = len(frames) // plan.frame_multiple * plan.frame_multiple
        if whole < len(frames):
            self._leftover = (frames[whole:], timestamps[whole:])
        for first in range(0, whole, plan.chunk_frames):
            part = slice(first, min(whole, first + plan.chunk_frames))
            end = float(timestamps[part][-1]) + 1.0 / self.state.sample_fps
            self._streamer.add(frames[part], end, timestamps=timestamps[part])
            self._after_chunk(on_event)

    def finish(self) -> None:
        """Feed frames short of a temporal step, padded by repeating the last one (as the processors pad)."""
        if self._leftover is None:
            return
        frames, timestamps = self._leftover
        self._leftover = None
        pad = self.setup.plan.frame_multiple - len(frames)
        self._feed_steps(np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)]),
                         np.concatenate([timestamps, np.repeat(timestamps[-1:], pad)]), None)

    def _begin(self, on_event) -> None:
        """Load the weights and prefill the prompt prefix, once per stream."""
        if self.state is not None:
            return
        if not self.model.loaded and on_event is not None:
            on_event(Loading(self.model.model_id, done=False))
            self.model.adapter
            on_event(Loading(self.model.model_id, done=True))
        adapter = self.model.adapter
        self.state, self.cache, self._streamer = start_stream(self.setup, adapter, self.policy)

    def _settle(self) -> None:
        """Before more frames go in: take back a tentative chunk; refuse a cache that holds a conversation."""
        if self.state.turns:
            raise InfinipotError("the cache holds a conversation: call reset() before streaming more video")
        if self._tentative is not None:
            self._streamer.roll_back(self._tentative)
            self._tentative = None

    def close(self) -> None:
        """Release the source (its file, process or thread); the cache stays and can still be asked."""
        if self._reader is not None:
            self._reader.close()

    # --- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path, video: dict | None = None) -> int:
        """Write the cache and the stream's state to `path` atomically; returns the file size in bytes."""
        from infinipot.cache_file import save_session

        if self._tentative is not None:  # frames up to a question's moment become part of the stream
            self._commit_tentative()
        return save_session(self, path)

    def _commit_tentative(self) -> None:
        reader, done = self._reader, self._tentative
        self._tentative = None
        chunk = reader.pending
        used = self.state.stats.frames - done.stats.frames
        if chunk is not None and used:
            from infinipot.sources.base import FrameChunk

            reader.pending = FrameChunk(chunk.frames[used:], chunk.timestamps[used:], chunk.first + used,
                                        chunk.end_seconds) if used < len(chunk.frames) else None

    @property
    def source(self):
        """The open frame source (its `info`, and `warnings` a source may have), or None."""
        if self._reader is None:
            return None
        return getattr(self._reader.source, "source", self._reader.source)  # inside the prefetching worker

    @property
    def warnings(self) -> list[str]:
        """One-line warnings about the stream (a capped frame rate, skipped damaged seconds, how a live source ended)."""
        return list(getattr(self.source, "warnings", []) or [])

    @property
    def geometry(self) -> Geometry | None:
        return self.setup.geometry if self.setup else None
