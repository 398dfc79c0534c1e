"""Rich rendering for the CLI: the streaming progress display, answers and tables."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from infinipot.engine import Progress as StreamProgress
from infinipot.presets import Preset


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class StreamDisplay:
    """A progress bar over frames with video time, cache fill vs budget and compressions."""

    def __init__(self, console: Console, bytes_per_token: int | None = None) -> None:
        self.bytes_per_token = bytes_per_token
        self.progress = Progress(
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("frames [cyan]{task.fields[video]}[/cyan] video"),
            TextColumn("cache {task.fields[cache]}"),
            TextColumn("[magenta]{task.fields[compressions]}[/magenta] compressions"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("stream", total=None, video="0:00", cache="0", compressions=0)

    def _cache_text(self, event: StreamProgress) -> str:
        text = f"{event.cached_tokens:,}"
        if event.budget_tokens:
            text += f"/{event.budget_tokens:,} tok"
            if self.bytes_per_token:
                used = format_bytes(event.cached_tokens * self.bytes_per_token)
                text += f" ({used}/{format_bytes(event.budget_tokens * self.bytes_per_token)})"
        else:
            text += " tok (no budget)"
        return text

    def update(self, event: StreamProgress) -> None:
        self.progress.update(
            self.task,
            completed=event.frames_done,
            total=event.frames_total,
            video=format_seconds(event.video_seconds),
            cache=self._cache_text(event),
            compressions=event.compressions,
        )

    @contextmanager
    def running(self) -> Iterator[StreamDisplay]:
        with self.progress:
            yield self


def presets_table(presets: list[Preset], default: str) -> Table:
    table = Table(title="infinipot presets", title_justify="left")
    table.add_column("preset", no_wrap=True)
    table.add_column("model", overflow="fold")
    table.add_column("settings and use", overflow="fold")
    for preset in presets:
        name = f"[bold]{preset.name}[/bold]" + ("\n[green](default)[/green]" if preset.name == default else "")
        settings = f"{preset.budget:,} tokens, {preset.policy}, {preset.fps:g} fps, {preset.dtype}"
        table.add_row(name, preset.model, f"{settings}\n[dim]{preset.description}[/dim]")
    return table
