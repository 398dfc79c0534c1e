"""What the two PNGs share (`--map`'s retention map, `compare --plot`): fonts, text, a time axis, colours, the write.

Drawn with Pillow, which every install has (torchvision needs it) and which imports no torch, so
`info --map` stays light. Text uses Pillow's own scalable font, the same on every machine (its
bitmap font where FreeType is missing), so it is kept to ASCII: that font has no en dash.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from infinipot.file_io import write_atomically
from infinipot.retention import nice_bin

INK, FAINT, NO_VIDEO, PAPER = (30, 30, 30), (215, 215, 215), (208, 208, 208), (255, 255, 255)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # one per policy, in order
# viridis (perceptually uniform, readable in grey and by most colour-blind readers) at 0, 1/16, ..., 1;
# linear between them it is within 6 of 255 of the full map.
VIRIDIS = ((68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141), (44, 114, 142),
           (38, 130, 142), (33, 145, 140), (31, 160, 136), (40, 174, 128), (63, 188, 115), (94, 201, 98),
           (132, 212, 75), (173, 220, 48), (216, 226, 25), (253, 231, 37))
MOST_TICKS = 10  # time ticks on an axis, at the most (plus the one at the end)
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=None)
def font(size: int) -> Font:
    """Pillow's own font at `size` pixels, or its bitmap font where Pillow is too old or has no FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def text_width(draw: ImageDraw.ImageDraw, text: str, face: Font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=face)
    return int(math.ceil(right - left))


def put(draw: ImageDraw.ImageDraw, x: float, y: float, text: str, face: Font, align: str = "lt",
        fill: tuple[int, int, int] = INK) -> None:
    """Draw `text` with its left, middle or right (`l m r`) and its line's top, middle or bottom (`t m b`) at (x, y).

    Vertical placement uses the font's line box, not the text's own, so labels side by side share a baseline.
    """
    left, _, right, _ = draw.textbbox((0, 0), text, font=face)
    _, top, _, bottom = draw.textbbox((0, 0), "0Ag", font=face)
    dx = {"l": left, "m": (left + right) / 2, "r": right}[align[0]]
    dy = {"t": top, "m": (top + bottom) / 2, "b": bottom}[align[1]]
    draw.text((round(x - dx), round(y - dy)), text, fill=fill, font=face)


def put_upward(image: Image.Image, x: float, y: float, text: str, face: Font) -> None:
    """Draw `text` turned a quarter left (read bottom to top), centred on (x, y): an axis label on the side."""
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    label = Image.new("RGBA", (int(right - left) + 4, int(bottom - top) + 4), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((2 - left, 2 - top), text, fill=INK, font=face)
    label = label.rotate(90, expand=True)
    image.paste(label, (round(x - label.width / 2), round(y - label.height / 2)), label)


def fit(draw: ImageDraw.ImageDraw, text: str, face: Font, width: int) -> str:
    """`text`, cut short with "..." when it is wider than `width` pixels."""
    if text_width(draw, text, face) <= width:
        return text
    while text and text_width(draw, text + "...", face) > width:
        text = text[:-1]
    return text + "..."


def time_ticks(origin: float, seconds: float) -> list[float]:
    """Round video times (multiples of 1 s, 2 s, 5 s, ..., 1 h, ...) from `origin` to `origin + seconds`."""
    step = nice_bin(seconds, MOST_TICKS)
    first = math.ceil(origin / step - 1e-9) * step
    count = int((origin + seconds - first) / step + 1e-9) + 1
    return [first + index * step for index in range(max(count, 0))]


def time_axis(draw: ImageDraw.ImageDraw, face: Font, span: tuple[int, int], y: int, origin: float,
              seconds: float, limit: int) -> None:
    """An axis at height `y` under pixels `span` (video `origin` to `origin + seconds`), ticks labelled as clock times.

    A label that would run past the image (`limit` pixels wide) is pulled in; one that would touch
    the previous label is left out.
    """
    left, right = span
    seconds = seconds or 1.0
    draw.line((left, y, right, y), fill=INK)
    end_of_last = -math.inf
    for mark in time_ticks(origin, seconds):
        x = left + round((mark - origin) / seconds * (right - left))
        draw.line((x, y, x, y + 5), fill=INK)
        label = clock(mark)
        width = text_width(draw, label, face)
        start = min(max(x - width / 2, 2), limit - width - 2)
        if start > end_of_last + 8:
            put(draw, start, y + 8, label, face)
            end_of_last = start + width


def viridis(share: np.ndarray) -> np.ndarray:
    """Colours `[..., 3]` uint8 for shares in [0, 1] on viridis; NaN (no video read there) is grey."""
    anchors = np.array(VIRIDIS, dtype=np.float64)  # [17, 3]
    steps = np.linspace(0.0, 1.0, len(VIRIDIS))
    values = np.clip(np.nan_to_num(share, nan=0.0), 0.0, 1.0)
    colours = np.stack([np.interp(values, steps, anchors[:, channel]) for channel in range(3)], axis=-1)
    colours = np.rint(colours).astype(np.uint8)
    colours[np.isnan(share)] = NO_VIDEO
    return colours


def write_png(image: Image.Image, path: str | Path) -> Path:
    """Save `image` as the PNG file `path`, whole or not at all; returns the path."""
    path = Path(path)
    write_atomically(path, lambda temporary: image.save(temporary, format="PNG"))
    return path


def clock(seconds: float) -> str:
    """Video time as m:ss, or h:mm:ss from an hour on."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
