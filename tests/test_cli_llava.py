"""The CLI end to end on the tiny LLaVA-OneVision and LLaVA-NeXT-Video models."""

from __future__ import annotations

import json

import pytest

from helpers import assert_one_line_error, invoke, invoke_json

LLAVA_PRESETS = ["tiny-llava-onevision", "tiny-llava-next-video"]


@pytest.mark.parametrize("preset", LLAVA_PRESETS)
def test_ask_json_on_a_long_video_with_compact_positions(long_video, preset):
    result = invoke("ask", long_video, "What happened?", "What moved?", "--preset", preset, "--json",
                    "--max-new-tokens", "3", "--end", "300")
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.stderr  # compact positions stay inside the tiny models' 4K window
    data = json.loads(result.stdout)
    assert [a["question"] for a in data["answers"]] == ["What happened?", "What moved?"]
    stats = data["stats"]
    per_frame = 9 if preset == "tiny-llava-onevision" else 16
    assert stats["frames"] == 300
    assert stats["visual_tokens_seen"] == 300 * per_frame > 4 * stats["budget_tokens"]
    assert stats["peak_cached_tokens"] <= stats["budget_tokens"] == 600
    assert stats["compressions"] > 0


def test_ask_streams_answers_on_a_short_video(short_video):
    result = invoke("ask", short_video, "What happened?", "--preset", "tiny-llava-onevision",
                    "--max-new-tokens", "4", "--budget", "90")
    assert result.exit_code == 0, result.output
    assert "A: " in result.stdout and "compression" in result.stderr


def test_original_positions_past_the_window_warn_with_the_flag(long_video):
    """300 frames x 16 tokens pass the tiny NeXT-Video's 4,096 positions in original mode."""
    result = invoke("ask", long_video, "What happened?", "--preset", "tiny-llava-next-video",
                    "--positions", "original", "--policy", "recent", "--end", "300", "--json",
                    "--max-new-tokens", "2")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "4096" in warnings[0] and "use --positions compact" in warnings[0]


def test_unknown_positions_mode_names_the_flag(short_video):
    result = invoke("ask", short_video, "What?", "--preset", "tiny-llava-next-video", "--positions", "sparse")
    assert_one_line_error(result, "unknown --positions 'sparse'")
    assert "preset" not in result.output


def test_presets_lists_the_llava_presets():
    data = {p["name"]: p for p in invoke_json("presets")}
    for name in ("llava-onevision-7b", "llava-onevision-0.5b", "llava-next-video-7b", *LLAVA_PRESETS):
        assert data[name]["positions"] == "compact"
    assert data["llava-onevision-7b"]["model"] == "llava-hf/llava-onevision-qwen2-7b-ov-hf"
    assert data["llava-onevision-0.5b"]["model"] == "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
    assert data["llava-next-video-7b"]["model"] == "llava-hf/LLaVA-NeXT-Video-7B-hf"
    assert data["llava-next-video-7b"]["budget"] < 4096  # prefix + budget + question inside Vicuna's 4K window
    assert data["qwen2.5-vl-7b"]["positions"] == "original"
