"""`infinipot info movie.ipv`: what a cache file holds, read from its metadata (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from infinipot.errors import InfinipotError

from infinipot_cli import console
from infinipot_cli.flags import map_option
from infinipot_cli.render import (
    format_bytes, format_moment, format_seconds, format_width, header_stats, kept_strip, summary_line,
)

if TYPE_CHECKING:
    from rich.panel import Panel

TEXT_BINS = 30  # a short video's kept-share line has at most this many bins (a long one: one per minute)


def info_command(
    cache: Annotated[Path, typer.Argument(
        metavar="CACHE", help="A cache written by `infinipot compress` (or ask --save-cache, chat /save).",
        show_default=False)],
    check: Annotated[bool, typer.Option("--verify", help="Also read every tensor and check its checksum.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata and stats as JSON.")] = False,
    map_path: Annotated[Path | None, map_option()] = None,
) -> None:
    """Show a cache file's model, policy, video, sampling, coverage, the visual tokens kept per layer and the
    share of each minute of video still cached."""
    from infinipot.cache_file import verify
    from infinipot.cache_header import read_header
    from infinipot.retention import retention_of_file

    check_map(map_path, [cache])
    header = verify(cache) if check else read_header(cache)
    stats = header_stats(header.meta)
    retention = retention_of_file(header)
    if map_path is not None:
        write_map(retention, map_path, quiet=as_json)
    if as_json:
        meta = {key: value for key, value in header.meta.items() if key not in ("tensors", "state")}
        state = {key: value for key, value in header.meta["state"].items() if key != "timeline"}
        print(json.dumps({"path": str(cache), "size_bytes": header.size_bytes, "verified": check, "stats": stats,
                          "retention": retention_record(retention), **meta, "state": state},
                         indent=2, ensure_ascii=False))
        return
    console.out().print(info_panel(header, check, stats, retention))


def check_map(path: Path | None, inputs: list[Path], *others: Path | None) -> None:
    """Before any work: `--map` is writable and is no input or other output of the run."""
    if path is None:
        return
    from infinipot.file_io import check_writable

    from infinipot_cli.opening import same_file

    for other in [*inputs, *others]:
        if other is not None and same_file(path, Path(other)):
            raise InfinipotError(f"--map {path} is also {other}, read or written by this run: choose another file name")
    if path.suffix.lower() != ".png":
        raise InfinipotError(f"--map {path}: the map is drawn as a PNG image, not {path.suffix or 'a file without a suffix'}"
                             f" — name it {path.with_suffix('.png').name}")
    check_writable(path, "--map")


def write_map(retention, path: Path, quiet: bool = False) -> None:
    """Draw `retention` into `path` (PNG) and say so."""
    from infinipot.plots import draw_retention_map

    draw_retention_map(retention, path)
    if not quiet:
        console.note(f"wrote the retention map {path}")


def text_bin(retention) -> float:
    """A minute, or for a video under half an hour a round width giving at most TEXT_BINS bins."""
    from infinipot.retention import nice_bin

    return min(60.0, nice_bin(retention.duration(), TEXT_BINS, retention.timeline.step_seconds))


def retention_record(retention) -> dict:
    """The kept share per time bin (mean over layers) and the span the cache covers, for --json."""
    width = text_bin(retention)
    span = retention.span()
    return {"cache_span": None if span is None else [round(span[0], 3), round(span[1], 3)], "bin_seconds": width,
            "kept_share": [part.as_dict() for part in retention.overall(width)],
            "merged_per_layer": retention.merged}


def info_panel(header, verified: bool, stats: dict, retention=None) -> Panel:
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in _rows(header, verified, stats) + _retention_rows(retention):
        grid.add_row(label, escape(value))
    return Panel(grid, title=f"[bold]{escape(header.path.name)}[/bold]", title_align="left", expand=False)


def _rows(header, verified: bool, stats: dict) -> list[tuple[str, str]]:
    meta = header.meta
    model, settings, state, layout = meta["model"], meta["settings"], meta["state"], meta["layout"]
    source = state.get("source") or {}
    knobs = ", ".join(f"{key} {value}" for key, value in sorted((settings.get("knobs") or {}).items()))
    rows = [
        ("file", f"{header.path} — {format_bytes(header.size_bytes)} on disk"
         + (" — checksums verified" if verified else "")),
        ("format", f"infinipot cache v{meta['format_version']}, written by infinipot {meta.get('tool_version', '?')} "
         f"on {meta.get('created', '?')}"),
        ("model", f"{model.get('id')} ({model.get('family')}, {model.get('dtype')}; config "
         f"{model.get('config_fingerprint')}, weights {model.get('weights_fingerprint')})"),
        ("preset", str(settings.get("name", "?"))),
        ("policy", f"{settings.get('policy')}: budget {stats['budget_tokens']:,} tokens, keep "
         f"{settings.get('keep_ratio')}, {knobs}, {state.get('position_mode', '?')} positions"),
    ]
    if source:
        rows.append(("video", f"{source.get('name')} — {format_bytes(source.get('size_bytes') or 0)}, "
                     f"{format_seconds(source.get('duration_s') or 0.0)} long, sha256 (first+last MiB) "
                     f"{str(source.get('head_tail_sha256', ''))[:16]}"))
    rows.append(("sampling", _sampling(source, stats["sample_fps"])))
    rows.append(("covered", summary_line(stats)))
    rows.append(("kept per layer", _kept(layout["visual_tokens"])))
    rows.append(("cache", f"{layout['layers']} layers × {layout['kv_heads']} KV heads × {layout['head_dim']} dims, "
                 f"{layout['prefix_len']} prefix + visual tokens, {format_bytes(layout['kv_bytes'])} of keys and "
                 f"values ({meta['kv_dtype']})"))
    pooling = _pooling(state.get("policy_memory") or {})
    if pooling:
        rows.append(("VaN pooling", pooling))
    if state.get("turns"):
        rows.append(("conversation", f"{len(state['turns'])} turns kept "
                     f"({layout['seq_length'] - layout['video_length']} tokens)"))
    return rows


def _retention_rows(retention) -> list[tuple[str, str]]:
    """The span the cache covers and one character per minute (or shorter bin) of video: its kept share."""
    if retention is None or retention.steps == 0:
        return []
    span, width = retention.span(), text_bin(retention)
    bins = [part.as_dict() for part in retention.overall(width)]
    held = f"{format_moment(span[0])}–{format_moment(span[1])}" if span else "nothing"
    return [("time held", f"{held} of {format_moment(retention.timeline.starts[0])}–"
             f"{format_moment(retention.timeline.end(retention.steps - 1))} streamed"),
            (f"kept per {format_width(width)}", f"{kept_strip(bins)}  (▁ under 1/8 of a bin's visual tokens … "
             "█ all, mean over layers; · no video)")]


def _sampling(source: dict, sample_fps: float) -> str:
    """The rate the frames were really sampled at, and the rate asked when it was capped."""
    text = f"{sample_fps:g} fps"
    asked, native = source.get("fps"), source.get("native_fps")
    if asked is not None and abs(float(asked) - sample_fps) > 1e-3:
        text += f" (asked {float(asked):g}; the video has {float(native or 0):.3g} fps)"
    if source.get("start") is not None and source.get("end") is not None:
        text += f", window {format_seconds(source['start'])}–{format_seconds(source['end'])}"
    return text


def _pooling(memory: dict) -> str:
    """VaN's CV pooling as calibrated by the stream: the thresholds and each layer's pool size."""
    parts = []
    if memory.get("cv_thresholds"):
        parts.append("cv thresholds " + ", ".join(f"{value:.4g}" for value in memory["cv_thresholds"]))
    if memory.get("pool_sizes"):
        parts.append("pool sizes by layer " + " ".join(str(size) for size in memory["pool_sizes"]))
    return "; ".join(parts)


def _kept(counts: list[int]) -> str:
    """Visual tokens per KV head in each layer: one number when every layer keeps the same."""
    if len(set(counts)) == 1:
        return f"{counts[0]:,} visual tokens per KV head in each of the {len(counts)} layers"
    return ", ".join(f"L{index} {count:,}" for index, count in enumerate(counts))
