"""Hostile question files, each refused in one line without hanging or expanding: FIFOs, folders and
devices, YAML anchors and tags, byte order marks and other encodings, deep JSON, oversized files."""

from __future__ import annotations

import codecs
import os
import signal
import time
from contextlib import contextmanager

import pytest

from infinipot.errors import InfinipotError
from infinipot.questions import (
    read_questions,
)


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@contextmanager
def within_seconds(seconds: int):
    """Fail instead of hanging: the alarm interrupts a blocked open() or read()."""
    def give_up(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "q.jsonl"
    os.mkfifo(fifo)
    with within_seconds(5), pytest.raises(InfinipotError, match=r"is a named pipe \(FIFO\), not a regular file"):
        read_questions(fifo)


def test_directories_and_devices_are_refused_with_their_kind(tmp_path):
    (tmp_path / "q.txt").mkdir()
    with pytest.raises(InfinipotError, match="is a directory, not a regular file"):
        read_questions(tmp_path / "q.txt")
    device = tmp_path / "null.txt"
    device.symlink_to(os.devnull)
    with pytest.raises(InfinipotError, match="is a character device, not a regular file"):
        read_questions(device)
    with pytest.raises(InfinipotError, match="question file not found"):
        read_questions(tmp_path / "missing" / "q.txt")


ALIAS_BOMB = """\
- id: bomb
  question: &a "lol"
  options: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  extra: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  more: [*c, *c, *c, *c, *c, *c, *c, *c, *c]
"""


def test_yaml_anchors_and_aliases_are_refused_before_expansion(tmp_path):
    started = time.perf_counter()
    with pytest.raises(InfinipotError, match=r"q.yaml:2: YAML anchors and aliases .* are not accepted") as caught:
        read_questions(write(tmp_path, "q.yaml", ALIAS_BOMB))
    assert time.perf_counter() - started < 2 and "\n" not in str(caught.value)
    with pytest.raises(InfinipotError, match="anchors and aliases"):
        read_questions(write(tmp_path, "a.yaml", "- question: &only Why?\n"))


def test_yaml_python_tags_are_refused(tmp_path):
    text = '- question: !!python/object/apply:os.system ["echo pwned"]\n'
    with pytest.raises(InfinipotError, match=r"q.yaml:1: not valid YAML \(could not determine a constructor") as caught:
        read_questions(write(tmp_path, "q.yaml", text))
    assert len(str(caught.value).replace(str(tmp_path), "")) < 200  # short whatever the temp path's length


@pytest.mark.parametrize("codec, mark", [
    ("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE), ("utf-32-le", codecs.BOM_UTF32_LE),
    ("utf-32-be", codecs.BOM_UTF32_BE), ("utf-8", codecs.BOM_UTF8),
])
@pytest.mark.parametrize("name", ["q.txt", "q.jsonl", "q.yaml"])
def test_files_with_a_byte_order_mark_are_decoded(tmp_path, codec, mark, name):
    text = {"q.txt": "Où est le carré?\nWhy?\n",
            "q.jsonl": '{"question": "Où est le carré?"}\r\n{"question": "Why?"}\n',
            "q.yaml": "- Où est le carré?\n- Why?\n"}[name]
    parsed = read_questions(write(tmp_path, name, mark + text.encode(codec)))
    assert [entry.question for entry in parsed.entries] == ["Où est le carré?", "Why?"]
    assert [entry.line for entry in parsed.entries] == [1, 2] and not parsed.problems


def test_utf16_without_a_mark_and_broken_utf16_are_one_line_errors(tmp_path):
    with pytest.raises(InfinipotError, match="NUL bytes .*save it as UTF-8"):
        read_questions(write(tmp_path, "q.txt", "Why?\n".encode("utf-16-le")))
    with pytest.raises(InfinipotError, match="UTF-16 byte-order mark but is not valid UTF-16"):
        read_questions(write(tmp_path, "b.txt", codecs.BOM_UTF16_LE + b"W\x00h\x00\x00\xd8"))


def test_latin1_is_a_problem_for_its_line_or_one_error_for_a_document(tmp_path):
    latin = '{"question": "Why?"}\n{"question": "Où?"}\n'.encode("latin-1")
    parsed = read_questions(write(tmp_path, "q.jsonl", latin))
    assert [entry.question for entry in parsed.entries] == ["Why?"]
    assert parsed.problems[0].line == 2 and "perhaps Latin-1" in parsed.problems[0].message
    with pytest.raises(InfinipotError, match=r"q.yaml:2: not UTF-8 text \(byte 0xf9, perhaps Latin-1\)"):
        read_questions(write(tmp_path, "q.yaml", "- Why?\n- Où?\n".encode("latin-1")))


def test_a_deeply_nested_json_line_is_skipped_and_the_rest_goes_on(tmp_path):
    deep = "[" * 200_000 + "]" * 200_000
    text = f'{{"question": "Before?"}}\n{deep}\n{{"question": "After?"}}\n'
    parsed = read_questions(write(tmp_path, "q.jsonl", text))
    assert [entry.question for entry in parsed.entries] == ["Before?", "After?"]
    assert [(p.line, p.message) for p in parsed.problems] == [(2, "not usable JSON (nested too deeply)")]


def test_messages_never_echo_unbounded_input(tmp_path):
    huge = "Z" * 100_000
    lines = [f'{{"id": 1, "question": "Pick", "options": ["a", "b"], "answer": "{huge}"}}',
             f'{{"id": "{huge}", "question": "Dup"}}', f'{{"id": "{huge}", "question": "Dup again"}}',
             f'{{"question": "When?", "time": "{huge}"}}']
    parsed = read_questions(write(tmp_path, "q.jsonl", "\n".join(lines)))
    assert len(parsed.problems) == 3
    assert all(len(problem.message) < 200 for problem in parsed.problems)
    over = read_questions(write(tmp_path, "big.txt", "Why?\n" + "x" * (1024 * 1024 + 10) + "\nHow?\n"))
    assert [entry.question for entry in over.entries] == ["Why?", "How?"]
    assert "over the 1 MiB limit" in over.problems[0].message


def test_files_over_the_size_limit_are_refused(tmp_path, monkeypatch):
    import infinipot.bench_input as bench_input

    monkeypatch.setattr(bench_input, "MAX_FILE_BYTES", 1024 * 1024)
    with pytest.raises(InfinipotError, match="is 2,097,152 bytes, over the 1 MiB limit: split it"):
        read_questions(write(tmp_path, "q.txt", b"Why?\n" * (2 * 1024 * 1024 // 5) + b"W" * 2))
