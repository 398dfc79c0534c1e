"""`infinipot eval QUESTIONS --videos DIR -o results.jsonl`: a benchmark's own question file over its videos.

A thin shell over `infinipot.evaluation`: checks the inputs and outputs, then renders the run's
events — a line over the videos (done/total, accuracy so far, ETA) above the stream's own
progress line, one line per missing video or unanswered question — and ends with the accuracy
per category in the benchmark's terms and the run's figures (`--json`: one object).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from infinipot_cli import console
from infinipot_cli.answering import report_problems
from infinipot_cli.display import StreamDisplay
from infinipot_cli.eval_workers import WorkersDisplay, check_ray_flags, lost_line, ray_runner
from infinipot_cli.flags import ANSWER, RAY, STREAM, flagged, with_flags
from infinipot_cli.opening import video_settings
from infinipot_cli.render import format_seconds, plural

FORMAT_NAMES = ("infinipot", "videomme", "mlvu", "longvideobench", "egoschema", "ovobench", "streamingbench", "rvs")


@with_flags(STREAM, ANSWER, RAY)
def eval_command(
    questions: Annotated[Path, typer.Argument(
        metavar="QUESTIONS", help="The benchmark's own question file (Video-MME .parquet/.json, MLVU task .json, "
        "lvb_val.json, EgoSchema questions.json, ovbench.json, StreamingBench questions_*.json, RVS *_oe.json) "
        "or infinipot's .jsonl/.yaml with a `video` per entry.", show_default=False)],
    videos: Annotated[Path, typer.Option(
        "--videos", metavar="DIR", help="Folder holding the videos (found by the file's name or path for them, "
        "also in sub-folders).", show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="FILE", help="Results as JSON lines (.jsonl), one per question as it is answered; "
        "rerunning with the same file skips the questions already answered.", show_default=False)],
    format_name: Annotated[str | None, typer.Option(
        "--format", metavar="FORMAT", help=f"The file's format: {', '.join(FORMAT_NAMES)} (default: recognised "
        "from the file).", show_default=False)] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", metavar="DIR", help="Keep each video's compressed cache here; a rerun answers untimed "
        "questions from it without decoding the video again.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start --output over instead of resuming.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display; the summary only.")] = False,
    *, stream: Any, answer: Any, ray: Any,
) -> None:
    """Answer a benchmark's questions over its videos: each video streamed once, timed questions at their moment.

    Missing or unreadable videos are reported and skipped; the exit code is then 1. With --ray the videos
    are spread over Ray workers (one model each); the results file and the summary are the same.
    """
    from infinipot.benchmarks import read_benchmark
    from infinipot.results import ResultLog, check_output

    check_ray_flags(ray)
    parsed = read_benchmark(questions, format_name)
    inputs = [questions] + ([stream.preset] if stream.preset and Path(stream.preset).is_file() else [])
    check_output(output, inputs)
    with ResultLog(output, overwrite=overwrite) as log:
        evaluation = _evaluation(parsed, videos, cache_dir, log, stream, answer, on_ray=ray.address is not None)
        runner = ray_runner(evaluation, ray) or evaluation  # refusals before any warning
        report_problems(parsed)
        for problem in log.problems:
            console.warning_line(f"{output}: {problem} — that question is asked again")
        _say_resumed(evaluation.summary, output)
        view = EvalView(evaluation, show=not (quiet or as_json), runner=runner)
        with _display(view, runner) as display:
            view.display = display
            try:
                for event in runner.run(on_event=display):
                    view.render(event)
            except KeyboardInterrupt:
                display.close()
                console.note(f"answered {plural(log.written, 'question')} in this run; the results are in {output} "
                             "(rerun with the same --output to resume)")
                raise
    _print_report(evaluation.summary, as_json)


def _evaluation(parsed, videos: Path, cache_dir: Path | None, log, stream: Any, answer: Any, on_ray: bool):
    """The run, planned: settings from the flags, videos found, what is left to ask (no weights loaded).
    On Ray the device is the workers' (this machine may have no GPU)."""
    from infinipot.evaluation import Evaluation
    from infinipot.model import resolve_device

    settings = video_settings(stream)
    if not on_ray:
        resolve_device(stream.device)
    window = {flag.setting: getattr(stream, flag.name) for flag in STREAM.flags
              if flag.target == "open" and getattr(stream, flag.name) is not None}
    ask = {"max_new_tokens": answer.max_new_tokens, "temperature": answer.temperature, "seed": answer.seed,
           "evidence": answer.evidence}
    return Evaluation(parsed, videos, settings, device=stream.device, log=log, cache_dir=cache_dir,
                      ask_options=ask, open_options=window)


def _display(view: EvalView, runner):
    """A stream's display in-process; over Ray, one line per worker."""
    if runner is view.evaluation:
        return StreamDisplay(view.show, heading=view.heading)
    return WorkersDisplay(view.show, view.heading, runner)


def _say_resumed(summary, output: Path) -> None:
    if summary.resumed == summary.questions:
        console.note(f"all {summary.questions} questions are already answered in {output}: nothing to do "
                     "(--overwrite starts over)")
    elif summary.resumed:
        console.note(f"{output} already holds {summary.resumed} of these {summary.questions} answers: skipping "
                     "them (--overwrite starts over)")


class EvalView:
    """Renders an evaluation's events: the line over videos, and one line per thing that went wrong."""

    def __init__(self, evaluation, show: bool, runner=None) -> None:
        self.evaluation = evaluation
        self.runner = runner if runner is not None else evaluation  # a RayEvaluation over Ray
        self.summary = evaluation.summary
        self.total = len(evaluation.videos)
        self.show = show
        self.display: StreamDisplay | None = None
        self.current: tuple[int, str, bool] | None = None  # (index, name, from its kept cache)
        self.finished = 0

    def render(self, event) -> None:
        from infinipot.eval_ray import WorkerLost
        from infinipot.evaluation import Unanswered, VideoFailed, VideoFinished, VideoStarted

        if isinstance(event, WorkerLost):
            console.warning_line(lost_line(event))
        elif isinstance(event, VideoStarted):
            self.current = (event.index, event.video.name, event.from_cache)
            self.display.restart()
            if event.from_cache:
                self.display.refresh()
            if self.show and not self.display.terminal:
                cached = ", from its kept cache" if event.from_cache else ""
                console.note(f"[{event.index}/{event.total}] {event.video.name}{self._on_worker(event.video.name)}: "
                             f"{plural(len(event.video.entries), 'question')} ({event.video.timed} timed){cached}")
        elif isinstance(event, Unanswered):
            console.warning_line(f"question {event.id} of {event.video} not answered: {flagged(event.message)}")
        elif isinstance(event, VideoFailed):
            self.finished, self.current = self.finished + 1, None
            verb = "is" if event.questions == 1 else "are"
            questions = plural(event.questions, "question")
            console.warning_line(f"{flagged(event.message)}; its {questions} {verb} skipped")
        elif isinstance(event, VideoFinished):
            self.finished, self.current = self.finished + 1, None
            for warning in event.report.warnings:
                console.warning_line(f"{event.report.video}: {warning}")
            if self.show and not self.display.terminal:
                console.note(f"[{event.index}/{event.total}] {event.report.video}: {event.report.answered} answered "
                             f"in {format_seconds(event.report.seconds)} · " + self.heading(10_000, name=False))

    def _on_worker(self, video: str) -> str:
        worker = self.runner.worker_of(video) if self.runner is not self.evaluation else None
        return f" on Ray worker {worker.index}" if worker is not None else ""

    def eta(self) -> float | None:
        """Seconds left: the mean time of the videos done so far, times the videos left (over Ray: shared
        among the live workers)."""
        per_video = self.summary.seconds_per_video
        if per_video is None:
            return None
        workers = getattr(self.runner, "workers", None)
        parallel = max(1, sum(worker.alive for worker in workers)) if workers else 1
        return per_video * max(0, self.total - self.finished) / parallel

    def heading(self, width: int, name: bool = True) -> str:
        """The line over videos at `width` columns: done/total, accuracy so far, ETA, the current video."""
        overall = self.summary.accuracy.overall
        eta = self.eta()
        accuracy = f"{overall.accuracy:.1%} ({overall.correct:,}/{overall.total:,})" if overall.total else "–"
        pieces = [f"videos {self.finished:,}/{self.total:,}", f"accuracy {accuracy}",
                  "eta " + (format_seconds(eta) if eta is not None else "…")]
        if name and self.current is not None:
            index, video, from_cache = self.current
            pieces.append(f"now {video}" + (" (kept cache)" if from_cache else ""))
        line = " · ".join(pieces)
        if len(line) >= width and name:  # the video's name is cut first, the numbers never
            room = width - 1 - len(" · ".join(pieces[:-1])) - 3
            line = " · ".join(pieces[:-1]) + (" · " + pieces[-1][: room - 1] + "…" if room > 8 else "")
        return line if len(line) < width else line.replace("accuracy ", "acc ")[: max(0, width - 1)]


def _print_report(summary, as_json: bool) -> None:
    """The accuracy table and the run's figures (or one JSON object); exit 1 when something was not answered."""
    data = summary.as_dict()
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        from infinipot_cli.render import accuracy_table

        out = console.out()
        if summary.accuracy.overall.total:
            out.print(accuracy_table(summary.accuracy))
        out.print(run_table(data))
        if data["judge_note"]:
            console.note(data["judge_note"])
    failed = data["failed"]
    if failed["questions"] or failed["videos"]:
        unanswered = failed["questions"] + sum(v["questions"] for v in data["video_failures"])
        console.error_line(f"{unanswered} of {data['questions']} questions were not answered "
                           f"({plural(failed['videos'], 'video')} missing or unreadable): fix what the lines above "
                           "say and rerun with the same --output to answer only those")
        raise typer.Exit(1)


def run_table(data: dict):
    """The run's figures: questions, videos, skipped, failed, peak cached tokens, time per video."""
    from rich.table import Table

    table = Table(title=f"eval: {Path(data['benchmark']).name} ({data['format']})", title_justify="left",
                  show_header=False)
    table.add_column("what")
    table.add_column("figures", overflow="fold")
    skipped, failed, videos, seconds = data["skipped"], data["failed"], data["videos"], data["seconds"]
    table.add_row("questions", f"{data['questions']:,}: {data['answered']:,} answered ({data['answered_now']:,} in "
                  f"this run), {data['judge']:,} for a judge")
    table.add_row("skipped", f"{skipped['already_answered']:,} already answered, {skipped['malformed']:,} malformed")
    table.add_row("failed", f"{plural(failed['questions'], 'question')}, {plural(failed['videos'], 'video')}")
    table.add_row("videos", f"{videos['done']:,} of {videos['total']:,} done in this run ({videos['from_cache']:,} "
                  f"from kept caches), {videos['done_before']:,} earlier")
    table.add_row("peak cached tokens", f"{data['peak_cached_tokens']:,}")
    per_video = seconds["per_video"]
    table.add_row("time", f"{format_seconds(seconds['total'])} in all, "
                  + (f"{per_video:.1f} s per video" if per_video is not None else "no video streamed")
                  + (f", {seconds['loading']:.1f} s loading the model" if seconds["loading"] else ""))
    if data.get("ray"):
        table.add_row("ray", _ray_row(data["ray"]))
    if data["output"]:
        table.add_row("results", data["output"])
    return table


def _ray_row(ray: dict) -> str:
    """Over Ray: the workers, where they ran, how many videos each took, how many were lost."""
    workers = ray["workers"]
    lost = sum(worker["lost"] is not None for worker in workers)
    places = sorted({worker["place"] for worker in workers if worker["place"]})
    videos = ", ".join(f"{worker['videos']}" for worker in workers)
    return (f"{plural(len(workers), 'worker')} ({ray['address']}) on {plural(len(places), 'node')}: videos "
            f"{videos}" + (f"; {lost} lost" if lost else ""))
