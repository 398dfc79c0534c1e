"""Asking: one loop for questions given as arguments and read from files, timed or not.

Questions with a `time` are answered when the stream reaches that moment (several at one
moment from the same cache), then the stream goes on; the others are answered at the end, and
so are questions timed past the end (flagged `past_end`). Every result records the moment it
was asked at (`asked_at`, `frames_seen`, `cached_tokens`). A question the library refuses (too
long for the model's window, ...) is reported with its id and the rest go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infinipot.errors import InfinipotError

from infinipot_cli import console
from infinipot_cli.flags import flagged

@dataclass(frozen=True)
class Style:
    """How answers are shown: streamed token by token (argument questions), one line each (files), or not."""

    stream_text: bool = False
    lines: bool = False
    numbered: bool = False  # "Q1:", "Q2:" rather than "Q:"


@dataclass
class Answerer:
    """Asks entries one by one, scores, records, writes and shows each result as it comes."""

    session: Any
    answer: Any  # the --max-new-tokens/--temperature/--seed values
    style: Style
    log: Any = None  # a ResultLog, or None
    records: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    accuracy: Any = None

    def __post_init__(self) -> None:
        from infinipot.generation import check_sampling
        from infinipot.questions import Accuracy

        check_sampling(self.answer.max_new_tokens, self.answer.temperature)  # before any streaming
        self.accuracy = Accuracy()

    @property
    def done(self) -> int:
        return len(self.records)

    def ask(self, entries: list, moment: dict | None = None) -> None:
        for entry in entries:
            self._ask_one(entry, moment or {})

    def _ask_one(self, entry, extra: dict) -> None:
        from infinipot.questions import score

        moment = {**self.session.moment(), **extra}
        try:
            answer = self._generate(entry)
        except InfinipotError as error:
            if self.style.stream_text:
                console.out().print()
            message = flagged(str(error))
            self.failed.append({"id": entry.id, "message": message})
            console.warning_line(f"question {entry.id} not answered: {message}")
            return
        record = score(entry, answer, moment).record()
        if answer.evidence is not None:
            record["evidence"] = answer.evidence.as_dict()
        if self.log is not None:
            self.log.write(record)
        self.accuracy.add_record(record)
        self.records.append(record)
        if self.style.lines:
            from infinipot_cli.render import result_line

            console.out().print(result_line(record), soft_wrap=True)
        if "evidence" in record and (self.style.lines or self.style.stream_text):
            from infinipot_cli.render import evidence_block

            console.out().print(evidence_block(record["evidence"], record), soft_wrap=True, markup=False)

    def _generate(self, entry):
        options = {"max_new_tokens": self.answer.max_new_tokens, "temperature": self.answer.temperature,
                   "seed": self.answer.seed, "evidence": self.answer.evidence}
        if not self.style.stream_text:
            return self.session.ask(entry.prompt, **options)
        out = console.out()
        out.print(f"[bold]Q{entry.id if self.style.numbered else ''}:[/bold] ", end="")
        out.print(entry.question, markup=False)
        out.print("[bold]A:[/bold] ", end="")
        answer = self.session.ask(entry.prompt, **options,
                                  on_text=lambda piece: out.print(piece, end="", markup=False))
        out.print()
        return answer


def answer_over_stream(session, entries: list, answerer: Answerer, display, warnings,
                       on_streamed: Callable[[], None]) -> None:
    """Stream the opened source once, answering timed entries at their moments and the rest at the end."""
    from infinipot.moments import stops

    for stop in stops(session, entries, display):
        display.pause()
        warnings.report(session)
        if stop.kind == "end":
            on_streamed()
        answerer.ask(stop.entries, stop.flags)


@contextmanager
def interrupt_note(answerer: Answerer, output: Path | None, total: int) -> Iterator[None]:
    """On Ctrl-C or SIGTERM: say what was answered and kept before the interrupt line."""
    try:
        yield
    except KeyboardInterrupt:
        if output is not None:
            console.note(f"answered {answerer.done} of {total} questions; their results are in {output} "
                         "(rerun with the same --output to resume)")
        raise


def report_problems(parsed) -> list[dict]:
    """One warning per malformed entry of a question file (skipped, never silently dropped)."""
    skipped = []
    for problem in parsed.problems:
        where = problem.where if problem.index is not None else str(problem.line)
        console.warning_line(f"{parsed.path}:{where}: {problem.message} — skipped")
        skipped.append({"line": problem.line, "message": problem.message,
                        **({"index": problem.index} if problem.index is not None else {})})
    if not parsed.entries:
        raise InfinipotError(f"no usable question in {parsed.path}: write one question a line (.txt), or entries "
                             "with a `question` field (.jsonl, .yaml)")
    return skipped
