"""`infinipot compress VIDEO -o movie.ipv`: stream a video once and keep its compressed cache on disk."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from infinipot.errors import InfinipotError

from infinipot_cli import console
from infinipot_cli.display import StreamDisplay
from infinipot_cli.flags import STREAM, map_option, with_flags
from infinipot_cli.info import check_map, write_map
from infinipot_cli.opening import Source, Warnings, closing, open_video, run_inputs
from infinipot_cli.render import format_bytes, session_stats, summary_line


@with_flags(STREAM)
def compress_command(
    video: Annotated[str, typer.Argument(
        metavar="VIDEO", help="Video file or stream (a URL, - for stdin) to compress.", show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="FILE", help="Cache file to write (e.g. movie.ipv).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object describing the cache.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    map_path: Annotated[Path | None, map_option()] = None,
    *, stream: Any,
) -> None:
    """Stream VIDEO into a budgeted cache and write it to a file; `infinipot ask FILE ...` answers from it later."""
    source = Source.of(video)
    if source.is_cache:
        raise InfinipotError(f"{video} is already a cache: compress a video file, or ask from the cache directly")
    inputs = run_inputs(source, stream)
    inputs.check_output(output, "--output")
    check_map(map_path, [path for path, _ in inputs.paths], output)
    started = time.perf_counter()
    show = not (quiet or as_json)
    warnings = Warnings()
    with StreamDisplay(show) as display:
        session = open_video(source, stream, display)
        with closing(session):
            warnings.report(session)
            session.stream(on_event=display)
            display.pause()
            warnings.report(session)
            size = session.save(output)
            if map_path is not None:
                from infinipot.retention import retention_of

                write_map(retention_of(session), map_path, quiet=not show)
    elapsed = time.perf_counter() - started
    stats = session_stats(session, from_cache=False)
    if as_json:
        kept = [layout.tokens for layout in session.cache.layouts]
        data = {"path": str(output), "size_bytes": size, "seconds": round(elapsed, 3), "visual_tokens_kept": kept,
                "stats": stats, **({"warnings": warnings.seen} if warnings.seen else {})}
        print(json.dumps(data, indent=2))
        return
    if not quiet:
        console.note(summary_line(stats))
    console.out().print(f"wrote {output} ({format_bytes(size)}) in {elapsed:.1f} s")
