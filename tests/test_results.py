"""Results as JSON lines: whole lines or nothing (a full disk included), resume by (video, id),
a crash's partial line cut off, outputs checked before any work."""

from __future__ import annotations

import datetime
import errno
import json
import os
from pathlib import Path

import pytest

from infinipot.answer import Answer
from infinipot.errors import InfinipotError
from infinipot.questions import QuestionEntry, score
from infinipot.results import ResultLog, check_output, result_key

ENTRIES = [QuestionEntry(f"q{n}", f"Question {n}?", video="v1.mp4" if n < 4 else "v2.mp4") for n in range(1, 6)]


def record(entry: QuestionEntry) -> dict:
    return score(entry, Answer(entry.question, f"answer to {entry.id}", 3, 0.25), {"asked_at": 1.0}).record()


def lines_of(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode().splitlines()]


def test_nothing_is_created_before_the_first_result(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ResultLog(path)
    assert not path.exists() and log.done_ids == set()
    log.close()
    assert not path.exists()


def test_resume_skips_what_was_answered(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultLog(path) as log:
        for entry in ENTRIES[:3]:
            log.write(record(entry))
    assert [line["id"] for line in lines_of(path)] == ["q1", "q2", "q3"]
    again = ResultLog(path)
    assert again.done_ids == {("v1.mp4", "q1"), ("v1.mp4", "q2"), ("v1.mp4", "q3")}
    todo, skipped = again.pending(ENTRIES)
    assert [entry.id for entry in todo] == ["q4", "q5"] and skipped == 3
    assert [line["id"] for line in again.previous] == ["q1", "q2", "q3"] and again.kept == 3
    with again:
        for entry in todo:
            again.write(record(entry))
    assert [line["id"] for line in lines_of(path)] == ["q1", "q2", "q3", "q4", "q5"]
    assert ResultLog(path).pending(ENTRIES) == ([], 5)


def test_the_key_is_video_and_id(tmp_path):
    same_id = [QuestionEntry(1, "Q?", video="a.mp4"), QuestionEntry(1, "Q?", video="b.mp4"), QuestionEntry(1, "Q?")]
    assert [result_key(record(entry)) for entry in same_id] == [entry.key for entry in same_id]
    with ResultLog(tmp_path / "r.jsonl") as log:
        log.write(record(same_id[0]))
    todo, skipped = ResultLog(tmp_path / "r.jsonl").pending(same_id)
    assert todo == same_id[1:] and skipped == 1


def test_a_crash_mid_line_is_cut_off_before_appending(tmp_path):
    path = tmp_path / "results.jsonl"
    whole = "".join(json.dumps(record(entry)) + "\n" for entry in ENTRIES[:3])
    path.write_text(whole + '{"id": "q4", "video": "v2.mp4", "answ')
    log = ResultLog(path)
    assert log.done_ids == {("v1.mp4", "q1"), ("v1.mp4", "q2"), ("v1.mp4", "q3")} and not log.problems
    assert log.partial_line == 4
    assert path.read_text().endswith('"answ')  # untouched until something is written
    with log:
        log.write(record(ENTRIES[3]))
    assert [line["id"] for line in lines_of(path)] == ["q1", "q2", "q3", "q4"]


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(record(ENTRIES[0])) + "\n" + json.dumps(record(ENTRIES[1])))
    log = ResultLog(path)
    assert len(log.done_ids) == 2 and log.partial_line is None
    failing_write(monkeypatch, fail_on=1)
    with pytest.raises(InfinipotError, match="the 2 complete results"):
        log.write(record(ENTRIES[2]))  # a failed first write must not lose the newline still owed
    monkeypatch.undo()
    with log:
        log.write(record(ENTRIES[2]))
    assert [line["id"] for line in lines_of(path)] == ["q1", "q2", "q3"]


def test_any_record_becomes_one_valid_line(tmp_path):
    path = tmp_path / "r.jsonl"
    odd = QuestionEntry("odd", json.loads('"lone \\ud800 surrogate"'), extra={"when": datetime.date(2024, 1, 2)})
    with ResultLog(path) as log:
        log.write(record(odd))
        log.write({**record(ENTRIES[0]), "question": "line\nbreak"})
    assert len(path.read_bytes().splitlines()) == 2
    first, second = lines_of(path)
    assert first["when"] == "2024-01-02" and first["question"] == "lone \ud800 surrogate"
    assert second["question"] == "line\nbreak"


def test_a_corrupt_line_in_the_middle_is_reported(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(record(ENTRIES[0])) + "\nnot json\n[1, 2]\n\n" + json.dumps(record(ENTRIES[1])) + "\n")
    log = ResultLog(path)
    assert len(log.done_ids) == 2
    assert [problem.split(":")[0] for problem in log.problems] == ["line 2", "line 3"]
    assert "not valid JSON" in log.problems[0] and "not a result (no `id`)" in log.problems[1]


def test_overwrite_starts_over_at_the_first_result(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(record(ENTRIES[0])) + "\n")
    log = ResultLog(path, overwrite=True)
    assert log.done_ids == set() and len(path.read_text().splitlines()) == 1  # still the old file
    with log:
        log.write(record(ENTRIES[4]))
    assert [line["id"] for line in lines_of(path)] == ["q5"]


def failing_write(monkeypatch, fail_on: int, partial: bool = False) -> None:
    """os.write raising ENOSPC (or writing only half the line) on its `fail_on`-th call."""
    real_write, calls = os.write, []

    def write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == fail_on:
            if partial:
                return real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("partial", [False, True])
def test_a_full_disk_leaves_only_whole_lines_and_says_what_was_kept(tmp_path, monkeypatch, partial):
    path = tmp_path / "results.jsonl"
    with ResultLog(path) as first:
        first.write(record(ENTRIES[0]))
    failing_write(monkeypatch, fail_on=3, partial=partial)
    log = ResultLog(path)
    log.write(record(ENTRIES[1]))
    log.write(record(ENTRIES[2]))
    with pytest.raises(InfinipotError) as caught:
        log.write(record(ENTRIES[3]))
    log.close()
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "the 3 complete results written so far are kept (2 from this run)" in message
    assert "rerun with the same output to resume" in message
    if not partial:
        assert "No space left on device" in message
    monkeypatch.undo()
    assert [line["id"] for line in lines_of(path)] == ["q1", "q2", "q3"]
    assert ResultLog(path).pending(ENTRIES)[1] == 3


def test_efbig_is_handled_the_same_way(tmp_path, monkeypatch):
    def too_big(fd: int, data: bytes) -> int:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(os, "write", too_big)
    with ResultLog(tmp_path / "r.jsonl") as log, pytest.raises(InfinipotError, match="File too large.*the 0 complete"):
        log.write(record(ENTRIES[0]))
    monkeypatch.undo()
    assert (tmp_path / "r.jsonl").read_bytes() == b""


# --- checking the output before any work ------------------------------------------------------------
@pytest.mark.parametrize("name", ["out.csv", "out.json", "out.txt", "out.yaml", "out.parquet", "out.ipv", "out.mp4"])
def test_names_suggesting_another_format_are_refused(tmp_path, name):
    with pytest.raises(InfinipotError, match=r"results are written as JSON lines, not \..* name it out.jsonl"):
        check_output(tmp_path / name)
    with pytest.raises(InfinipotError, match="JSON lines"):
        ResultLog(tmp_path / name)


@pytest.mark.parametrize("name", ["out.jsonl", "out.ndjson", "out.jsonlines", "out", "OUT.JSONL"])
def test_json_lines_names_are_accepted(tmp_path, name):
    check_output(tmp_path / name)
    assert not (tmp_path / name).exists() and list(tmp_path.iterdir()) == []  # the probe leaves nothing


def test_existing_outputs_that_are_not_files_are_refused(tmp_path):
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    for check in (check_output, ResultLog):
        with pytest.raises(InfinipotError, match=r"is a named pipe \(FIFO\), not a regular file"):
            check(fifo)
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(InfinipotError, match="is a directory, not a regular file"):
        check_output(tmp_path / "dir.jsonl")
    with pytest.raises(InfinipotError, match="is a character device, not a regular file"):
        check_output(Path("/dev/full"))
    with pytest.raises(InfinipotError, match="is a character device"):
        ResultLog("/dev/null")


def test_an_output_that_is_an_input_is_refused(tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"question": "Why?"}\n')
    link = tmp_path / "same.jsonl"
    link.symlink_to(questions)
    for output in (questions, link, tmp_path / "." / "questions.jsonl"):
        with pytest.raises(InfinipotError, match="is one of this run's inputs"):
            check_output(output, [tmp_path / "video.mp4", questions])
    check_output(tmp_path / "results.jsonl", [questions])


def test_missing_or_read_only_folders_and_long_names_are_refused(tmp_path, monkeypatch):
    with pytest.raises(InfinipotError, match="directory does not exist: .*missing — create it first"):
        check_output(tmp_path / "missing" / "out.jsonl")
    with pytest.raises(InfinipotError, match=r"output name '.*…' is 256 bytes, more than this file system allows"):
        check_output(tmp_path / ("x" * 250 + ".jsonl"))
    check_output(tmp_path / ("x" * 249 + ".jsonl"))  # 255 bytes: legal, and appended in place
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(InfinipotError, match="cannot write to directory .* \\(permission denied\\)"):
        check_output(tmp_path / "out.jsonl")


def test_a_folder_that_refuses_files_is_found_by_the_probe(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args):
        if "infinipot-probe" in str(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(InfinipotError, match="cannot write to directory .*Read-only file system"):
        check_output(tmp_path / "out.jsonl")
