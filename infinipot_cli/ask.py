"""`infinipot ask VIDEO QUESTION...`: stream a video into a budgeted cache and answer from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from infinipot.errors import InfinipotError
from infinipot_cli.app import Debug, app, err, handles_errors, out
from infinipot_cli.streaming import StreamOptions, stream_with_display


@app.command("ask")
@handles_errors
def ask_command(
    video: Annotated[Path, typer.Argument(help="Video file to stream (mp4, mkv, avi, ...).", show_default=False)],
    questions: Annotated[list[str], typer.Argument(help="One or more questions.", show_default=False)],
    preset: Annotated[str, typer.Option(help="Preset name (see `infinipot presets`) or YAML file.")] = "qwen2.5-vl-7b",
    budget: Annotated[str | None, typer.Option(help="Visual-token budget M: tokens (6000, 6k) or memory (2GiB).")] = None,
    policy: Annotated[str | None, typer.Option(help="full | recent | uniform | tar | van | infinipot.")] = None,
    keep_ratio: Annotated[float | None, typer.Option(help="Share of the budget kept by each compression (C/M).")] = None,
    recent: Annotated[float | None, typer.Option(help="Share of the budget's frames always kept whole (r).")] = None,
    tar_ratio: Annotated[float | None, typer.Option(help="Share of kept tokens chosen by TaR (alpha).")] = None,
    pooling: Annotated[str | None, typer.Option(help="VaN pooling: none | quartile | spread.")] = None,
    fps: Annotated[float | None, typer.Option(help="Frames sampled per second of video.")] = None,
    start: Annotated[float | None, typer.Option(help="Start of the window to read, in seconds.")] = None,
    end: Annotated[float | None, typer.Option(help="End of the window to read, in seconds.")] = None,
    max_frames: Annotated[int | None, typer.Option(help="Read at most this many frames (evenly spread).")] = None,
    device: Annotated[str, typer.Option(help="auto | cuda | cpu | mps.")] = "auto",
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 answers greedily; above 0 samples.")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with answers and stats.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display; answers only.")] = False,
    debug: Debug = False,
) -> None:
    """Stream VIDEO through the model under a fixed cache budget, then answer each QUESTION."""
    for question in questions:
        if not question.strip():
            raise InfinipotError("a question is empty: pass the question text in quotes, e.g. \"What happened?\"")
    if max_new_tokens <= 0:
        raise InfinipotError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    options = StreamOptions(
        video=video, preset=preset, budget=budget, policy=policy, keep_ratio=keep_ratio, recent=recent,
        tar_ratio=tar_ratio, pooling=pooling, fps=fps, start=start, end=end, max_frames=max_frames, device=device,
    )
    session, stats = stream_with_display(options, show=not (quiet or as_json))
    answers = []
    for index, question in enumerate(questions):
        streaming = not as_json
        if streaming:
            out.print(f"[bold]Q{index + 1}:[/bold] {question}" if len(questions) > 1 else f"[bold]Q:[/bold] {question}",
                      highlight=False)
            out.print("[bold]A:[/bold] ", end="")
        answer = session.ask(
            question, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
            on_text=(lambda piece: out.print(piece, end="", markup=False, highlight=False)) if streaming else None,
        )
        if streaming:
            out.print()
        answers.append({"question": question, "answer": answer.text, "tokens": answer.tokens,
                        "seconds": round(answer.seconds, 4)})
    if as_json:
        print(json.dumps({"answers": answers, "stats": stats_dict(session, stats)}, indent=2))
    elif not quiet:
        err.print(summary_line(session, stats), highlight=False)


def stats_dict(session, stats) -> dict:
    data = stats.as_dict()
    timings = data.pop("timings")
    data.update({key: round(value, 4) for key, value in timings.items()})
    data["video_seconds"] = round(data["video_seconds"], 3)
    data["policy"] = session.settings.policy
    data["model"] = session.adapter.model_id
    data["kv_bytes_per_token"] = session.adapter.kv_bytes_per_token()
    data["cached_tokens"] = session.cache.visual_tokens
    return data


def summary_line(session, stats) -> str:
    return (
        f"{stats.frames} frames, {stats.video_seconds:.0f} s of video, {stats.visual_tokens_seen:,} visual tokens seen, "
        f"peak cache {stats.peak_cached_tokens:,} tokens (budget {stats.budget_tokens:,}, policy "
        f"{session.settings.policy}), {stats.compressions} compressions"
    )
