"""`infinipot eval --ray` (issue 18): the videos of an evaluation spread over Ray workers give the results file
of the in-process run; a worker killed mid-video loses no result and its video is streamed again elsewhere;
a video lost twice is reported failed and the run goes on; caches written by workers are reused.

Each Ray test starts workers that import torch and load the tiny model (about 15-25 s on 2 cores); the file
takes about 2 minutes on 2 cores. The Ray tests skip only when `ray` cannot be imported (CI installs it).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import pytest

from helpers import assert_one_line_error, invoke
from infinipot.synthetic import write_test_video

RUN = ("--preset", "tiny", "--device", "cpu", "--max-new-tokens", "2")
RAY_RUN = ("--ray-workers", "2", "--cpus-per-worker", "1")
DEADLINE_SECONDS = 300  # a Ray test that hangs fails instead of holding CI
LONG = "long.mp4"  # the video a worker is killed on: long enough to be mid-stream when the kill lands

# Timed questions (one past the end of its video) and untimed ones, over four videos.
QUESTIONS = [
    {"id": "l1", "video": LONG, "question": "What moved first?", "time": 3, "options": ["a square", "a dog"],
     "answer": "A", "category": "early"},
    {"id": "l2", "video": LONG, "question": "And later?", "time": 100, "options": ["tiles", "a cat"], "answer": "A"},
    {"id": "l3", "video": LONG, "question": "At the end?", "options": ["tiles", "a car"], "answer": "B"},
    {"id": "l4", "video": LONG, "question": "After the end?", "time": 500},
] + [item for index in range(1, 4) for item in (
    {"id": f"s{index}a", "video": f"short{index}.mp4", "question": "What is on screen?", "time": 4,
     "options": ["tiles", "a dog"], "answer": "A", "category": "early"},
    {"id": f"s{index}b", "video": f"short{index}.mp4", "question": "And at the end?", "answer": "tiles"},
)]


@pytest.fixture(autouse=True)
def deadline():
    """Fail (not hang) a test that runs past DEADLINE_SECONDS."""
    def expired(signum, frame):
        raise TimeoutError(f"the test ran past {DEADLINE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(DEADLINE_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, Path]:
    """The question file and the folder of its four videos (one of 180 s, three of 10-14 s, at 2 fps)."""
    root = tmp_path_factory.mktemp("ray-bench")
    videos = root / "videos"
    videos.mkdir()
    write_test_video(videos / LONG, seconds=180, fps=1, seed=7)
    for index in range(1, 4):
        write_test_video(videos / f"short{index}.mp4", seconds=8 + 2 * index, fps=2, seed=index)
    questions = root / "questions.jsonl"
    questions.write_text("\n".join(map(json.dumps, QUESTIONS)))
    return questions, videos


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def text(record: dict) -> str:
    """A result as sorted JSON, its timing left out."""
    return json.dumps({key: value for key, value in record.items() if key != "seconds"}, sort_keys=True)


def comparable(path: Path) -> list[str]:
    """The results, order aside and timing aside."""
    return sorted(map(text, records(path)))


@pytest.fixture(scope="module")
def reference(bench, tmp_path_factory) -> dict[str, str]:
    """The in-process run's results by "video/id"."""
    questions, videos = bench
    output = tmp_path_factory.mktemp("ray-reference") / "results.jsonl"
    outcome = invoke("eval", questions, "--videos", videos, "-o", output, *RUN, "--json")
    assert outcome.exit_code == 0, outcome.output
    assert len(records(output)) == len(QUESTIONS)
    return {f"{record['video']}/{record['id']}": text(record) for record in records(output)}


# --- without Ray ---------------------------------------------------------------------------------
def test_ray_missing_is_one_line_naming_the_extra(bench, tmp_path, monkeypatch):
    questions, videos = bench
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as it does where it is not installed
    outcome = invoke("eval", questions, "--videos", videos, "-o", tmp_path / "out.jsonl", *RUN, "--ray", "local")
    assert_one_line_error(outcome, "pip install 'infinipot[ray]'")
    assert not (tmp_path / "out.jsonl").exists()


def test_ray_flags_without_ray_are_refused(bench, tmp_path):
    questions, videos = bench
    outcome = invoke("eval", questions, "--videos", videos, "-o", tmp_path / "out.jsonl", *RUN, "--ray-workers", "2")
    assert_one_line_error(outcome, "--ray-workers only applies with --ray")


# --- on Ray --------------------------------------------------------------------------------------
def test_ray_local_gives_the_in_process_results_and_reusable_caches(bench, reference, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'infinipot[ray]')")
    questions, videos = bench
    output, caches = tmp_path / "results.jsonl", tmp_path / "caches"
    joined = ray.is_initialized()
    outcome = invoke("eval", questions, "--videos", videos, "-o", output, *RUN, "--ray", "local", *RAY_RUN,
                     "--cache-dir", caches, "--json")
    assert outcome.exit_code == 0, outcome.output
    assert comparable(output) == sorted(reference.values())  # the same file, order and timing aside
    summary = json.loads(outcome.stdout)
    assert summary["answered_now"] == len(QUESTIONS) and summary["videos"]["done"] == 4
    assert summary["failed"] == {"questions": 0, "videos": 0}
    assert len(summary["ray"]["workers"]) == 2 and sum(w["videos"] for w in summary["ray"]["workers"]) == 4
    assert ray.is_initialized() is joined  # the local instance it started is shut down
    assert len(list(caches.glob("*.ipv"))) == 4  # one cache per video, written by the workers

    # The workers' caches answer a rerun's untimed questions without decoding the videos.
    untimed = tmp_path / "untimed.jsonl"
    untimed.write_text("\n".join(json.dumps({"id": f"u{i}", "video": name, "question": "What was there?"})
                                 for i, name in enumerate([LONG, "short1.mp4", "short2.mp4", "short3.mp4"])))
    again = invoke("eval", untimed, "--videos", videos, "-o", tmp_path / "again.jsonl", *RUN, "--cache-dir", caches,
                   "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["videos"]["from_cache"] == 4

    # Resume: the same output again has nothing left to ask, and Ray is not even started.
    rerun = invoke("eval", questions, "--videos", videos, "-o", output, *RUN, "--ray", "local", *RAY_RUN)
    assert rerun.exit_code == 0 and "already answered" in rerun.output
    assert comparable(output) == sorted(reference.values())


@pytest.fixture(scope="module")
def cluster():
    """A Ray instance this process joined before the run (2 CPUs): the run uses it and leaves it running."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'infinipot[ray]')")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_workers_the_cluster_cannot_hold_are_one_line_naming_the_flag(bench, tmp_path, cluster):
    """The module's instance has 2 CPUs and no GPU: a worker asking for a GPU is refused before any start."""
    questions, videos = bench
    outcome = invoke("eval", questions, "--videos", videos, "-o", tmp_path / "out.jsonl", *RUN, "--ray", "auto",
                     "--gpus-per-worker", "1")
    assert_one_line_error(outcome, "0 GPUs", "--gpus-per-worker")
    assert not (tmp_path / "out.jsonl").exists() and cluster.is_initialized()


def run_killing(bench, output: Path, kill_on: set[str], cluster) -> tuple[list, object]:
    """Run over the cluster's 2 workers, killing the worker of the long video at its first answer ("answer")
    and/or when its second try starts ("retry"); returns the events and the evaluation."""
    from infinipot.eval_ray import RayEvaluation, RayOptions
    from infinipot.evaluation import Answered, Evaluation, VideoStarted
    from infinipot.presets import load_preset
    from infinipot.questions import read_questions
    from infinipot.results import ResultLog

    questions, videos = bench
    events, starts = [], 0
    with ResultLog(output) as log:
        evaluation = Evaluation(read_questions(questions), videos, load_preset("tiny"), device="cpu", log=log,
                                ask_options={"max_new_tokens": 2})
        address = cluster.get_runtime_context().gcs_address
        runner = RayEvaluation(evaluation, RayOptions(address, workers=2, cpus_per_worker=1))
        for event in runner.run():
            events.append(event)
            starts += isinstance(event, VideoStarted) and event.video.name == LONG
            first_answer = isinstance(event, Answered) and event.video == LONG and event.record["id"] == "l1"
            second_try = isinstance(event, VideoStarted) and event.video.name == LONG and starts == 2
            if ("answer" in kill_on and first_answer) or ("retry" in kill_on and second_try):
                cluster.kill(runner.worker_of(LONG).handle, no_restart=True)
    assert cluster.is_initialized()  # a cluster it joined is left running
    return events, evaluation


def test_a_killed_worker_loses_no_result_and_its_video_is_streamed_again(bench, reference, tmp_path, cluster):
    from infinipot.eval_ray import WorkerLost

    output = tmp_path / "results.jsonl"
    events, evaluation = run_killing(bench, output, {"answer"}, cluster)
    lost = [event for event in events if isinstance(event, WorkerLost)]
    assert len(lost) == 1 and lost[0].video == LONG and lost[0].dead and lost[0].retried
    assert comparable(output) == sorted(reference.values())  # complete, and the first answer written once
    summary = evaluation.summary.as_dict()
    assert summary["answered_now"] == len(QUESTIONS) and summary["failed"] == {"questions": 0, "videos": 0}
    long = next(report for report in summary["per_video"] if report["video"] == LONG)
    assert long["questions"] == long["answered"] == 4 and "streamed again" in long["warnings"][0]
    assert [w["lost"] is not None for w in summary["ray"]["workers"]].count(True) == 1


def test_a_video_lost_twice_is_failed_and_no_answer_is_lost(bench, reference, tmp_path, cluster):
    from infinipot.evaluation import VideoFailed

    output = tmp_path / "results.jsonl"
    events, evaluation = run_killing(bench, output, {"answer", "retry"}, cluster)
    failed = {event.video: event for event in events if isinstance(event, VideoFailed)}
    assert "both tries" in failed[LONG].message and failed[LONG].questions == 3
    written = {f"{r['video']}/{r['id']}" for r in records(output)}
    assert f"{LONG}/l1" in written and not {f"{LONG}/l2", f"{LONG}/l3", f"{LONG}/l4"} & written
    for video in ("short1.mp4", "short2.mp4", "short3.mp4"):  # done before both workers died, or failed
        keys = {key for key in reference if key.startswith(video + "/")}
        assert keys <= written or (video in failed and "no Ray worker is left" in failed[video].message
                                   and not keys & written)
    assert comparable(output) == sorted(reference[key] for key in written)  # what was written is right
    summary = evaluation.summary.as_dict()
    assert summary["videos"]["failed"] == len(failed) and summary["answered_now"] == len(written)
