"""The CLI end to end on the tiny models: `ask` from a video, presets, errors as one line."""

from __future__ import annotations

import json

import pytest

from helpers import TINY_CLI, assert_one_line_error, invoke, invoke_json


def test_ask_two_questions_streams_answers(short_video):
    result = invoke("ask", short_video, "What happened?", "Where is the square?", *TINY_CLI,
                    "--max-new-tokens", "4", "--policy", "uniform")
    assert result.exit_code == 0, result.output
    assert "Q1: What happened?" in result.stdout and "Q2: Where is the square?" in result.stdout
    assert result.stdout.count("A: ") == 2
    summary = result.stderr.strip().splitlines()[-1]  # the one summary line
    assert summary.startswith("20 frames, 0:20 of video at 1 fps") and "1 compression" in summary


def test_ask_json_reports_a_capped_cache_on_a_long_video(long_video):
    data = invoke_json("ask", long_video, "What happened?", "What moved?", "--preset", "tiny",
                       "--max-new-tokens", "3", "--policy", "recent")
    assert [a["question"] for a in data["answers"]] == ["What happened?", "What moved?"]
    assert all(isinstance(a["answer"], str) for a in data["answers"])
    stats = data["stats"]
    assert stats["frames"] == 600 and stats["video_seconds"] == pytest.approx(600, abs=1)
    assert stats["budget_tokens"] == 600 and stats["visual_tokens_seen"] == 3600
    assert stats["peak_cached_tokens"] <= stats["budget_tokens"] and stats["compressions"] > 0
    assert stats["sample_fps"] == 1.0 and not stats["from_cache"]
    for key in ("tokens_evicted", "encode_s", "prefill_s", "compress_s", "decode_s", "kv_bytes_per_token"):
        assert key in stats
    for answer in data["answers"]:  # the moment each was asked at: the end of the stream
        assert (answer["asked_at"], answer["frames_seen"]) == (600.0, 600)


def test_tiny_qwen2_vl_window_of_a_long_video(long_video):
    data = invoke_json("ask", long_video, "What happened?", "--preset", "tiny-qwen2-vl", "--end", "120",
                       "--max-new-tokens", "2")
    stats = data["stats"]
    assert stats["frames"] == 120 and stats["visual_tokens_seen"] == 720 > stats["budget_tokens"] == 600
    assert stats["peak_cached_tokens"] <= 600 and stats["compressions"] >= 1


def test_presets_lists_shipped_presets_and_policies():
    result = invoke("presets")
    assert result.exit_code == 0
    for name in ("qwen2.5-vl-7b", "qwen2.5-vl-3b", "qwen2-vl-7b", "tiny", "infinipot (InfiniPot-V"):
        assert name in result.output
    data = invoke_json("presets")
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


@pytest.mark.parametrize("budget", ["0", "-5", "abc", "1e24"])
def test_bad_budget_names_the_flag(short_video, budget):
    assert_one_line_error(invoke("ask", short_video, "What?", "--preset", "tiny", f"--budget={budget}"), "--budget")


def test_empty_question(short_video):
    assert_one_line_error(invoke("ask", short_video, "  ", "--preset", "tiny"), "question is empty")


def test_unknown_policy_lists_the_registry(short_video):
    from infinipot.policies import POLICY_NAMES

    result = invoke("ask", short_video, "What?", "--preset", "tiny", "--policy", "magic")
    assert_one_line_error(result, "unknown --policy 'magic'", ", ".join(POLICY_NAMES))


def test_debug_shows_the_traceback(tmp_path):
    result = invoke("ask", tmp_path / "nope.mp4", "What?", "--preset", "tiny", "--debug")
    assert result.exit_code != 0
    assert result.exception is not None and "not found" in str(result.exception)


def test_set_changes_any_setting_and_refuses_unknown_ones(short_video):
    data = invoke_json("ask", short_video, "What?", *TINY_CLI, "--set", "chunk_frames=4", "--set",
                       "tar_ratio=0.6", "--max-new-tokens", "2")
    assert data["stats"]["frames"] == 20
    assert_one_line_error(invoke("ask", short_video, "What?", *TINY_CLI, "--set", "bogus=1"), "unknown setting")
    assert_one_line_error(invoke("ask", short_video, "What?", *TINY_CLI, "--set", "keep_ratio=0.5",
                                 "--keep-ratio", "0.6"), "--keep-ratio is given twice")
    result = invoke("ask", short_video, "What?", *TINY_CLI, "--set", "no-equals-sign")
    assert_one_line_error(result, "--set", "KEY=VALUE")
    assert result.exit_code == 2


def test_a_refused_question_is_reported_with_its_id_and_the_others_answered(short_video):
    too_long = "why " * 5000  # more tokens than the tiny model's 4,096-position window
    result = invoke("ask", short_video, "What happened?", too_long, "Where?", *TINY_CLI, "--max-new-tokens", "2",
                    "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [a["id"] for a in data["answers"]] == [1, 3]
    assert [f["id"] for f in data["failed"]] == [2] and "shorten the question" in data["failed"][0]["message"]
    assert "warning: question 2 not answered" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: 1 of 3 questions were not answered: 2"
