"""What an evaluation run adds up to: per-video reports, accuracy in the benchmark's terms, counts.

`EvalSummary` is fed every event of `Evaluation.run` (infinipot.evaluation) and says, at any
point, how many questions and videos are done, skipped or failed, the accuracy so far (the
results an earlier run wrote into the same log included), the peak cached tokens and the time
per video. `as_dict()` is the JSON shape `infinipot eval --json` prints.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from infinipot.questions import Accuracy


@dataclass
class VideoReport:
    """One video's run: its questions, what became of them, what streaming it cost."""

    video: str
    questions: int  # asked in this run (the ones an earlier run answered are not counted)
    answered: int = 0
    failed: int = 0
    seconds: float = 0.0  # wall time for the video, the model's loading left out
    frames: int = 0
    peak_cached_tokens: int = 0
    from_cache: bool = False  # answered from a kept cache: the video was not decoded
    cache: str | None = None  # the cache file kept for it (or read)
    warnings: list[str] = field(default_factory=list)


@dataclass
class EvalSummary:
    """Counts and accuracy of one run over a benchmark file (see the module docstring)."""

    benchmark: str
    format: str
    questions: int  # usable entries in the file
    videos: int  # distinct videos they name
    malformed: list[dict] = field(default_factory=list)  # entries skipped as unreadable: where and why
    resumed: int = 0  # answered by an earlier run into the same log: skipped
    videos_before: int = 0  # videos whose questions an earlier run answered all of
    output: str | None = None
    accuracy: Accuracy = field(default_factory=Accuracy)
    judge: int = 0  # open-ended answers, written with their reference for a judge
    answered_now: int = 0
    failed: list[dict] = field(default_factory=list)  # questions not answered: video, id, message
    video_failures: list[dict] = field(default_factory=list)  # videos missing or unreadable: video, message
    reports: list[VideoReport] = field(default_factory=list)
    loading_seconds: float = 0.0  # over Ray: the slowest worker's start (they load side by side)
    started: float = field(default_factory=time.perf_counter)
    ray: dict | None = None  # over Ray (infinipot.eval_ray): the cluster and each worker's videos

    def add_record(self, record: dict) -> None:
        """Count one result (this run's, or an earlier run's read back from the log)."""
        self.accuracy.add_record(record)
        if record.get("scoring") == "judge":
            self.judge += 1

    @property
    def videos_done(self) -> int:
        return len(self.reports)

    @property
    def peak_cached_tokens(self) -> int:
        return max((report.peak_cached_tokens for report in self.reports), default=0)

    @property
    def seconds_per_video(self) -> float | None:
        return sum(r.seconds for r in self.reports) / len(self.reports) if self.reports else None

    @property
    def judge_note(self) -> str | None:
        """The sentence a summary owes open-ended benchmarks (RVS): their answers are not scored here."""
        if not self.judge:
            return None
        where = f" in {self.output}" if self.output else ""
        return (f"{self.judge:,} open-ended answers are written{where} with their reference answer for a judge "
                "to score later; they are not in the accuracy")

    def as_dict(self) -> dict:
        """The run as one JSON object."""
        return {
            "benchmark": self.benchmark, "format": self.format, "output": self.output,
            "questions": self.questions,
            "answered": self.resumed + self.answered_now, "answered_now": self.answered_now,
            "skipped": {"already_answered": self.resumed, "malformed": len(self.malformed)},
            "failed": {"questions": len(self.failed), "videos": len(self.video_failures)},
            "videos": {"total": self.videos, "done": self.videos_done, "done_before": self.videos_before,
                       "from_cache": sum(r.from_cache for r in self.reports), "failed": len(self.video_failures)},
            "accuracy": self.accuracy.as_dict(),
            "judge": self.judge, "judge_note": self.judge_note,
            "peak_cached_tokens": self.peak_cached_tokens,
            "seconds": {"total": round(time.perf_counter() - self.started, 3),
                        "loading": round(self.loading_seconds, 3),
                        "per_video": None if self.seconds_per_video is None else round(self.seconds_per_video, 3)},
            "per_video": [asdict(report) for report in self.reports],
            "failures": self.failed, "video_failures": self.video_failures, "malformed": self.malformed,
            **({"ray": self.ray} if self.ray is not None else {}),
        }
