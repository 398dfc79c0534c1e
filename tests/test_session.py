"""The front door: a session streams, answers at any moment, goes on streaming, and refuses misuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import frames, session, streamed
from infinipot import InfinipotError, Session
from infinipot.sources.base import FrameChunk, SourceInfo


def test_the_readme_library_example_runs(short_video, tmp_path, monkeypatch, capsys):
    """The README's Python example, exactly as written there, on the tiny preset and a synthetic video."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## From Python"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    assert "Session.from_preset(" in code and "session.save(" in code and "Session.load(" in code
    code = code.replace('"qwen2.5-vl-7b"', '"tiny"').replace('"movie.mp4"', repr(str(short_video)))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and (tmp_path / "movie.ipv").stat().st_size > 0


def test_question_positions_follow_the_training_rule_not_transformers_5_24(models):
    """The question after a Qwen2.5-VL video starts one past the video's largest position.

    400 frames at 1 fps: temporal ids reach P + 4 * 199 = P + 796 (tokens_per_second 2, two
    frames a step), while transformers 5.24's rule would resume at P + max(rows, cols) = P + 4.
    """
    result = streamed(models, "qwen2_5_vl", count=400, policy="full")
    prefix = result.state.prefix_len
    adapter = result.model.adapter
    prompt = adapter.question("What happened?", result.state.positions)
    steps = 400 // 2
    interval = np.float32(2) * np.float32(2.0 / 1.0)  # tokens_per_second * temporal_patch / fps
    largest = prefix + int(np.float32(steps - 1) * interval)
    assert largest == prefix + 796
    assert prompt.positions[:, 0].tolist() == [largest + 1] * 3
    assert int(prompt.positions[0, 0]) - (prefix + 4) > 700  # where 5.24's rule would have put it


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_asking_midway_then_streaming_on_ends_where_one_stream_ends(models, short_video, positions):
    """Questions at moments never change the stream: same final cache, same answers."""
    straight = session(models, budget=96, chunk_frames=8, positions=positions)
    straight.stream(short_video)
    stopped = session(models, budget=96, chunk_frames=8, positions=positions)
    seen = []
    for moment in (3.0, 7.4, 7.4, 12.0):
        stopped.stream(short_video if not seen else None, until=moment)
        assert stopped.moment()["asked_at"] == moment
        seen.append(stopped.ask("What happened?", max_new_tokens=4).text)
        # every frame up to the moment, in whole temporal steps, and none later
        times = stopped.source.plan.timestamps
        assert stopped.moment()["frames_seen"] == int((times <= moment).sum()) // 2 * 2
        assert int(stopped.cache.layouts[0].frame.max()) == stopped.moment()["frames_seen"] // 2 - 1
    stopped.stream()
    assert stopped.state.stats.frames == straight.state.stats.frames == 20
    assert stopped.state.stats.compressions == straight.state.stats.compressions
    for mine, theirs in zip(stopped.cache.layers, straight.cache.layers):
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
    for mine, theirs in zip(stopped.cache.layouts, straight.cache.layouts):
        assert torch.equal(mine.frame, theirs.frame) and torch.equal(mine.position, theirs.position)
    assert stopped.ask("What happened?", max_new_tokens=6).text == straight.ask("What happened?", max_new_tokens=6).text


def test_an_answer_midway_equals_a_stream_that_stops_there(models):
    video = frames(24, seed=1)
    whole = session(models, budget=96, chunk_frames=8)
    whole.feed(video[:16])
    first = whole.ask("What happened?", max_new_tokens=6)
    whole.feed(video[16:])
    second = whole.ask("What happened?", max_new_tokens=6)
    straight = session(models, budget=96, chunk_frames=8)
    straight.feed(video)
    assert second.text == straight.ask("What happened?", max_new_tokens=6).text
    short = session(models, budget=96, chunk_frames=8)
    short.feed(video[:16])
    assert first.text == short.ask("What happened?", max_new_tokens=6).text


def test_one_model_serves_interleaved_sessions(models):
    """Adapters keep no stream state: two sessions on one loaded model do not disturb each other."""
    one, two = session(models, budget=96, chunk_frames=8), session(models, budget=96, chunk_frames=8)
    video_a, video_b = frames(24, seed=2), frames(16, seed=3)
    for start in range(0, 24, 8):
        one.feed(video_a[start : start + 8])
        if start < 16:
            two.feed(video_b[start : start + 8])
    alone_a, alone_b = streamed(models, count=24, seed=2), streamed(models, count=16, seed=3)
    assert one.ask("What?", max_new_tokens=6).text == alone_a.ask("What?", max_new_tokens=6).text
    assert two.ask("What?", max_new_tokens=6).text == alone_b.ask("What?", max_new_tokens=6).text


def test_leftover_frames_wait_for_a_whole_step(models):
    result = session(models, policy="full", chunk_frames=8)
    result.feed(frames(5))
    assert result.state.stats.frames == 4
    result.feed(frames(1, seed=7))
    assert result.state.stats.frames == 6
    result.feed(frames(1, seed=8))
    result.finish()
    assert result.state.stats.frames == 8  # the odd frame, padded by repeating it


def test_misuse_is_refused_in_one_line(models, short_video):
    fresh = session(models)
    with pytest.raises(InfinipotError, match="no video has been streamed"):
        fresh.ask("What?")
    with pytest.raises(InfinipotError, match="nothing to stream"):
        fresh.stream()
    with pytest.raises(InfinipotError, match="uint8 RGB"):
        fresh.feed(np.zeros((2, 8, 8), dtype=np.uint8))
    used = streamed(models, count=8)
    with pytest.raises(InfinipotError, match="already holds a stream"):
        used.stream(short_video)
    used.chat("What?", max_new_tokens=3)
    with pytest.raises(InfinipotError, match="holds a conversation: call reset"):
        used.feed(frames(4))
    used.reset()
    used.feed(frames(4))
    with pytest.raises(InfinipotError, match="question is empty"):
        used.ask("  ")
    with pytest.raises(InfinipotError, match="`temperature`"):
        used.ask("What?", temperature=float("nan"))
    with pytest.raises(InfinipotError, match="`max_new_tokens`"):
        used.ask("What?", max_new_tokens=0)


def test_a_question_longer_than_the_window_is_refused_before_it_runs(models):
    result = streamed(models, count=8)
    with pytest.raises(InfinipotError, match="shorten the question"):
        result.ask("why " * 5000)  # the tiny model's window is 4,096 positions
    assert result.ask("What?", max_new_tokens=3).tokens == 3  # the cache is intact


def test_settings_are_checked_before_any_weights_load(tmp_path):
    """An impossible budget fails from the config and processor alone (no weights in the folder)."""
    with pytest.raises(InfinipotError, match="`keep_ratio` must be in"):
        Session.from_preset("tiny", keep_ratio=1.5)
    with pytest.raises(InfinipotError, match="unknown `policy`"):
        Session.from_preset("tiny", policy="bogus")
    result = Session.from_preset("tiny", budget=12, keep_ratio=0.75, device="cpu")
    fake = SourceInfo(name="fake", width=112, height=84, sample_fps=1.0, frames_total=8, seconds_total=8.0)

    class Source:
        info = fake

        def chunks(self, chunk_frames):
            yield FrameChunk(frames(8), np.arange(8.0), 0, 8.0)

        def close(self):
            pass

    with pytest.raises(InfinipotError, match="raise `budget` to at least 45"):
        result.open(Source())
    assert not result.model.loaded
