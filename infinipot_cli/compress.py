"""`infinipot compress VIDEO -o movie.ipv`: stream a video once and keep its compressed cache on disk."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from infinipot.cache_file import check_writable, looks_like_cache, save_session
from infinipot.errors import InfinipotError
from infinipot_cli.app import Debug, app, err, handles_errors, out
from infinipot_cli.render import format_bytes, format_seconds, plural
from infinipot_cli.source import (
    BudgetOption, DeviceOption, EndOption, FpsOption, KeepRatioOption, MaxFramesOption, PolicyOption, PoolingOption,
    PositionsOption, PresetOption, RecentOption, StartOption, TarRatioOption, open_source, same_file, stream_options,
)


@app.command("compress")
@handles_errors
def compress_command(
    video: Annotated[Path, typer.Argument(help="Video file to stream (mp4, mkv, avi, ...).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Cache file to write (e.g. movie.ipv).",
                                         show_default=False)],
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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object describing the cache.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    debug: Debug = False,
) -> None:
    """Stream VIDEO into a budgeted cache and write it to a file; `infinipot ask FILE ...` answers from it later."""
    if looks_like_cache(video):
        raise InfinipotError(f"{video} is already a cache: compress a video file, or ask from the cache directly")
    if same_file(video, output):
        raise InfinipotError(f"--output {output} is the video itself: choose another file name, e.g. movie.ipv")
    check_writable(output)
    options = stream_options(video, preset, budget=budget, policy=policy, keep_ratio=keep_ratio, recent=recent,
                             tar_ratio=tar_ratio, pooling=pooling, fps=fps, start=start, end=end,
                             max_frames=max_frames, positions=positions, device=device)
    started = time.perf_counter()
    opened = open_source(options, preset_given=preset is not None, show=not (quiet or as_json))
    size = save_session(opened.session, output, opened.provenance)
    elapsed = time.perf_counter() - started
    session, stats = opened.session, opened.session.stats
    if as_json:
        print(json.dumps({"path": str(output), "size_bytes": size, "seconds": round(elapsed, 3),
                          "frames": stats.frames, "video_seconds": round(stats.video_seconds, 3),
                          "visual_tokens_seen": stats.visual_tokens_seen,
                          "visual_tokens_kept": [layout.tokens for layout in session.cache.layouts],
                          "compressions": stats.compressions, "policy": session.settings.policy,
                          "budget_tokens": session.settings.budget_tokens}, indent=2))
        return
    if not quiet:
        err.print(
            f"{stats.frames} frames ({format_seconds(stats.video_seconds)} of video), "
            f"{stats.visual_tokens_seen:,} visual tokens seen, {session.cache.visual_tokens:,} kept per layer and head "
            f"(budget {session.settings.budget_tokens:,}, policy {session.settings.policy}), "
            f"{plural(stats.compressions, 'compression')}",
            highlight=False,
        )
    out.print(f"wrote {output} ({format_bytes(size)}) in {elapsed:.1f} s", highlight=False)
