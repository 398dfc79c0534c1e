"""The CLI end to end on the tiny models, through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from infinipot_cli import ask  # noqa: F401  registers `ask`
from infinipot_cli.app import app
from helpers import assert_one_line_error

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def test_ask_two_questions_streams_answers(short_video):
    result = invoke("ask", short_video, "What happened?", "Where is the square?", "--preset", "tiny",
                    "--max-new-tokens", "4", "--budget", "96", "--policy", "uniform")
    assert result.exit_code == 0, result.output
    assert "Q1: What happened?" in result.output
    assert "Q2: Where is the square?" in result.output
    assert result.output.count("A: ") == 2
    assert "compressions" in result.output  # the closing summary


@pytest.mark.parametrize("preset", ["tiny", "tiny-qwen2-vl"])
def test_ask_json_reports_a_capped_cache_on_a_long_video(long_video, preset):
    result = invoke("ask", long_video, "What happened?", "What moved?", "--preset", preset, "--json",
                    "--max-new-tokens", "3", "--policy", "recent")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [a["question"] for a in data["answers"]] == ["What happened?", "What moved?"]
    assert all(isinstance(a["answer"], str) for a in data["answers"])
    stats = data["stats"]
    for key in ("frames", "video_seconds", "visual_tokens_seen", "budget_tokens", "peak_cached_tokens",
                "compressions", "tokens_evicted", "encode_s", "prefill_s", "compress_s", "decode_s"):
        assert key in stats
    assert stats["frames"] == 600
    assert stats["video_seconds"] == pytest.approx(600, abs=1)
    assert stats["budget_tokens"] == 600
    assert stats["visual_tokens_seen"] == 3600 > 5 * stats["budget_tokens"]
    assert stats["peak_cached_tokens"] <= stats["budget_tokens"]
    assert stats["compressions"] > 0


def test_presets_lists_shipped_presets():
    result = invoke("presets")
    assert result.exit_code == 0
    for name in ("qwen2.5-vl-7b", "qwen2.5-vl-3b", "qwen2-vl-7b", "tiny"):
        assert name in result.output
    data = json.loads(invoke("presets", "--json").output)
    assert {p["name"] for p in data} >= {"qwen2.5-vl-7b", "qwen2.5-vl-3b", "qwen2-vl-7b", "tiny"}
    assert next(p for p in data if p["name"] == "qwen2.5-vl-7b")["budget"] == 6000


def test_missing_video(tmp_path):
    assert_one_line_error(invoke("ask", tmp_path / "nope.mp4", "What?", "--preset", "tiny"), "not found", "nope.mp4")


def test_text_file_named_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    assert_one_line_error(invoke("ask", fake, "What?", "--preset", "tiny"), "notes.mp4")


def test_video_with_zero_frames(tmp_path):
    import av

    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height = 112, 84
    assert_one_line_error(invoke("ask", empty, "What?", "--preset", "tiny"), "empty.mp4")


def test_unknown_preset(short_video):
    assert_one_line_error(invoke("ask", short_video, "What?", "--preset", "gpt-9"), "unknown preset", "gpt-9", "tiny")


@pytest.mark.parametrize("budget", ["0", "-5", "abc"])
def test_bad_budget(short_video, budget):
    result = invoke("ask", short_video, "What?", "--preset", "tiny", f"--budget={budget}")
    assert_one_line_error(result, "budget")


def test_empty_question(short_video):
    assert_one_line_error(invoke("ask", short_video, "  ", "--preset", "tiny"), "question is empty")


def test_unknown_policy(short_video):
    assert_one_line_error(invoke("ask", short_video, "What?", "--preset", "tiny", "--policy", "magic"),
                          "unknown policy", "infinipot")


def test_debug_shows_the_traceback(tmp_path):
    result = invoke("ask", tmp_path / "nope.mp4", "What?", "--preset", "tiny", "--debug")
    assert result.exit_code != 0
    assert result.exception is not None and "not found" in str(result.exception)
