"""Sequential decoding with PyAV: the same frames every run, seeks that change nothing, damage, containers, silence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import bright_tile, every_frame
from infinipot.decoding import SequentialDecoder
from infinipot.errors import InfinipotError
from infinipot.synthetic import background, damage_video, square_box, write_test_video
from infinipot.video import VideoInfo, iter_chunks, open_decoder, plan_frames, probe


@pytest.fixture(scope="module")
def damaged_clip(clip: Path) -> VideoInfo:
    return probe(damage_video(clip, clip.with_name("damaged.mp4"), at=0.4, length=0.2))


def decodable(info: VideoInfo, threads: int, numbers=range(40)) -> list[int]:
    decoder = open_decoder(info, threads)
    try:
        return [k for k in numbers if decoder.frame(k) is not None]
    finally:
        decoder.close()


def test_damaged_frames_are_the_same_on_every_run_and_thread_count(damaged_clip: VideoInfo) -> None:
    first = decodable(damaged_clip, 1)
    assert 0 < len(first) < 40
    for threads in (1, 2, 0, 2, 1):
        assert decodable(damaged_clip, threads) == first
    assert decodable(damaged_clip, 2, numbers=range(0, 40, 3)) == [k for k in first if k % 3 == 0]  # with seeks


def test_frames_kept_from_a_damaged_file_are_the_right_ones(damaged_clip: VideoInfo) -> None:
    """Frames after the damage are dropped up to the next keyframe: predicted from lost data, they would be wrong."""
    decoder = open_decoder(damaged_clip)
    for number in range(40):
        frame = decoder.frame(number)
        if frame is not None:
            top, left, side = square_box(number)
            assert bright_tile(frame, side) == (top, left), number


def test_no_ffmpeg_lines_on_stderr_even_when_another_library_turned_its_log_on(damaged_clip: VideoInfo,
                                                                               tmp_path: Path, capfd) -> None:
    av.logging.set_level(av.logging.ERROR)  # as torchvision does at import: FFmpeg's errors to Python's logging
    try:
        assert len(decodable(probe(damaged_clip.path), 2)) < 40
        (tmp_path / "fake.mp4").write_text("not a video\n")
        with pytest.raises(InfinipotError):
            probe(tmp_path / "fake.mp4")
    finally:
        av.logging.set_level(None)
    assert capfd.readouterr().err == ""


def write_bframe_clip(path: Path, frames: int = 96) -> Path:
    """libx264 with B-frames (decode order differs from display order), a keyframe every 16 frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = 112, 84, "yuv420p"
        stream.options = {"crf": "10", "bf": "2", "g": "16", "keyint_min": "16", "sc_threshold": "0"}
        base = background(112, 84, seed=0)
        for index in range(frames):
            picture = base.copy()
            top, left, side = square_box(index)
            picture[top : top + side, left : left + side] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.skipif("libx264" not in av.codecs_available, reason="PyAV built without libx264")
def test_seeking_to_keyframes_gives_the_frames_decoding_through_gives(tmp_path: Path) -> None:
    info = probe(write_bframe_clip(tmp_path / "bframes.mp4"))
    assert info.index.seekable and len(info.index.keyframes) == 6
    wanted = [0, 5, 20, 21, 21, 50, 95]  # jumps past keyframes, neighbours, a repeat
    decoder = open_decoder(info)
    seeking = [decoder.frame(k) for k in wanted]
    straight = SequentialDecoder(info.path, dataclasses.replace(info.index, seekable=False), (112, 84))
    reference = every_frame(info.path)
    for number, a in zip(wanted, seeking):
        np.testing.assert_array_equal(a, straight.frame(number))
        np.testing.assert_array_equal(a, reference[number])


@pytest.mark.parametrize("suffix", [".mkv", ".ts", ".avi", ".mov"])
def test_other_containers_decode_the_planned_frames(tmp_path: Path, suffix: str) -> None:
    info = probe(write_test_video(tmp_path / f"clip{suffix}", seconds=10, fps=4))
    assert (info.frame_count, info.native_fps) == (40, 4.0)
    assert info.index.seekable == (suffix in (".mkv", ".mov"))  # others are decoded straight through
    plan = plan_frames(info, 1.0)
    frames = np.concatenate([chunk.frames for chunk in iter_chunks(info, plan, chunk_frames=4)])
    for index, frame in zip(plan.indices, frames):
        top, left, side = square_box(int(index))
        assert bright_tile(frame, side) == (top, left)


class WrongSeeks:
    """A container whose seeks land one keyframe late, as an inexact index would."""

    def __init__(self, container, index) -> None:
        self._container, self._index = container, index

    def seek(self, offset: int, **kwargs) -> None:
        later = self._index.keyframes[np.searchsorted(self._index.pts[self._index.keyframes], offset) + 1]
        self._container.seek(int(self._index.pts[later]), **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._container, name)


def test_a_seek_that_misses_falls_back_to_decoding_from_the_start(info: VideoInfo) -> None:
    decoder = open_decoder(info)
    decoder.frame(0)
    decoder._container = WrongSeeks(decoder._container, info.index)
    frame = decoder.frame(30)  # keyframe 24 asked for, 36 reached: detected, the file read again without seeks
    top, left, side = square_box(30)
    assert bright_tile(frame, side) == (top, left) and not decoder._seekable


def test_decoder_threads_reach_ffmpeg(info: VideoInfo) -> None:
    decoder = open_decoder(info, threads=3)
    decoder.frame(0)
    assert decoder._stream.thread_count == 3 and decoder._stream.thread_type.name == "AUTO"
    decoder.close()
