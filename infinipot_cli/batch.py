"""Rendering a batch of questions: skipped-line warnings, a progress bar, results as JSON lines, accuracy."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from infinipot.engine import Session
from infinipot.errors import InfinipotError
from infinipot.questions import Accuracy, QuestionEntry, QuestionFile, Result, run_batch
from infinipot_cli.app import err, out


def report_problems(questions: QuestionFile) -> None:
    """One warning per malformed entry, with its line number: skipped, never silently dropped."""
    for problem in questions.problems:
        err.print(f"[yellow]warning:[/yellow] {questions.path}:{problem.line}: {problem.message} — skipped",
                  highlight=False, soft_wrap=True)
    if not questions.entries:
        raise InfinipotError(f"no usable question in {questions.path}: write one question a line (.txt), "
                             "or entries with a `question` field (.jsonl, .yaml)")


def check_output(path: Path) -> None:
    if path.is_dir():
        raise InfinipotError(f"--output {path} is a directory: give a file name such as answers.jsonl")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InfinipotError(f"directory does not exist: {parent} — create it first or choose another --output")


class ResultWriter:
    """JSON lines written and flushed one by one, so an interrupted batch keeps what it answered."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.written = 0
        self._file: IO[str] | None = None

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        if self._file is None:  # opened at the first answer: a run that fails earlier leaves no file
            self._file = self.path.open("w", encoding="utf-8")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@contextmanager
def question_progress(total: int, show: bool) -> Iterator[Callable[[], None]]:
    """A progress bar over the questions on stderr; yields the function that advances it."""
    if not show:
        yield lambda: None
        return
    progress = Progress(
        TextColumn("questions"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), console=err,
        redirect_stdout=out.is_terminal, redirect_stderr=False,  # answers go to stdout, above the bar on a terminal
    )
    task = progress.add_task("questions", total=total)
    with progress:
        yield lambda: progress.advance(task)


def run_questions(
    session: Session, entries: list[QuestionEntry], writer: ResultWriter, show_progress: bool,
    on_result: Callable[[Result], None], ask_options: dict,
) -> Accuracy:
    """Ask every entry, write and show each result as it comes; returns the accuracy tally."""
    accuracy = Accuracy()
    done = 0
    try:
        with question_progress(len(entries), show_progress) as advance:
            for result in run_batch(session, entries, **ask_options):
                writer.write(result.record())
                accuracy.add(result)
                on_result(result)
                done += 1
                advance()
    except KeyboardInterrupt:
        if writer.path is not None:
            err.print(f"answered {done} of {len(entries)} questions; their results are in {writer.path}",
                      highlight=False)
        raise
    finally:
        writer.close()
    return accuracy


def result_line(result: Result) -> str:
    """`id [letter] answer ✓/✗` in Rich markup (the texts escaped)."""
    entry = result.entry
    text = f"[bold]{escape(str(entry.id))}[/bold] "
    if entry.options:
        text += f"[cyan]{result.choice or '?'}[/cyan] "
    text += escape(result.answer.text) or "[dim](empty answer)[/dim]"
    if result.correct is True:
        text += " [green]✓[/green]"
    elif result.correct is False:
        text += f" [red]✗ expected {escape(entry.answer)}[/red]"
    return text


def accuracy_table(accuracy: Accuracy) -> Table:
    table = Table(title="accuracy", title_justify="left")
    table.add_column("category")
    table.add_column("correct", justify="right")
    table.add_column("total", justify="right")
    table.add_column("accuracy", justify="right")
    for name, tally in sorted(accuracy.by_category.items()):
        table.add_row(name, str(tally.correct), str(tally.total), f"{tally.accuracy:.1%}")
    overall = accuracy.overall
    table.add_row("[bold]overall[/bold]", str(overall.correct), str(overall.total),
                  f"[bold]{overall.accuracy:.1%}[/bold]")
    return table
