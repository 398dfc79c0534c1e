"""Many videos on many machines: an Evaluation's videos spread over Ray actors.

    from infinipot.eval_ray import RayEvaluation, RayOptions

    with ResultLog("results.jsonl") as log:
        evaluation = Evaluation(questions, "videos/", settings, log=log, cache_dir="/shared/caches")
        for event in RayEvaluation(evaluation, RayOptions(address="auto")).run():
            ...  # the events of Evaluation.run, plus WorkerLost

The driver (this process) plans the run as a local one does (`Evaluation`: what is left to ask,
where caches go) and never loads the weights. Each worker is a Ray actor holding one `Model` for
its whole life (one per GPU, or per `cpus_per_worker` CPUs); it is sent one video at a time
(idle workers take the next video in file order) and streams back that video's events as they
come: a Ray streaming generator of `Evaluation.video_events`, with its stream's progress at most
every half second. The driver writes each result to the one `ResultLog` as it arrives, so the
file, its format and its resume rules are the local run's.

A worker that dies (out of memory, killed, its node lost) or whose video raised loses nothing
already received; the questions of its video not answered yet are tried once more on another
worker, then reported as a failed video; the run goes on with the workers left. Caches in a
shared `cache_dir` are written atomically by the workers, so a rerun reuses them.
`address="local"` starts a Ray instance on this machine and shuts it down at the end; any other
address connects to that cluster (or one this process already joined) and leaves it running.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from infinipot.errors import InfinipotError
from infinipot.eval_summary import VideoReport
from infinipot.eval_worker import VideoWorker
from infinipot.evaluation import (Answered, EvalEvent, Evaluation, Unanswered, VideoFailed, VideoFinished,
                                  VideoPlan, VideoStarted)

logger = logging.getLogger(__name__)
RAY_EXTRA = "pip install 'infinipot[ray]'"
MIN_RAY = (2, 9)
CPU_WORKER_CPUS = 8  # without GPUs: CPUs per worker unless told (a model's forward uses them all)
EVAL_EVENTS = (VideoStarted, Answered, Unanswered, VideoFinished, VideoFailed)


@dataclass(frozen=True)
class RayOptions:
    """Where to run and how big a worker is. None: one worker per GPU (per `CPU_WORKER_CPUS` CPUs
    without GPUs), as many as the cluster holds and the videos need."""

    address: str = "local"  # "local": a new Ray instance here; "auto", "ray://host:10001", "host:6379": join it
    workers: int | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float | None = None


@dataclass(frozen=True)
class WorkerEvent:
    """Something one worker reported: a stream's Loading/Progress, or an evaluation event (given to
    `on_event` before it is yielded), for a display per worker."""

    worker: int
    event: Any


@dataclass(frozen=True)
class WorkerLost:
    """A worker died (`dead`), or the video it streamed raised: that `video`, if any, is retried once
    on another worker (`retried`), else reported as failed."""

    worker: int
    place: str
    video: str | None
    message: str
    dead: bool
    retried: bool


def import_ray():
    """The `ray` module, or one line naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise InfinipotError(f"running an evaluation on Ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    version = tuple(int(part) for part in ray.__version__.split(".")[:2] if part.isdigit())
    if version < MIN_RAY:
        raise InfinipotError(f"Ray {ray.__version__} is too old (infinipot needs {'.'.join(map(str, MIN_RAY))} or "
                             f"later): {RAY_EXTRA} --upgrade")
    return ray


# --- the driver ---------------------------------------------------------------------------------
@dataclass
class Job:
    """A video sent (or to be sent) to a worker; `attempt` 2 is its retry after a lost worker."""

    index: int
    video: VideoPlan
    attempt: int = 1
    avoid: int | None = None  # the worker it was lost on
    done: set = field(default_factory=set)  # keys answered (or refused) by this attempt
    answered: int = 0
    refused: int = 0
    earlier: VideoReport | None = None  # what the lost attempt answered
    over: bool = False  # its VideoFinished or VideoFailed has come


@dataclass
class Worker:
    index: int
    handle: Any
    starting: Any  # the ref of `start()` until its model is loaded; None after
    place: str = ""
    alive: bool = True
    job: Job | None = None
    stream: Any = None  # the ObjectRefGenerator of its job
    videos: int = 0
    lost: str | None = None


class RayEvaluation:
    """Runs `evaluation`'s videos on Ray workers; `run()` yields the same events as `Evaluation.run`."""

    def __init__(self, evaluation: Evaluation, options: RayOptions = RayOptions()) -> None:
        self.ray = import_ray()
        self.evaluation = evaluation
        self.options = options
        self.workers: list[Worker] = []
        self.sizes: dict = {}

    def worker_of(self, video: str) -> Worker | None:
        """The worker streaming `video` now, if any."""
        return next((w for w in self.workers if w.job is not None and w.job.video.name == video), None)

    def run(self, on_event: Callable | None = None) -> Iterator[EvalEvent | WorkerLost]:
        """Go over the videos on the workers; `on_event` gets every `WorkerEvent` (see the module docstring)."""
        evaluation, total = self.evaluation, len(self.evaluation.videos)
        jobs: deque[Job] = deque()
        for index, video in enumerate(evaluation.videos, start=1):
            if video.path is None:  # nothing for a worker to do
                yield from evaluation.video_events(index, total, video)
            else:
                jobs.append(Job(index, _absolute(video)))
        if not jobs:
            return
        on_event = on_event or (lambda event: None)
        with self._cluster():
            try:
                self._start(len(jobs))
                for worker in self.workers:
                    on_event(WorkerEvent(worker.index, "starting"))
                yield from self._drive(jobs, total, on_event)
            finally:
                for worker in self.workers:
                    self.ray.kill(worker.handle)
                evaluation.summary.ray = self._describe()

    @contextmanager
    def _cluster(self) -> Iterator[None]:
        """Joined (or started, for "local") for the run; a local instance is shut down after it."""
        ray, address = self.ray, self.options.address
        if ray.is_initialized():  # the caller's own connection: used as it is
            yield
            return
        quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
        try:
            if address == "local":
                ray.init(address="local", include_dashboard=False, **quiet)
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
            raise InfinipotError(f"cannot reach the Ray cluster at {address} ({str(error).splitlines()[0][:160]}): "
                                 "give the address `ray status` prints on its head node, or `local`") from None
        try:
            yield
        finally:
            ray.shutdown()  # the driver's connection; a cluster we joined keeps running

    def _start(self, videos: int) -> None:
        """Size the workers to the cluster and start them (each loads its model as it starts)."""
        count, cpus, gpus, device = self._sizes(videos)
        evaluation = self.evaluation
        actor = self.ray.remote(VideoWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0)
        cache_dir = str(evaluation.cache_dir.absolute()) if evaluation.cache_dir is not None else None
        for index in range(1, count + 1):
            handle = actor.remote(evaluation.settings, device, cache_dir, evaluation.ask_options,
                                  evaluation.open_options)
            self.workers.append(Worker(index, handle, handle.start.remote()))

    def _sizes(self, videos: int) -> tuple[int, float, float, str]:
        """How many workers, the CPUs and GPUs of each, and their device; one line when none fits."""
        options, device = self.options, self.evaluation.model.device_name
        resources = self.ray.cluster_resources()
        cpus_total, gpus_total = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        gpus = options.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if gpus_total and device != "cpu" else 0.0
        cpus = options.cpus_per_worker or (1.0 if gpus else max(1.0, min(CPU_WORKER_CPUS, cpus_total)))
        fits = min(math.floor(gpus_total / gpus + 1e-9) if gpus else videos, math.floor(cpus_total / cpus + 1e-9))
        if fits < 1:
            raise InfinipotError(f"a worker needs {cpus:g} CPUs and {gpus:g} GPUs but the Ray cluster has "
                                 f"{cpus_total:g} CPUs and {gpus_total:g} GPUs: lower `cpus_per_worker` or "
                                 "`gpus_per_worker`, or add nodes")
        count = min(options.workers or fits, videos)
        if count > fits:
            logger.warning("%d workers asked for, %d fit in the Ray cluster now: the others start when it has room",
                           count, fits)
        if not gpus and device == "auto" and gpus_total:
            device = "cpu"  # a worker holding no GPU must not use one
        self.sizes = {"workers": count, "cpus_per_worker": cpus, "gpus_per_worker": gpus, "device": device}
        return count, cpus, gpus, device

    def _drive(self, jobs: deque[Job], total: int, on_event: Callable) -> Iterator[EvalEvent | WorkerLost]:
        """Hand jobs to idle workers and take what they send, until every video is done or failed."""
        ray = self.ray
        while jobs or any(worker.job for worker in self.workers):
            self._assign(jobs, total)
            waiting = {worker.starting: (worker, True) for worker in self.workers
                       if worker.alive and worker.starting is not None}
            waiting.update({worker.stream: (worker, False) for worker in self.workers if worker.stream is not None})
            if not waiting:
                yield from self._nobody_left(jobs, total)
                return
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=1.0)
            for ref in ready:
                worker, starting = waiting[ref]
                if starting:
                    yield from self._started(worker, on_event)
                else:
                    yield from self._step(worker, jobs, total, on_event)

    def _assign(self, jobs: deque[Job], total: int) -> None:
        """Each idle worker takes the first job it may (a retry goes to another worker when one lives)."""
        live = [worker for worker in self.workers if worker.alive]
        for worker in live:
            if worker.job is not None or worker.starting is not None:
                continue
            job = next((job for job in jobs if job.avoid != worker.index or len(live) == 1), None)
            if job is None:
                continue
            jobs.remove(job)
            worker.job, worker.videos = job, worker.videos + 1
            worker.stream = worker.handle.run_video.options(num_returns="streaming").remote(job.index, total,
                                                                                            job.video)

    def _started(self, worker: Worker, on_event: Callable) -> Iterator[WorkerLost]:
        ref, worker.starting = worker.starting, None
        try:
            worker.place, loading = self.ray.get(ref)
        except self.ray.exceptions.RayError as error:  # no infinipot there, no model, an unwritable cache_dir...
            self.ray.kill(worker.handle)
            yield self._lose(worker, error, None)
            return
        summary = self.evaluation.summary  # the workers load side by side: the run waited for the slowest
        summary.loading_seconds = max(summary.loading_seconds, loading)
        on_event(WorkerEvent(worker.index, "ready"))

    def _step(self, worker: Worker, jobs: deque[Job], total: int, on_event: Callable) -> Iterator:
        """Take the next thing `worker` sent: an event, its job's end, or the news that it failed."""
        ray, job = self.ray, worker.job
        try:
            item = ray.get(next(worker.stream))
        except StopIteration:
            worker.job = worker.stream = None
            return
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
            worker.job = worker.stream = None
            lost = self._lose(worker, error, job, isinstance(error, ray.exceptions.RayActorError))
            yield lost
            yield from self._after_loss(job, lost, jobs, total)
            return
        if isinstance(item, EVAL_EVENTS):
            yield self._take(worker, job, item, on_event)
        else:  # the stream's progress
            on_event(WorkerEvent(worker.index, item))

    def _take(self, worker: Worker, job: Job, event: EvalEvent, on_event: Callable) -> EvalEvent:
        """Write a result to the log (before anything else), fold a retry's report, count, show."""
        log = self.evaluation.log
        if isinstance(event, Answered):
            if log is not None:
                log.write(event.record)
            job.done.add((event.video, str(event.record["id"])))
            job.answered += 1
        elif isinstance(event, Unanswered):
            job.done.add((event.video, str(event.id)))
            job.refused += 1
        elif isinstance(event, (VideoFinished, VideoFailed)):
            job.over = True
            if isinstance(event, VideoFinished) and job.earlier is not None:
                _fold(event.report, job.earlier)
        event = self.evaluation.count(event)
        on_event(WorkerEvent(worker.index, event))
        return event

    def _lose(self, worker: Worker, error: Exception, job: Job | None, dead: bool = True) -> WorkerLost:
        message = _reason(error)
        if dead:
            worker.alive, worker.lost = False, message
        video = job.video.name if job is not None and not job.over else None
        retried = video is not None and job.attempt == 1 and bool(_left(job))
        return WorkerLost(worker.index, worker.place, video, message, dead, retried)

    def _after_loss(self, job: Job, lost: WorkerLost, jobs: deque[Job], total: int) -> Iterator[EvalEvent]:
        """The lost attempt's video: done if nothing was left, else retried once, else failed."""
        if job.over:
            return
        left, report = _left(job), _attempt_report(job)
        if not left:
            report.warnings.append(f"its worker was lost after its last answer ({lost.message})")
            yield self.evaluation.count(VideoFinished(job.index, total, report))
        elif lost.retried:
            jobs.appendleft(Job(job.index, replace(job.video, entries=left), 2, lost.worker, earlier=report))
        else:
            what = "died" if lost.dead else "failed"
            message = (f"{job.video.name}: its worker {what} on both tries ({lost.message}): rerun with the same "
                       "output file to answer its questions")
            yield self.evaluation.count(VideoFailed(job.index, total, job.video.name, message, len(left)))

    def _nobody_left(self, jobs: deque[Job], total: int) -> Iterator[EvalEvent]:
        """Every worker is gone: the videos left fail; when none ever started, the run stops with the reason."""
        last = next((worker.lost for worker in reversed(self.workers) if worker.lost), "unknown")
        if not any(worker.videos for worker in self.workers):
            raise InfinipotError(f"no Ray worker could start ({last}): install infinipot (the same version) on "
                                 "every node, and keep the model, the videos and the cache folder where all see them")
        while jobs:
            job = jobs.popleft()
            message = (f"{job.video.name}: no Ray worker is left (the last one: {last}): rerun with the same "
                       "output file to answer its questions")
            yield self.evaluation.count(VideoFailed(job.index, total, job.video.name, message, len(job.video.entries)))

    def _describe(self) -> dict:
        """The run's Ray side, for the summary: the sizes and each worker's node, videos and fate."""
        workers = [{"worker": w.index, "place": w.place, "videos": w.videos, "lost": w.lost} for w in self.workers]
        return {"address": self.options.address, **self.sizes, "workers": workers}


def _absolute(video: VideoPlan) -> VideoPlan:
    """Paths a worker can open whatever its working directory (on a cluster: shared storage)."""
    cache = video.cache_path.absolute() if video.cache_path is not None else None
    return replace(video, path=video.path.absolute(), cache_path=cache)


def _left(job: Job) -> list:
    return [entry for entry in job.video.entries if entry.key not in job.done]


def _attempt_report(job: Job) -> VideoReport:
    """What the video's attempts so far did, as a report."""
    report = VideoReport(job.video.name, len(job.video.entries), answered=job.answered, failed=job.refused)
    if job.earlier is not None:
        _fold(report, job.earlier)
    return report


def _fold(report: VideoReport, earlier: VideoReport) -> None:
    """Add a lost attempt's questions and answers to the retry's report (asked only what was left)."""
    report.questions = earlier.questions
    report.answered += earlier.answered
    report.failed += earlier.failed
    kept = f"{earlier.answered} answer" + ("" if earlier.answered == 1 else "s")
    report.warnings.insert(0, f"streamed again after its worker was lost ({kept} kept)")


def _reason(error: Exception) -> str:
    """One short line on why a worker was lost."""
    cause = getattr(error, "cause", None)
    if cause is not None and not isinstance(cause, type(error)):
        return f"{type(cause).__name__}: {str(cause).splitlines()[0][:160] if str(cause) else ''}".rstrip(": ")
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__
