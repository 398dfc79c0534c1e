"""`infinipot watch`: the same question at regular stream times, from files and from a live source."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest

from helpers import assert_one_line_error, invoke
from infinipot.synthetic import write_test_video

FFMPEG = shutil.which("ffmpeg")


def test_watch_answers_at_every_interval_and_at_the_end(tmp_path):
    video = write_test_video(tmp_path / "v.mp4", seconds=13, fps=2)
    out, cache = tmp_path / "answers.jsonl", tmp_path / "v.ipv"
    result = invoke("watch", video, "What is happening?", "--every", "5", "--preset", "tiny", "--max-new-tokens", "3",
                    "-o", out, "--save-cache", cache, "-q")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [record["asked_at"] for record in records] == [5.0, 10.0, 13.0]
    assert [record["stream_time"] for record in records] == ["0:05", "0:10", "0:13"]
    assert all(record["frames_seen"] <= record["asked_at"] + 1 for record in records)  # 1 fps, frames up to then
    assert cache.stat().st_size > 0
    assert "0:05" in result.output and "0:13" in result.output


def test_watch_refuses_what_it_cannot_do(tmp_path, short_video):
    assert_one_line_error(invoke("watch", short_video, "  ", "--preset", "tiny"), "question is empty")
    assert_one_line_error(invoke("watch", short_video, "Q?", "--every", "0", "--preset", "tiny"), "--every")
    assert_one_line_error(invoke("watch", short_video, "Q?", "--preset", "tiny", "--save-cache", short_video),
                          "--save-cache")


@pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg binary is not installed (apt-get install ffmpeg)")
def test_watch_a_live_stream_until_its_duration(tmp_path):
    """An ffmpeg server sends a looping clip to a loopback UDP port in real time; watch reads it for 6 s."""
    clip = write_test_video(tmp_path / "clip.ts", seconds=4, fps=4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                               "-i", str(clip), "-an", "-c:v", "mpeg4", "-g", "2", "-f", "mpegts",
                               f"udp://127.0.0.1:{port}?pkt_size=1316"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = tmp_path / "live.jsonl"
    try:
        done = subprocess.run([sys.executable, "-m", "infinipot_cli", "watch", f"udp://127.0.0.1:{port}",
                               "What moves?", "--every", "2", "--duration", "6", "--preset", "tiny", "--fps", "2",
                               "--max-new-tokens", "2", "-o", str(out), "-q"],
                              capture_output=True, text=True, timeout=120)
    finally:
        server.kill()
        server.wait(5)
    assert done.returncode == 0, done.stderr
    times = [json.loads(line)["asked_at"] for line in out.read_text().splitlines()]
    assert times == [2.0, 4.0, 6.0]
