"""Synthetic test videos: a static tiled background with one bright square moving across it.

Tests and benchmarks need videos of any length without a network. Consecutive frames differ
only where the square was and is, so a test can check that compression keeps the moving cells
and that a decoder seeks to the right frame (`square_box` says where the square is in frame k).
Written with PyAV (bundled ffmpeg); no `ffmpeg` binary is needed.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import numpy as np

from infinipot.errors import InfinipotError


def tile_size(width: int, height: int) -> int:
    """Side of one background tile and of the square: a sixth of the short side (14 at 112x84)."""
    return max(4, min(width, height) // 6)


def square_box(frame_index: int, width: int = 112, height: int = 84) -> tuple[int, int, int]:
    """(top, left, side) in pixels of the square in frame `frame_index`.

    The square sits on the middle tile row and steps one tile to the right per frame, wrapping
    around, so it always covers exactly one background tile.
    """
    side = tile_size(width, height)
    top = (height // side // 2) * side
    left = (frame_index % (width // side)) * side
    return top, left, side


def background(width: int, height: int, seed: int) -> np.ndarray:
    """Flat-coloured tiles, dark enough that the white square stands out.  # [height, width, 3] uint8"""
    side = tile_size(width, height)
    rng = np.random.default_rng(seed)
    tiles = rng.integers(16, 160, size=(-(-height // side), -(-width // side), 3), dtype=np.uint8)
    return np.repeat(np.repeat(tiles, side, axis=0), side, axis=1)[:height, :width]


# High quality so decoded pixels stay close to what was drawn; no B-frames: display order is decode order.
_QUALITY: dict[str, dict[str, str]] = {
    "mpeg4": {"qmin": "1", "qmax": "2", "bf": "0"},
    "libx264": {"crf": "10", "bf": "0"},
}


def _validate(seconds: float, fps: float, width: int, height: int) -> int:
    if not fps > 0:
        raise InfinipotError(f"fps must be positive, got {fps} — pass e.g. --fps 1")
    if not seconds > 0:
        raise InfinipotError(f"seconds must be positive, got {seconds} — pass e.g. --seconds 60")
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise InfinipotError(
            f"video size {width}x{height} is not supported — use even width and height of at least 16"
        )
    return max(1, round(seconds * fps))


def write_test_video(
    path: str | Path,
    seconds: float,
    fps: float = 4.0,
    width: int = 112,
    height: int = 84,
    seed: int = 0,
    codec: str = "mpeg4",
) -> Path:
    """Write round(seconds * fps) frames to `path` (the container follows the suffix: .mp4, .ts, .mkv).

    mpeg4 without B-frames at high quality decodes back close to the input, with a keyframe every
    12 frames; libx264 also works where PyAV's bundled ffmpeg has it.
    """
    frame_count = _validate(seconds, fps, width, height)
    rate = Fraction(fps).limit_denominator(1001)
    return _write(path, [k / rate for k in range(frame_count)], rate, width, height, seed, codec)


def write_vfr_test_video(
    path: str | Path,
    frame_times: list[float],
    width: int = 112,
    height: int = 84,
    seed: int = 0,
    codec: str = "mpeg4",
) -> Path:
    """Write a variable-frame-rate video: frame k (square at `square_box(k)`) shown from frame_times[k] seconds.

    Times must increase; they are kept to the millisecond.
    """
    times = [Fraction(round(float(t) * 1000), 1000) for t in frame_times]
    if not times or any(b <= a for a, b in zip(times, times[1:])) or times[0] < 0:
        raise InfinipotError("frame_times must be increasing, non-negative seconds — e.g. [0, 1, 1.5, 1.6]")
    _validate(1.0, 1.0, width, height)
    return _write(path, times, None, width, height, seed, codec)


def _write(path: str | Path, times: list[Fraction], rate: Fraction | None, width: int, height: int,
           seed: int, codec: str) -> Path:
    """Encode frame k of the moving-square pattern at times[k] seconds."""
    try:
        import av
    except ImportError as err:
        raise InfinipotError("writing test videos needs PyAV — run `pip install av`") from err
    if codec not in av.codecs_available:
        raise InfinipotError(f"codec {codec!r} is not in PyAV's ffmpeg build — use codec='mpeg4'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = background(width, height, seed)  # [height, width, 3] uint8
    time_base = 1 / rate if rate else Fraction(1, 1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate or 1000)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        stream.gop_size = 12  # short GOPs keep random seeks cheap
        stream.options = _QUALITY.get(codec, {})
        for index, seconds in enumerate(times):
            frame = base.copy()
            top, left, side = square_box(index, width, height)
            frame[top : top + side, left : left + side] = 255
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = round(seconds / time_base), time_base
            container.mux(stream.encode(picture))
        container.mux(stream.encode())  # flush delayed packets
    return path


def damage_video(path: str | Path, out: str | Path, at: float = 0.5, length: float = 0.1, seed: int = 0) -> Path:
    """Copy an mp4 to `out` with random bytes over [at, at + length) of its media data (fractions of it).

    The index (moov) stays intact, so the file opens and its frame count is right, but the frames
    whose data lies in the overwritten range do not decode: a file damaged in the middle.
    """
    data = bytearray(Path(path).read_bytes())
    begin, end = _mdat_payload(data)
    first = begin + int((end - begin) * at)
    last = min(end, first + max(1, int((end - begin) * length)))
    data[first:last] = np.random.default_rng(seed).integers(0, 256, last - first, dtype=np.uint8).tobytes()
    Path(out).write_bytes(bytes(data))
    return Path(out)


def _mdat_payload(data: bytearray) -> tuple[int, int]:
    """Byte range of the top-level `mdat` box's payload in an mp4."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind, header = int.from_bytes(data[offset : offset + 4], "big"), bytes(data[offset + 4 : offset + 8]), 8
        if size == 1:
            size, header = int.from_bytes(data[offset + 8 : offset + 16], "big"), 16
        elif size == 0:
            size = len(data) - offset
        if kind == b"mdat":
            return offset + header, offset + size
        if size < header:
            break
        offset += size
    raise InfinipotError("no media data (mdat box) in the file — damage_video needs an mp4")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m infinipot.synthetic",
        description="Write a synthetic test video (tiled background, one moving square).",
    )
    parser.add_argument("out", type=Path, help="output .mp4 path")
    parser.add_argument("--seconds", type=float, default=60.0, help="video length (default 60)")
    parser.add_argument("--fps", type=float, default=4.0, help="frame rate (default 4)")
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--height", type=int, default=84)
    parser.add_argument("--seed", type=int, default=0, help="background pattern seed")
    parser.add_argument("--codec", default="mpeg4", help="mpeg4 (default) or libx264")
    args = parser.parse_args(argv)
    try:
        out = write_test_video(args.out, args.seconds, args.fps, args.width, args.height, args.seed, args.codec)
    except InfinipotError as err:
        parser.exit(1, f"error: {err}\n")
    print(out)


if __name__ == "__main__":
    main()
