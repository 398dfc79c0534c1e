"""`compare --plot`: what each policy kept over the video's timeline, as a PNG a person reads at a glance.

One strip per policy, video time left to right; a bar per temporal step, as tall as the tokens
per second of video the policy's cache still holds from that step (mean over layers and KV
heads), on one scale for every strip: what a step holds when nothing is evicted. Merged tokens
(summaries, prototypes) are counted next to the policy's name. Drawn with Pillow through
infinipot.drawing, like the retention map of `--map`.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from infinipot.comparison import Comparison, Retention
from infinipot.drawing import FAINT, PALETTE, PAPER, fit, font, put, time_axis, write_png

WIDTH, LABEL, RIGHT, STRIP, GAP, AXIS, TOP = 960, 170, 28, 56, 10, 40, 34


def plot_retention(result: Comparison, path: str | Path, title: str | None = None) -> Path:
    """Draw `result`'s retention per policy into the PNG file `path`; returns the path."""
    policies = result.policies
    height = TOP + len(policies) * (STRIP + GAP) + AXIS
    image = Image.new("RGB", (WIDTH, height), PAPER)
    draw = ImageDraw.Draw(image)
    first = policies[0].retention if policies else None
    origin = first.starts[0] if first and first.starts else 0.0
    seconds = max((p.retention.starts[-1] + p.retention.step_seconds - origin for p in policies if p.retention.starts),
                  default=1.0) or 1.0
    scale = max((max(p.retention.per_second(), default=0.0) for p in policies), default=0.0) or 1.0
    heading = f"kept tokens per second of video: {Path(result.video).name} (a full strip is {scale:g} tokens/s)"
    put(draw, 8, 10, fit(draw, title or heading, font(14), WIDTH - 16), font(14))
    span = (LABEL, WIDTH - RIGHT)
    for row, outcome in enumerate(policies):
        top = TOP + row * (STRIP + GAP)
        draw.rectangle((LABEL, top, span[1], top + STRIP), outline=FAINT)
        put(draw, 8, top + 6, fit(draw, outcome.policy, font(14), LABEL - 16), font(14))
        notes = [f"peak {outcome.peak_cached_tokens:,} tokens"]
        if outcome.retention.merged:
            notes.append(f"{outcome.retention.merged:g} merged")
        for line, note in enumerate(notes):
            put(draw, 8, top + 26 + 15 * line, fit(draw, note, font(12), LABEL - 16), font(12))
        _bars(draw, outcome.retention, PALETTE[row % len(PALETTE)], (top, span), (origin, seconds), scale)
    time_axis(draw, font(13), span, TOP + len(policies) * (STRIP + GAP), origin, seconds, WIDTH)
    return write_png(image, path)


def _bars(draw: ImageDraw.ImageDraw, retention: Retention, colour: tuple[int, int, int],
          place: tuple[int, tuple[int, int]], window: tuple[float, float], scale: float) -> None:
    """One bar per temporal step, from its start time for as long as a step lasts, as tall as its tokens per second.

    `place` is the strip's top and its (left, right) pixels, `window` the video's (origin, seconds) across them.
    """
    top, (left_edge, right_edge) = place
    origin, seconds = window
    plot_width = right_edge - left_edge
    for start, value in zip(retention.starts, retention.per_second()):
        left = left_edge + int((start - origin) / seconds * plot_width)
        right = max(left + 1, left_edge + int((start + retention.step_seconds - origin) / seconds * plot_width) - 1)
        bar = round(STRIP * min(value / scale, 1.0))
        if bar:
            draw.rectangle((left, top + STRIP - bar, min(right, right_edge), top + STRIP), fill=colour)
