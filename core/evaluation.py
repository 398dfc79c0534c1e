"""Benchmarks end to end: a benchmark's questions over a folder of videos, each video streamed once.

    from infinipot import load_preset
    from infinipot.benchmarks import read_benchmark
    from infinipot.evaluation import Answered, Evaluation
    from infinipot.results import ResultLog

    with ResultLog("results.jsonl") as log:
        evaluation = Evaluation(read_benchmark("ovbench.json"), "videos/", load_preset("qwen2.5-vl-7b"),
                                log=log, cache_dir="caches/")
        for event in evaluation.run():
            if isinstance(event, Answered):
                print(event.record["id"], event.record.get("correct"))
    print(evaluation.summary.as_dict())

Questions are grouped by video (file order). Each video is streamed once: its timed questions
are answered at their moments from the frames up to then, the rest at the end
(infinipot.moments). What the log already holds is skipped, and every new result is written to
it before it is yielded, so a rerun after Ctrl-C, a crash or a full disk resumes. With a cache
folder each streamed video's final cache is kept as `<name>-<key>.ipv` (the key: a digest of
the video's name, the settings and the window), and a rerun whose questions left for that video
are all untimed answers from it without decoding the video (a cache whose settings or video file
no longer match is made again). A video that is missing or unreadable is one `VideoFailed`
event and the run goes on. One Model serves every video's session (its weights load once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from infinipot.benchmarks import group_by_video, resolve_video
from infinipot.errors import InfinipotError
from infinipot.eval_summary import EvalSummary, VideoReport
from infinipot.moments import Stop, stops
from infinipot.questions import QuestionEntry, QuestionFile, score
from infinipot.results import result_key

logger = logging.getLogger(__name__)
CACHE_SUFFIX = ".ipv"


@dataclass(frozen=True)
class VideoPlan:
    """One video of the run: the benchmark's name for it, the file found for it (None: not found), the
    questions still to answer about it, and where its cache is kept (None without a cache folder)."""

    name: str
    path: Path | None
    entries: list[QuestionEntry]
    cache_path: Path | None = None

    @property
    def timed(self) -> int:
        return sum(entry.time is not None for entry in self.entries)


@dataclass(frozen=True)
class VideoStarted:
    """A video is being streamed (or answered from its kept cache): video `index` of `total` with work."""

    index: int
    total: int
    video: VideoPlan
    from_cache: bool


@dataclass(frozen=True)
class Answered:
    """One result, already written to the log: `record` is its line."""

    video: str
    record: dict


@dataclass(frozen=True)
class Unanswered:
    """A question the model could not take (too long for its window, ...); the others go on."""

    video: str
    id: str | int
    message: str


@dataclass(frozen=True)
class VideoFinished:
    index: int
    total: int
    report: VideoReport


@dataclass(frozen=True)
class VideoFailed:
    """A video missing from the folder, or unreadable (its questions not answered); the run goes on."""

    index: int
    total: int
    video: str
    message: str
    questions: int


EvalEvent = VideoStarted | Answered | Unanswered | VideoFinished | VideoFailed


class Evaluation:
    """One run of a benchmark file's questions over a folder of videos (see the module docstring).

    Everything that needs no weights is decided on construction: the videos found, the questions
    still to ask (`videos`), the summary's counts (`summary`). `run()` does the work.
    """

    def __init__(self, questions: QuestionFile, videos_dir: str | Path, settings, *, model=None,
                 device: str = "auto", log=None, cache_dir: str | Path | None = None,
                 ask_options: dict | None = None, open_options: dict | None = None) -> None:
        from infinipot.generation import check_sampling
        from infinipot.model import Model

        self.videos_dir = _folder(videos_dir)
        self.settings = settings
        self.model = model if model is not None else Model(settings, device)
        self.log = log
        self.cache_dir = _cache_folder(cache_dir) if cache_dir is not None else None
        self.ask_options = {"max_new_tokens": 256, "temperature": 0.0, "seed": None, **(ask_options or {})}
        check_sampling(self.ask_options["max_new_tokens"], self.ask_options["temperature"])
        self.open_options = dict(open_options or {})
        self.summary = EvalSummary(str(questions.path), questions.format, len(questions.entries),
                                   len(group_by_video(questions.entries)), malformed=_malformed(questions),
                                   output=str(log.path) if log is not None else None)
        self.videos = self._plan(questions.entries)

    def _plan(self, entries: list[QuestionEntry]) -> list[VideoPlan]:
        todo = entries
        if self.log is not None:
            todo, self.summary.resumed = self.log.pending(entries)
            keys = {entry.key for entry in entries}
            for record in self.log.previous:
                if result_key(record) in keys:
                    self.summary.add_record(record)
        groups = group_by_video(todo)
        self.summary.videos_before = self.summary.videos - len(groups)
        return [VideoPlan(name, path, group, self.cache_path(name) if path is not None else None)
                for name, group in groups.items()
                for path in [resolve_video(name, self.videos_dir) if name else None]]

    def cache_path(self, name: str) -> Path | None:
        """Where the cache of video `name` is kept for these settings and this window (None: no folder)."""
        if self.cache_dir is None:
            return None
        made_with = {"video": name, "settings": self.settings.as_dict(), "window": self.open_options}
        key = hashlib.sha256(json.dumps(made_with, sort_keys=True, default=str).encode()).hexdigest()[:12]
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)[:60] or "video"
        return self.cache_dir / f"{stem}-{key}{CACHE_SUFFIX}"

    @classmethod
    def worker(cls, settings, *, model, cache_dir: str | Path | None = None, ask_options: dict | None = None,
               open_options: dict | None = None) -> Evaluation:
        """An evaluation with no questions of its own and no log, that streams videos planned elsewhere
        (`video_events`): what a Ray worker holds (infinipot.eval_ray); the driver writes the results."""
        from infinipot.questions import QuestionFile

        return cls(QuestionFile(Path(""), [], []), ".", settings, model=model, cache_dir=cache_dir,
                   ask_options=ask_options, open_options=open_options)

    # --- the run -------------------------------------------------------------------------------
    def run(self, on_event: Callable | None = None) -> Iterator[EvalEvent]:
        """Go over the videos, yielding events as they come; `on_event` gets each stream's Progress
        and Loading events (what `Session.stream` reports), for a progress display."""
        total = len(self.videos)
        for index, video in enumerate(self.videos, start=1):
            yield from self.video_events(index, total, video, on_event)

    def video_events(self, index: int, total: int, video: VideoPlan,
                     on_event: Callable | None = None) -> Iterator[EvalEvent]:
        """One video's events, as `run` yields them (counted in `summary`): a missing video's failure, or
        its stream and answers. A Ray worker runs each video it is sent this way."""
        if video.path is None:
            yield self.count(VideoFailed(index, total, video.name, self._missing(video), len(video.entries)))
            return
        yield from self._video(index, total, video, self._timing_loads(on_event))

    def _missing(self, video: VideoPlan) -> str:
        if not video.name:
            return (f"{len(video.entries)} questions name no video: give each entry a `video` (a file in "
                    f"{self.videos_dir})")
        return f"video {video.name} is not in {self.videos_dir}: put it there, or pass the folder that holds it"

    def _video(self, index: int, total: int, video: VideoPlan, on_event: Callable) -> Iterator[EvalEvent]:
        started, loading = time.perf_counter(), self.summary.loading_seconds
        kept = self._cache_matches(video)
        from_cache = kept and not video.timed
        report = VideoReport(video.name, len(video.entries), from_cache=from_cache,
                             cache=str(video.cache_path) if kept else None)
        try:
            session = self._session(video, from_cache, on_event)
        except InfinipotError as error:
            yield self.count(VideoFailed(index, total, video.name, _cannot_read(video, error), len(video.entries)))
            return
        yield self.count(VideoStarted(index, total, video, from_cache))
        try:
            failure = yield from self._answer(session, video, report, from_cache, kept, on_event)
        finally:
            session.close()
        if failure is not None:
            yield self.count(VideoFailed(index, total, video.name, failure, report.questions - report.answered
                                         - report.failed))
            return
        stats = session.state.stats
        report.frames, report.peak_cached_tokens = stats.frames, stats.peak_cached_tokens
        report.warnings += [w for w in session.warnings if w not in report.warnings]
        report.seconds = round(time.perf_counter() - started - (self.summary.loading_seconds - loading), 3)
        yield self.count(VideoFinished(index, total, report))

    def _answer(self, session, video: VideoPlan, report: VideoReport, from_cache: bool, kept: bool,
                on_event: Callable) -> Iterator[EvalEvent]:
        """Ask the video's questions at their stops; returns a message when the video fails midway."""
        schedule = iter([Stop("end", video.entries)]) if from_cache else stops(session, video.entries, on_event)
        while True:
            try:
                stop = next(schedule, None)
            except InfinipotError as error:  # unreadable from some point on: what was answered stays
                return _cannot_read(video, error)
            if stop is None:
                return None
            if stop.kind == "end" and video.cache_path is not None and not kept:
                self._keep(session, video, report)
            for entry in stop.entries:
                event = self._ask(session, video, entry, stop.flags)
                report.answered += isinstance(event, Answered)
                report.failed += isinstance(event, Unanswered)
                yield self.count(event)

    def _session(self, video: VideoPlan, from_cache: bool, on_event: Callable):
        """A session on the shared model: around the kept cache, or with the video opened (not yet decoded)."""
        from infinipot.session import Loading, Session

        if from_cache:
            if not self.model.loaded:  # Session.load needs the weights; say so as a stream would
                on_event(Loading(self.model.model_id, done=False))
                self.model.adapter
                on_event(Loading(self.model.model_id, done=True))
            return Session.load(video.cache_path, model=self.model)
        session = Session(self.settings, model=self.model)
        session.open(video.path, **self.open_options)
        return session

    def _ask(self, session, video: VideoPlan, entry: QuestionEntry, flags: dict) -> Answered | Unanswered:
        moment = {**session.moment(), **flags}
        try:
            answer = session.ask(entry.prompt, **self.ask_options)
        except InfinipotError as error:
            return Unanswered(video.name, entry.id, str(error))
        record = score(entry, answer, moment).record()
        if answer.evidence is not None:
            record["evidence"] = answer.evidence.as_dict()
        if self.log is not None:  # a failed write is the run's end (it says how to resume), not the video's
            self.log.write(record)
        return Answered(video.name, record)

    def _keep(self, session, video: VideoPlan, report: VideoReport) -> None:
        """Save the video's final cache (atomically); a failure is a warning, the answers go on."""
        try:
            session.save(video.cache_path)
            report.cache = str(video.cache_path)
        except InfinipotError as error:
            report.warnings.append(f"the cache of {video.name} was not kept: {error}")

    def _cache_matches(self, video: VideoPlan) -> bool:
        """A kept cache made with these settings from this very file (same size, same first and last MiB)."""
        path = video.cache_path
        if path is None or not path.is_file():
            return False
        from infinipot.cache_header import read_header
        from infinipot.fingerprints import video_fingerprint

        try:
            meta = read_header(path).meta
            found = video_fingerprint(video.path, 0.0)
        except (InfinipotError, OSError) as error:
            logger.warning("%s cannot be reused (%s): streaming %s again", path, error, video.name)
            return False
        source = meta["state"].get("source") or {}
        same_video = all(source.get(key) == found[key] for key in ("size_bytes", "head_tail_sha256"))
        return same_video and meta["settings"] == json.loads(json.dumps(self.settings.as_dict()))

    def count(self, event: EvalEvent) -> EvalEvent:
        """Add an event to the summary and hand it on (a Ray run's driver counts its workers' events here)."""
        summary = self.summary
        if isinstance(event, Answered):
            summary.answered_now += 1
            summary.add_record(event.record)
        elif isinstance(event, Unanswered):
            summary.failed.append({"video": event.video, "id": event.id, "message": event.message})
        elif isinstance(event, VideoFailed):
            summary.video_failures.append({"video": event.video, "message": event.message,
                                           "questions": event.questions})
        elif isinstance(event, VideoFinished):
            summary.reports.append(event.report)
        return event

    def _timing_loads(self, on_event: Callable | None) -> Callable:
        """`on_event`, counting the time the weights take to load (kept out of the time per video)."""
        from infinipot.session import Loading

        began: list[float] = []

        def forward(event) -> None:
            if isinstance(event, Loading):
                if not event.done:
                    began.append(time.perf_counter())
                elif began:
                    self.summary.loading_seconds += time.perf_counter() - began.pop()
            if on_event is not None:
                on_event(event)

        return forward


def _cannot_read(video: VideoPlan, error: InfinipotError) -> str:
    text = str(error)
    return text if video.name in text or str(video.path) in text else f"{video.name}: {text}"


def _malformed(questions: QuestionFile) -> list[dict]:
    return [{"line": problem.line, "message": problem.message,
             **({"index": problem.index} if problem.index is not None else {})} for problem in questions.problems]


def _folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InfinipotError(f"videos folder {folder} does not exist or is not a folder: pass the folder that "
                             "holds the benchmark's videos")
    return folder


def _cache_folder(path: str | Path) -> Path:
    """The cache folder, made if needed, and writable."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InfinipotError(f"cache folder {folder} is a file: give a folder name") from None
    except OSError as error:
        raise InfinipotError(f"cannot make cache folder {folder} ({error.strerror}): choose another") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InfinipotError(f"cannot write to cache folder {folder} (permission denied): choose another")
    return folder
