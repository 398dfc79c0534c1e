"""Video input: probing, frame planning (qwen-vl-utils' recipe, uncapped), chunked decoding, errors."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import bright_tile, every_frame
from infinipot import decoding
from infinipot import video as video_mod
from infinipot.decoding import SequentialDecoder
from infinipot.errors import InfinipotError
from infinipot.synthetic import square_box, write_test_video, write_vfr_test_video
from infinipot.video import FramePlan, VideoInfo, iter_chunks, plan_frames, probe


def reference_plan(frame_count: int, native_fps: float, fps: float, start: float, end: float,
                   max_frames: int | None = None, multiple: int = 2, min_frames: int = 4) -> list[int]:
    """Plain restatement of the recipe, one step per line, no numpy tricks."""
    first = math.ceil(round(start * native_fps, 6))
    last = min(math.floor(round(end * native_fps, 6)), frame_count - 1)
    if last < first:
        first = last = min(math.floor(round(start * native_fps, 6)), frame_count - 1)
    native = last - first + 1
    n = round((end - start) * fps / multiple) * multiple
    n = max(n, math.ceil(min_frames / multiple) * multiple)
    n = min(n, native // multiple * multiple)
    n = max(n, multiple)
    if max_frames is not None:
        n = min(n, max_frames // multiple * multiple)
    if native < multiple:
        return list(range(first, last + 1)) + [last] * (multiple - native)
    return [round(first + (last - first) * k / (n - 1)) if n > 1 else first for k in range(n)]


# ---------------------------------------------------------------- probe


def test_probe_reads_metadata(clip: Path, info: VideoInfo) -> None:
    assert info.path == clip
    assert (info.frame_count, info.native_fps, info.duration_s) == (40, 4.0, 10.0)
    assert (info.width, info.height) == (112, 84)


def test_probe_fractional_fps(tmp_path: Path) -> None:
    info = probe(write_test_video(tmp_path / "v.mp4", seconds=10, fps=2.5, width=64, height=48))
    assert info.frame_count == 25
    assert info.native_fps == pytest.approx(2.5)
    assert info.duration_s == pytest.approx(10.0)
    assert (info.width, info.height) == (64, 48)


# ---------------------------------------------------------------- plan_frames


@pytest.mark.parametrize(
    "fps, expected",
    # 1.5 and 1.3: round(7.5) == 8 but round(6.5) == 6; Python rounds half to even, as qwen-vl-utils does.
    [(1.0, 10), (0.8, 8), (2.0, 20), (4.0, 40), (10.0, 40), (0.1, 4), (1.5, 16), (1.3, 12)],
)
def test_plan_frame_counts_scale_with_fps(info: VideoInfo, fps: float, expected: int) -> None:
    plan = plan_frames(info, fps)
    assert plan.frames == expected
    assert plan.frames % 2 == 0
    assert plan.indices.tolist() == reference_plan(40, 4.0, fps, 0.0, 10.0)
    assert plan.indices.dtype == np.int64 and plan.timestamps.dtype == np.float64
    np.testing.assert_allclose(plan.timestamps, plan.indices / 4.0)
    assert plan.fps == fps and plan.seconds == 10.0


def test_plan_spans_whole_video_evenly(info: VideoInfo) -> None:
    plan = plan_frames(info, 1.0)
    assert plan.indices.tolist() == [0, 4, 9, 13, 17, 22, 26, 30, 35, 39]
    assert np.all(np.diff(plan.indices) >= 0)


def test_plan_is_not_capped_at_768_frames() -> None:
    hour = VideoInfo(Path("x.mp4"), 3600.0, 30.0, 108_000, 1280, 720)
    plan = plan_frames(hour, 1.0)
    assert plan.frames == 3600
    assert plan.indices[0] == 0 and plan.indices[-1] == 107_999


@pytest.mark.parametrize(
    "start, end, expected",
    [
        (2.0, 6.0, [8, 13, 19, 24]),
        (2.1, 6.0, [9, 14, 19, 24]),  # 2.1 s * 4 fps = 8.4: the window starts at native frame 9
        (None, 3.0, [0, 4, 8, 12]),
        (8.0, None, [32, 34, 37, 39]),
    ],
)
def test_plan_window(info: VideoInfo, start: float | None, end: float | None, expected: list[int]) -> None:
    plan = plan_frames(info, 1.0, start=start, end=end)
    assert plan.indices.tolist() == expected
    np.testing.assert_allclose(plan.timestamps, np.array(expected) / 4.0)
    assert plan.seconds == pytest.approx((end or 10.0) - (start or 0.0))


def test_plan_max_frames_caps_to_a_multiple(info: VideoInfo) -> None:
    assert plan_frames(info, 4.0, max_frames=11).frames == 10
    assert plan_frames(info, 4.0, max_frames=12).indices.tolist() == reference_plan(40, 4.0, 4.0, 0, 10, max_frames=12)
    assert plan_frames(info, 1.0, max_frames=100).frames == 10  # a cap, never a floor


def test_plan_min_frames_rounds_up_to_a_multiple(info: VideoInfo) -> None:
    assert plan_frames(info, 0.1, min_frames=7).frames == 8
    assert plan_frames(info, 0.1, min_frames=0).frames == 2  # round(1 / 2) * 2 == 0, lifted to one pair


def test_plan_frame_multiple(info: VideoInfo) -> None:
    plan = plan_frames(info, 1.0, frame_multiple=4)
    assert plan.frames == 8  # round(10 / 4) * 4, where a multiple of 2 gives 10
    assert plan.indices.tolist() == reference_plan(40, 4.0, 1.0, 0, 10, multiple=4)


def test_plan_pads_short_windows_by_repeating_the_last_frame(info: VideoInfo, tmp_path: Path) -> None:
    one_frame = probe(write_test_video(tmp_path / "one.mp4", seconds=0.25, fps=4))
    assert one_frame.frame_count == 1
    assert plan_frames(one_frame, 2.0).indices.tolist() == [0, 0]
    assert plan_frames(info, 1.0, start=0.0, end=0.5, frame_multiple=4).indices.tolist() == [0, 1, 2, 2]
    # A window between two native frames still yields the frame on screen at its start.
    between = plan_frames(info, 1.0, start=1.3, end=1.4)
    assert between.indices.tolist() == [5, 5]
    assert between.seconds == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(fps=0.0), ["fps must be positive", "0.0"]),
        (dict(fps=-1.0), ["fps must be positive"]),
        (dict(fps=float("nan")), ["fps must be positive"]),
        (dict(fps=1.0, start=-1.0), ["start must be >= 0"]),
        (dict(fps=1.0, end=11.0), ["past the end of the video", "10 s"]),
        (dict(fps=1.0, start=6.0, end=5.0), ["must be before end", "6 s", "5 s"]),
        (dict(fps=1.0, start=10.0), ["must be before end"]),
        (dict(fps=1.0, max_frames=1), ["max_frames (1)", "max_frames >= 2"]),
        (dict(fps=1.0, frame_multiple=0), ["frame_multiple must be >= 1"]),
    ],
)
def test_plan_rejects_bad_arguments(info: VideoInfo, kwargs: dict, words: list[str]) -> None:
    with pytest.raises(InfinipotError) as err:
        plan_frames(info, **kwargs)
    message = str(err.value)
    assert "\n" not in message and " — " in message
    for word in words:
        assert word in message


# ---------------------------------------------------------------- iter_chunks


def test_iter_chunks_yields_all_planned_frames_in_order(clip: Path, info: VideoInfo) -> None:
    plan = plan_frames(info, 1.0)  # 10 sparse frames
    chunks = list(iter_chunks(info, plan, chunk_frames=4))
    assert [c.frames.shape[0] for c in chunks] == [4, 4, 2]
    assert [c.first for c in chunks] == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate([c.timestamps for c in chunks]), plan.timestamps)
    frames = np.concatenate([c.frames for c in chunks])  # [10, 84, 112, 3]
    assert frames.shape == (10, 84, 112, 3) and frames.dtype == np.uint8
    reference = every_frame(clip)
    np.testing.assert_array_equal(frames, np.stack([reference[int(i)] for i in plan.indices]))
    # Each decoded frame is the native frame asked for: the square sits where it was drawn.
    for index, frame in zip(plan.indices, frames):
        top, left, side = square_box(int(index))
        assert bright_tile(frame, side) == (top, left)


def test_iter_chunks_decodes_repeated_padding_frames(tmp_path: Path) -> None:
    one = probe(write_test_video(tmp_path / "one.mp4", seconds=0.25, fps=4))
    (chunk,) = iter_chunks(one, plan_frames(one, 1.0), chunk_frames=8)
    assert chunk.frames.shape == (2, 84, 112, 3)
    np.testing.assert_array_equal(chunk.frames[0], chunk.frames[1])


def test_iter_chunks_is_lazy_and_decodes_only_the_chunk_asked_for(info: VideoInfo,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    asked: list[int] = []
    real_open, real_frame = decoding.av.open, SequentialDecoder.frame

    def spy_open(*args, **kwargs):
        opened.append(str(args[0]))
        return real_open(*args, **kwargs)

    def spy_frame(self, number):
        asked.append(number)
        return real_frame(self, number)

    monkeypatch.setattr(decoding.av, "open", spy_open)
    monkeypatch.setattr(SequentialDecoder, "frame", spy_frame)
    chunks = iter_chunks(info, plan_frames(info, 4.0), chunk_frames=16)
    assert opened == [] and asked == []
    next(chunks)
    assert len(opened) == 1 and asked == list(range(16))  # nothing decoded ahead of the chunk handed over
    list(chunks)
    assert len(opened) == 1 and asked == list(range(40))


def test_iter_chunks_rejects_bad_arguments(info: VideoInfo) -> None:
    with pytest.raises(InfinipotError, match="chunk_frames must be positive"):
        iter_chunks(info, plan_frames(info, 1.0), chunk_frames=0)
    foreign = FramePlan(np.array([0, 50]), np.array([0.0, 12.5]), 1.0)
    with pytest.raises(InfinipotError, match="reaches frame 50 but .* has 40 frames"):
        iter_chunks(info, foreign, chunk_frames=2)


# ---------------------------------------------------------------- probe errors


def assert_one_line(err: pytest.ExceptionInfo, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message and " — " in message, message
    for word in words:
        assert word in message, message


def test_probe_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InfinipotError) as err:
        probe(tmp_path / "nope.mp4")
    assert_one_line(err, "video not found", "nope.mp4", "check the path")


def test_probe_directory(tmp_path: Path) -> None:
    with pytest.raises(InfinipotError) as err:
        probe(tmp_path)
    assert_one_line(err, "is a directory", str(tmp_path))


def test_probe_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InfinipotError) as err:
        probe(tmp_path / "empty.mp4")
    assert_one_line(err, "empty (0 bytes)", "empty.mp4")


def test_probe_text_file_named_mp4(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("these are not video frames\n")
    with pytest.raises(InfinipotError) as err:
        probe(tmp_path / "notes.mp4")
    assert_one_line(err, "cannot decode video", "notes.mp4", "convert it to mp4")


def test_probe_video_container_without_frames(tmp_path: Path) -> None:
    path = tmp_path / "zero.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.mux(stream.encode())
    with pytest.raises(InfinipotError) as err:
        probe(path)
    assert_one_line(err, "zero.mp4")


@pytest.mark.parametrize(
    "frames, fps, words",
    [(0, 4.0, ["has no frames"]), (10, 0.0, ["no usable frame rate", "fps=0.0"]),
     (10, float("nan"), ["no usable frame rate", "fps=nan"])],
)
def test_probe_reports_unusable_metadata(clip: Path, monkeypatch: pytest.MonkeyPatch,
                                         frames: int, fps: float, words: list[str]) -> None:
    def index(container, path):  # metadata FFmpeg itself rarely reports
        return decoding.StreamIndex(0, Fraction(1, 4), np.arange(frames), np.zeros(min(frames, 1), np.int64),
                                    fps, True)

    monkeypatch.setattr(video_mod, "read_index", index)
    with pytest.raises(InfinipotError) as err:
        probe(clip)
    assert_one_line(err, str(clip), *words)


def test_probe_refuses_an_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(InfinipotError) as err:
        probe(path)
    assert_one_line(err, "no video stream", "voice.m4a")


def test_bad_file_leaves_no_native_noise_on_stderr(tmp_path, capfd):
    """FFmpeg prints its own lines for a bad file; only our one-line error may reach the user."""
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video\n")
    with pytest.raises(InfinipotError, match="cannot decode video"):
        probe(fake)
    captured = capfd.readouterr()
    assert "moov atom" not in captured.err and "ERROR opening" not in captured.err
    assert captured.err == ""


def test_text_file_read_as_ansi_art_leaves_no_native_noise(tmp_path, capfd):
    """FFmpeg reads any text file as 'tty' video (ANSI art); it is refused as text, silently."""
    notes = tmp_path / "notes.txt"
    notes.write_text("hello world\n" * 50)
    with pytest.raises(InfinipotError) as err:
        probe(notes)
    assert_one_line(err, "notes.txt", "as text")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("spec", ["https://example.com/v.mp4", Path("https://example.com/v.mp4")])
def test_probe_says_a_url_is_not_a_file(spec) -> None:
    with pytest.raises(InfinipotError) as err:
        probe(spec)
    assert_one_line(err, "https://example.com/v.mp4 is a URL", "live")


def test_probe_refuses_a_fifo_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(InfinipotError) as err:
        probe(fifo)  # opening it would block until a writer came
    assert_one_line(err, "named pipe (FIFO)", "pipe.mp4", "'-'")


# ---------------------------------------------------------------- variable frame rate

# 60 frames a second apart, then 40 crammed into the last 0.4 s: the burst that fooled index sampling.
VFR_TIMES = [float(t) for t in range(60)] + [60 + 0.01 * k for k in range(40)]


@pytest.fixture(scope="module")
def vfr(tmp_path_factory: pytest.TempPathFactory) -> VideoInfo:
    return probe(write_vfr_test_video(tmp_path_factory.mktemp("vfr") / "vfr.mp4", VFR_TIMES))


def reference_vfr_plan(times: list[float], n: int) -> list[int]:
    """For each of n instants evenly spaced from the first to the last frame, the nearest frame (ties: earlier)."""
    picks = []
    for k in range(n):
        target = times[0] + (times[-1] - times[0]) * k / (n - 1)
        picks.append(min(range(len(times)), key=lambda i: (abs(times[i] - target), i)))
    return picks


def test_probe_detects_a_variable_frame_rate(vfr: VideoInfo, info: VideoInfo) -> None:
    assert vfr.variable_frame_rate and not info.variable_frame_rate
    assert vfr.frame_count == 100
    np.testing.assert_allclose(vfr.frame_times, VFR_TIMES, atol=1e-3)


def test_variable_frame_rate_is_sampled_by_time(vfr: VideoInfo) -> None:
    plan = plan_frames(vfr, 1.0)
    assert plan.frames == 60  # round(duration * fps), as for any file
    assert plan.indices.tolist() == reference_vfr_plan(VFR_TIMES, 60)
    assert int((plan.indices >= 60).sum()) == 1  # index sampling took 24 of 60 from the burst
    np.testing.assert_allclose(plan.timestamps, np.array(VFR_TIMES)[plan.indices], atol=1e-3)
    instants = np.linspace(0.0, VFR_TIMES[-1], 60)  # evenly spread in time ...
    assert np.abs(plan.timestamps - instants).max() <= 0.5 + 1e-3  # ... each within half a frame gap


def test_variable_frame_rate_window_and_decoded_frames(vfr: VideoInfo) -> None:
    plan = plan_frames(vfr, 2.0, start=58.5, end=60.391)
    assert plan.indices[0] == 59 and plan.indices[-1] == 99
    (chunk,) = iter_chunks(vfr, plan, chunk_frames=plan.frames)
    for index, frame in zip(plan.indices, chunk.frames):
        top, left, side = square_box(int(index))
        assert bright_tile(frame, side) == (top, left)


def test_vfr_writer_rejects_unordered_times(tmp_path: Path) -> None:
    with pytest.raises(InfinipotError, match="increasing"):
        write_vfr_test_video(tmp_path / "bad.mp4", [0.0, 2.0, 1.0])
