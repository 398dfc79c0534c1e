"""The progress display: what it keeps at each width, its ETA, and its plain lines off a terminal."""

from __future__ import annotations

import re

import pytest

from infinipot_cli.display import ProgressView, RateMeter, StreamDisplay, progress_line
from helpers import invoke

HOUR = ProgressView(frames_done=552, frames_total=3600, video_seconds=552.0, seconds_total=3600.0,
                    cached_tokens=5880, budget_tokens=6000, kv_bytes_per_token=28672, compressions=123,
                    elapsed=83.0, eta=754.0)


def essentials(line: str) -> None:
    """Frames done/total, video time, cache vs budget, compressions and ETA are all there, whole."""
    assert "552/3,600" in line
    assert "9:12/1:00:00" in line
    assert "5,880/6,000" in line
    assert re.search(r"\b123 comp", line)
    assert line.endswith("eta 12:34")


@pytest.mark.parametrize("width", [60, 80, 100, 200])
def test_the_line_keeps_every_number_at_common_widths(width):
    line = progress_line(HOUR, width)
    assert len(line) < width
    essentials(line)
    if width >= 80:
        assert "frames" in line and "compressions" in line  # words, not abbreviations, from 80 columns
    if width >= 200:
        assert "━" in line and "MiB" in line and "elapsed" in line  # decoration only where there is room


def test_decoration_goes_first():
    wide, medium = progress_line(HOUR, 200), progress_line(HOUR, 120)
    assert "━" in wide and "━" not in medium and "MiB" in medium  # the bar goes before the bytes


def test_a_live_source_has_no_total_and_no_eta():
    live = ProgressView(40, None, 40.0, None, 240, 600, 512, 0, 12.0, None)
    line = progress_line(live, 80)
    assert line.startswith("40 frames") and "eta" not in line and "0:40" in line


def test_eta_follows_the_rate_the_stream_sustains():
    """Cheap chunks first (no compression yet: 280 frames in a second), then 30 frames/s."""
    meter, now, done = RateMeter(), 0.0, 0
    for frames, seconds in [(32, 0.1)] * 9 + [(32, 32 / 30)] * 12:
        done, now = done + frames, now + seconds
        meter.update(done, now)
    left = 3600 - done
    assert meter.eta(left) == pytest.approx(left / 30, rel=0.05)
    naive = left / (done / now)  # frames / elapsed since the start: far too optimistic
    assert naive < 0.75 * left / 30


def test_no_rate_before_two_chunks():
    meter = RateMeter()
    meter.update(32, 5.0)  # the first chunk also carries the warm-up: only an origin
    assert meter.eta(100) is None


def test_plain_lines_every_five_percent_off_a_terminal(capsys):
    display = StreamDisplay(show=True)
    assert not display.terminal
    for done in range(1, 101):
        display.progress(type("Event", (), dict(frames_done=done, frames_total=100, video_seconds=float(done),
                                                seconds_total=100.0, cached_tokens=done, budget_tokens=600,
                                                compressions=0, kv_bytes_per_token=512))())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 21 and lines[-1].startswith("100/100 frames")
    assert all(" · video " in line and "eta" in line for line in lines)


def test_cli_progress_off_a_terminal_is_plain_lines(long_video):
    result = invoke("ask", long_video, "What?", "--preset", "tiny", "--end", "120", "--max-new-tokens", "2")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "loading tiny:qwen2_5_vl …"  # at once, before the weights load
    progress = [line for line in lines if "/120 frames" in line]
    assert 5 <= len(progress) <= 21 and progress[-1].startswith("120/120 frames · video 2:00/2:00")
    assert all("cache" in line and "eta" in line and "\x1b" not in line for line in progress)
