"""What the commands print: numbers as people read them, the one stats record, the one summary line.

`ask`, `compress` and `info` describe a stream with the same JSON object (`stats_record`) and
the same sentence (`summary_line`), whether the stream was just run or read from a cache file.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

TIMINGS = ("decode_s", "decode_wait_s", "encode_s", "prefill_s", "compress_s")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def format_seconds(seconds: float) -> str:
    """1:02:03, or 2:03 under an hour."""
    seconds = int(round(seconds)) if math.isfinite(seconds) else 0
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def stats_record(stats: dict, *, model: str, policy: str, sample_fps: float, cached_tokens: int,
                 kv_bytes_per_token: int, from_cache: bool) -> dict:
    """The one JSON shape of a stream's figures (`StreamStats.as_dict()` plus what they mean)."""
    record: dict[str, Any] = {"model": model, "policy": policy, "from_cache": from_cache}
    for key in ("frames", "video_seconds", "visual_tokens_seen", "budget_tokens", "keep_tokens",
                "peak_cached_tokens", "compressions", "tokens_evicted", "skipped_seconds"):
        value = stats.get(key, 0)
        record[key] = round(float(value), 3) if isinstance(value, float) else value
    record["sample_fps"] = round(float(sample_fps), 4)
    record["cached_tokens"] = cached_tokens
    record["kv_bytes_per_token"] = kv_bytes_per_token
    timings = stats.get("timings") or {}
    record.update({name: round(float(timings.get(name, 0.0)), 4) for name in TIMINGS})
    return record


def session_stats(session, from_cache: bool) -> dict:
    """`stats_record` of a live session."""
    state = session.state
    return stats_record(state.stats.as_dict(), model=session.settings.model, policy=session.settings.policy,
                        sample_fps=state.sample_fps, cached_tokens=session.cache.visual_tokens,
                        kv_bytes_per_token=session.geometry.kv_bytes_per_token if session.geometry else 0,
                        from_cache=from_cache)


def header_stats(meta: dict) -> dict:
    """`stats_record` of a cache file, from its metadata alone."""
    state, layout = meta["state"], meta["layout"]
    per_token = layout["layers"] * layout["kv_heads"] * layout["head_dim"] * 2 * DTYPE_BYTES.get(meta["kv_dtype"], 2)
    return stats_record(state.get("stats") or {}, model=meta["model"].get("id", "?"),
                        policy=meta["settings"].get("policy", "?"), sample_fps=state.get("sample_fps", 0.0),
                        cached_tokens=min(layout["visual_tokens"]), kv_bytes_per_token=per_token, from_cache=True)


def summary_line(record: dict) -> str:
    """One sentence for `stats_record`: what was seen, what is kept, under which budget."""
    origin = "from the cache: " if record["from_cache"] else ""
    budget = f"budget {record['budget_tokens']:,}" if record["budget_tokens"] else "no budget"
    skipped = f", {record['skipped_seconds']:g} s unreadable skipped" if record["skipped_seconds"] else ""
    return (f"{origin}{record['frames']:,} frames, {format_seconds(record['video_seconds'])} of video at "
            f"{record['sample_fps']:g} fps{skipped}, {record['visual_tokens_seen']:,} visual tokens seen, "
            f"{record['cached_tokens']:,} kept (peak {record['peak_cached_tokens']:,}, {budget}, policy "
            f"{record['policy']}), {plural(record['compressions'], 'compression')}")


def presets_table(presets: list, default: str) -> Table:
    from rich.table import Table

    table = Table(title="infinipot presets", title_justify="left")
    table.add_column("preset", no_wrap=True)
    table.add_column("model", overflow="fold")
    table.add_column("settings and use", overflow="fold")
    for preset in presets:
        name = f"[bold]{preset.name}[/bold]" + ("\n[green](default)[/green]" if preset.name == default else "")
        budget = f"{preset.budget:,} tokens" if isinstance(preset.budget, int) else str(preset.budget)
        settings = f"{budget}, {preset.policy}, {preset.fps:g} fps, {preset.dtype}"
        table.add_row(name, preset.model, f"{settings}\n[dim]{preset.description}[/dim]")
    return table


def result_line(record: dict) -> str:
    """`id [@time] [letter] answer ✓/✗` in Rich markup (texts escaped), from a result record."""
    from rich.markup import escape

    text = f"[bold]{escape(str(record['id']))}[/bold] "
    if record.get("time") is not None:
        text += f"[dim]@{format_seconds(record.get('asked_at', record['time']))}[/dim] "
    if "choice" in record:
        text += f"[cyan]{record['choice'] or '?'}[/cyan] "
    text += escape(record["answer"]) or "[dim](empty answer)[/dim]"
    if record.get("correct") is True:
        text += " [green]✓[/green]"
    elif record.get("correct") is False:
        text += f" [red]✗ expected {escape(str(record.get('expected')))}[/red]"
    if record.get("past_end"):
        text += " [yellow](asked past the end: answered at the end)[/yellow]"
    return text


def accuracy_table(accuracy) -> Table:
    """Accuracy per value of each category axis, then overall."""
    from rich.table import Table

    table = Table(title="accuracy", title_justify="left")
    for column, justify in (("axis", "left"), ("category", "left"), ("correct", "right"), ("total", "right"),
                            ("accuracy", "right")):
        table.add_column(column, justify=justify)
    for axis, values in accuracy.by_category.items():
        for value, tally in sorted(values.items()):
            table.add_row(axis, value, str(tally.correct), str(tally.total), f"{tally.accuracy:.1%}")
    overall = accuracy.overall
    table.add_row("[bold]overall[/bold]", "", str(overall.correct), str(overall.total),
                  f"[bold]{overall.accuracy:.1%}[/bold]")
    return table


SHADES = "▁▂▃▄▅▆▇█"


def format_moment(seconds: float) -> str:
    """1:02:03.5 / 2:03.5: video time to a tenth of a second (whole seconds drop the tenth)."""
    tenths = int(round(seconds * 10))
    whole, tenth = divmod(tenths, 10)
    return format_seconds(whole) + (f".{tenth}" if tenth else "")


def kept_strip(bins: list[dict]) -> str:
    """One character per time bin, as tall as the share of its visual tokens kept (· where no video was read)."""
    return "".join("·" if part["kept"] is None else SHADES[min(len(SHADES) - 1, int(part["kept"] * len(SHADES)))]
                   for part in bins)


def kept_line(context: dict) -> str:
    """`cache holds 0:00–10:00, kept per 1 min ▁▂█` from a result's `cache_span` and `kept_share`."""
    span, bins = context.get("cache_span"), context.get("kept_share") or []
    if not span or not bins:
        return "cache holds no video"
    width = bins[0]["end"] - bins[0]["start"]
    return (f"cache holds {format_moment(span[0])}–{format_moment(span[1])}; kept per {format_width(width)}: "
            f"{kept_strip(bins)}")


def format_width(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def evidence_block(evidence: dict, context: dict) -> str:
    """The lines shown under an answer: its moments with times, frames and shares, the cost, what the cache held."""
    lines = [f"  evidence: {evidence['video_share']:.0%} of the question's and answer's attention fell on the "
             f"video ({evidence['seconds']:.2f} s, {evidence['answer_share']:.0%} of the answer time); the most:"]
    for moment in evidence["moments"]:
        frames = (f"frame {moment['first_frame']}" if moment["first_frame"] == moment["last_frame"]
                  else f"frames {moment['first_frame']}–{moment['last_frame']}")
        lines.append(f"    {format_moment(moment['start'])}–{format_moment(moment['end'])}  {frames}  "
                     f"{moment['share']:.0%}")
    if not evidence["moments"]:
        lines.append("    (no cached video token received attention)")
    lines.append(f"  {kept_line(context)}")
    return "\n".join(lines)


def evidence_line(evidence: dict) -> str:
    """An answer's moments on one line (compare's many answers): times, shares, the share on the video, the cost."""
    moments = " · ".join(f"{format_moment(moment['start'])}–{format_moment(moment['end'])} {moment['share']:.0%}"
                         for moment in evidence["moments"]) or "no cached video token attended to"
    return (f"{moments} ({evidence['video_share']:.0%} of the attention on the video; {evidence['seconds']:.2f} s, "
            f"{evidence['answer_share']:.0%} of the answer time)")
