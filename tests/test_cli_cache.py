"""`compress`, `ask` from a cache and in batches, `info` and `chat`, end to end through CliRunner."""

from __future__ import annotations

import json
import shutil

import pytest

from infinipot.answer import Answer
from infinipot.session import Session
from helpers import TINY_CLI, assert_one_line_error, invoke, invoke_json


@pytest.fixture(scope="module")
def compressed(short_video, tmp_path_factory):
    """`infinipot compress` of the 20-second video: (cache path, its --json report)."""
    path = tmp_path_factory.mktemp("caches") / "short.ipv"
    return path, invoke_json("compress", short_video, "-o", path, *TINY_CLI)


@pytest.fixture
def cache(compressed, tmp_path):
    """This test's own copy of the compressed cache."""
    return shutil.copy(compressed[0], tmp_path / "short.ipv")


def test_compress_writes_a_cache_that_info_describes(compressed):
    path, report = compressed
    assert report["size_bytes"] == path.stat().st_size > 0
    assert report["visual_tokens_kept"] == [96, 96] and report["stats"]["frames"] == 20
    assert report["stats"]["compressions"] >= 1
    data = invoke_json("info", path, "--verify")
    assert data["verified"] and data["layout"]["visual_tokens"] == [96, 96]
    assert data["size_bytes"] == path.stat().st_size
    assert data["state"]["source"]["size_bytes"] > 0 and len(data["state"]["source"]["head_tail_sha256"]) == 64
    same = {key: value for key, value in report["stats"].items() if key != "from_cache"}
    assert {key: data["stats"][key] for key in same} == same  # one stats shape for compress and info
    assert data["stats"]["from_cache"]
    text = " ".join(invoke("info", path).stdout.replace("│", " ").split())  # wide (helpers.invoke): no wrapping
    for fragment in ("tiny:qwen2_5_vl", "budget 96 tokens", "96 visual tokens per KV head in each of the 2 layers",
                     "from the cache: 20 frames, 0:20 of video at 1 fps", "short.mp4", "on disk"):
        assert fragment in text, fragment


def test_ask_from_the_cache_answers_as_the_run_that_saved_it(short_video, tmp_path):
    video = shutil.copy(short_video, tmp_path / "clip.mp4")
    saved = tmp_path / "clip.ipv"
    questions = ("What happened?", "Where is the square?")
    before = invoke_json("ask", video, *questions, *TINY_CLI, "--max-new-tokens", "6", "--save-cache", saved)
    video.unlink()  # answering from the cache never opens the video
    after = invoke_json("ask", saved, *questions, "--device", "cpu", "--max-new-tokens", "6")
    assert [a["answer"] for a in after["answers"]] == [a["answer"] for a in before["answers"]]
    assert before["cache"]["size_bytes"] == saved.stat().st_size
    assert not before["stats"]["from_cache"] and after["stats"]["from_cache"]
    assert after["stats"]["frames"] == before["stats"]["frames"] == 20
    plain = invoke("ask", saved, "What happened?", "--max-new-tokens", "6")
    assert plain.exit_code == 0 and "Q: What happened?\nA: " in plain.stdout
    assert "from the cache: 20 frames" in plain.stderr


def test_stream_flags_do_not_apply_to_a_cache(cache):
    assert_one_line_error(invoke("ask", cache, "What?", "--budget", "50"), "--budget only applies", "drop --budget")
    assert_one_line_error(invoke("ask", cache, "What?", "--set", "chunk_frames=4"), "--set only applies")


def test_cache_of_another_model_is_one_line(cache):
    result = invoke("ask", cache, "What?", "--preset", "tiny-qwen2-vl", "--device", "cpu")
    assert_one_line_error(result, "made with a qwen2_5_vl model (tiny:qwen2_5_vl)", "tiny:qwen2_vl (qwen2_vl)")


@pytest.mark.parametrize("damage", ["truncate", "flip", "text"])
def test_damaged_cache_is_one_line(cache, damage):
    data = cache.read_bytes()
    if damage == "truncate":
        cache.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        cache.write_bytes(data[:-100] + bytes([data[-100] ^ 0x04]) + data[-99:])
    else:
        cache.write_text("not a cache\n")
    for command in (("ask", cache, "What?", "--device", "cpu"), ("info", cache, "--verify")):
        assert_one_line_error(invoke(*command), "damaged or truncated", "re-create it")


def test_info_on_a_video_is_one_line(short_video):
    assert_one_line_error(invoke("info", short_video), "is not an infinipot cache", "infinipot compress")


def test_compress_refuses_bad_targets_before_loading_a_model(short_video, cache, tmp_path):
    assert_one_line_error(invoke("compress", short_video, "-o", tmp_path / "no" / "x.ipv", *TINY_CLI),
                          "directory does not exist")
    assert_one_line_error(invoke("compress", short_video, "-o", tmp_path, *TINY_CLI), "is a directory")
    assert_one_line_error(invoke("compress", cache, "-o", tmp_path / "y.ipv", *TINY_CLI), "already a cache")
    assert_one_line_error(invoke("ask", cache, "What?", "--save-cache", tmp_path / "z.ipv"), "already a cache")
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    assert_one_line_error(invoke("compress", short_video, "-o", notes, *TINY_CLI), "is not an infinipot cache")
    assert notes.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "short.ipv"]


def test_interrupted_compress_keeps_the_old_file(short_video, cache, monkeypatch):
    import safetensors.torch

    old = cache.read_bytes()

    def interrupted(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    result = invoke("compress", short_video, "-o", cache, *TINY_CLI, "--quiet")
    assert result.exit_code == 130 and result.output.strip().splitlines()[-1] == "interrupted"
    assert cache.read_bytes() == old
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]


# --- batches ------------------------------------------------------------------------------------
BATCH_JSONL = "\n".join([
    '{"id": "color", "question": "What color is the square?", "options": ["red", "blue"], "answer": "B", '
    '"category": "look"}',
    '{"id": "shape", "question": "What shape is it?", "options": ["circle", "square"], "answer": "A", '
    '"category": "look"}',
    '{"question": "oops"',
    '{"id": "motion", "question": "Does it move?", "answer": "yes", "category": "motion"}',
    '{"id": "free", "question": "Describe the video."}',
])


def fake_ask(self, question, **options):
    """Deterministic answers: 'B' for the colour, 'B' (wrong) for the shape, 'Yes.' for motion."""
    canned = {"What color": "B", "What shape": "B. square", "Does it": "Yes."}
    text = next((text for start, text in canned.items() if question.startswith(start)), "A video.")
    return Answer(question, text, tokens=2, seconds=0.01)


def test_batch_jsonl_reports_accuracy_and_writes_results(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(Session, "ask", fake_ask)
    questions = tmp_path / "q.jsonl"
    questions.write_text(BATCH_JSONL)
    output = tmp_path / "answers.jsonl"
    result = invoke("ask", cache, "--questions", questions, "--output", output, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"{questions}:3: not valid JSON" in result.stderr and "skipped" in result.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in records] == ["color", "shape", "motion", "free"]
    assert [r.get("correct") for r in records] == [True, False, True, None]
    assert records[0]["choice"] == "B" and records[1]["choice"] == "B" and records[1]["expected"] == "A"
    assert all(r["frames_seen"] == 20 and r["asked_at"] == 20.0 for r in records)
    lines = result.stdout.splitlines()
    assert lines[:4] == ["color B B ✓", "shape B B. square ✗ expected A", "motion Yes. ✓", "free A video."]
    table = " ".join(result.stdout.replace("│", " ").split())
    assert "category look 1 2 50.0%" in table and "category motion 1 1 100.0%" in table
    assert "overall 2 3 66.7%" in table
    data = invoke_json("ask", cache, "--questions", questions, "--device", "cpu")
    assert data["accuracy"]["overall"] == {"correct": 2, "total": 3, "accuracy": 0.6667}
    assert data["accuracy"]["by_category"]["category"]["look"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert data["skipped"] == [{"line": 3, "message": data["skipped"][0]["message"]}]


def test_interrupted_batch_keeps_what_it_answered_and_a_rerun_resumes(cache, tmp_path, monkeypatch):
    asked = []

    def interrupted_ask(self, question, **options):
        asked.append(question)
        if len(asked) == 3:
            raise KeyboardInterrupt
        return Answer(question, f"answer {len(asked)}", tokens=2, seconds=0.01)

    monkeypatch.setattr(Session, "ask", interrupted_ask)
    questions = tmp_path / "q.txt"
    questions.write_text("One?\nTwo?\nThree?\nFour?\n")
    output = tmp_path / "answers.jsonl"
    result = invoke("ask", cache, "--questions", questions, "-o", output, "--device", "cpu")
    assert result.exit_code == 130 and result.output.strip().splitlines()[-1] == "interrupted"
    assert "answered 2 of 4 questions" in result.output
    assert [json.loads(line)["answer"] for line in output.read_text().splitlines()] == ["answer 1", "answer 2"]
    rerun = invoke("ask", cache, "--questions", questions, "-o", output, "--device", "cpu")
    assert rerun.exit_code == 0, rerun.output
    assert "already holds 2 of these 4 answers: skipping them" in rerun.stderr
    assert asked[3:] == ["Three?", "Four?"]  # only the questions not answered yet
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == [1, 2, 3, 4]
    again = invoke("ask", cache, "--questions", questions, "-o", output, "--device", "cpu", "--overwrite")
    assert again.exit_code == 0 and len(asked) == 9  # --overwrite starts over: all four asked again
    assert len(output.read_text().splitlines()) == 4


def test_batch_from_a_video_streams_it_once(short_video, tmp_path):
    questions = tmp_path / "q.yaml"
    questions.write_text("- What happened?\n- id: x\n- id: two\n  question: Where?\n- Why?\n")
    output = tmp_path / "answers.jsonl"
    result = invoke("ask", short_video, "--questions", questions, "-o", output, *TINY_CLI, "--max-new-tokens", "3",
                    "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [a["id"] for a in data["answers"]] == [1, "two", 5]
    assert data["stats"]["frames"] == 20  # one pass over the video for all questions
    assert f"{questions}:2: missing `question`" in result.stderr
    assert len(output.read_text().splitlines()) == 3


def test_batch_file_errors(cache, tmp_path):
    empty = tmp_path / "bad.jsonl"
    empty.write_text("{nope\n")
    result = invoke("ask", cache, "--questions", empty)
    assert result.exit_code == 1 and "bad.jsonl:1: not valid JSON" in result.stderr
    assert result.output.strip().splitlines()[-1].startswith("error: no usable question in")
    assert_one_line_error(invoke("ask", cache, "What?", "--questions", empty), "not both")
    assert_one_line_error(invoke("ask", cache), "no question given")
    assert_one_line_error(invoke("ask", cache, "--questions", tmp_path / "q.csv"), "unknown question file type")
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "What?"}\n')
    assert_one_line_error(invoke("ask", cache, "--questions", good, "-o", good), "one of this run's inputs")
    assert_one_line_error(invoke("ask", cache, "What?", "-o", tmp_path / "out.csv"), "JSON lines, not .csv")
    assert good.read_text() == '{"question": "What?"}\n'


# --- chat ---------------------------------------------------------------------------------------
def answers_in(output: str) -> list[str]:
    return [segment[3:-1] for segment in output.split("you> ") if segment.startswith("A: ")]


def test_chat_keeps_turns_resets_and_saves(cache, tmp_path):
    saved = tmp_path / "chat.ipv"
    script = f"What happened?\nAnd then?\n/save {saved}\n/bogus\n/reset\nWhat happened?\n/exit\nnever asked\n"
    result = invoke("chat", cache, "--device", "cpu", "--max-new-tokens", "5", input=script)
    assert result.exit_code == 0, result.output
    first, second, after_reset = answers_in(result.stdout)
    assert after_reset == first  # /reset: the same question sees the video alone again
    assert f"saved {saved}" in result.stderr and "2 turns" in result.stderr
    assert "error: unknown command /bogus" in result.stderr
    assert "back to the video alone (2 turns forgotten)" in result.stderr
    assert "never asked" not in result.output
    assert len(invoke_json("info", saved)["state"]["turns"]) == 2
    resumed = invoke("chat", saved, "--device", "cpu", input="")
    assert resumed.exit_code == 0 and "resuming the 2 earlier turns" in resumed.output


def test_chat_turns_see_earlier_turns(cache):
    """The same follow-up gives another answer after another first turn: the context is really there."""
    one = answers_in(invoke("chat", cache, "--device", "cpu", "--max-new-tokens", "8",
                            input="Describe the square.\nWhat next?\n").stdout)
    two = answers_in(invoke("chat", cache, "--device", "cpu", "--max-new-tokens", "8",
                            input="Why is the background textured?\nWhat next?\n").stdout)
    alone = invoke_json("ask", cache, "What next?", "--device", "cpu", "--max-new-tokens", "8")
    assert len(one) == len(two) == 2
    assert len({one[1], two[1], alone["answers"][0]["answer"]}) > 1


def test_chat_from_a_video_and_bad_saves(short_video, tmp_path):
    video = shutil.copy(short_video, tmp_path / "in.mp4")
    before = video.read_bytes()
    script = f"/save {tmp_path / 'missing' / 'x.ipv'}\n/save\n/save {video}\n/exit\n"
    result = invoke("chat", video, *TINY_CLI, "--quiet", input=script)
    assert result.exit_code == 0, result.output
    assert "error: directory does not exist" in result.stderr and "error: /save needs a file name" in result.stderr
    assert f"error: /save {video} is the video: an output may not overwrite an input" in result.stderr
    assert video.read_bytes() == before
    assert "chatting about in.mp4: 0:20 of video" in result.stderr


def test_info_shows_the_pooling_van_calibrated(short_video, tmp_path):
    cache = tmp_path / "cv.ipv"
    invoke_json("compress", short_video, "-o", cache, *TINY_CLI, "--pooling", "cv")
    memory = invoke_json("info", cache)["state"]["policy_memory"]
    assert len(memory["cv_thresholds"]) == 3 and len(memory["pool_sizes"]) == 2
    text = " ".join(invoke("info", cache).stdout.replace("│", " ").split())
    assert "cv thresholds " + ", ".join(f"{value:.4g}" for value in memory["cv_thresholds"]) in text
    assert "pool sizes by layer " + " ".join(str(size) for size in memory["pool_sizes"]) in text
