"""`infinipot compare VIDEO --policies a,b,c`: several policies at one budget, on one video, in one run.

One loaded model; the video is decoded and vision-encoded once per chunk and every policy's
cache is fed from that shared encoding (infinipot.compare). Prints a table per policy and the
answers side by side; `--json` prints everything, `--output` writes a JSON line per (question,
policy), `--plot` draws what each policy kept over the video's timeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from infinipot.errors import InfinipotError

from infinipot_cli import console
from infinipot_cli.answering import report_problems
from infinipot_cli.display import StreamDisplay
from infinipot_cli.flags import ANSWER, STREAM, with_flags
from infinipot_cli.opening import Source, run_inputs, setting_changes, video_settings


def _policy_names(policies: str) -> list[str]:
    """--policies as names, each one known: checked before any weights load, naming the flag typed."""
    from infinipot.policies import POLICY_NAMES

    names = [name.strip() for name in policies.split(",")]
    unknown = [name for name in names if name not in POLICY_NAMES]
    if unknown:
        raise InfinipotError(f"unknown policy {unknown[0]!r} in --policies: choose from {', '.join(POLICY_NAMES)}")
    return names


@with_flags(STREAM, ANSWER)
def compare_command(
    video: Annotated[str, typer.Argument(metavar="VIDEO", help="Video file or stream to compare the policies on.",
                                         show_default=False)],
    questions: Annotated[list[str] | None, typer.Argument(
        metavar="QUESTION", help="One or more questions (or use --questions FILE).", show_default=False)] = None,
    policies: Annotated[str, typer.Option(
        "--policies", metavar="A,B,C", help="Comma-separated policies to compare (see --policy's list); add full "
        "for the accuracy ceiling when it fits in memory.")] = "infinipot,hermes,recent-frames,uniform",
    questions_file: Annotated[Path | None, typer.Option(
        "--questions", metavar="FILE", help="Question file (.txt, .jsonl, .yaml); entries with `answer` are scored, "
        "entries with `time` are answered at that moment by every policy.", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="Write a JSON line per (question, policy).", show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="PNG", help="Draw what each policy kept over the video's timeline.",
        show_default=False)] = None,
    full_max_memory: Annotated[str | None, typer.Option(
        "--full-max-memory", metavar="SIZE", help="Largest cache `full` may build (default: half the free memory).",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with everything.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    *, stream: Any, answer: Any,
) -> None:
    """Compare compression POLICIES on VIDEO at one budget: accuracy, agreement with full, memory, cost."""
    if stream.policy is not None:
        raise InfinipotError("compare takes its policies from --policies (e.g. --policies infinipot,hermes): drop "
                             "--policy")
    origin = Source.of(video)
    if origin.is_cache:
        raise InfinipotError(f"{video} is a cache: compare streams a video once per run; pass the video")
    entries, skipped = _questions(questions or [], questions_file)
    inputs = run_inputs(origin, stream, the_question_file=questions_file)
    _check_outputs(inputs, output, plot)
    limit = _memory_limit(full_max_memory)
    settings = video_settings(stream)
    opening = {flag: getattr(stream, flag) for flag in ("start", "end", "max_frames") if getattr(stream, flag)}
    names = _policy_names(policies)
    from infinipot.compare import compare

    with StreamDisplay(not (quiet or as_json)) as display:
        result = compare(origin.spec, entries, names, preset=settings, device=stream.device,
                         max_new_tokens=answer.max_new_tokens, temperature=answer.temperature, seed=answer.seed,
                         full_max_bytes=limit, evidence=answer.evidence, on_event=display, **opening)
        display.pause()
    for line in result.warnings:
        console.warning_line(line)
    _write(result, output, plot)
    if as_json:
        print(json.dumps({**result.as_dict(), **({"skipped": skipped} if skipped else {})}, indent=2,
                         ensure_ascii=False))
        return
    _print_tables(result, answer.evidence)
    console.note(f"{len(result.policies)} policies from one decode and {result.vision_runs} vision passes over "
                 f"{result.chunks} chunks: about {result.estimated_saving:.1f}x faster than separate runs "
                 f"(estimated from this run's timings); settings {setting_changes(stream) or 'of the preset'}")


def _print_tables(result, evidence: bool) -> None:
    """The comparison tables on stdout, then each answer's evidence when --evidence asked for it."""
    from infinipot_cli.compare_render import comparison_tables

    for table in comparison_tables(result):
        console.out().print(table)
    if evidence:
        from infinipot_cli.render import evidence_line

        for record in result.records():
            if "evidence" in record:
                console.out().print(f"evidence {record['id']} {record['policy']}: {evidence_line(record['evidence'])}",
                                    markup=False, soft_wrap=True)


def _refuse_flags(stream, answer) -> None:
    if stream.policy is not None:
        raise InfinipotError("compare takes its policies from --policies (e.g. --policies infinipot,hermes): drop "
                             "--policy")


def _questions(questions: list[str], questions_file: Path | None) -> tuple[list, list[dict]]:
    from infinipot.questions import QuestionEntry, read_questions

    if questions and questions_file is not None:
        raise InfinipotError("pass questions as arguments or with --questions FILE, not both")
    if questions_file is not None:
        parsed = read_questions(questions_file)
        return parsed.entries, report_problems(parsed)
    if not questions or any(not question.strip() for question in questions):
        raise InfinipotError('no question given: pass one in quotes, e.g. "What happened?", or --questions FILE')
    return [QuestionEntry(index + 1, question) for index, question in enumerate(questions)], []


def _check_outputs(inputs, output: Path | None, plot: Path | None) -> None:
    from infinipot.file_io import check_writable
    from infinipot.results import check_output

    reads = [path for path, _ in inputs.paths]
    if output is not None:
        check_output(output, reads)
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise InfinipotError(f"--plot {plot} is not a .png name: the plot is a PNG image, e.g. kept.png")
        check_output_not_input(plot, reads, "--plot")
        check_writable(plot, "--plot")


def check_output_not_input(path: Path, reads: list[Path], flag: str) -> None:
    from infinipot_cli.opening import same_file

    for other in reads:
        if same_file(path, other):
            raise InfinipotError(f"{flag} {path} is an input of this run: choose another file name")


def _memory_limit(text: str | None) -> int | None:
    if text is None:
        return None
    from infinipot.budget import parse_memory

    try:
        return parse_memory(text)
    except InfinipotError as error:
        raise InfinipotError(f"--full-max-memory: {error}") from None


def _write(result, output: Path | None, plot: Path | None) -> None:
    from infinipot.file_io import write_atomically

    if output is not None:
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in result.records())
        write_atomically(output, lambda temporary: temporary.write_text(lines, encoding="utf-8"))
        console.note(f"wrote {len(result.records())} results to {output}")
    if plot is not None:
        from infinipot.plot_retention import plot_retention

        plot_retention(result, plot)  # written atomically
        console.note(f"drew what each policy kept into {plot}")
