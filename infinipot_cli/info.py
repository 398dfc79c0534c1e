"""`infinipot info movie.ipv`: what a cache file holds, read from its metadata (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from infinipot.cache_file import CacheHeader, read_header, verify
from infinipot_cli.app import Debug, app, handles_errors, out
from infinipot_cli.render import format_bytes, format_seconds, plural


@app.command("info")
@handles_errors
def info_command(
    cache: Annotated[Path, typer.Argument(metavar="CACHE", help="A cache written by `infinipot compress`.",
                                          show_default=False)],
    check: Annotated[bool, typer.Option("--verify", help="Also read every tensor and check its checksum.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata as JSON.")] = False,
    debug: Debug = False,
) -> None:
    """Show a cache file's model, policy, video, coverage and the visual tokens kept per layer."""
    header = verify(cache) if check else read_header(cache)
    if as_json:
        meta = {key: value for key, value in header.meta.items() if key != "checksums"}
        print(json.dumps({"path": str(cache), "size_bytes": header.size_bytes, "verified": check, **meta}, indent=2,
                         ensure_ascii=False))
        return
    out.print(info_panel(header, check))


def info_panel(header: CacheHeader, verified: bool) -> Panel:
    meta = header.meta
    model, settings, stats, layout = meta["model"], meta["settings"], meta["stats"], meta["layout"]
    video = meta.get("video") or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(label: str, value: str) -> None:
        grid.add_row(label, value)

    row("file", f"{escape(str(header.path))} — {format_bytes(header.size_bytes)} on disk"
        + (" — [green]checksums verified[/green]" if verified else ""))
    row("format", f"infinipot cache v{meta['format_version']}, written by infinipot {meta.get('tool_version', '?')} "
        f"on {meta.get('created', '?')}")
    row("model", f"{escape(model['id'])} ({model['family']}, {model['dtype']}; config {model['config_fingerprint']}, "
        f"weights {model['weights_fingerprint']})")
    row("preset", escape(str(meta["preset"].get("name", "?"))))
    row("policy", f"{settings['policy']}: budget {settings['budget_tokens']:,} tokens, keep {settings['keep_ratio']:g}, "
        f"recent {settings['recent_ratio']:g}, tar {settings['tar_ratio']:g}, pooling {settings['pooling']}, "
        f"{meta.get('positions') or 'original'} positions")
    if video:
        row("video", f"{escape(str(video.get('name')))} — {format_bytes(video.get('size_bytes', 0))}, "
            f"{format_seconds(video.get('duration_s', 0.0))} long, sha256 (first+last MiB) "
            f"{str(video.get('head_tail_sha256', ''))[:16]}")
    window = ""
    if video.get("start") is not None and video.get("end") is not None:
        window = f" ({format_seconds(video['start'])}–{format_seconds(video['end'])} at {video.get('fps', 0):g} fps)"
    row("covered", f"{stats['frames']:,} frames, {format_seconds(stats['video_seconds'])} of video{window}")
    row("stream", f"{stats['visual_tokens_seen']:,} visual tokens seen, {plural(stats['compressions'], 'compression')}, "
        f"{stats['tokens_evicted']:,} evicted")
    row("kept per layer", _kept(layout))
    row("cache", f"{layout['layers']} layers × {layout['kv_heads']} KV heads × {layout['head_dim']} dims, "
        f"{layout['prefix_len']} prefix + visual tokens, token grid {layout['grid'][0]}×{layout['grid'][1]}, "
        f"{format_bytes(layout['kv_bytes'])} of keys and values ({meta['kv_dtype']})")
    row("next position", ", ".join(str(value) for value in meta["next_position"]))
    if meta["conversation"]:
        row("conversation", f"{len(meta['conversation'])} turns kept ({layout['seq_length'] - layout['video_length']} "
            "tokens)")
    return Panel(grid, title=f"[bold]{escape(header.path.name)}[/bold]", title_align="left", expand=False)


def _kept(layout: dict) -> str:
    """Visual tokens per KV head in each layer: one number when every layer keeps the same."""
    counts = layout["visual_tokens"]
    if len(set(counts)) == 1:
        return f"{counts[0]:,} visual tokens per KV head in each of the {len(counts)} layers"
    return ", ".join(f"L{index} {count:,}" for index, count in enumerate(counts))
