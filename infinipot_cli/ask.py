"""`infinipot ask VIDEO|CACHE QUESTION...`: answer questions from a video streamed now or a saved cache.

Questions come as arguments or from a file (`--questions`: .txt, .jsonl, .yaml); entries with a
`time` are answered at that moment of the stream. The video is streamed once for all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from infinipot.errors import InfinipotError

from infinipot_cli import console
from infinipot_cli.answering import Answerer, Style, answer_over_stream, interrupt_note, report_problems
from infinipot_cli.display import StreamDisplay
from infinipot_cli.flags import ANSWER, STREAM, map_option, with_flags
from infinipot_cli.info import check_map, write_map
from infinipot_cli.opening import Inputs, Source, Warnings, closing, load_cache, open_video, run_inputs, same_file
from infinipot_cli.render import format_bytes, session_stats, summary_line


@dataclass
class Batch:
    """The questions of one run, and what became of the ones not asked."""

    entries: list
    skipped: list[dict]  # malformed entries of the question file
    from_file: bool
    earlier: list[dict] = field(default_factory=list)  # answered by an earlier run into the same --output
    log: Any = None


@with_flags(STREAM, ANSWER)
def ask_command(
    source: Annotated[str, typer.Argument(
        metavar="VIDEO|CACHE", help="Video file or stream (a URL, - for stdin) to stream, or a cache written by "
        "`infinipot compress` (answered with its own model unless --preset or --model says otherwise).",
        show_default=False)],
    questions: Annotated[list[str] | None, typer.Argument(
        metavar="QUESTION", help="One or more questions (or use --questions FILE).", show_default=False)] = None,
    questions_file: Annotated[Path | None, typer.Option(
        "--questions", metavar="FILE", help="Question file: .txt (one a line), .jsonl or .yaml entries with "
        "`question` and optional `id`, `options`, `answer`, `category`, `time` (asked at that moment).",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="Append each result as a JSON line (.jsonl) as soon as it is "
        "answered; rerunning with the same file skips the questions already answered.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start --output over instead of resuming.")] = False,
    save_cache: Annotated[Path | None, typer.Option(
        "--save-cache", metavar="FILE", help="Also write the compressed cache (e.g. movie.ipv) to ask again later.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with answers and stats.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display; answers only.")] = False,
    map_path: Annotated[Path | None, map_option()] = None,
    *, stream: Any, answer: Any,
) -> None:
    """Answer each QUESTION about VIDEO (streamed under a fixed cache budget) or from a saved CACHE.

    A question a model cannot take (too long, ...) is reported with its id, the others are answered,
    and the exit code is 1.
    """
    origin = Source.of(source)
    if overwrite and output is None:
        raise InfinipotError("--overwrite starts an --output file over: give --output FILE too")
    batch = _questions(questions or [], questions_file)
    inputs = run_inputs(origin, stream, the_question_file=questions_file)
    _check_outputs(origin, batch, inputs, output, save_cache)
    check_map(map_path, [path for path, _ in inputs.paths], output, save_cache)
    batch.log, batch.entries, batch.earlier = _resume(output, overwrite, batch.entries)
    if not batch.entries and save_cache is None:
        console.note(f"all the questions are already answered in {output}: nothing to do (--overwrite starts over)")
        return
    style = Style(stream_text=not (batch.from_file or as_json), lines=batch.from_file and not as_json,
                  numbered=len(batch.entries) > 1)
    show = not (quiet or as_json)
    with StreamDisplay(show) as display:
        session = load_cache(origin, stream, display) if origin.is_cache else open_video(origin, stream, display)
        try:
            with closing(session):
                report = _answer(session, origin, batch, style, answer, display, save_cache, show)
                if map_path is not None:
                    from infinipot.retention import retention_of

                    write_map(retention_of(session), map_path, quiet=not show)
        finally:
            if batch.log is not None:
                batch.log.close()
    _print_report(report, batch, as_json, quiet)


def _questions(questions: list[str], questions_file: Path | None) -> Batch:
    """The questions to ask, checked before any model is loaded."""
    from infinipot.questions import QuestionEntry, read_questions

    if questions and questions_file is not None:
        raise InfinipotError("pass questions as arguments or with --questions FILE, not both")
    if questions_file is not None:
        parsed = read_questions(questions_file)
        return Batch(parsed.entries, report_problems(parsed), from_file=True)
    if not questions:
        raise InfinipotError('no question given: pass one in quotes, e.g. "What happened?", or --questions FILE')
    if any(not question.strip() for question in questions):
        raise InfinipotError('a question is empty: pass the question text in quotes, e.g. "What happened?"')
    return Batch([QuestionEntry(index + 1, question) for index, question in enumerate(questions)], [], False)


def _check_outputs(origin: Source, batch: Batch, inputs: Inputs, output: Path | None,
                   save_cache: Path | None) -> None:
    """Every output checked before any work: writable, and none of them an input of this run."""
    if origin.is_cache and any(entry.time is not None for entry in batch.entries):
        timed = sum(entry.time is not None for entry in batch.entries)
        raise InfinipotError(f"{timed} question(s) carry a `time`, but {origin.spec} is a saved cache that holds only "
                             "the end of the stream: ask them with the video instead")
    if output is not None:
        from infinipot.results import check_output

        check_output(output, [path for path, _ in inputs.paths])
    if save_cache is not None:
        if origin.is_cache:
            raise InfinipotError(f"--save-cache needs a video, and {origin.spec} is already a cache: drop "
                                 "--save-cache")
        if output is not None and same_file(save_cache, output):
            raise InfinipotError(f"--save-cache {save_cache} is also --output: choose two file names")
        inputs.check_output(save_cache, "--save-cache")


def _resume(output: Path | None, overwrite: bool, entries: list) -> tuple[Any, list, list[dict]]:
    """The results log, the entries still to ask, and the results an earlier run already wrote for the others."""
    if output is None:
        return None, entries, []
    from infinipot.results import ResultLog, result_key

    log = ResultLog(output, overwrite=overwrite)
    for problem in log.problems:
        console.warning_line(f"{output}: {problem} — that question is asked again")
    todo, resumed = log.pending(entries)
    keys = {entry.key for entry in entries}
    earlier = [record for record in log.previous if result_key(record) in keys]
    if resumed:
        console.note(f"{output} already holds {resumed} of these {len(entries)} answers: skipping them "
                     "(--overwrite starts over)")
    return log, todo, earlier


def _answer(session, origin: Source, batch: Batch, style: Style, answer: Any, display: StreamDisplay,
            save_cache: Path | None, show: bool) -> dict:
    """Stream (a video) and answer every entry; returns what the report needs."""
    answerer = Answerer(session, answer, style, batch.log)
    for record in batch.earlier:  # a resumed run's accuracy counts the answers already in --output
        answerer.accuracy.add_record(record)
    warnings, saved = Warnings(), {}

    def streamed() -> None:
        if save_cache is not None:  # before the untimed answers: the expensive part is kept if they are interrupted
            saved.update(path=str(save_cache), size_bytes=session.save(save_cache))
            if show:
                console.note(f"saved the cache to {save_cache} ({format_bytes(saved['size_bytes'])})")

    with interrupt_note(answerer, batch.log.path if batch.log else None, len(batch.entries)):
        if origin.is_cache:
            answerer.ask(batch.entries)
        else:
            warnings.report(session)
            answer_over_stream(session, batch.entries, answerer, display, warnings, streamed)
    return {"answerer": answerer, "stats": session_stats(session, origin.is_cache), "cache": saved,
            "warnings": warnings.seen}


def _print_report(report: dict, batch: Batch, as_json: bool, quiet: bool) -> None:
    answerer, stats = report["answerer"], report["stats"]
    accuracy = answerer.accuracy
    if as_json:
        data: dict[str, Any] = {"answers": answerer.records, "stats": stats}
        if accuracy.overall.total:
            data["accuracy"] = accuracy.as_dict()
        optional = {"skipped": batch.skipped, "failed": answerer.failed, "resumed": len(batch.earlier),
                    "cache": report["cache"], "warnings": report["warnings"]}
        data.update({key: value for key, value in optional.items() if value})
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        if accuracy.overall.total:
            from infinipot_cli.render import accuracy_table

            console.out().print(accuracy_table(accuracy))
        if not quiet:
            console.note(summary_line(stats))
    if answerer.failed:
        console.error_line(f"{len(answerer.failed)} of {len(batch.entries)} questions were not answered: "
                           + ", ".join(str(failure["id"]) for failure in answerer.failed[:10]))
        raise typer.Exit(1)
