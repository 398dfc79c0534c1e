"""`infinipot eval --ray`: the run over Ray workers (infinipot.eval_ray) and their display (flags: RAY_FLAGS).

On a terminal the display is eval's line over videos, then one line per worker: where it runs,
the video it streams with that stream's frames, cache and ETA (or "loading the model", "idle",
"lost"). When stderr is not a terminal: a line when a worker is ready; eval's own lines per
video say which worker took it. Nothing here imports Ray before `--ray` is given.
"""

from __future__ import annotations

from typing import Any

from infinipot_cli import console
from infinipot_cli.display import StreamDisplay, progress_line
from infinipot_cli.flags import RAY_FLAGS


def check_ray_flags(flags: Any) -> None:
    """Refuse --ray-workers and the like without --ray (before any work)."""
    from infinipot.errors import InfinipotError

    given = [flag.option for flag in RAY_FLAGS[1:] if getattr(flags, flag.name) is not None]
    if flags.address is None and given:
        raise InfinipotError(f"{given[0]} only applies with --ray: add --ray local (or a Ray cluster's address)")


def ray_runner(evaluation, flags: Any):
    """The run over Ray that `--ray` asks for (RayEvaluation), or None without --ray."""
    if flags.address is None:
        return None
    from infinipot.eval_ray import RayEvaluation, RayOptions

    return RayEvaluation(evaluation, RayOptions(flags.address, flags.workers, flags.cpus_per_worker,
                                                flags.gpus_per_worker))


def lost_line(event) -> str:
    """The warning for a WorkerLost event: which worker, why, and what becomes of its video."""
    where = f" on {event.place}" if event.place else ""
    what = "died" if event.dead else "failed"
    line = f"Ray worker {event.worker}{where} {what} ({event.message})"
    if event.video is None:
        return line
    fate = "it is streamed again on another worker" if event.retried else "its questions left are not answered"
    return f"{line} while streaming {event.video}: {fate}"


class _Lines:
    """A Rich renderable: the heading, then one line per worker, at the console's width."""

    def __init__(self, display: WorkersDisplay) -> None:
        self.display = display

    def __rich_console__(self, rich_console, options):
        from rich.text import Text

        width = options.max_width
        yield Text(self.display.heading(width, name=False), no_wrap=True, overflow="crop")
        workers = self.display.runner.workers
        if not workers:
            yield Text(f"starting Ray ({self.display.runner.options.address}) …", no_wrap=True, overflow="crop")
        for worker in workers:
            yield Text(self.display.worker_line(worker, width), no_wrap=True, overflow="crop")


class WorkersDisplay:
    """Eval's display over Ray workers (see the module docstring); the `on_event` of RayEvaluation.run."""

    def __init__(self, show: bool, heading, runner) -> None:
        self.show = show
        self.heading = heading
        self.runner = runner
        self.terminal = show and console.err().is_terminal
        self.streams: dict[int, tuple[str, StreamDisplay]] = {}  # worker -> (its video, a view of its stream)
        self._live = None

    def __enter__(self) -> WorkersDisplay:
        self.refresh()  # Ray and the workers take a while to start: say so from the first moment
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(self, worker_event) -> None:
        from infinipot.evaluation import VideoFailed, VideoFinished, VideoStarted
        from infinipot.session import Progress

        worker, event = worker_event.worker, worker_event.event
        if isinstance(event, VideoStarted):
            self.streams[worker] = (event.video.name, StreamDisplay(show=False))
        elif isinstance(event, (VideoFinished, VideoFailed)):
            self.streams.pop(worker, None)
        elif isinstance(event, Progress) and worker in self.streams:
            self.streams[worker][1].progress(event)
        elif event == "ready" and self.show and not self.terminal:
            where = self.runner.workers[worker - 1].place
            console.note(f"Ray worker {worker} is ready" + (f" on {where}" if where else ""))
        self.refresh()

    def worker_line(self, worker, width: int) -> str:
        """One worker at `width` columns: where, then its video and stream, or its state."""
        prefix = f"{worker.index} {worker.place or '…'}: "
        if not worker.alive:
            state = f"lost ({worker.lost})"
        elif worker.starting is not None:
            state = "starting, loading the model …"
        elif worker.index in self.streams:
            video, stream = self.streams[worker.index]
            room = width - len(prefix) - len(video) - 3
            state = video + (" · " + progress_line(stream.view, room, bar=False) if stream.view and room > 20 else "")
        else:
            state = "idle"
        line = prefix + state
        return line if len(line) < width else line[: max(0, width - 2)] + "…"

    def restart(self) -> None:
        """Eval's view calls this for each video; every worker's stream has its own view here."""

    def refresh(self) -> None:
        if not self.terminal:
            return
        from rich.live import Live

        if self._live is None:
            self._live = Live(_Lines(self), console=console.err(), transient=False, redirect_stdout=False,
                              refresh_per_second=4)
            self._live.start()
        self._live.refresh()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
