"""`infinipot ask VIDEO|CACHE QUESTION...`: answer questions from a video streamed now or a saved cache.

Questions come as arguments or, in batches, from a file (`--questions`: .txt, .jsonl, .yaml);
either way the video is streamed once. Results can be written as JSON lines while they come.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from infinipot.cache_file import check_writable, looks_like_cache, save_session
from infinipot.errors import InfinipotError
from infinipot.questions import Accuracy, QuestionEntry, Result, read_questions, score
from infinipot_cli.app import Debug, app, err, handles_errors, out
from infinipot_cli.batch import ResultWriter, accuracy_table, check_output, report_problems, result_line, run_questions
from infinipot_cli.render import format_bytes, plural
from infinipot_cli.source import (
    BudgetOption, DeviceOption, EndOption, FpsOption, KeepRatioOption, MaxFramesOption, MaxNewTokensOption, Opened,
    PolicyOption, PoolingOption, PositionsOption, PresetOption, RecentOption, SeedOption, StartOption,
    TarRatioOption, TemperatureOption, open_source, same_file, stream_options,
)


@app.command("ask")
@handles_errors
def ask_command(
    source: Annotated[Path, typer.Argument(
        metavar="VIDEO|CACHE", help="Video file to stream (mp4, mkv, ...) or a cache written by `infinipot compress`.",
        show_default=False)],
    questions: Annotated[list[str] | None, typer.Argument(
        metavar="QUESTION", help="One or more questions (or use --questions FILE).", show_default=False)] = None,
    questions_file: Annotated[Path | None, typer.Option(
        "--questions", help="Batch file of questions: .txt (one a line), .jsonl or .yaml entries with `question` "
        "and optional `id`, `options`, `answer`, `category`.", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write each result as a JSON line to this file as soon as it is answered.",
        show_default=False)] = None,
    save_cache: Annotated[Path | None, typer.Option(
        "--save-cache", help="Also write the compressed cache to this file (e.g. movie.ipv) to ask again later.",
        show_default=False)] = None,
    preset: PresetOption = None,
    budget: BudgetOption = None,
    policy: PolicyOption = None,
    keep_ratio: KeepRatioOption = None,
    recent: RecentOption = None,
    tar_ratio: TarRatioOption = None,
    pooling: PoolingOption = None,
    fps: FpsOption = None,
    start: StartOption = None,
    end: EndOption = None,
    max_frames: MaxFramesOption = None,
    positions: PositionsOption = None,
    device: DeviceOption = "auto",
    max_new_tokens: MaxNewTokensOption = 256,
    temperature: TemperatureOption = 0.0,
    seed: SeedOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with answers and stats.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display; answers only.")] = False,
    debug: Debug = False,
) -> None:
    """Answer each QUESTION about VIDEO (streamed under a fixed cache budget) or from a saved CACHE."""
    entries, skipped = _entries(questions or [], questions_file)
    if max_new_tokens <= 0:
        raise InfinipotError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    if output is not None:
        check_output(output)
        for other, what in ((questions_file, "the question file"), (source, "the video or cache")):
            if other is not None and same_file(other, output):
                raise InfinipotError(f"--output {output} is {what}: choose another file name, e.g. answers.jsonl")
    if save_cache is not None:
        _check_save_cache(source, save_cache, output)
    options = stream_options(source, preset, budget=budget, policy=policy, keep_ratio=keep_ratio, recent=recent,
                             tar_ratio=tar_ratio, pooling=pooling, fps=fps, start=start, end=end,
                             max_frames=max_frames, positions=positions, device=device)
    opened = open_source(options, preset_given=preset is not None, show=not (quiet or as_json))
    saved = None
    if save_cache is not None:  # before answering: the expensive part is kept even if answering is interrupted
        saved = {"path": str(save_cache), "size_bytes": save_session(opened.session, save_cache, opened.provenance)}
        if not (quiet or as_json):
            err.print(f"saved the cache to {save_cache} ({format_bytes(saved['size_bytes'])})", highlight=False)
    ask_options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    records: list[dict] = []
    batch = questions_file is not None

    def on_result(result: Result) -> None:
        records.append(result.record())
        if batch and not as_json:
            out.print(result_line(result), highlight=False, soft_wrap=True)

    if batch or as_json:
        accuracy = run_questions(opened.session, entries, ResultWriter(output), not (quiet or as_json),
                                 on_result, ask_options)
    else:
        accuracy = _answer_streaming(opened, entries, ResultWriter(output), on_result, ask_options)
    if as_json:
        data = {"answers": records, "stats": stats_dict(opened)}
        if accuracy.overall.total:
            data["accuracy"] = accuracy.as_dict()
        if skipped:
            data["skipped"] = skipped
        if saved:
            data["cache"] = saved
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if accuracy.overall.total:
        out.print(accuracy_table(accuracy))
    if not quiet:
        err.print(summary_line(opened), highlight=False)


def _entries(questions: list[str], questions_file: Path | None) -> tuple[list[QuestionEntry], list[dict]]:
    """The questions to ask (checked before any model is loaded) and the malformed entries skipped."""
    if questions and questions_file is not None:
        raise InfinipotError("pass questions as arguments or with --questions FILE, not both")
    if questions_file is not None:
        parsed = read_questions(questions_file)
        report_problems(parsed)
        return parsed.entries, [{"line": p.line, "message": p.message} for p in parsed.problems]
    if not questions:
        raise InfinipotError("no question given: pass one in quotes, e.g. \"What happened?\", or --questions FILE")
    for question in questions:
        if not question.strip():
            raise InfinipotError("a question is empty: pass the question text in quotes, e.g. \"What happened?\"")
    return [QuestionEntry(index + 1, question) for index, question in enumerate(questions)], []


def _check_save_cache(source: Path, save_cache: Path, output: Path | None) -> None:
    if looks_like_cache(source):
        raise InfinipotError(f"--save-cache needs a video, and {source} is already a cache: drop --save-cache")
    if same_file(source, save_cache) or (output is not None and save_cache.resolve() == output.resolve()):
        raise InfinipotError(f"--save-cache {save_cache} would overwrite the video or the answers: choose another name")
    check_writable(save_cache)


def _answer_streaming(opened: Opened, entries: list[QuestionEntry], writer: ResultWriter,
                      on_result: Callable[[Result], None], ask_options: dict) -> Accuracy:
    """Questions from the command line: each answer is shown as it is generated."""
    accuracy = Accuracy()
    try:
        for index, entry in enumerate(entries):
            label = f"Q{index + 1}:" if len(entries) > 1 else "Q:"
            out.print(f"[bold]{label}[/bold] {escape(entry.question)}", highlight=False)
            out.print("[bold]A:[/bold] ", end="")
            answer = opened.session.ask(
                entry.prompt, **ask_options,
                on_text=lambda piece: out.print(piece, end="", markup=False, highlight=False),
            )
            out.print()
            result = score(entry, answer)
            writer.write(result.record())
            accuracy.add(result)
            on_result(result)
    finally:
        writer.close()
    return accuracy


def stats_dict(opened: Opened) -> dict:
    session = opened.session
    data = session.stats.as_dict()
    timings = data.pop("timings")
    data.update({key: round(value, 4) for key, value in timings.items()})
    data["video_seconds"] = round(data["video_seconds"], 3)
    data["policy"] = session.settings.policy
    data["model"] = session.adapter.model_id
    data["kv_bytes_per_token"] = session.adapter.kv_bytes_per_token()
    data["cached_tokens"] = session.cache.visual_tokens
    data["from_cache"] = opened.from_cache
    return data


def summary_line(opened: Opened) -> str:
    session, stats = opened.session, opened.session.stats
    origin = "from the cache: " if opened.from_cache else ""
    return (
        f"{origin}{stats.frames} frames, {stats.video_seconds:.0f} s of video, {stats.visual_tokens_seen:,} visual "
        f"tokens seen, peak cache {stats.peak_cached_tokens:,} tokens (budget {stats.budget_tokens:,}, policy "
        f"{session.settings.policy}), {plural(stats.compressions, 'compression')}"
    )
