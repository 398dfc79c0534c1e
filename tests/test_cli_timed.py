"""Questions at a moment (issue 13): `ask VIDEO --questions FILE` answers timed entries as the stream passes them."""

from __future__ import annotations

import json

from helpers import TINY_CLI, invoke, invoke_json

TIMED = "\n".join(json.dumps(entry) for entry in [
    {"id": "early", "question": "What is on screen?", "time": 6},
    {"id": "early-too", "question": "Where is the square?", "time": "0:06"},
    {"id": "end", "question": "What happened?"},
    {"id": "later", "question": "What moved?", "time": 15},
    {"id": "past", "question": "And after the end?", "time": 100},
    {"id": "bad", "question": "When?", "time": -3},
])


def test_timed_questions_are_answered_at_their_moment(short_video, tmp_path):
    questions = tmp_path / "timed.jsonl"
    questions.write_text(TIMED)
    output = tmp_path / "answers.jsonl"
    result = invoke("ask", short_video, "--questions", questions, "-o", output, *TINY_CLI, "--max-new-tokens", "3",
                    "--json")
    assert result.exit_code == 0, result.output
    assert f"{questions}:6:" in result.stderr and "negative" in result.stderr  # a bad time skips its entry only
    answers = {a["id"]: a for a in json.loads(result.stdout)["answers"]}
    assert list(answers) == ["early", "early-too", "later", "end", "past"]  # moments in order, then the end
    early, early_too = answers["early"], answers["early-too"]
    assert early["asked_at"] == early_too["asked_at"] == 6.0
    assert early["frames_seen"] == early_too["frames_seen"] == 6  # 1 fps, whole 2-frame steps up to t = 6
    assert early["cached_tokens"] == early_too["cached_tokens"] == 36  # the same cache for one moment
    assert answers["later"]["asked_at"] == 15.0 and answers["later"]["frames_seen"] == 14
    assert answers["end"]["asked_at"] == 20.0 and answers["end"]["frames_seen"] == 20
    assert "time" not in answers["end"] and "past_end" not in answers["end"]
    past = answers["past"]
    assert past["past_end"] is True and past["asked_at"] == 20.0 and past["time"] == 100.0
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == list(answers)


def test_a_timed_answer_is_the_answer_of_the_video_up_to_that_moment(short_video, tmp_path):
    questions = tmp_path / "timed.yaml"
    questions.write_text("- id: at8\n  question: What is on screen?\n  time: 8\n")
    timed = invoke_json("ask", short_video, "--questions", questions, *TINY_CLI, "--max-new-tokens", "6")
    cut = invoke_json("ask", short_video, "What is on screen?", *TINY_CLI, "--max-new-tokens", "6", "--end", "8")
    assert timed["answers"][0]["answer"] == cut["answers"][0]["answer"]
    assert timed["answers"][0]["frames_seen"] == cut["stats"]["frames"] == 8
    assert timed["stats"]["frames"] == 20  # and the stream went on to the end


def test_timed_questions_from_a_cache_are_refused(short_video, tmp_path):
    cache = tmp_path / "short.ipv"
    invoke_json("compress", short_video, "-o", cache, *TINY_CLI)
    questions = tmp_path / "timed.jsonl"
    questions.write_text(TIMED)
    result = invoke("ask", cache, "--questions", questions, "--device", "cpu")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: 4 question(s) carry a `time`, but")
    assert "holds only the end of the stream" in result.output
