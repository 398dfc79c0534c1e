"""`infinipot eval` (issue 13): the benchmarks' own files over folders of synthetic videos, each video streamed
once, timed questions answered at their moment from the frames up to it; resume; kept caches; missing videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import invoke
from infinipot.benchmarks import FORMATS, read_benchmark
from infinipot.synthetic import write_test_video

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
PUBLISHED = {"videomme": "videomme.json", "mlvu": "1_plotQA.json", "longvideobench": "lvb_val.json",
             "egoschema": "egoschema/questions.json", "ovobench": "ovbench.json",
             "streamingbench": "questions_real.json", "streamingbench-sqa": "questions_sqa.json", "rvs": "ego4d_oe.json"}
RUN = ("--preset", "tiny", "--device", "cpu", "--max-new-tokens", "2")
TIMING = ("seconds",)  # the only field of a result that depends on the machine

# Our own small files in the formats whose questions come at a moment, with moments inside a 12-s video
# (one past its end), written with the published field names.
TIMED = {
    "ovobench": ("ovbench.json", [
        {"id": 1, "task": "EPM", "video": "clips/one.mp4", "realtime": 3, "question": "What moved?",
         "options": ["a square", "a dog"], "gt": 0},
        {"id": 2, "task": "STU", "video": "clips/one.mp4", "realtime": 8, "question": "What is on screen now?",
         "options": ["tiles", "a cat", "a car"], "gt": 0},
        {"id": 3, "task": "REC", "video": "clips/two.mp4", "activity": "move one tile",
         "test_info": [{"realtime": 5.5, "count": 1}, {"realtime": 30, "count": 2}]},
    ]),
    "streamingbench": ("questions_real.json", [
        {"video_path": "./videos/one.mp4", "questions": [
            {"task_type": "Counting", "question": "How many squares?", "time_stamp": "00:00:04", "answer": "A",
             "options": ["A. 1", "B. 2"]},
            {"task_type": "Object Perception", "question": "What colour is the square?", "time_stamp": "00:00:09",
             "answer": "B", "options": ["A. Red.", "B. White.", "C. Blue."]}]},
    ]),
    "rvs": ("ego4d_oe.json", [
        {"video_id": "two", "video_path": "ego/two.mp4", "duration": 12, "conversations": [
            {"question": "What moves?", "answer": "A white square.", "start_time": 0, "end_time": 6},
            {"question": "Where is it now?", "answer": "On the middle row.", "start_time": 2, "end_time": 11.5}]},
    ]),
    "infinipot": ("questions.jsonl", [
        {"id": "a", "video": "one.mp4", "question": "What moved?", "time": 2, "answer": "yes",
         "category": "early"},
        {"id": "b", "video": "one.mp4", "question": "And at the end?", "options": ["tiles", "a dog"], "answer": "A",
         "category": "end"},
        {"id": "c", "video": "two", "question": "What now?", "time": "0:07.5", "category": "late"},
    ]),
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 s at 2 fps: 12 frames at the tiny preset's 1 fps, 72 visual tokens (over a budget of 48)."""
    return write_test_video(tmp_path_factory.mktemp("eval-videos") / "clip.mp4", seconds=12, fps=2)


def videos_for(parsed, folder: Path, video: Path) -> Path:
    """A copy of `video` under every name the benchmark file gives (an id gets `.mp4`)."""
    folder.mkdir(exist_ok=True)
    for name in {entry.video for entry in parsed.entries}:
        target = folder / (Path(name).name if Path(name).suffix else f"{name}.mp4")
        shutil.copy(video, target)
    return folder


def write_file(folder: Path, name: str, items: list) -> Path:
    path = folder / name
    path.write_text("\n".join(map(json.dumps, items)) if name.endswith(".jsonl") else json.dumps(items))
    return path


def results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key not in TIMING} for record in records]


def eval_json(*args) -> tuple[dict, object]:
    outcome = invoke("eval", *args, "--json")
    assert outcome.exit_code == 0, outcome.output
    return json.loads(outcome.stdout), outcome


def assert_accuracy_adds_up(summary: dict, records: list[dict]) -> None:
    scored = [record for record in records if isinstance(record.get("correct"), bool)]
    overall = summary["accuracy"]["overall"]
    assert overall["total"] == len(scored) and overall["correct"] == sum(r["correct"] for r in scored)
    assert summary["accuracy"]["unscored"] == len(records) - len(scored)
    for axis, values in summary["accuracy"]["by_category"].items():
        having = [record for record in scored if axis in record.get("categories", {})]
        assert sum(tally["total"] for tally in values.values()) == len(having)
        assert sum(tally["correct"] for tally in values.values()) == sum(r["correct"] for r in having)


# --- every format, end to end -------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_the_published_fixtures_run_end_to_end(name, clip, tmp_path):
    questions = FIXTURES / PUBLISHED[name]
    parsed = read_benchmark(questions)
    videos = videos_for(parsed, tmp_path / "videos", clip)
    output = tmp_path / "results.jsonl"
    summary, _ = eval_json(questions, "--videos", videos, "-o", output, *RUN, "--budget", "96")
    records = results(output)
    assert sorted((r.get("video", ""), str(r["id"])) for r in records) == sorted(e.key for e in parsed.entries)
    assert summary["questions"] == summary["answered"] == len(parsed.entries)
    assert summary["skipped"] == {"already_answered": 0, "malformed": len(parsed.problems)}
    assert summary["videos"]["done"] == summary["videos"]["total"] == len({e.video for e in parsed.entries})
    for record in records:  # in time when the video reaches the moment; otherwise at the end, and flagged
        late = record.get("time") is not None and record["time"] > 12
        assert record["asked_at"] == (record["time"] if record.get("time") is not None and not late else 12.0)
        assert record.get("past_end", False) is late
    assert_accuracy_adds_up(summary, records)
    assert (summary["judge"] > 0) is (name == "rvs") and (summary["judge_note"] is not None) is (name == "rvs")


@pytest.mark.parametrize("format_name", list(TIMED))
def test_timed_questions_are_answered_from_the_frames_up_to_their_moment(format_name, clip, tmp_path, monkeypatch):
    """Through the session's layout at answer time: no cached token comes from a frame after the moment."""
    from infinipot.asking import Answering

    filename, items = TIMED[format_name]
    questions = write_file(tmp_path, filename, items)
    parsed = read_benchmark(questions, format_name)
    videos = videos_for(parsed, tmp_path / "videos", clip)
    seen: list[tuple[dict, float]] = []
    ask = Answering.ask

    def spying(session, question, **options):
        steps = max(int(layout.frame.max()) for layout in session.cache.layouts) + 1
        latest = session.source.plan.timestamps[steps * session.setup.plan.frame_multiple - 1]
        seen.append((session.moment(), float(latest)))
        return ask(session, question, **options)

    monkeypatch.setattr(Answering, "ask", spying)
    output = tmp_path / "results.jsonl"
    summary, _ = eval_json(questions, "--videos", videos, "-o", output, "--format", format_name, *RUN,
                           "--budget", "48")
    records = results(output)
    assert len(records) == len(seen) == len(parsed.entries) == summary["answered_now"]
    for record, (moment, latest) in zip(records, seen):
        assert record["asked_at"] == moment["asked_at"] and record["frames_seen"] == moment["frames_seen"]
        if record.get("time") is not None and not record.get("past_end"):
            assert record["asked_at"] == record["time"]
        assert latest <= record["asked_at"]  # the newest frame in the cache is not later than the question
    assert {r["asked_at"] for r in records if r.get("time") is not None and not r.get("past_end")} == \
        {e.time for e in parsed.entries if e.time is not None and e.time <= 12}
    assert summary["per_video"][0]["peak_cached_tokens"] <= 48 + 24  # the budget holds (a chunk may be on top)
    assert_accuracy_adds_up(summary, records)


def test_the_format_names_in_the_help_are_the_library_s():
    from infinipot_cli.eval import FORMAT_NAMES

    assert FORMAT_NAMES == FORMATS


# --- resume, kept caches, missing videos ---------------------------------------------------------
def test_an_interrupted_run_resumes_to_the_same_results(clip, tmp_path, monkeypatch):
    from infinipot.results import ResultLog

    filename, items = TIMED["ovobench"]
    questions = write_file(tmp_path, filename, items)
    videos = videos_for(read_benchmark(questions), tmp_path / "videos", clip)
    straight = tmp_path / "straight.jsonl"
    eval_json(questions, "--videos", videos, "-o", straight, *RUN, "--budget", "48")
    resumed = tmp_path / "resumed.jsonl"
    write = ResultLog.write

    def write_then_stop(log, record):
        write(log, record)
        if log.written == 2:  # Ctrl-C right after the second result, in the first video
            raise KeyboardInterrupt

    monkeypatch.setattr(ResultLog, "write", write_then_stop)
    stopped = invoke("eval", questions, "--videos", videos, "-o", resumed, *RUN, "--budget", "48")
    assert stopped.exit_code == 130 and stopped.output.strip().endswith("interrupted")
    assert "answered 2 questions in this run" in stopped.output and len(results(resumed)) == 2
    monkeypatch.setattr(ResultLog, "write", write)
    summary, outcome = eval_json(questions, "--videos", videos, "-o", resumed, *RUN, "--budget", "48")
    assert "already holds 2 of these 4 answers: skipping them" in outcome.stderr
    assert summary["skipped"]["already_answered"] == 2 and summary["answered_now"] == 2
    assert summary["accuracy"]["overall"]["total"] == 4  # the earlier answers count too
    assert without_timing(results(resumed)) == without_timing(results(straight))


def test_kept_caches_answer_untimed_questions_without_decoding(clip, tmp_path, monkeypatch):
    import infinipot.sources

    questions = FIXTURES / "videomme.json"
    videos = videos_for(read_benchmark(questions), tmp_path / "videos", clip)
    caches = tmp_path / "caches"
    first, _ = eval_json(questions, "--videos", videos, "-o", tmp_path / "first.jsonl", "--cache-dir", caches, *RUN)
    kept = sorted(caches.glob("*.ipv"))
    assert len(kept) == 2 and first["videos"]["from_cache"] == 0
    opened: list[str] = []
    open_source = infinipot.sources.open_source
    monkeypatch.setattr(infinipot.sources, "open_source", lambda video, **o: opened.append(str(video))
                        or open_source(video, **o))
    second, _ = eval_json(questions, "--videos", videos, "-o", tmp_path / "second.jsonl", "--cache-dir", caches, *RUN)
    assert opened == [] and second["videos"]["from_cache"] == 2  # no video was opened, let alone decoded
    assert without_timing(results(tmp_path / "second.jsonl")) == without_timing(results(tmp_path / "first.jsonl"))
    assert sorted(caches.glob("*.ipv")) == kept
    # Other settings make (and keep) their own caches; a video whose file changed is streamed again.
    write_test_video(videos / "abcdefghijk.mp4", seconds=12, fps=2, seed=5)
    third, _ = eval_json(questions, "--videos", videos, "-o", tmp_path / "third.jsonl", "--cache-dir", caches, *RUN)
    assert [Path(name).name for name in opened] == ["abcdefghijk.mp4"] and third["videos"]["from_cache"] == 1
    eval_json(questions, "--videos", videos, "-o", tmp_path / "fourth.jsonl", "--cache-dir", caches, *RUN,
              "--budget", "48")
    assert len(list(caches.glob("*.ipv"))) == 4


def test_timed_questions_still_need_the_stream(clip, tmp_path, monkeypatch):
    import infinipot.sources

    filename, items = TIMED["infinipot"]
    questions = write_file(tmp_path, filename, items)
    videos = videos_for(read_benchmark(questions), tmp_path / "videos", clip)
    caches = tmp_path / "caches"
    eval_json(questions, "--videos", videos, "-o", tmp_path / "first.jsonl", "--cache-dir", caches, *RUN)
    opened: list[str] = []
    open_source = infinipot.sources.open_source
    monkeypatch.setattr(infinipot.sources, "open_source", lambda video, **o: opened.append(str(video))
                        or open_source(video, **o))
    second, _ = eval_json(questions, "--videos", videos, "-o", tmp_path / "second.jsonl", "--cache-dir", caches, *RUN)
    assert len(opened) == 2 and second["videos"]["from_cache"] == 0
    assert without_timing(results(tmp_path / "second.jsonl")) == without_timing(results(tmp_path / "first.jsonl"))


def test_missing_and_unreadable_videos_are_one_line_each_and_the_run_goes_on(clip, tmp_path):
    questions = FIXTURES / "lvb_val.json"  # two videos
    parsed = read_benchmark(questions)
    videos = videos_for(parsed, tmp_path / "videos", clip)
    (videos / "86CxyhFV9MI.mp4").write_text("not a video")
    (videos / "Zq3aTd0Fq1s.mp4").unlink()
    mixed = tmp_path / "mixed.json"  # one readable video as well, so something is answered
    items = json.loads((FIXTURES / "lvb_val.json").read_text())
    items.append({**items[0], "id": "x_0", "video_path": "extra.mp4", "video_id": "extra"})
    mixed.write_text(json.dumps(items))
    shutil.copy(clip, videos / "extra.mp4")
    output = tmp_path / "results.jsonl"
    outcome = invoke("eval", mixed, "--videos", videos, "-o", output, *RUN, "--json")
    assert outcome.exit_code == 1
    warnings = [line for line in outcome.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3 and "mixed.json:index 1: `correct_choice` 7" in warnings[0], outcome.stderr
    assert "86CxyhFV9MI.mp4" in warnings[1] and warnings[1].endswith("; its 1 question is skipped")
    assert "Zq3aTd0Fq1s.mp4 is not in" in warnings[2]
    summary = json.loads(outcome.stdout)
    assert summary["failed"] == {"questions": 0, "videos": 2} and summary["videos"]["done"] == 1
    assert [r["id"] for r in results(output)] == ["x_0"]
    assert outcome.stderr.strip().splitlines()[-1].startswith("error: 2 of 3 questions were not answered")


def test_the_summary_table_and_the_judge_note(clip, tmp_path):
    questions = FIXTURES / "ego4d_oe.json"
    videos = videos_for(read_benchmark(questions), tmp_path / "videos", clip)
    outcome = invoke("eval", questions, "--videos", videos, "-o", tmp_path / "r.jsonl", *RUN)
    assert outcome.exit_code == 0, outcome.output
    assert "eval: ego4d_oe.json (rvs)" in outcome.stdout and "peak cached tokens" in outcome.stdout
    assert "3 open-ended answers are written in" in outcome.stderr and "for a judge to score later" in outcome.stderr
    again = invoke("eval", questions, "--videos", videos, "-o", tmp_path / "r.jsonl", *RUN)
    assert again.exit_code == 0 and "all 3 questions are already answered" in again.stderr


def test_the_line_over_videos_keeps_its_numbers_at_80_columns():
    from infinipot.eval_summary import EvalSummary
    from infinipot_cli.eval import EvalView

    class Run:
        summary = EvalSummary("b.json", "ovobench", questions=1200, videos=312)
        videos = [None] * 312

    view = EvalView(Run(), show=True)
    view.summary.accuracy.overall.total, view.summary.accuracy.overall.correct = 1000, 617
    view.finished, view.current = 123, (124, "Ego4D/clips/ec4a3ba3-eb00-4aa8-9b41-36043ece98f7.mp4", False)
    line = view.heading(80)
    assert len(line) < 80 and "videos 123/312" in line and "61.7% (617/1,000)" in line and "eta …" in line
    assert "ec4a3ba3" in line and line.endswith("…")
    assert "videos 123/312" in view.heading(50) and len(view.heading(50)) < 50


def test_refusals_are_one_line(tmp_path, clip):
    from helpers import assert_one_line_error

    questions = FIXTURES / "videomme.json"
    assert_one_line_error(invoke("eval", questions, "--videos", tmp_path / "nowhere", "-o", tmp_path / "r.jsonl",
                                 *RUN), "videos folder", "does not exist")
    assert_one_line_error(invoke("eval", questions, "--videos", tmp_path, "-o", tmp_path / "r.jsonl",
                                 "--format", "mlvu", *RUN), "looks like videomme")
    copy = tmp_path / "q.jsonl"
    copy.write_text(json.dumps({"question": "What?", "video": "clip.mp4"}))
    assert_one_line_error(invoke("eval", copy, "--videos", tmp_path, "-o", copy, *RUN), "one of this run's inputs")
