"""Frame sources without ffmpeg: files (damage, capped rates), open_source's routing and refusals, prefetching."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from infinipot.errors import InfinipotError
from infinipot.sources import FileSource, FrameChunk, Prefetched, SourceInfo, is_live_spec, open_source
from infinipot.decoding import SequentialDecoder
from infinipot.sources import ffmpeg_process
from infinipot.synthetic import damage_video, square_box, write_test_video
from infinipot.video import probe

pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s at 4 fps: 240 frames of 112x84 (mpeg4, a keyframe every 12 frames)."""
    return write_test_video(tmp_path_factory.mktemp("sources") / "clip.mp4", seconds=60, fps=4)


@pytest.fixture(scope="module")
def damaged(clip: Path) -> Path:
    """The clip with random bytes over 10% of its media data, half-way in (frames 119-143 do not decode cleanly)."""
    return damage_video(clip, clip.with_name("damaged.mp4"), at=0.5, length=0.1)


def assert_one_line(err: pytest.ExceptionInfo, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message and " — " in message, message
    for word in words:
        assert word in message, message


def square_index(frame: np.ndarray) -> int:
    """Which frame of the synthetic pattern this is, modulo the 8 tile columns: where the white square sits."""
    top, _, side = square_box(0)
    row = frame[top : top + side].astype(np.int64).sum(-1)  # [side, W]
    return int(np.argmax(row.reshape(side, -1, side).mean((0, 2))))


def within(seconds: float, call, *args, **kwargs):
    """Run `call` in a thread; fail if it has not returned after `seconds` (a hang), else return its result."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = call(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 — handed to the test thread
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call.__name__} still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---------------------------------------------------------------- files


def test_file_source_chunks_follow_the_plan(clip: Path) -> None:
    source = open_source(clip, fps=1.0)
    assert isinstance(source, FileSource)
    info = source.info
    assert (info.width, info.height, info.frames_total, info.seconds_total, info.live) == (112, 84, 60, 60.0, False)
    assert info.sample_fps == 1.0 and source.warnings == [] and source.skipped_seconds == 0.0
    chunks = list(source.chunks(16))
    assert [c.first for c in chunks] == [0, 16, 32, 48]
    assert [len(c.frames) for c in chunks] == [16, 16, 16, 12]
    assert [c.end_seconds for c in chunks] == [16.0, 32.0, 48.0, 60.0]
    times = np.concatenate([c.timestamps for c in chunks])
    np.testing.assert_array_equal(times, source.plan.timestamps)
    frames = np.concatenate([c.frames for c in chunks])
    assert [square_index(f) for f in frames] == [int(i) % 8 for i in source.plan.indices]


def test_fps_above_the_files_rate_is_capped_and_said(clip: Path) -> None:
    source = open_source(clip, fps=10.0)
    assert source.info.frames_total == 240
    assert source.info.sample_fps == pytest.approx(4.0)
    assert source.info.description["sample_fps"] == pytest.approx(4.0)
    assert source.warnings == ["the video has 4 fps; sampling at 4 fps, not 10"]
    assert open_source(clip, fps=4.0).warnings == []


def test_duration_bounds_a_file_window(clip: Path) -> None:
    source = open_source(clip, fps=1.0, start=10, duration=20)
    assert (source.info.start, source.info.seconds_total, source.info.frames_total) == (10.0, 20.0, 20)
    assert open_source(clip, fps=1.0, start=50, duration=600).info.seconds_total == pytest.approx(10.0)
    with pytest.raises(InfinipotError) as err:
        open_source(clip, fps=1.0, end=30, duration=10)
    assert_one_line(err, "either an end or a duration")


def streamed(source, chunk_frames: int = 8) -> tuple[np.ndarray, np.ndarray, list[FrameChunk]]:
    chunks = list(source.chunks(chunk_frames))
    return np.concatenate([c.frames for c in chunks]), np.concatenate([c.timestamps for c in chunks]), chunks


def test_damaged_file_skips_unreadable_frames_and_says_how_much(damaged: Path, capfd) -> None:
    source = open_source(damaged, fps=4.0)
    frames, times, chunks = streamed(source)  # [n, 84, 112, 3], [n]
    assert all(len(c.frames) % 2 == 0 for c in chunks)  # whole temporal pairs only
    assert [c.first for c in chunks] == np.cumsum([0] + [len(c.frames) for c in chunks[:-1]]).tolist()
    assert 0 < len(frames) < 240 and np.all(np.diff(times) > 0)
    lost = 240 - len(frames)
    assert source.skipped_frames == lost and source.skipped_seconds == pytest.approx(lost / 4.0)
    assert 3.0 < source.skipped_seconds < 20.0  # about 10% of 60 s, up to the next keyframe
    gap = np.argmax(np.diff(times))
    assert times[gap + 1] - times[gap] == pytest.approx(source.skipped_seconds + 0.25)  # one contiguous hole
    assert round(times[gap + 1] * 4) % 12 == 0  # the stream resumes at a keyframe (every 12 frames)
    # Every frame kept is the right one: the square sits where its own index drew it (nothing concealed).
    assert [square_index(f) for f in frames] == [round(t * 4) % 8 for t in times]
    assert chunks[-1].end_seconds == 60.0
    (warning,) = source.warnings
    assert warning.startswith(f"skipped {source.skipped_seconds:.1f} s of damaged video in damaged.mp4")
    assert capfd.readouterr().err == ""  # no FFmpeg lines


def test_damaged_file_loses_the_same_frames_on_every_run(damaged: Path, capfd) -> None:
    """Decoding is sequential and on demand: neither chunk size, threads nor a decoding thread change what is lost."""
    frames, times, _ = streamed(open_source(damaged, fps=4.0))
    runs = [open_source(damaged, fps=4.0, decoder_threads=threads) for threads in (1, 2, 0)]
    for source, chunk_frames in zip(runs, (8, 6, 16)):
        again, again_times, _ = streamed(source, chunk_frames)
        np.testing.assert_array_equal(again_times, times)
        np.testing.assert_array_equal(again, frames)
    prefetched = Prefetched(open_source(damaged, fps=4.0))
    np.testing.assert_array_equal(streamed(prefetched)[1], times)
    assert prefetched.skipped_seconds == runs[0].skipped_seconds > 0 and len(prefetched.warnings) == 1
    assert capfd.readouterr().err == ""


def test_file_source_decodes_no_further_than_the_chunk_handed_over(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    real = SequentialDecoder.frame

    def spy(self, number):
        asked.append(number)
        return real(self, number)

    monkeypatch.setattr(SequentialDecoder, "frame", spy)
    source = open_source(clip, fps=1.0)
    chunks = source.chunks(8)
    assert asked == []
    first = next(chunks)
    assert asked == source.plan.indices[:8].tolist() and first.frames.shape == (8, 84, 112, 3)
    source.close()
    assert list(chunks) == [] and len(asked) == 8  # closed: stops before the next chunk


def test_file_without_any_readable_frame_is_refused(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = open_source(clip, fps=1.0)
    monkeypatch.setattr(SequentialDecoder, "frame", lambda self, number: None)
    with pytest.raises(InfinipotError) as err:
        list(source.chunks(8))
    assert_one_line(err, "no frame of", "decodes", "damaged")


def test_file_broken_from_the_start_is_refused_in_one_line(clip: Path, tmp_path: Path, capfd) -> None:
    broken = damage_video(clip, tmp_path / "broken.mp4", at=0.0, length=1.0)
    with pytest.raises(InfinipotError) as err:
        open_source(broken, fps=1.0)
    assert_one_line(err, "broken.mp4")
    assert capfd.readouterr().err == ""


# ---------------------------------------------------------------- open_source: routing and refusals


@pytest.mark.parametrize(
    "spec, live",
    [("-", True), ("rtsp://cam/stream", True), ("udp://127.0.0.1:5000", True), ("https://x/live.m3u8", True),
     ("srt://host:9000", True), ("/dev/video0", True), ("video.mp4", False), ("file:///tmp/v.mp4", False),
     ("https:/x/v.mp4", True), (Path("clip.mp4"), False), ("dir/-", False)],
)
def test_is_live_spec(spec, live: bool) -> None:
    assert is_live_spec(spec) is live


def test_file_url_opens_the_file(clip: Path) -> None:
    assert isinstance(open_source(f"file://{clip}", fps=1.0), FileSource)


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket"])
def test_non_regular_paths_are_refused_with_their_reason_without_hanging(tmp_path: Path, kind: str,
                                                                         monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative name: a socket's path must fit in 108 bytes, a temp path may not
    path = Path(f"thing-{kind}.mp4")
    words = {"fifo": "named pipe (FIFO)", "directory": "is a directory", "socket": "is a socket"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    with pytest.raises(InfinipotError) as err:
        within(5.0, open_source, path, fps=1.0)
    assert_one_line(err, words, str(path))
    with pytest.raises(InfinipotError):
        within(5.0, probe, path)  # the same check guards probe


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InfinipotError) as err:
        open_source(tmp_path / "nope.mp4", fps=1.0)
    assert_one_line(err, "video not found", "nope.mp4")


def test_unknown_url_scheme_is_one_line() -> None:
    if ffmpeg_process.shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg binary is not installed (apt-get install ffmpeg)")
    with pytest.raises(InfinipotError) as err:
        open_source("nosuchproto://host/stream", fps=1.0)
    assert_one_line(err, "ffmpeg cannot read nosuchproto:// URLs", "rtsp")


def test_missing_ffmpeg_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ffmpeg_process.shutil, "which", lambda name: None)
    for spec in ("-", "udp://127.0.0.1:9"):
        with pytest.raises(InfinipotError) as err:
            open_source(spec, fps=1.0)
        assert_one_line(err, "ffmpeg", "apt-get install ffmpeg")


@pytest.mark.parametrize("kwargs", [dict(start=5.0), dict(end=5.0)])
def test_live_sources_have_no_window(kwargs: dict) -> None:
    with pytest.raises(InfinipotError) as err:
        open_source("udp://127.0.0.1:9", fps=1.0, **kwargs)
    assert_one_line(err, "--start/--end", "--duration")


def test_missing_capture_device() -> None:
    with pytest.raises(InfinipotError) as err:
        open_source("/dev/video99", fps=1.0)
    assert_one_line(err, "capture device not found", "/dev/video99")


# ---------------------------------------------------------------- Prefetched


class CountingSource:
    """A fake source: `total` chunks of 2 tiny frames, each made in `decode_s` seconds; it tracks live chunks."""

    def __init__(self, total: int = 12, decode_s: float = 0.0, fail_at: int | None = None) -> None:
        self.info = SourceInfo(name="fake", width=4, height=2, sample_fps=1.0, seconds_total=2.0 * total,
                               frames_total=2 * total)
        self.total, self.decode_s, self.fail_at = total, decode_s, fail_at
        self.refs: list[weakref.ref] = []
        self.most_alive = 0
        self.made = 0
        self.closed = False

    def chunks(self, chunk_frames: int) -> Iterator[FrameChunk]:
        for k in range(self.total):
            if self.fail_at == k:
                raise InfinipotError("chunk 3 is broken — a test")
            time.sleep(self.decode_s)
            chunk = FrameChunk(np.full((2, 2, 4, 3), k, np.uint8), np.array([2.0 * k, 2.0 * k + 1]), 2 * k, 2.0 * k + 2)
            self.refs.append(weakref.ref(chunk))
            self.most_alive = max(self.most_alive, self.alive())
            self.made += 1
            yield chunk

    def alive(self) -> int:
        """Chunks made and still referenced somewhere."""
        return sum(ref() is not None for ref in self.refs)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def decode_threads():
    """The decoding threads started during this test (other tests' sessions may leave theirs running)."""
    before = set(threading.enumerate())
    return lambda: [t for t in threading.enumerate() if t.name == "infinipot-decode" and t not in before]


def test_prefetched_gives_the_same_chunks_in_order(clip: Path, decode_threads) -> None:
    expected = list(open_source(clip, fps=2.0).chunks(8))
    source = Prefetched(open_source(clip, fps=2.0))
    assert source.info.frames_total == 120
    got = list(source.chunks(8))
    assert [c.first for c in got] == [c.first for c in expected]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        assert a.end_seconds == b.end_seconds
    assert source.decode_s > 0 and source.wait_s >= 0
    assert not any(t.is_alive() for t in decode_threads())


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_prefetched_holds_at_most_depth_plus_one_chunks(depth: int) -> None:
    fake = CountingSource(total=12)
    source = Prefetched(fake, depth=depth)
    seen = []
    for chunk in source.chunks(2):
        time.sleep(0.02)  # a slow model: the worker runs ahead as far as it may
        seen.append(int(chunk.frames[0, 0, 0, 0]))
        assert fake.alive() <= depth + 1
        assert fake.made - len(seen) <= depth  # decoded ahead, not yet handed over
    assert seen == list(range(12))
    assert fake.most_alive <= depth + 1
    if depth > 1:
        assert fake.most_alive > 1  # it did run ahead


def test_prefetched_overlaps_decoding_with_the_consumer() -> None:
    fake = CountingSource(total=10, decode_s=0.05)
    source = Prefetched(fake, depth=2)
    for _ in source.chunks(2):
        time.sleep(0.05)  # the model takes as long as decoding
    assert source.decode_s >= 0.5  # ten chunks of 0.05 s, timed in the worker
    assert source.wait_s < 0.5 * source.decode_s  # most decoding happened while the consumer worked


def test_closing_mid_stream_stops_the_worker_within_a_second(decode_threads) -> None:
    fake = CountingSource(total=1000, decode_s=0.01)
    source = Prefetched(fake, depth=2)
    chunks = source.chunks(2)
    next(chunks)
    started = time.perf_counter()
    source.close()
    assert time.perf_counter() - started < 1.0
    assert not any(t.is_alive() for t in decode_threads())
    assert fake.closed and fake.made < 10


def test_dropping_the_iterator_stops_the_worker(decode_threads) -> None:
    fake = CountingSource(total=1000, decode_s=0.01)
    chunks = Prefetched(fake, depth=2).chunks(2)
    next(chunks)
    del chunks
    gc.collect()
    deadline = time.monotonic() + 1.0
    while any(t.is_alive() for t in decode_threads()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.is_alive() for t in decode_threads()) and fake.closed


def test_keyboard_interrupt_in_the_consumer_stops_the_worker(decode_threads) -> None:
    fake = CountingSource(total=1000, decode_s=0.01)
    source = Prefetched(fake, depth=2)

    def consume() -> None:
        for _ in source.chunks(2):
            raise KeyboardInterrupt

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        consume()
    assert time.perf_counter() - started < 1.0  # (before gc.collect, which takes long in a full test run)
    gc.collect()
    deadline = time.monotonic() + 1.0
    while any(t.is_alive() for t in decode_threads()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.is_alive() for t in decode_threads()) and fake.closed


def test_worker_errors_are_raised_in_the_consumer_as_they_were(decode_threads) -> None:
    source = Prefetched(CountingSource(total=10, fail_at=3))
    seen = []
    with pytest.raises(InfinipotError, match="chunk 3 is broken"):
        for chunk in source.chunks(2):
            seen.append(chunk.first)
    assert seen == [0, 2, 4]
    assert not any(t.is_alive() for t in decode_threads())


def test_prefetched_streams_once_and_checks_depth() -> None:
    source = Prefetched(CountingSource(total=2))
    list(source.chunks(2))
    with pytest.raises(InfinipotError, match="only once"):
        source.chunks(2)
    with pytest.raises(InfinipotError, match="depth must be at least 1"):
        Prefetched(CountingSource(), depth=0)
