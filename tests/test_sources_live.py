"""Live sources through the ffmpeg binary, simulated on this machine: loopback UDP/TCP servers and pipes.

A server is an `ffmpeg -re` process sending a synthetic clip in real time (MPEG-TS, a keyframe
every other frame so a reader joining mid-stream starts at once). Every test is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from infinipot.errors import InfinipotError
from infinipot.sources import LiveSource, Prefetched, open_source
from infinipot.sources.live import ffmpeg_command
from infinipot.synthetic import square_box, write_test_video

FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg binary is not installed (apt-get install ffmpeg)")
pytest.importorskip("av")

# Probing a live input for ffmpeg's default 5 s would dominate every test; a second is plenty here.
FAST_START = {"analyzeduration": "1000000", "probesize": "200000"}


@pytest.fixture(scope="module")
def clip_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s at 4 fps, 112x84, in MPEG-TS: a container that streams through pipes and sockets."""
    return write_test_video(tmp_path_factory.mktemp("live") / "clip.ts", seconds=20, fps=4)


def assert_one_line(err: pytest.ExceptionInfo, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message and " — " in message, message
    for word in words:
        assert word in message, message


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(clip: Path, url: str, loop: bool = True) -> Iterator[subprocess.Popen]:
    """`ffmpeg -re` sending `clip` to `url` in real time, in its own process group, killed on exit."""
    args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re"]
    args += ["-stream_loop", "-1"] if loop else []
    args += ["-i", str(clip), "-an", "-c:v", "mpeg4", "-g", "2", "-q:v", "2", "-f", "mpegts", url]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(5)


def udp_url(port: int) -> str:
    return f"udp://127.0.0.1:{port}?pkt_size=1316"


def listening(port: int) -> bool:
    """Whether a TCP socket listens on `port` (read from /proc, so no connection is spent on asking)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                    return True
    return False


def our_children() -> list[int]:
    """Processes whose parent is this test process."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    children.append(int(entry))
    return children


def gone(pid: int) -> bool:
    return pid not in our_children() and not os.path.exists(f"/proc/{pid}")


def square_column(frame: np.ndarray) -> int:
    """Tile column of the white square (the pattern moves one tile per native frame, 8 columns)."""
    top, _, side = square_box(0)
    row = frame[top : top + side].astype(np.int64).sum(-1)  # [side, W]
    return int(np.argmax(row.reshape(side, -1, side).mean((0, 2))))


# ---------------------------------------------------------------- reading


def test_udp_stream_is_read_for_the_duration_asked(clip_ts: Path, capfd) -> None:
    port = free_port()
    with server(clip_ts, udp_url(port)):
        source = open_source(f"udp://127.0.0.1:{port}", fps=2.0, duration=3.0, stall_timeout=10,
                             input_options=FAST_START)
        assert isinstance(source, LiveSource)
        info = source.info
        assert (info.width, info.height, info.sample_fps, info.live, info.frames_total) == (112, 84, 2.0, True, None)
        assert info.seconds_total == 3.0 and info.description["live"] is True
        pid = source._process.pid
        chunks = list(source.chunks(4))
    assert [len(c.frames) for c in chunks] == [4, 2]
    assert [c.first for c in chunks] == [0, 4] and [c.end_seconds for c in chunks] == [2.0, 3.0]
    np.testing.assert_array_equal(np.concatenate([c.timestamps for c in chunks]), np.arange(6) / 2.0)
    frames = np.concatenate([c.frames for c in chunks])
    assert frames.shape == (6, 84, 112, 3) and frames.dtype == np.uint8
    # Sampled at 2 fps from 4 fps video: the square moves two tiles between samples.
    columns = [square_column(f) for f in frames]
    assert all((b - a) % 8 == 2 for a, b in zip(columns, columns[1:])), columns
    assert source.ended_by == "duration" and source.warnings == [] and source.frames_read == 6
    assert gone(pid)
    assert capfd.readouterr().err == ""  # ffmpeg's own lines are captured, never shown


def test_a_stalled_stream_ends_cleanly_and_keeps_its_frames(clip_ts: Path) -> None:
    port = free_port()
    with server(clip_ts, udp_url(port)) as sender:
        source = open_source(f"udp://127.0.0.1:{port}", fps=2.0, stall_timeout=1.5, input_options=FAST_START,
                             open_timeout=15)
        frames, stopped_at = 0, None
        for chunk in source.chunks(2):
            frames += len(chunk.frames)
            if stopped_at is None:
                stop(sender)  # the sender goes silent; nothing tells the reader
                stopped_at = time.monotonic()
        waited = time.monotonic() - stopped_at
    assert source.ended_by == "stall"
    assert 1.5 <= waited < 1.5 + 3.0
    assert frames >= 2
    (warning,) = source.warnings
    assert "no frame for 1.5 s" in warning and "stalled" in warning and "\n" not in warning
    assert gone(source._process.pid)


def test_a_dropped_connection_ends_the_stream_without_waiting_for_the_stall(clip_ts: Path) -> None:
    port = free_port(socket.SOCK_STREAM)
    with server(clip_ts, f"tcp://127.0.0.1:{port}?listen=1") as sender:
        deadline = time.monotonic() + 10
        while not listening(port):
            assert time.monotonic() < deadline, "the test server never listened"
            time.sleep(0.05)
        source = open_source(f"tcp://127.0.0.1:{port}", fps=2.0, duration=60, stall_timeout=20,
                             input_options=FAST_START)
        chunks = source.chunks(2)
        next(chunks)
        stop(sender)
        dropped_at = time.monotonic()
        rest = list(chunks)
    assert time.monotonic() - dropped_at < 5.0  # well before the 20 s stall timeout
    assert source.ended_by == "eof" or source.ended_by.startswith("error: ")
    (warning,) = source.warnings
    assert "of the 60 s asked" in warning or "the stream failed" in warning, warning
    assert all(len(c.frames) for c in rest)


def test_stdin_container_is_read_to_its_end(clip_ts: Path) -> None:
    with clip_ts.open("rb") as stdin:
        source = open_source("-", fps=2.0, stdin=stdin)
        assert source.info.name == "stdin" and (source.info.width, source.info.height) == (112, 84)
        chunks = list(source.chunks(8))
    frames = np.concatenate([c.frames for c in chunks])
    assert len(frames) == 40 and source.ended_by == "eof" and source.warnings == []
    assert [square_column(f) for f in frames] == [(2 * k) % 8 for k in range(40)]
    np.testing.assert_array_equal(np.concatenate([c.timestamps for c in chunks]), np.arange(40) / 2.0)


def test_max_frames_bounds_a_live_source(clip_ts: Path) -> None:
    with clip_ts.open("rb") as stdin:
        source = open_source("-", fps=4.0, max_frames=5, stdin=stdin)
        assert [len(c.frames) for c in source.chunks(4)] == [4, 1]
    assert source.ended_by == "max_frames"


def test_a_terminal_on_stdin_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("infinipot.sources.live.os.isatty", lambda fd: fd == 0)
    with pytest.raises(InfinipotError) as err:
        open_source("-", fps=1.0)
    assert_one_line(err, "standard input", "terminal", "pipe one in")


def test_keyboard_interrupt_while_reading_stops_ffmpeg(clip_ts: Path) -> None:
    with clip_ts.open("rb") as stdin:
        source = open_source("-", fps=4.0, stdin=stdin)

        def watch() -> None:
            for _ in source.chunks(2):
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            watch()
    assert source.ended_by == "closed" and gone(source._process.pid)


def test_dash_reads_this_process_standard_input(clip_ts: Path) -> None:
    code = ("from infinipot.sources import open_source; s = open_source('-', fps=2.0); "
            "print(sum(len(c.frames) for c in s.chunks(8)), s.ended_by)")
    result = subprocess.run([sys.executable, "-c", code], input=clip_ts.read_bytes(), capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["40", "eof"]
    assert result.stderr == b""


# ---------------------------------------------------------------- failures


def test_an_mp4_with_its_index_at_the_end_on_stdin_is_one_line(tmp_path: Path) -> None:
    clip = write_test_video(tmp_path / "clip.mp4", seconds=60, fps=4)
    with clip.open("rb") as stdin, pytest.raises(InfinipotError) as err:
        open_source("-", fps=1.0, stdin=stdin, stall_timeout=10)
    assert_one_line(err, "ffmpeg cannot read stdin", "faststart")


def test_connection_refused_is_one_line() -> None:
    port = free_port(socket.SOCK_STREAM)
    with pytest.raises(InfinipotError) as err:
        open_source(f"tcp://127.0.0.1:{port}", fps=1.0, stall_timeout=10)
    assert_one_line(err, f"ffmpeg cannot read tcp://127.0.0.1:{port}", "Connection refused")
    assert str(err.value).count(f"127.0.0.1:{port}") == 1  # ffmpeg's own copy of the address is dropped


def test_a_silent_address_fails_after_the_stall_timeout_and_leaves_nothing_running() -> None:
    before = set(our_children())
    started = time.monotonic()
    with pytest.raises(InfinipotError) as err:
        open_source(f"udp://127.0.0.1:{free_port()}", fps=1.0, stall_timeout=1.5, input_options=FAST_START)
    assert 2.5 <= time.monotonic() - started < 6.0  # the stall timeout plus ffmpeg's probing time (1 s here)
    assert_one_line(err, "no video from udp://127.0.0.1", "within 2.5 s", "until its next keyframe")
    assert set(our_children()) <= before


# ---------------------------------------------------------------- stopping


@pytest.mark.parametrize("prefetched", [False, True])
def test_closing_mid_stream_leaves_no_process_or_thread(clip_ts: Path, prefetched: bool) -> None:
    port = free_port()
    earlier = set(threading.enumerate())  # other tests' sessions may still hold their own workers
    with server(clip_ts, udp_url(port)) as sender:
        live = open_source(f"udp://127.0.0.1:{port}", fps=2.0, stall_timeout=10, input_options=FAST_START)
        source = Prefetched(live) if prefetched else live
        next(source.chunks(2))
        started = time.monotonic()
        source.close()
        assert time.monotonic() - started < 2.0
        assert gone(live._process.pid)
        assert set(our_children()) == {sender.pid}
    assert live.ended_by == "closed"
    assert not [t for t in threading.enumerate()
                if t not in earlier and t.name.startswith(("ffmpeg-", "infinipot-decode"))]


def test_ffmpeg_command_reads_the_first_video_stream_as_rgb_at_the_rate() -> None:
    args = ffmpeg_command("-", 2.5)
    assert args[0] == FFMPEG and "-nostdin" in args and ["-i", "pipe:0"] == args[args.index("-i"):][:2]
    for pair in (["-map", "0:v:0"], ["-f", "rawvideo"], ["-pix_fmt", "rgb24"], ["-vf", "fps=2.5"]):
        assert any(args[k:k + 2] == pair for k in range(len(args))), pair
    assert args[-1] == "pipe:1"
    camera = ffmpeg_command("/dev/video0", 1.0, {"video_size": "640x480"})
    assert camera[camera.index("-i") - 4:camera.index("-i")] in (["-f", "v4l2", "-video_size", "640x480"],
                                                                  ["-video_size", "640x480", "-f", "v4l2"])
