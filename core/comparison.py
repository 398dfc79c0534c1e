"""What `compare` returns: per policy its answers, accuracy, agreement with `full`, memory, cost and retention.

Plain data, JSON-ready (`as_dict`, `records`), so the CLI renders it and writes it without
touching a tensor. Cost accounting (docs/design.md, "Compare"): the video is decoded and
vision-encoded once for every policy, so a policy's own work is its prefill, its compression
(guidance prompts included) and its answers; its compression share is measured against the
shared encoding plus its own prefill, which is what a run of that policy alone would pay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from infinipot.questions import Accuracy, normalize


@dataclass(frozen=True)
class Retention:
    """What a cache holds of each temporal step of the video (mean over layers and KV heads)."""

    step_seconds: float  # video seconds one temporal step covers
    starts: list[float]  # video time of each step's first frame (the stream's timeline)
    kept: list[float]  # visual tokens of step t kept, mean over layers and heads
    merged: float  # merged tokens (summaries, prototypes), mean over layers and heads

    def per_second(self) -> list[float]:
        """Kept tokens per second of video, one value per temporal step."""
        return [round(tokens / self.step_seconds, 4) for tokens in self.kept]


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    describe: dict  # the policy and its knobs
    records: list[dict]  # one per question, in the questions' order (see `Comparison.records`)
    accuracy: dict  # Accuracy.as_dict(): overall and per category; totals 0 when nothing is scored
    agreement_with_full: float | None  # share of questions answered alike by this policy and `full`
    peak_cached_tokens: int  # visual tokens per layer and KV head, at the most
    peak_kv_bytes: int  # those tokens' keys and values over all layers and heads
    compressions: int
    timings: dict  # this policy's own: prefill_s, compress_s, guidance_s, answer_s (encode_s: own re-encodes)
    compression_share: float  # (compress_s + guidance_s) / (shared encode_s + prefill_s)
    shared_encoding: bool  # every chunk came from the shared encoding (False: positions diverged, re-encoded)
    retention: Retention

    def as_dict(self) -> dict:
        data = asdict(self)
        data["retention"]["per_second"] = self.retention.per_second()
        data.pop("records")
        return data


@dataclass(frozen=True)
class Comparison:
    video: str
    settings: dict  # shared by every policy (`policy` aside)
    policies: list[PolicyResult]
    questions: int
    chunks: int  # chunks decoded and encoded once for all policies
    vision_runs: int  # encodings the vision tower ran (chunks + any re-encodes)
    timings: dict  # decode_s, encode_s (shared), wall_s, separate_estimate_s
    warnings: list[str] = field(default_factory=list)

    @property
    def estimated_saving(self) -> float:
        """N separate runs' estimated time over this run's wall time (from this run's own timings)."""
        wall = self.timings.get("wall_s", 0.0)
        return self.timings.get("separate_estimate_s", 0.0) / wall if wall else 0.0

    def records(self) -> list[dict]:
        """One JSON line per (question, policy), question by question."""
        by_policy = [result.records for result in self.policies]
        return [record for row in zip(*by_policy) for record in row]

    def answers_side_by_side(self) -> list[dict]:
        """Per question: its id, text, expected answer and each policy's answer."""
        rows = []
        for index, first in enumerate(self.policies[0].records if self.policies else []):
            rows.append({"id": first["id"], "question": first["question"], "expected": first.get("expected"),
                         "answers": {result.policy: result.records[index]["answer"] for result in self.policies}})
        return rows

    def as_dict(self) -> dict:
        return {"video": self.video, "settings": self.settings, "questions": self.questions, "chunks": self.chunks,
                "vision_runs": self.vision_runs, "timings": self.timings,
                "estimated_saving": round(self.estimated_saving, 3), "warnings": self.warnings,
                "policies": [result.as_dict() for result in self.policies],
                "answers": self.answers_side_by_side()}


def accuracy_of(records: Sequence[dict]) -> dict:
    tally = Accuracy()
    for record in records:
        tally.add_record(record)
    return tally.as_dict()


def same_answer(mine: dict, theirs: dict) -> bool:
    """Multiple choice: the same letter read back; otherwise the same text once normalised."""
    if "choice" in mine or "choice" in theirs:
        return mine.get("choice") is not None and mine.get("choice") == theirs.get("choice")
    return normalize(mine.get("answer", "")) == normalize(theirs.get("answer", ""))


def agreement(records: Sequence[dict], full: Sequence[dict] | None) -> float | None:
    if full is None or not records:
        return None
    return round(sum(same_answer(mine, theirs) for mine, theirs in zip(records, full)) / len(records), 4)


def compression_share(timings: dict, shared_encode_s: float) -> float:
    work = shared_encode_s + timings.get("prefill_s", 0.0)
    spent = timings.get("compress_s", 0.0) + timings.get("guidance_s", 0.0)
    return round(spent / work, 4) if work else 0.0
