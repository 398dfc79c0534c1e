"""Retention maps as PNG files: video time across, layers up, the share of each bin's visual tokens kept as colour.

Drawn with matplotlib (the `plots` extra), imported only when a map is drawn, on a bare Figure
with the Agg canvas (no pyplot, no display, no global state), at a fixed size so a map's pixels
are known. Bins no frame was streamed in (skipped video) are grey.
"""

from __future__ import annotations

from pathlib import Path

from infinipot.errors import InfinipotError
from infinipot.file_io import write_atomically
from infinipot.retention import RetentionMap, nice_bin

WIDTH_INCHES, HEIGHT_INCHES, DPI = 10.0, 5.0, 100  # 1000 x 500 pixels
MOST_COLUMNS = 400  # time bins drawn at the most (one per temporal step when fewer)
MISSING = "matplotlib is not installed, and drawing a retention map needs it: pip install infinipot[plots]"


def _matplotlib():
    """matplotlib and the pieces a map is drawn with, or the one-line error naming the extra."""
    try:
        import matplotlib
        import matplotlib.ticker
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InfinipotError(MISSING) from None
    return matplotlib, Figure, FigureCanvasAgg


def require_matplotlib() -> None:
    """Fail now, with the fix, when maps cannot be drawn (before a stream that would end in one)."""
    _matplotlib()


def map_size() -> tuple[int, int]:
    """(width, height) in pixels of every map drawn."""
    return int(WIDTH_INCHES * DPI), int(HEIGHT_INCHES * DPI)


def draw_retention_map(retention: RetentionMap, path: str | Path, title: str | None = None) -> Path:
    """Draw `retention` into the PNG file `path` (written whole or not at all); returns the path."""
    matplotlib, Figure, FigureCanvasAgg = _matplotlib()
    path = Path(path)
    timeline = retention.timeline
    width = nice_bin(retention.duration(), MOST_COLUMNS, timeline.step_seconds) \
        if retention.steps > MOST_COLUMNS else timeline.step_seconds
    edges, share = retention.bins(width)
    if not edges:
        raise InfinipotError("the cache holds no video yet, so there is no retention map to draw: stream a video first")
    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0")
    image = axes.imshow(share, aspect="auto", origin="lower", interpolation="nearest", cmap=colours,
                        vmin=0.0, vmax=1.0, extent=(edges[0][0], edges[-1][1], -0.5, retention.layers - 0.5))
    axes.set_xlabel("video time")
    axes.set_ylabel("layer")
    axes.xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(nice_bin(retention.duration(), 10)))
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda seconds, _: _clock(seconds)))
    axes.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    figure.colorbar(image, ax=axes, label="share of visual tokens kept")
    axes.set_title(title or default_title(retention), fontsize=10)
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI))
    return path


def default_title(retention: RetentionMap) -> str:
    budget = f"budget {retention.budget_tokens:,} tokens" if retention.budget_tokens else "no budget"
    span = f"{_clock(retention.timeline.starts[0])}–{_clock(retention.timeline.end(retention.steps - 1))}" \
        if retention.steps else "no video"
    video = f"{Path(retention.video).name}: " if retention.video else ""
    return f"{video}what the cache kept, policy {retention.policy}, {budget}, video {span}"


def _clock(seconds: float) -> str:
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
