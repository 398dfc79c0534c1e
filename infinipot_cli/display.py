"""The streaming progress display, drawn from the session's events (Loading, Progress).

On a terminal: a spinner while the libraries and the model load, then one line that always
keeps frames done/total, video time, cache vs budget, compressions and ETA; at narrower widths
it drops decoration first (the bar, bytes, elapsed time), then shortens words. When stderr is not
a terminal: a plain line every 5% (every 30 s for a live source of unknown length).

The ETA comes from the rate the stream sustains (an exponentially weighted rate over the
recent chunks), not from frames / time since the start, which counts the model's loading and
the cheap first chunks before the budget fills.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from infinipot_cli import console
from infinipot_cli.render import format_bytes, format_seconds, plural

PLAIN_PERCENT_STEP = 5
PLAIN_SECONDS_STEP = 30.0
_BARS = (24, 12, 0)


@dataclass
class RateMeter:
    """The pace the stream sustains: seconds per frame of each chunk, exponentially weighted.

    Seconds per frame (not frames per second) are averaged, so a few cheap early chunks (before
    the budget fills and compressions begin) fade out as fast as they should.
    """

    weight: float = 0.3  # of the newest chunk
    seconds_per_frame: float | None = None
    _last: tuple[int, float] | None = None

    def update(self, frames_done: int, now: float) -> None:
        """Record that `frames_done` frames were done at time `now`; the first call only sets the origin."""
        if self._last is not None:
            frames, seconds = frames_done - self._last[0], now - self._last[1]
            if frames <= 0 or seconds <= 0:
                return
            pace, previous = seconds / frames, self.seconds_per_frame
            self.seconds_per_frame = pace if previous is None else self.weight * pace + (1 - self.weight) * previous
        self._last = (frames_done, now)

    def eta(self, frames_left: int) -> float | None:
        return frames_left * self.seconds_per_frame if self.seconds_per_frame is not None else None


@dataclass(frozen=True)
class ProgressView:
    """What one progress line shows."""

    frames_done: int
    frames_total: int | None
    video_seconds: float
    seconds_total: float | None
    cached_tokens: int
    budget_tokens: int  # 0: the policy never compresses
    kv_bytes_per_token: int
    compressions: int
    elapsed: float
    eta: float | None


def _pieces(view: ProgressView, style: str) -> list[str]:
    """The essential fields, worded `long`, `medium` or `short`."""
    total = f"/{view.frames_total:,}" if view.frames_total else ""
    frames = f"{view.frames_done:,}{total} " + ("fr" if style == "short" else "frames")
    video = format_seconds(view.video_seconds)
    if view.seconds_total:
        video += f"/{format_seconds(view.seconds_total)}"
    budget = f"/{view.budget_tokens:,}" if view.budget_tokens else ""
    cache = {"long": f"cache {view.cached_tokens:,}{budget} tok" + ("" if budget else " (no budget)"),
             "medium": f"cache {view.cached_tokens:,}{budget}", "short": f"kv {view.cached_tokens:,}{budget}"}[style]
    compressions = f"{view.compressions:,} comp" if style == "short" else plural(view.compressions, "compression")
    pieces = [frames, f"video {video}" if style == "long" else video, cache, compressions]
    if view.frames_total:
        pieces.append("eta " + (format_seconds(view.eta) if view.eta is not None else "…"))
    return pieces


def _bar(view: ProgressView, width: int) -> str:
    share = min(1.0, view.frames_done / view.frames_total) if view.frames_total else 0.0
    filled = int(round(share * width))
    return "━" * filled + "─" * (width - filled)


def _long_line(view: ProgressView, bar: int, with_bytes: bool, with_elapsed: bool) -> str:
    pieces = _pieces(view, "long")
    if with_bytes and view.kv_bytes_per_token and view.budget_tokens:
        used = format_bytes(view.cached_tokens * view.kv_bytes_per_token)
        pieces[2] += f" ({used}/{format_bytes(view.budget_tokens * view.kv_bytes_per_token)})"
    if with_elapsed:
        pieces.insert(len(pieces) - (1 if view.frames_total else 0), f"{format_seconds(view.elapsed)} elapsed")
    line = " · ".join(pieces)
    return f"{_bar(view, bar)} {line}" if bar and view.frames_total else line


def progress_line(view: ProgressView, width: int, bar: bool = True) -> str:
    """The richest line that fits `width` columns (one column is left free for the cursor)."""
    candidates = [_long_line(view, size, True, True) for size in (_BARS if bar else (0,))]
    candidates += [_long_line(view, 0, True, False), _long_line(view, 0, False, True),
                   _long_line(view, 0, False, False), "  ".join(_pieces(view, "medium")),
                   "  ".join(_pieces(view, "short")), " ".join(_pieces(view, "short"))]
    for line in candidates:
        if len(line) < width:
            return line
    return candidates[-1][: max(0, width - 1)]


class _Line:
    """A Rich renderable that draws the progress line at the console's current width."""

    def __init__(self, display: StreamDisplay) -> None:
        self.display = display

    def __rich_console__(self, rich_console, options):
        from rich.text import Text

        view, heading = self.display.view, self.display.heading
        if heading is not None:
            yield Text(heading(options.max_width), no_wrap=True, overflow="crop")
        yield Text(progress_line(view, options.max_width) if view else "", no_wrap=True, overflow="crop")


class StreamDisplay:
    """Shows a stream's events on stderr (nothing when `show` is False); a context manager.

    `heading(width)`, when given, is a line drawn above the progress line on a terminal (eval's
    line over videos); `restart()` begins the next stream's progress (its ETA starts over).
    """

    def __init__(self, show: bool, live_source: bool = False, heading: Callable[[int], str] | None = None) -> None:
        self.show = show
        self.live_source = live_source
        self.heading = heading
        self.terminal = show and console.err().is_terminal
        self.view: ProgressView | None = None
        self.meter = RateMeter()
        self._started: float | None = None
        self._status = None  # a transient Rich Live with a spinner
        self._live = None  # the progress line
        self._printed_at: tuple[int, float] | None = None  # plain mode: (percent step, time) of the last line

    def __enter__(self) -> StreamDisplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def status(self, text: str) -> None:
        """A transient status (a spinner on a terminal; nothing otherwise): the command is working."""
        if not self.terminal:
            return
        from rich.live import Live
        from rich.spinner import Spinner

        if self._status is None:
            self._status = Live(Spinner("dots", text), console=console.err(), transient=True,
                                redirect_stdout=False, refresh_per_second=8)
            self._status.start()
        else:
            self._status.update(Spinner("dots", text))

    def loading(self, model_id: str) -> None:
        if self.terminal:
            self.status(f"loading {model_id} …")
        elif self.show:
            console.note(f"loading {model_id} …")

    def __call__(self, event) -> None:
        """The `on_event` callback of `Session.stream`."""
        from infinipot.session import Loading

        if isinstance(event, Loading):
            if not event.done:
                self.loading(event.model_id)
            return
        self.progress(event)

    def progress(self, event) -> None:
        now = time.perf_counter()
        if self._started is None:
            self._started = now
        self.meter.update(event.frames_done, now)
        left = event.frames_total - event.frames_done if event.frames_total else 0
        self.view = ProgressView(event.frames_done, event.frames_total, float(event.video_seconds),
                                 event.seconds_total, event.cached_tokens, event.budget_tokens,
                                 event.kv_bytes_per_token, event.compressions, now - self._started,
                                 self.meter.eta(left) if event.frames_total else None)
        if self.terminal:
            self._draw()
        elif self.show:
            self._plain(now)

    def _draw(self) -> None:
        from rich.live import Live

        self._stop_status()
        if self._live is None:
            self._live = Live(_Line(self), console=console.err(), transient=False, redirect_stdout=False,
                              refresh_per_second=4)
            self._live.start()
        self._live.refresh()

    def restart(self) -> None:
        """The next events belong to a new stream: its frames, pace and ETA start from nothing."""
        self.view, self.meter, self._started, self._printed_at = None, RateMeter(), None, None

    def refresh(self) -> None:
        """Draw now (the heading, with the last progress line if any), without a new event."""
        if self.terminal:
            self._draw()

    def _plain(self, now: float) -> None:
        view = self.view
        if view.frames_total:
            mark = min(100, 100 * view.frames_done // view.frames_total) // PLAIN_PERCENT_STEP
            due = self._printed_at is None or mark > self._printed_at[0]
        else:
            mark = 0
            due = self._printed_at is None or now - self._printed_at[1] >= PLAIN_SECONDS_STEP
        if due:
            self._printed_at = (mark, now)
            console.note(progress_line(view, 10_000, bar=False))

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def pause(self) -> None:
        """Stop drawing (before answers are printed); the next event draws again."""
        self._stop_status()
        if self._live is not None:
            self._live.stop()
            self._live = None

    def close(self) -> None:
        self.pause()
