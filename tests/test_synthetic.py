"""Synthetic test videos (infinipot.synthetic): what they hold, their command line, damaged copies."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from helpers import bright_tile
from infinipot.errors import InfinipotError
from infinipot.synthetic import background, damage_video, main as synthetic_main, square_box, write_test_video
from infinipot.video import FramePlan, VideoInfo, iter_chunks, open_decoder, plan_frames, probe


def test_synthetic_frames_differ_only_where_the_square_moves(info: VideoInfo) -> None:
    consecutive = FramePlan(np.arange(6), np.arange(6) / 4.0, 4.0)
    (chunk,) = iter_chunks(info, consecutive, chunk_frames=6)
    frames = chunk.frames.astype(np.int64)  # [6, 84, 112, 3]
    for k in range(1, 6):
        moved = np.zeros((84, 112), dtype=bool)
        for index in (k - 1, k):
            top, left, side = square_box(index)
            moved[top : top + side, left : left + side] = True
        diff = np.abs(frames[k] - frames[k - 1]).mean(-1)  # [84, 112]
        assert diff[moved].mean() > 60
        assert diff[~moved].mean() < 3


def test_synthetic_background_is_deterministic_from_seed() -> None:
    np.testing.assert_array_equal(background(112, 84, seed=3), background(112, 84, seed=3))
    assert not np.array_equal(background(112, 84, seed=3), background(112, 84, seed=4))


def test_synthetic_long_video_is_fast_and_readable(tmp_path: Path) -> None:
    path = write_test_video(tmp_path / "long.mp4", seconds=600, fps=1)
    info = probe(path)
    assert (info.frame_count, info.duration_s) == (600, 600.0)
    last = open_decoder(info).frame(599)
    top, left, side = square_box(599)
    assert bright_tile(last, side) == (top, left)


@pytest.mark.skipif("libx264" not in av.codecs_available, reason="PyAV built without libx264")
def test_synthetic_libx264_reads_back(tmp_path: Path) -> None:
    info = probe(write_test_video(tmp_path / "x264.mp4", seconds=3, fps=4, codec="libx264"))
    assert info.frame_count == 12
    (chunk,) = iter_chunks(info, plan_frames(info, 4.0), chunk_frames=12)
    for index, frame in zip(range(12), chunk.frames):
        top, left, side = square_box(index)
        assert bright_tile(frame, side) == (top, left)


@pytest.mark.parametrize(
    "kwargs, words",
    [(dict(seconds=0), "seconds must be positive"), (dict(seconds=1, fps=0), "fps must be positive"),
     (dict(seconds=1, width=111), "even width and height"), (dict(seconds=1, codec="nope"), "codec 'nope'")],
)
def test_synthetic_rejects_bad_arguments(tmp_path: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(InfinipotError, match=words):
        write_test_video(tmp_path / "bad.mp4", **kwargs)


def test_synthetic_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.mp4"
    synthetic_main([str(out), "--seconds", "5", "--fps", "2"])
    assert capsys.readouterr().out.strip() == str(out)
    assert probe(out).frame_count == 10
    with pytest.raises(SystemExit) as exit_info:
        synthetic_main([str(out), "--fps", "0"])
    assert exit_info.value.code == 1
    assert "fps must be positive" in capsys.readouterr().err


def test_damage_video_keeps_the_index_and_breaks_the_middle(clip: Path, tmp_path: Path) -> None:
    broken = damage_video(clip, tmp_path / "broken.mp4", at=0.4, length=0.2)
    assert broken.stat().st_size == clip.stat().st_size
    info = probe(broken)
    assert info.frame_count == 40
    original, damaged = clip.read_bytes(), broken.read_bytes()
    changed = [i for i in range(len(original)) if original[i] != damaged[i]]
    assert changed and len(original) * 0.2 < changed[0] and changed[-1] < len(original) * 0.8  # the middle only
    bad = [k for k in range(40) if open_decoder(info).frame(k) is None]  # a fresh decoder per frame: seeks
    assert bad and bad[-1] < 39  # the damage is real; frames after it decode
    assert bad == list(range(bad[0], bad[-1] + 1))  # one stretch, up to a keyframe
    assert (bad[-1] + 1) in info.index.keyframes.tolist()
