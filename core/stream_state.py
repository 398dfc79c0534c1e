"""Where a stream stands, in one object: owned by its session, saved with its cache.

Everything a session needs to answer from its cache, or to go on streaming into it, is here:
the prompt prefix, the budget plan, the adapter's position state, the policy's memory, the
conversation and the running figures. A cache file stores it as one JSON document beside the
tensors (infinipot.cache_file).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from infinipot.adapters.base import PositionState
from infinipot.answer import Answer
from infinipot.budget import BudgetPlan
from infinipot.timeline import Timeline

TIMINGS = ("decode_s", "decode_wait_s", "encode_s", "prefill_s", "compress_s", "guidance_s")


@dataclass
class StreamStats:
    """Running figures of a stream (shown by progress displays, --json and `info`)."""

    frames: int = 0  # video frames in the model so far
    video_seconds: float = 0.0  # video time covered since the window's start
    visual_tokens_seen: int = 0
    budget_tokens: int = 0
    keep_tokens: int = 0
    peak_cached_tokens: int = 0
    compressions: int = 0
    tokens_evicted: int = 0
    skipped_seconds: float = 0.0  # unreadable video the source skipped
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMINGS, 0.0))
    # Per compression cycle: (seconds compressing, seconds encoding + prefilling since the last one).
    cycles: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The summary figures (per-cycle timings left out: they grow with the video)."""
        data = dataclasses.asdict(self)
        data.pop("cycles")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> StreamStats:
        known = {f.name for f in dataclasses.fields(cls)} - {"cycles"}
        stats = cls(**{key: value for key, value in data.items() if key in known})
        stats.timings = {**dict.fromkeys(TIMINGS, 0.0), **stats.timings}
        return stats


@dataclass
class StreamState:
    """One stream's state; see the module docstring."""

    prefix_ids: list[int]
    plan: BudgetPlan
    positions: PositionState
    position_mode: str  # original | compact
    sample_fps: float  # frames per second of video the model sees
    start_seconds: float = 0.0  # video time of the first frame's window
    stats: StreamStats = field(default_factory=StreamStats)
    policy_memory: dict[str, Any] = field(default_factory=dict)  # JSON-able, the policy's across compressions
    turns: list[Answer] = field(default_factory=list)  # a conversation kept in the cache (chat)
    next_turn_start: int | None = None  # position of the next chat turn's first token
    source: dict[str, Any] = field(default_factory=dict)  # what was streamed (name, fingerprint, sampling)
    timeline: Timeline | None = None  # video time of each temporal step (infinipot.timeline); made if None

    def __post_init__(self) -> None:
        if self.timeline is None:
            self.timeline = Timeline(self.plan.frame_multiple / self.sample_fps, self.plan.frame_multiple)

    @property
    def prefix_len(self) -> int:
        return len(self.prefix_ids)

    @property
    def asked_at(self) -> float:
        """Video time (seconds) the stream has reached."""
        return self.start_seconds + self.stats.video_seconds

    def as_dict(self) -> dict:
        plan = dataclasses.asdict(self.plan)
        plan["grid"] = list(plan["grid"])
        return {
            "prefix_ids": list(self.prefix_ids), "plan": plan, "positions": self.positions.as_dict(),
            "position_mode": self.position_mode, "sample_fps": self.sample_fps, "start_seconds": self.start_seconds,
            "stats": self.stats.as_dict(), "policy_memory": self.policy_memory,
            "turns": [dataclasses.asdict(turn) for turn in self.turns], "next_turn_start": self.next_turn_start,
            "source": self.source, "timeline": self.timeline.as_list(),
        }

    @classmethod
    def from_dict(cls, data: dict, positions: PositionState) -> StreamState:
        """Rebuild from `as_dict` (the adapter rebuilds `positions`, whose class is its own)."""
        plan = dict(data["plan"])
        plan["grid"] = tuple(plan["grid"])
        return cls(
            prefix_ids=[int(token) for token in data["prefix_ids"]], plan=BudgetPlan(**plan), positions=positions,
            position_mode=data["position_mode"], sample_fps=float(data["sample_fps"]),
            start_seconds=float(data.get("start_seconds", 0.0)), stats=StreamStats.from_dict(data["stats"]),
            policy_memory=dict(data.get("policy_memory") or {}),
            turns=[Answer(**turn) for turn in data.get("turns", [])], next_turn_start=data.get("next_turn_start"),
            source=dict(data.get("source") or {}), timeline=Timeline.from_saved(data, positions.steps),
        )
