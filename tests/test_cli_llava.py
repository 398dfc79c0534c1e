"""The CLI end to end on the tiny LLaVA-OneVision and LLaVA-NeXT-Video models."""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from infinipot_cli import ask  # noqa: F401  registers `ask`
from infinipot_cli.app import app

runner = CliRunner()
LLAVA_PRESETS = ["tiny-llava-onevision", "tiny-llava-next-video"]


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.mark.parametrize("preset", LLAVA_PRESETS)
def test_ask_json_on_a_long_video_with_compact_positions(long_video, preset, caplog):
    with caplog.at_level(logging.WARNING, logger="infinipot.positions"):
        result = invoke("ask", long_video, "What happened?", "What moved?", "--preset", preset, "--json",
                        "--max-new-tokens", "3")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [a["question"] for a in data["answers"]] == ["What happened?", "What moved?"]
    assert all(isinstance(a["answer"], str) for a in data["answers"])
    stats = data["stats"]
    per_frame = 9 if preset == "tiny-llava-onevision" else 16
    assert stats["frames"] == 600
    assert stats["visual_tokens_seen"] == 600 * per_frame > 5 * stats["budget_tokens"]
    assert stats["peak_cached_tokens"] <= stats["budget_tokens"] == 600
    assert stats["compressions"] > 0
    assert not caplog.records  # compact positions stay inside the 4K window the tiny models were given


def test_ask_streams_answers_on_a_short_video(short_video):
    result = invoke("ask", short_video, "What happened?", "--preset", "tiny-llava-onevision",
                    "--max-new-tokens", "4", "--budget", "90")
    assert result.exit_code == 0, result.output
    assert "A: " in result.output and "compressions" in result.output


def test_original_positions_past_the_window_warn(long_video, caplog):
    """600 frames x 16 tokens pass the tiny NeXT-Video's 4,096 positions in original mode."""
    with caplog.at_level(logging.WARNING, logger="infinipot.positions"):
        result = invoke("ask", long_video, "What happened?", "--preset", "tiny-llava-next-video",
                        "--positions", "original", "--policy", "recent", "--end", "300", "--json",
                        "--max-new-tokens", "2")
    assert result.exit_code == 0, result.output
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and "4096" in messages[0] and "--positions compact" in messages[0]


def test_unknown_positions_mode_is_one_line_error(short_video):
    result = invoke("ask", short_video, "What?", "--preset", "tiny-llava-next-video", "--positions", "sparse")
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "unknown positions 'sparse'" in lines[0]


def test_presets_lists_the_llava_presets():
    data = {p["name"]: p for p in json.loads(invoke("presets", "--json").output)}
    for name in ("llava-onevision-7b", "llava-onevision-0.5b", "llava-next-video-7b", *LLAVA_PRESETS):
        assert data[name]["positions"] == "compact"
    assert data["llava-onevision-7b"]["model"] == "llava-hf/llava-onevision-qwen2-7b-ov-hf"
    assert data["llava-onevision-0.5b"]["model"] == "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
    assert data["llava-next-video-7b"]["model"] == "llava-hf/LLaVA-NeXT-Video-7B-hf"
    assert data["llava-next-video-7b"]["budget"] < 4096  # prefix + budget + question inside Vicuna's 4K window
    assert data["qwen2.5-vl-7b"]["positions"] == "original"
