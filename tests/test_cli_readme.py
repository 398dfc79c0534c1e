"""The README's commands run as written, with the tiny preset (and short answers) added."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from helpers import invoke

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
COMMANDS = [  # in the README's order; each must still be in the README
    'infinipot ask demo.mp4 "What happened?" "What moved?" --preset tiny',
    'infinipot compress movie.mp4 -o movie.ipv --budget 6k',
    'infinipot ask movie.ipv "What happened?"',
    'infinipot ask movie.mp4 "What happened?" --save-cache movie.ipv',
    'infinipot info movie.ipv',
    'infinipot ask movie.ipv --questions qa.jsonl --output answers.jsonl',
    'infinipot chat movie.ipv',
    'infinipot presets',
]


@pytest.fixture
def workdir(short_video, tmp_path, monkeypatch):
    for name in ("demo.mp4", "movie.mp4"):
        shutil.copy(short_video, tmp_path / name)
    (tmp_path / "qa.jsonl").write_text(
        '{"id": "q1", "question": "What color is the square?", "options": ["red", "white"], "answer": "B", '
        '"category": "look"}\n{"id": "q2", "question": "Does it move?"}\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_commands_run_with_the_tiny_preset(workdir):
    for command in COMMANDS:
        assert command in README, f"the README no longer shows: {command}"
        args = shlex.split(command)[1:]
        if args[0] in ("ask", "compress") and "--preset" not in args and not args[1].endswith(".ipv"):
            args += ["--preset", "tiny"]
        if args[0] in ("ask", "chat"):
            args += ["--max-new-tokens", "2"]
        result = invoke(*args, input="What happened?\n/exit\n" if args[0] == "chat" else None)
        assert result.exit_code == 0, f"{command}\n{result.output}"
    results = [json.loads(line) for line in (workdir / "answers.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == ["q1", "q2"] and results[0]["categories"] == {"category": "look"}
