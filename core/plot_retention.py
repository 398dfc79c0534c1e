"""`compare --plot`: what each policy kept over the video's timeline, as a PNG a person reads at a glance.

One strip per policy, video time left to right; a bar per temporal step, as tall as the tokens
per second of video the policy's cache still holds from that step (mean over layers and KV
heads), on one scale for every strip: what a step holds when nothing is evicted. Merged tokens
(summaries, prototypes) are counted next to the policy's name. Drawn with Pillow, which every
install has through torchvision; matplotlib is not needed.
"""

from __future__ import annotations

from pathlib import Path

from infinipot.comparison import Comparison
from infinipot.file_io import write_atomically

WIDTH, LABEL, STRIP, GAP, AXIS, TOP = 960, 170, 56, 10, 34, 30
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
INK, FAINT, PAPER = (30, 30, 30), (215, 215, 215), (255, 255, 255)


def plot_retention(result: Comparison, path: str | Path, title: str | None = None) -> Path:
    """Draw `result`'s retention per policy into the PNG file `path`; returns the path."""
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    policies = result.policies
    height = TOP + len(policies) * (STRIP + GAP) + AXIS
    image = Image.new("RGB", (WIDTH, height), PAPER)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    first = policies[0].retention if policies else None
    origin = first.starts[0] if first and first.starts else 0.0
    seconds = max((p.retention.starts[-1] + p.retention.step_seconds - origin for p in policies if p.retention.starts),
                  default=1.0) or 1.0
    scale = max((max(p.retention.per_second(), default=0.0) for p in policies), default=0.0) or 1.0
    heading = f"kept tokens per second of video: {Path(result.video).name} (a full strip is {scale:g} tokens/s)"
    draw.text((8, 8), title or heading, fill=INK, font=font)
    plot_width = WIDTH - LABEL - 12
    for row, outcome in enumerate(policies):
        top = TOP + row * (STRIP + GAP)
        draw.rectangle((LABEL, top, LABEL + plot_width, top + STRIP), outline=FAINT)
        draw.text((8, top + 8), outcome.policy, fill=INK, font=font)
        note = f"peak {outcome.peak_cached_tokens} tokens"
        if outcome.retention.merged:
            note += f", {outcome.retention.merged:g} merged"
        draw.text((8, top + 26), note, fill=INK, font=font)
        _bars(draw, outcome.retention, COLOURS[row % len(COLOURS)], top, plot_width, origin, seconds, scale)
    _time_axis(draw, font, TOP + len(policies) * (STRIP + GAP), plot_width, seconds, origin)
    write_atomically(path, lambda temporary: image.save(temporary, format="PNG"))  # never half a file
    return path


def _bars(draw, retention, colour, top: int, plot_width: int, origin: float, seconds: float, scale: float) -> None:
    """One bar per temporal step, from its start time for as long as a step lasts, as tall as its tokens per second."""
    for start, value in zip(retention.starts, retention.per_second()):
        left = LABEL + int((start - origin) / seconds * plot_width)
        right = max(left + 1, LABEL + int((start + retention.step_seconds - origin) / seconds * plot_width) - 1)
        bar = round(STRIP * min(value / scale, 1.0))
        if bar:
            draw.rectangle((left, top + STRIP - bar, min(right, LABEL + plot_width), top + STRIP), fill=colour)


def _time_axis(draw, font, top: int, plot_width: int, seconds: float, start: float) -> None:
    """Ticks at round video times under the strips."""
    tick = next((t for t in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
                 if seconds / t <= 10), 3600 * max(1, int(seconds // 36000)))
    draw.line((LABEL, top, LABEL + plot_width, top), fill=INK)
    mark = 0.0
    while mark <= seconds + 1e-9:
        x = LABEL + round(mark / seconds * plot_width) if seconds else LABEL
        draw.line((x, top, x, top + 5), fill=INK)
        draw.text((x - 10, top + 8), _clock(start + mark), fill=INK, font=font)
        mark += tick


def _clock(seconds: float) -> str:
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
