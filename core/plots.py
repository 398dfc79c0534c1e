"""Retention maps as PNG files: video time across, layers up, the share of each bin's visual tokens kept as colour.

Drawn with Pillow (infinipot.drawing, shared with `compare --plot`) at a fixed 1000 x 500 pixels,
so a map's pixels are known: viridis from nothing kept (dark) to all kept (yellow), with its
colour bar; bins no frame was streamed in (skipped video) are grey. Each bin is drawn over its
own stretch of the time axis, so a last bin shorter than the others is drawn shorter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from infinipot.drawing import FAINT, INK, NO_VIDEO, PAPER, clock, fit, font, put, put_upward, text_width, \
    time_axis, viridis, write_png
from infinipot.errors import InfinipotError
from infinipot.retention import RetentionMap, nice_bin

WIDTH, HEIGHT = 1000, 500
MOST_COLUMNS = 400  # time bins drawn at the most (one per temporal step when fewer)
BOX = (72, 44, 808, 424)  # the heat map's left, top, right, bottom
BAR = (836, 44, 856, 424)  # the colour bar's
SHARE_TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
MOST_LAYER_TICKS = 8


def map_size() -> tuple[int, int]:
    """(width, height) in pixels of every map drawn."""
    return WIDTH, HEIGHT


def draw_retention_map(retention: RetentionMap, path: str | Path, title: str | None = None) -> Path:
    """Draw `retention` into the PNG file `path` (written whole or not at all); returns the path."""
    timeline = retention.timeline
    width = nice_bin(retention.duration(), MOST_COLUMNS, timeline.step_seconds) \
        if retention.steps > MOST_COLUMNS else timeline.step_seconds
    edges, share = retention.bins(width)
    if not edges:
        raise InfinipotError("the cache holds no video yet, so there is no retention map to draw: stream a video first")
    image = Image.new("RGB", (WIDTH, HEIGHT), PAPER)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = BOX
    image.paste(Image.fromarray(_pixels(edges, share, right - left, bottom - top)), (left, top))
    draw.rectangle((left - 1, top - 1, right, bottom), outline=INK)
    origin, seconds = edges[0][0], edges[-1][1] - edges[0][0]
    time_axis(draw, font(13), (left, right), bottom, origin, seconds, WIDTH)
    put(draw, (left + right) / 2, HEIGHT - 24, "video time", font(14), "mb")
    _layer_axis(image, draw, retention.layers)
    _colour_bar(image, draw, bool(np.isnan(share).any()))
    _title(draw, title or default_title(retention))
    return write_png(image, path)


def _title(draw: ImageDraw.ImageDraw, text: str) -> None:
    """The title over the heat map's middle, or the image's when it is too wide for that; cut short past the image."""
    text = fit(draw, text, font(15), WIDTH - 24)
    middle = (BOX[0] + BOX[2]) / 2
    if text_width(draw, text, font(15)) / 2 > middle - 12:
        middle = WIDTH / 2
    put(draw, middle, 14, text, font(15), "mt")


def _pixels(edges: list[tuple[float, float]], share: np.ndarray, width: int, height: int) -> np.ndarray:
    """The heat map's RGB pixels `[height, width, 3]`: each column the bin its middle is in, layer 0 at the bottom."""
    origin, end = edges[0][0], edges[-1][1]
    middles = origin + (np.arange(width) + 0.5) / width * (end - origin)
    columns = np.searchsorted([stop for _, stop in edges], middles, side="right").clip(0, len(edges) - 1)
    layers = share.shape[0]
    rows = layers - 1 - (np.arange(height) * layers // height)  # the top row is the last layer
    return viridis(share[rows[:, None], columns[None, :]])


def _layer_axis(image: Image.Image, draw: ImageDraw.ImageDraw, layers: int) -> None:
    """Layer numbers at round steps on the left of the map, and its label."""
    left, top, _, bottom = BOX
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 10**9) if layers / s <= MOST_LAYER_TICKS)
    for layer in range(0, layers, step):
        y = bottom - (layer + 0.5) * (bottom - top) / layers
        draw.line((left - 6, round(y), left - 1, round(y)), fill=INK)
        put(draw, left - 9, y, str(layer), font(13), "rm")
    put_upward(image, 18, (top + bottom) / 2, "layer", font(14))


def _colour_bar(image: Image.Image, draw: ImageDraw.ImageDraw, skipped: bool) -> None:
    """The colour scale from 0 (bottom) to 1 (top), its ticks and label; a grey swatch when some video was skipped."""
    left, top, right, bottom = BAR
    shares = 1.0 - (np.arange(bottom - top) + 0.5) / (bottom - top)
    strip = viridis(np.repeat(shares[:, None], right - left, axis=1))
    image.paste(Image.fromarray(strip), (left, top))
    draw.rectangle((left - 1, top - 1, right, bottom), outline=INK)
    for share in SHARE_TICKS:
        y = round(bottom - share * (bottom - top))
        draw.line((right, y, right + 5, y), fill=INK)
        put(draw, right + 8, y, f"{share:.1f}", font(13), "lm")
    put_upward(image, right + 52, (top + bottom) / 2, "share of visual tokens kept", font(14))
    if skipped:
        draw.rectangle((left - 1, bottom + 16, right, bottom + 30), fill=NO_VIDEO, outline=FAINT)
        put(draw, right + 8, bottom + 23, "no video", font(13), "lm")


def default_title(retention: RetentionMap) -> str:
    budget = f"budget {retention.budget_tokens:,} tokens" if retention.budget_tokens else "no budget"
    span = f"{clock(retention.timeline.starts[0])} to {clock(retention.timeline.end(retention.steps - 1))}" \
        if retention.steps else "no video"
    video = f"{Path(retention.video).name}: " if retention.video else ""
    return f"{video}what the cache kept, policy {retention.policy}, {budget}, video {span}"
