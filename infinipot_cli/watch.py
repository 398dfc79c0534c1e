"""`infinipot watch SOURCE QUESTION --every 60`: ask the same question again and again as a stream goes on.

Every `--every` seconds of stream time the question is answered from the cache as it is then
(only the frames seen so far), the answer printed with its stream time and, with `--output`,
written as a JSON line; the stream goes on under the same fixed budget, for hours. At the end
of the source (or `--duration`, or a stall, or Ctrl-C) the question is answered once more from
what was built, and `--save-cache` keeps the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from infinipot.errors import InfinipotError

from infinipot_cli import console
from infinipot_cli.answering import Answerer, Style
from infinipot_cli.display import StreamDisplay
from infinipot_cli.flags import ANSWER, STREAM, with_flags
from infinipot_cli.opening import Source, Warnings, closing, open_video, run_inputs
from infinipot_cli.render import format_seconds, session_stats, summary_line


@with_flags(STREAM, ANSWER)
def watch_command(
    source: Annotated[str, typer.Argument(
        metavar="SOURCE", help="A stream (rtsp://, udp://, http(s)://...m3u8, srt://, /dev/video0, - for stdin) "
        "or a video file.", show_default=False)],
    question: Annotated[str, typer.Argument(metavar="QUESTION", help="The question to ask again and again.",
                                            show_default=False)],
    every: Annotated[float, typer.Option("--every", metavar="SECONDS", min=1.0,
                                         help="Ask every this many seconds of stream time.")] = 60.0,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="Append each answer as a JSON line (.jsonl).", show_default=False)] = None,
    save_cache: Annotated[Path | None, typer.Option(
        "--save-cache", metavar="FILE", help="Write the cache when the stream ends (or on Ctrl-C).",
        show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display; answers only.")] = False,
    *, stream: Any, answer: Any,
) -> None:
    """Ask QUESTION about SOURCE every --every seconds of stream time, printing each answer with its time."""
    if not question.strip():
        raise InfinipotError("the question is empty: pass the question text in quotes, e.g. \"What is happening?\"")
    origin = Source.of(source)
    if origin.is_cache:
        raise InfinipotError(f"{source} is a cache: watch reads a video or a stream (ask a cache with `infinipot ask`)")
    inputs = run_inputs(origin, stream)
    log = _outputs(inputs, output, save_cache)
    answerer = Answerer(None, answer, Style(lines=True), log=log)
    warnings = Warnings()
    with StreamDisplay(not quiet) as display:
        session = open_video(origin, stream, display)
        answerer.session = session
        with closing(session):
            try:
                _watch(session, question, every, answerer, display, warnings)
            finally:
                display.pause()
                warnings.report(session)
                if save_cache is not None and session.state is not None and session.state.stats.frames:
                    size = session.save(save_cache)
                    console.note(f"saved the cache to {save_cache} ({size:,} bytes)")
                if log is not None:
                    log.close()
    if not quiet:
        console.note(summary_line(session_stats(session, from_cache=False)))
    if answerer.failed:
        raise typer.Exit(1)


def _watch(session, question: str, every: float, answerer: Answerer, display, warnings) -> None:
    """Stream, stopping every `every` seconds of stream time to answer; once more at the end."""
    from infinipot.moments import TIME_TOLERANCE
    from infinipot.questions import QuestionEntry

    moment = every
    while True:
        session.stream(until=moment, on_event=display)
        reached = session.moment()["asked_at"]
        ended = reached < moment - TIME_TOLERANCE  # the source ended (or stalled) before this moment
        display.pause()
        warnings.report(session)
        if reached > 0 and (not ended or reached > moment - every + TIME_TOLERANCE):
            entry = QuestionEntry(id=format_seconds(reached), question=question, time=reached)
            answerer.ask([entry], {"stream_time": format_seconds(reached)})
        if ended:
            return
        moment += every


def _outputs(inputs, output: Path | None, save_cache: Path | None):
    """Check the outputs before any work; the results log for --output (appended to, never truncated)."""
    if save_cache is not None:
        inputs.check_output(save_cache, "--save-cache")
    if output is None:
        return None
    from infinipot.results import ResultLog, check_output

    check_output(output, [path for path, _ in inputs.paths])
    return ResultLog(output, overwrite=False)
