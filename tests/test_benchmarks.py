"""The benchmarks' own files: every format read end to end from a small fixture written with the
published field names; recognising the format; malformed entries skipped with where they are;
grouping by video; finding the videos."""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path

import pytest

from infinipot.answer import Answer
from infinipot.benchmarks import FORMATS, detect_format, group_by_video, read_benchmark, resolve_video
from infinipot.errors import InfinipotError
from infinipot.questions import Accuracy, score

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def summary(parsed) -> list[tuple]:
    return [(e.video, e.id, e.time, e.answer, e.scoring, e.categories) for e in parsed.entries]


def problems(parsed) -> list[tuple]:
    return [(p.where, p.message) for p in parsed.problems]


def test_the_format_names():
    assert FORMATS == ("infinipot", "videomme", "mlvu", "longvideobench", "egoschema", "ovobench",
                       "streamingbench", "rvs")


def test_videomme():
    parsed = read_benchmark(FIXTURES / "videomme.json")
    assert parsed.format == "videomme"
    short = {"duration": "short", "domain": "Knowledge"}
    assert summary(parsed) == [
        ("fFjv93ACGo8", "001-1", None, "C", "choice", {**short, "task_type": "Counting Problem"}),
        ("fFjv93ACGo8", "001-2", None, "B", "choice", {**short, "task_type": "Object Recognition"}),
        ("abcdefghijk", "002-2", None, "A", "choice",
         {"duration": "long", "domain": "Sports Competition", "task_type": "Temporal Reasoning"}),
    ]
    first = parsed.entries[0]
    assert first.options == ("One.", "Two.", "Three.", "Four.")  # the "A. " the file writes is not repeated
    assert first.extra["sub_category"] == "Humanity & History" and first.extra["video_id"] == "001"
    assert problems(parsed) == [("index 2", "`answer` 'E' is neither a letter A-D nor one of the options")]


def test_mlvu_answers_given_as_text_become_letters():
    parsed = read_benchmark(FIXTURES / "1_plotQA.json")
    assert parsed.format == "mlvu"
    assert summary(parsed) == [
        ("movie101_66.mp4", "plotQA-1", None, "B", "choice", {"question_type": "plotQA"}),
        ("movie101_66.mp4", "plotQA-2", None, "D", "choice", {"question_type": "plotQA"}),
    ]
    assert parsed.entries[0].extra == {"duration": 246.0}
    assert problems(parsed) == [("index 2", "`answer` 'A cat' is not one of the options")]


def test_longvideobench_correct_choice_is_an_index():
    parsed = read_benchmark(FIXTURES / "lvb_val.json")
    assert parsed.format == "longvideobench"
    assert summary(parsed) == [
        ("86CxyhFV9MI.mp4", "86CxyhFV9MI_0", None, "C", "choice",
         {"duration_group": "600", "question_category": "S2E"}),
        ("Zq3aTd0Fq1s.mp4", "Zq3aTd0Fq1s_0", None, "E", "choice",
         {"duration_group": "3600", "question_category": "O3O"}),
    ]
    assert parsed.entries[0].extra["topic_category"] == "NP-News-Programs"
    assert problems(parsed) == [("index 1", "`correct_choice` 7 is not an option number 0-2")]


def test_longvideobench_parquet_layout_with_numbered_options(tmp_path):
    row = {"id": "x_0", "video_id": "x", "video_path": "x.mp4", "question": "Which?", "option0": "a", "option1": "b",
           "option2": "c", "option3": "N/A", "option4": "N/A", "correct_choice": 1, "duration_group": 15,
           "question_category": "T3O"}
    parsed = read_benchmark(write_json(tmp_path / "lvb.json", [row]))
    assert parsed.entries[0].options == ("a", "b", "c") and parsed.entries[0].answer == "B"


def test_egoschema_answers_come_from_the_file_beside_it(tmp_path):
    parsed = read_benchmark(FIXTURES / "egoschema" / "questions.json")
    assert parsed.format == "egoschema"
    uids = [entry.id for entry in parsed.entries]
    assert [entry.video for entry in parsed.entries] == uids  # videos are named by q_uid
    assert [(entry.answer, entry.scoring) for entry in parsed.entries] == [("D", "choice"), ("E", "choice"),
                                                                          (None, "none")]
    assert parsed.entries[0].options[3] == "C scrolls, then stops briefly." and len(parsed.entries[0].options) == 5
    assert parsed.entries[0].extra == {"google_drive_id": "15yGB0TI5zG5usdQZOXn0CrRzkJNB0gMl"}
    alone = tmp_path / "questions.json"
    shutil.copy(FIXTURES / "egoschema" / "questions.json", alone)
    assert {entry.scoring for entry in read_benchmark(alone).entries} == {"none"}
    (tmp_path / "subset_answers.json").write_text('{"001934bb-81bd-4cd8-a574-0472ef3f6678": "three"}')
    with pytest.raises(InfinipotError, match="expected {q_uid: answer number}"):
        read_benchmark(alone)


def test_ovobench_tasks_times_and_forward_checks():
    parsed = read_benchmark(FIXTURES / "ovbench.json")
    assert parsed.format == "ovobench"
    clip = "Ego4D/clips/ec4a3ba3-eb00-4aa8-9b41-36043ece98f7.mp4"
    rec, ssr, crr = ({"group": "forward", "task": task} for task in ("REC", "SSR", "CRR"))
    assert summary(parsed) == [
        (clip, 0, 215.0, "A", "choice", {"group": "backward", "task": "EPM"}),
        (clip, 1, 12.5, "B", "choice", {"group": "realtime", "task": "STU"}),
        ("perception_test/video_4017.mp4", "1558.0", 17.0, "1", "exact", rec),
        ("perception_test/video_4017.mp4", "1558.1", 32.0, "2", "exact", rec),
        ("COIN/xZecGPPhbHE.mp4", "1516.0", 27.0, "Yes", "exact", ssr),
        ("COIN/xZecGPPhbHE.mp4", "1516.1", 29.0, "No", "exact", ssr),
        ("MovieNet/tt0048028.mp4", "1468.0", 297.0, "No", "exact", crr),
        ("MovieNet/tt0048028.mp4", "1468.1", 310.0, "Yes", "exact", crr),
    ]
    assert "break something" in parsed.entries[2].question
    assert "put on the hair extensions" in parsed.entries[5].question
    assert parsed.entries[2].extra["test_info"] == {"realtime": 17, "count": 1}
    assert problems(parsed) == [
        ("index 2", "unknown OVO-Bench task 'XYZ': expected one of EPM, ASI, HLD, STU, OJR, ATR, ACR, OCR, FPD, "
                    "REC, SSR, CRR"),
        ("index 3", "`realtime` -4 is negative: give seconds from the start of the video"),
        ("index 5", "test_info[2]: `type` 7 must be 0 (no) or 1 (yes)"),
    ]
    counting, step = parsed.entries[3], parsed.entries[4]
    assert score(counting, Answer("q", "They did it 2 times.", 5, 0.1)).correct is True
    assert score(step, Answer("q", "No.", 1, 0.1)).correct is False


def test_streamingbench_questions_asked_at_their_time_stamp():
    parsed = read_benchmark(FIXTURES / "questions_real.json")
    assert parsed.format == "streamingbench"
    video = "./videos/sample_16_Source_Discrimination.mp4"
    assert summary(parsed) == [
        (video, 1, 34.0, "A", "choice", {"task_type": "Source Discrimination"}),
        (video, 3, 120.0, "C", "choice", {"task_type": "Object Perception"}),
        (video, 4, 208.0, "B", "choice", {"task_type": "Counting"}),
    ]
    assert parsed.entries[1].options == ("A cup.", "A lamp.", "A man's hat.", "Nothing.")  # "A.A cup." written so
    assert parsed.entries[2].options == ("1", "2", "3", "4")  # the empty strings some files interleave: dropped
    assert parsed.entries[0].extra["required_ability"] == "episodic memory"
    assert parsed.entries[2].extra == {"time": "[0:03:00 - 0:04:00]", "video_categories": "talk_show"}  # no captions
    assert problems(parsed) == [("index 0", "questions[1]: `time_stamp` '00:01:75' is not a time: give seconds "
                                            "(12.5) or HH:MM:SS[.fff]")]


def test_streamingbench_sequential_questions_one_list_per_video():
    parsed = read_benchmark(FIXTURES / "questions_sqa.json")
    assert parsed.format == "streamingbench"
    sqa = {"task_type": "Sequential Question Answering"}
    assert summary(parsed) == [
        ("./videos/sample_17_sqa.mp4", 1, 36.0, "A", "choice", sqa),
        ("./videos/sample_17_sqa.mp4", 2, 182.0, "C", "choice", sqa),
        ("./videos/sample_18_sqa.mp4", 1, 20.0, "B", "choice", sqa),
    ]
    assert problems(parsed) == [("index 0", "[2] expected an object, found str")]


def test_streamingbench_proactive_questions_have_no_expected_answer(tmp_path):
    record = {"video_path": "./videos/p.mp4", "questions": [
        {"task_type": "Proactive Output", "question": "When the score shows 3, output \"3\".", "time_stamp": "00:00:20",
         "ground_truth_time_stamp": "00:00:29", "ground_truth_output": "3"}]}
    entry, = read_benchmark(write_json(tmp_path / "questions_proactive.json", [record])).entries
    assert (entry.scoring, entry.time, entry.options) == ("none", 20.0, ())
    assert entry.extra["ground_truth_output"] == "3"


def test_rvs_open_ended_questions_asked_at_their_end_time():
    parsed = read_benchmark(FIXTURES / "ego4d_oe.json")
    assert parsed.format == "rvs"
    first, second = (f"ego/videos/{uid}.mp4" for uid in ("0a02a1ed-a327-4753-b270-e95298984b96",
                                                          "1b13b2fe-f1a4-4bc0-9b6a-1b8a7d8c3e11"))
    assert summary(parsed) == [
        (first, 1, 42.5, "A bottle of milk.", "judge", {}),
        (first, 2, 355.0, "On the shelf by the door.", "judge", {}),
        (second, 1, 1799.5, "Pasta with tomato sauce.", "judge", {}),
    ]
    assert parsed.entries[0].extra["start_time"] == 10.0 and parsed.entries[0].extra["video_id"].startswith("0a02")
    assert problems(parsed) == [("index 0", "conversations[2]: missing `question` (a non-empty string)")]
    record = score(parsed.entries[0], Answer("q", "Milk.", 2, 0.1)).record()
    assert record["reference"] == "A bottle of milk." and record["correct"] is None


@pytest.mark.parametrize("name, format", [
    ("videomme.json", "videomme"), ("1_plotQA.json", "mlvu"), ("lvb_val.json", "longvideobench"),
    ("egoschema/questions.json", "egoschema"), ("ovbench.json", "ovobench"),
    ("questions_real.json", "streamingbench"), ("questions_sqa.json", "streamingbench"), ("ego4d_oe.json", "rvs"),
])
def test_naming_the_format_reads_the_same_as_recognising_it(name, format):
    recognised, named = read_benchmark(FIXTURES / name), read_benchmark(FIXTURES / name, format=format)
    assert recognised.format == named.format == format
    assert recognised.entries == named.entries and recognised.problems == named.problems


def test_the_wrong_or_an_unknown_format_is_one_line(tmp_path):
    with pytest.raises(InfinipotError, match="ovbench.json looks like ovobench, not videomme: pass --format ovobench"):
        read_benchmark(FIXTURES / "ovbench.json", format="videomme")
    with pytest.raises(InfinipotError, match="unknown format 'ovo': choose one of infinipot, videomme"):
        read_benchmark(FIXTURES / "ovbench.json", format="ovo")
    with pytest.raises(InfinipotError, match=r"cannot tell the format of odd.json from its entries \(fields: foo, b"):
        read_benchmark(write_json(tmp_path / "odd.json", [{"foo": 1, "bar": 2}]))
    (tmp_path / "q.txt").write_text("Why?\n")
    with pytest.raises(InfinipotError, match="q.txt is a .txt file; videomme files are JSON"):
        read_benchmark(tmp_path / "q.txt", format="videomme")


def test_json_lines_report_lines_and_skip_what_they_cannot_read(tmp_path):
    rows = json.loads((FIXTURES / "videomme.json").read_text())
    lines = [json.dumps(rows[0]), "{broken", "[" * 200_000 + "]" * 200_000, json.dumps(rows[1]), "",
             json.dumps(rows[2]), json.dumps(rows[0]), '"a string"']
    path = tmp_path / "videomme.jsonl"
    path.write_text("\n".join(lines) + "\n")
    parsed = read_benchmark(path)
    assert parsed.format == "videomme" and [entry.id for entry in parsed.entries] == ["001-1", "001-2"]
    assert [entry.line for entry in parsed.entries] == [1, 4]
    found = problems(parsed)
    assert [where for where, _ in found] == ["line 2", "line 3", "line 6", "line 7", "line 8"]
    assert found[0][1].startswith("not valid JSON") and found[1][1] == "not usable JSON (nested too deeply)"
    assert found[3][1] == "duplicate id '001-1' for video 'fFjv93ACGo8' (first at line 1)"
    assert found[4][1] == "expected an object, found str" and parsed.skipped == 5


def test_json_lines_in_a_json_file_and_a_single_object(tmp_path):
    rows = json.loads((FIXTURES / "lvb_val.json").read_text())
    lines_file = tmp_path / "lvb.json"
    lines_file.write_text("\n".join(json.dumps(row) for row in rows))
    assert [entry.id for entry in read_benchmark(lines_file).entries] == ["86CxyhFV9MI_0", "Zq3aTd0Fq1s_0"]
    single = write_json(tmp_path / "one.json", rows[0])
    assert [entry.id for entry in read_benchmark(single).entries] == ["86CxyhFV9MI_0"]


def test_a_column_wise_export_gets_a_hint(tmp_path):
    columns = {"videoID": {"0": "x"}, "question": {"0": "Why?"}}
    with pytest.raises(InfinipotError, match="holds columns, not entries: .*orient='records'"):
        read_benchmark(write_json(tmp_path / "videomme.json", columns))


def test_unreadable_documents_are_one_line(tmp_path):
    (tmp_path / "bad.json").write_text('[{"videoID": "x",\n "question": }]')
    with pytest.raises(InfinipotError, match=r"bad.json:2: not valid JSON \(Expecting value at column 14\)"):
        read_benchmark(tmp_path / "bad.json")
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(InfinipotError, match="nested too deeply"):
        read_benchmark(tmp_path / "deep.json")
    (tmp_path / "num.json").write_text("42")
    with pytest.raises(InfinipotError, match="expected a list of entries, found a int"):
        read_benchmark(tmp_path / "num.json")
    (tmp_path / "latin.json").write_bytes('[{"question": "Où?"}]'.encode("latin-1"))
    with pytest.raises(InfinipotError, match="latin.json:1: not UTF-8 text"):
        read_benchmark(tmp_path / "latin.json")


def test_utf16_benchmark_file_is_decoded(tmp_path):
    path = tmp_path / "ovbench.json"
    path.write_bytes(b"\xff\xfe" + (FIXTURES / "ovbench.json").read_text().encode("utf-16-le"))
    assert len(read_benchmark(path).entries) == 8


def test_a_fifo_benchmark_file_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "ovbench.json"
    os.mkfifo(fifo)
    with pytest.raises(InfinipotError, match=r"named pipe \(FIFO\), not a regular file"):
        read_benchmark(fifo)


def test_plain_entries_in_json_and_jsonl(tmp_path):
    listed = read_benchmark(write_json(tmp_path / "mine.json", [
        {"question": "Why?", "video": "a.mp4", "time": "0:05"}, "How?", {"id": 9, "question": "What?"}]))
    assert listed.format == "infinipot"
    assert [(e.id, e.video, e.time, e.line) for e in listed.entries] == [(1, "a.mp4", 5.0, 0), (2, None, None, 0),
                                                                         (9, None, None, 0)]
    (tmp_path / "mine.jsonl").write_text('{"question": "Why?", "time": 3}\n{"id": "x"}\n')
    lines = read_benchmark(tmp_path / "mine.jsonl")
    assert lines.format == "infinipot" and [e.time for e in lines.entries] == [3.0]
    assert problems(lines) == [("line 2", "missing `question` (a non-empty string)")]
    (tmp_path / "mine.yaml").write_text("- Why?\n")
    assert read_benchmark(tmp_path / "mine.yaml").entries[0].question == "Why?"


def test_parquet_needs_pyarrow_and_reads_rows_with_it(tmp_path, monkeypatch):
    path = tmp_path / "test-00000-of-00001.parquet"
    path.write_bytes(b"PAR1 not really")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(InfinipotError, match="needs pyarrow, which is not installed: pip install pyarrow, or convert"):
        read_benchmark(path)
    rows = json.loads((FIXTURES / "videomme.json").read_text())
    table = types.SimpleNamespace(to_pylist=lambda: rows)
    fake = types.ModuleType("pyarrow.parquet")
    fake.read_table = lambda where: table if Path(where) == path else None
    package = types.ModuleType("pyarrow")
    package.parquet = fake
    monkeypatch.setitem(sys.modules, "pyarrow", package)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", fake)
    parsed = read_benchmark(path)
    assert parsed.format == "videomme" and len(parsed.entries) == 3
    assert problems(parsed) == [("index 2", "`answer` 'E' is neither a letter A-D nor one of the options")]


def test_detect_format_rules():
    assert detect_format({"q_uid": "x"}) == "egoschema"
    assert detect_format({"candidates": [], "correct_choice": 0}) == "longvideobench"
    assert detect_format({"candidates": [], "answer": "x"}) == "mlvu"
    assert detect_format({"question_id": "1", "options": []}) == "videomme"
    assert detect_format({"task": "EPM", "realtime": 1}) == "ovobench"
    assert detect_format({"question": "Why?"}) == "infinipot"
    assert detect_format({"nothing": 1}) is None


def test_accuracy_adds_up_over_a_benchmark():
    parsed = read_benchmark(FIXTURES / "ovbench.json")
    accuracy = Accuracy()
    for entry in parsed.entries:
        said = entry.answer if entry.scoring == "exact" else "A"
        accuracy.add(score(entry, Answer("q", said, 1, 0.1)))
    data = accuracy.as_dict()
    assert data["overall"] == {"correct": 7, "total": 8, "accuracy": 0.875}
    for values in data["by_category"].values():
        assert sum(tally["total"] for tally in values.values()) == 8
        assert sum(tally["correct"] for tally in values.values()) == 7
    assert data["by_category"]["group"]["realtime"] == {"correct": 0, "total": 1, "accuracy": 0.0}


# --- videos ---------------------------------------------------------------------------------------
def test_group_by_video_keeps_file_order():
    parsed = read_benchmark(FIXTURES / "ovbench.json")
    groups = group_by_video(parsed.entries)
    assert list(groups) == ["Ego4D/clips/ec4a3ba3-eb00-4aa8-9b41-36043ece98f7.mp4", "perception_test/video_4017.mp4",
                            "COIN/xZecGPPhbHE.mp4", "MovieNet/tt0048028.mp4"]
    assert [entry.id for entry in groups["COIN/xZecGPPhbHE.mp4"]] == ["1516.0", "1516.1"]
    assert sum(map(len, groups.values())) == len(parsed.entries)


def test_resolve_video_by_id_path_tail_and_sub_folder(tmp_path):
    videos = tmp_path / "videos"
    for name in ("fFjv93ACGo8.mp4", "Ego4D/clips/ec4a.mp4", "long/abc.mkv", "plain.mp4", "upper.MP4"):
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        (videos / name).write_bytes(b"x")
    assert resolve_video("fFjv93ACGo8", videos) == videos / "fFjv93ACGo8.mp4"
    assert resolve_video("Ego4D/clips/ec4a.mp4", videos) == videos / "Ego4D/clips/ec4a.mp4"
    assert resolve_video("/mnt/hwfile/bench/Ego4D/clips/ec4a.mp4", videos) == videos / "Ego4D/clips/ec4a.mp4"
    assert resolve_video("./videos/plain.mp4", videos) == videos / "plain.mp4"
    assert resolve_video("abc", videos) == videos / "long/abc.mkv"  # one level of sub-folders
    assert resolve_video("upper", videos) == videos / "upper.MP4"
    assert resolve_video("missing", videos) is None
    (videos / "a" / "b").mkdir(parents=True)
    (videos / "a" / "b" / "deep.mp4").write_bytes(b"x")
    assert resolve_video("deep", videos) is None  # two levels down: not searched
    assert resolve_video("../videos/plain.mp4", videos) is None  # never outside the folder
    assert resolve_video("Ego4D", videos) is None  # a folder is not a video
    assert resolve_video("", videos) is None
    assert resolve_video("bad\x00name", videos) is None and resolve_video("y" * 5000, videos) is None


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path
