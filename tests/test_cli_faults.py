"""Issue 10 in the CLI: what a new user hits, and the faults that must end in one clear line, losing nothing."""

from __future__ import annotations

import builtins
import json
import os
import shutil

import pytest

from infinipot.answer import Answer
from infinipot.session import Session
from helpers import TINY_CLI, assert_one_line_error, invoke, invoke_json

COMMANDS = ("ask", "compress", "info", "chat", "presets")


# --- widths and help ----------------------------------------------------------------------------
@pytest.mark.parametrize("columns", ["60", "200"])
def test_cli_checks_hold_at_any_width(columns, short_video, tmp_path):
    env = {"COLUMNS": columns}
    cache = tmp_path / "short.ipv"
    report = invoke_json("compress", short_video, "-o", cache, *TINY_CLI, env=env)
    info = invoke_json("info", cache, env=env)
    assert info["stats"]["frames"] == report["stats"]["frames"] == 20
    panel = invoke("info", cache, env=env)
    assert panel.exit_code == 0 and all(len(line) <= int(columns) for line in panel.stdout.splitlines())
    assert_one_line_error(invoke("ask", tmp_path / "a-rather-long-name-for-a-missing-video.mp4", "What?",
                                 "--preset", "tiny", env=env), "not found")
    assert_one_line_error(invoke("ask", short_video, "What?", "--bogus", env=env), "No such option: --bogus")
    assert "--keep-ratio" in invoke("ask", "--help", env=env).stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_bool_value_hints(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "<bool>" not in result.stdout and "--debug" in result.stdout


def test_compress_help_takes_a_video_not_a_cache():
    text = invoke("compress", "--help").stdout
    assert "Usage: infinipot compress [OPTIONS] {VIDEO}" in text
    assert "CACHE" not in text and "for a cache" not in text and "cache's own" not in text


@pytest.mark.parametrize("args", [("--fps", "abc"), ("--bogus",), ("--max-frames", "0"), ("--temperature", "-1"),
                                  ("--temperature", "nan"), ("--fps", "inf"), ("--start", "soon")])
def test_usage_errors_are_one_line_and_exit_2(short_video, args):
    result = invoke("ask", short_video, "What?", *args)
    assert_one_line_error(result, args[0])
    assert result.exit_code == 2 and "╭" not in result.output


@pytest.mark.parametrize("value, reason", [("nan", "nan is not a finite number"), ("-1", "-1 is negative")])
def test_a_bad_temperature_is_named_for_what_is_wrong(short_video, value, reason):
    assert_one_line_error(invoke("ask", short_video, "What?", "--temperature", value), "--temperature", reason)


# --- settings errors name the flag (before any weights load) ------------------------------------
@pytest.mark.parametrize("args, fragments", [
    (("--keep-ratio", "1"), ("--keep-ratio must be in (0, 1)", "leaves room for new frames", "got 1")),
    (("--keep-ratio", "1.5"), ("--keep-ratio must be in (0, 1)",)),
    (("--positions", "bogus"), ("unknown --positions 'bogus'",)),
    (("--pooling", "max"), ("unknown --pooling 'max'",)),
    (("--device", "tpu"), ("unknown --device 'tpu'",)),
])
def test_settings_errors_name_the_flag(short_video, args, fragments, monkeypatch):
    monkeypatch.setattr(Session, "stream", lambda *a, **k: pytest.fail("streamed despite bad settings"))
    result = invoke("ask", short_video, "What?", "--preset", "tiny", *args)
    assert_one_line_error(result, *fragments)
    assert "preset" not in result.output and "`" not in result.output


def test_errors_in_a_preset_file_name_its_keys_not_flags(short_video, tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("base: tiny\nbudget: [1, 2]\n")
    result = invoke("ask", short_video, "What?", "--preset", preset)
    assert_one_line_error(result, "mine.yaml: `budget` has the wrong type")
    assert "--budget" not in result.output


def test_the_smallest_budget_named_is_the_true_one(short_video):
    result = invoke("ask", short_video, "What?", "--preset", "tiny", "--budget", "10")
    assert_one_line_error(result, "raise --budget to at least")
    smallest = int(result.output.split("at least ")[1].split()[0])
    assert_one_line_error(invoke("ask", short_video, "What?", "--preset", "tiny", "--budget", str(smallest - 1)),
                          f"at least {smallest}")
    assert invoke_json("ask", short_video, "What?", "--preset", "tiny", "--budget", str(smallest),
                       "--max-new-tokens", "1")["stats"]["peak_cached_tokens"] <= smallest


# --- fps above the video's own rate ------------------------------------------------------------
def test_fps_above_the_video_rate_warns_and_records_the_real_rate(long_video, tmp_path):
    cache = tmp_path / "l.ipv"
    result = invoke("compress", long_video, "-o", cache, "--preset", "tiny", "--fps", "4", "--end", "30", "--json")
    assert result.exit_code == 0, result.output
    assert "warning: the video has 1 fps; sampling at 1 fps, not 4" in result.stderr
    report = json.loads(result.stdout)
    assert report["stats"]["sample_fps"] == 1.0 and report["stats"]["frames"] == 30
    assert invoke_json("info", cache)["stats"]["sample_fps"] == 1.0
    assert "1 fps (asked 4; the video has 1 fps)" in invoke("info", cache).stdout


# --- chat: Ctrl-C stops the answer, not the conversation -----------------------------------------
def test_ctrl_c_in_chat_stops_the_answer_and_a_second_one_leaves(short_video, monkeypatch, tmp_path):
    calls = []

    def chat(self, question, **options):
        calls.append(question)
        if question == "slow?":
            raise KeyboardInterrupt
        answer = Answer(question, "fine", tokens=1, seconds=0.0)
        self.state.turns.append(answer)
        return answer

    script = iter(["slow?", "still there?", KeyboardInterrupt, "after one Ctrl-C?", KeyboardInterrupt,
                   KeyboardInterrupt, "never"])

    def typed(prompt=""):
        item = next(script)
        if item is KeyboardInterrupt:
            raise KeyboardInterrupt
        return item

    monkeypatch.setattr(Session, "chat", chat)
    monkeypatch.setattr(builtins, "input", typed)
    result = invoke("chat", short_video, *TINY_CLI, "--quiet")
    assert result.exit_code == 0, result.output
    assert calls == ["slow?", "still there?", "after one Ctrl-C?"]
    assert "interrupted: this answer was dropped" in result.stderr
    assert "Ctrl-C again or Ctrl-D leaves; /save FILE keeps the conversation" in result.stderr
    assert "left without saving the last 2 turn(s); /save FILE before leaving" in result.stderr  # and how to


# --- --model and base presets -------------------------------------------------------------------
def test_model_flag_loads_a_local_folder_with_the_presets_settings(short_video, tmp_path):
    from infinipot.tiny import ensure_tiny_checkpoint

    folder = shutil.copytree(ensure_tiny_checkpoint("qwen2_5_vl"), tmp_path / "my-model")
    cache = tmp_path / "mine.ipv"
    data = invoke_json("ask", short_video, "What?", *TINY_CLI, "--model", folder, "--max-new-tokens", "2",
                       "--save-cache", cache)
    assert data["stats"]["model"] == str(folder) and data["stats"]["budget_tokens"] == 96
    again = invoke_json("ask", cache, "What?", "--model", folder, "--max-new-tokens", "2")  # the same weights
    assert again["answers"][0]["answer"] == data["answers"][0]["answer"]
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"base: tiny\nmodel: {folder}\nbudget: 90\n")
    assert invoke_json("ask", short_video, "What?", "--preset", mine, "--max-new-tokens", "2")["stats"][
        "budget_tokens"] == 90
    assert_one_line_error(invoke("ask", short_video, "What?", "--preset", "tiny", "--model", tmp_path / "nope"),
                          "model folder not found", "nope")


# --- sources -------------------------------------------------------------------------------------
def test_a_url_is_named_whole(short_video):
    result = invoke("ask", "http://127.0.0.1:9/v.mp4", "What?", "--preset", "tiny")
    assert_one_line_error(result, "http://127.0.0.1:9/v.mp4")


@pytest.mark.parametrize("kind", ["video", "cache", "questions", "preset"])
def test_fifos_and_folders_are_refused_with_their_reason(kind, short_video, tmp_path):
    fifo = tmp_path / {"video": "v.mp4", "cache": "c.ipv", "questions": "q.jsonl", "preset": "p.yaml"}[kind]
    os.mkfifo(fifo)
    args = {"video": (fifo, "What?", "--preset", "tiny"), "cache": (fifo, "What?"),
            "questions": (short_video, "--questions", fifo, "--preset", "tiny"),
            "preset": (short_video, "What?", "--preset", fifo)}[kind]
    assert_one_line_error(invoke("ask", *args), "FIFO")
    if kind == "cache":
        assert_one_line_error(invoke("info", fifo), "FIFO")
        assert_one_line_error(invoke("info", tmp_path), "is a directory")


# --- outputs never overwrite inputs, and are checked before any work ----------------------------
@pytest.fixture
def no_streaming(monkeypatch):
    monkeypatch.setattr(Session, "open", lambda *a, **k: pytest.fail("opened the video before checking outputs"))


def test_save_cache_onto_the_question_file_is_refused(short_video, tmp_path, no_streaming):
    questions = tmp_path / "q.txt"
    questions.write_text("What?\n")
    result = invoke("ask", short_video, "--questions", questions, "--save-cache", questions, *TINY_CLI)
    assert_one_line_error(result, "--save-cache", "is the question file")
    assert questions.read_text() == "What?\n"


def test_output_onto_the_preset_file_is_refused(short_video, tmp_path, no_streaming):
    preset = tmp_path / "mine.jsonl"  # a preset YAML whichever its name: it is this run's input
    preset.write_text("base: tiny\n")
    assert_one_line_error(invoke("ask", short_video, "What?", "--preset", preset, "-o", preset),
                          "one of this run's inputs")
    assert preset.read_text() == "base: tiny\n"


def test_outputs_that_cannot_be_written_fail_before_any_work(short_video, tmp_path, no_streaming):
    too_long = tmp_path / ("r" * 250 + ".jsonl")  # 256 bytes: no file system here takes it
    assert_one_line_error(invoke("ask", short_video, "What?", *TINY_CLI, "-o", too_long), "choose a shorter name")
    assert_one_line_error(invoke("ask", short_video, "What?", *TINY_CLI, "--map", tmp_path / "map.txt"),
                          "--map", "drawn as a PNG image, not .txt", "name it map.png")
    assert not (tmp_path / "map.txt").exists()
    fifo = tmp_path / "out.ipv"
    os.mkfifo(fifo)
    assert_one_line_error(invoke("compress", short_video, "-o", fifo, *TINY_CLI), "not a regular file")
    assert_one_line_error(invoke("ask", short_video, "What?", *TINY_CLI, "--save-cache", fifo), "not a regular file")
