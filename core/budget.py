"""Compression settings, and the arithmetic that turns them into a plan for one video.

All checks that need no model happen here, so an impossible combination fails before any
weights are loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from infinipot.errors import InfinipotError
from infinipot.policies import POLICY_NAMES
from infinipot.policies.infinipot import tar_share

POOLINGS = ("none", "quartile", "spread")
# Policies that keep the newest frames whole and so need room for them.
RECENT_POLICIES = ("tar", "van", "infinipot")

_TOKEN_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}
_BYTE_SUFFIX = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


@dataclass(frozen=True)
class CompressionSettings:
    """What the user asked for. `budget_tokens` counts visual tokens per layer and KV head (M)."""

    policy: str = "infinipot"
    budget_tokens: int = 6000
    keep_ratio: float = 0.75  # C / M
    recent_ratio: float = 0.125  # r: share of the budget's frames kept whole
    tar_ratio: float = 0.5  # alpha: share of C chosen by TaR
    pooling: str = "none"
    spread_thresholds: tuple[float, float, float] = (0.6, 0.4, 0.2)
    chunk_frames: int = 16

    def validate(self) -> None:
        if self.policy not in POLICY_NAMES:
            raise InfinipotError(f"unknown policy {self.policy!r}: choose one of {', '.join(POLICY_NAMES)}")
        if self.budget_tokens <= 0:
            raise InfinipotError(f"budget must be positive, got {self.budget_tokens}: pass e.g. --budget 6000")
        for name, flag in (("keep_ratio", "--keep-ratio"), ("recent_ratio", "--recent"), ("tar_ratio", "--tar-ratio")):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise InfinipotError(f"{name} must be in (0, 1], got {value}: fix {flag}")
        if self.pooling not in POOLINGS:
            raise InfinipotError(f"unknown pooling {self.pooling!r}: choose one of {', '.join(POOLINGS)}")
        if self.chunk_frames <= 0:
            raise InfinipotError(f"chunk_frames must be positive, got {self.chunk_frames}")

    @property
    def keep_tokens(self) -> int:
        return int(self.keep_ratio * self.budget_tokens)


@dataclass(frozen=True)
class StreamPlan:
    """How one video is cut and compressed, given its token grid."""

    tokens_per_frame: int  # p: tokens of one temporal grid step
    chunk_steps: int  # temporal grid steps per chunk
    recent_frames: int  # r, in temporal grid steps
    compress: bool  # False for the `full` policy


def plan_stream(settings: CompressionSettings, tokens_per_frame: int, frame_multiple: int) -> StreamPlan:
    """Choose the chunk size and recent-frame count, or explain why the settings cannot work."""
    settings.validate()
    steps_wanted = max(1, settings.chunk_frames // frame_multiple)
    if settings.policy == "full":
        return StreamPlan(tokens_per_frame, steps_wanted, 0, compress=False)
    budget, keep = settings.budget_tokens, settings.keep_tokens
    room = budget - keep  # tokens a chunk may add before the cache must be compressed again
    if room < tokens_per_frame:
        raise InfinipotError(
            f"the budget leaves room for {room} new tokens after each compression but one frame holds "
            f"{tokens_per_frame}: raise --budget to at least {-(-tokens_per_frame // (1 - settings.keep_ratio))} "
            "or lower --keep-ratio"
        )
    chunk_steps = min(steps_wanted, room // tokens_per_frame)
    recent = max(1, int(settings.recent_ratio * (budget // tokens_per_frame)))
    if settings.policy in RECENT_POLICIES:
        tar_keep = tar_share(keep, settings.tar_ratio) if settings.policy == "infinipot" else keep
        if recent * tokens_per_frame > tar_keep:
            raise InfinipotError(
                f"the {recent} recent frames hold {recent * tokens_per_frame} tokens but TaR keeps only "
                f"{tar_keep}: raise --tar-ratio or --keep-ratio or --budget, or lower --recent"
            )
    return StreamPlan(tokens_per_frame, chunk_steps, recent, compress=True)


def parse_budget(text: str | int, bytes_per_token: int | None = None) -> int:
    """'6000', '6k' -> tokens; '2GiB', '512MB' -> tokens via bytes_per_token (all layers, K and V)."""
    if isinstance(text, int):
        return text
    raw = text.strip().lower().replace("_", "")
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*([a-z]*)", raw)
    if not match:
        raise InfinipotError(f"cannot read budget {text!r}: give tokens (6000, 6k) or memory (2GiB, 512MB)")
    number, unit = float(match.group(1)), match.group(2)
    if unit in _TOKEN_SUFFIX:
        return int(number * _TOKEN_SUFFIX[unit])
    if unit in _BYTE_SUFFIX:
        if bytes_per_token is None:
            raise InfinipotError(f"budget {text!r} is memory, which needs the model's KV size: give tokens instead")
        return int(number * _BYTE_SUFFIX[unit]) // bytes_per_token
    raise InfinipotError(f"unknown budget unit {match.group(2)!r} in {text!r}: use k, MB, MiB, GB or GiB")
