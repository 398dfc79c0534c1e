"""Budgets: reading what a user states, and the plan that turns settings into a stream's arithmetic.

Everything here needs only the model's token grid and KV size (from its config and processor),
so an impossible combination fails before any weights load.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infinipot.errors import InfinipotError

if TYPE_CHECKING:
    from infinipot.policies import Policy

_TOKEN_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}
_BYTE_SUFFIX = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_BUDGET = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
MAX_BUDGET_TOKENS = 10**9


@dataclass(frozen=True)
class BudgetPlan:
    """How one stream is cut and compressed, given the model's token grid for its frames."""

    budget_tokens: int  # M: visual tokens per layer and KV head before a compression must happen
    keep_tokens: int  # C: what a compression keeps
    grid: tuple[int, int]  # (rows, cols) of one temporal step's token grid
    frame_multiple: int  # video frames per temporal step
    chunk_steps: int  # temporal steps encoded and prefilled at a time
    compress: bool  # False for a policy that never compresses
    # Text tokens a step may bring besides its visual tokens, at most (Qwen3-VL's timestamps;
    # docs/design.md, "Markers"): counted by the budget like any cached token.
    marker_tokens_per_step: int = 0

    @property
    def tokens_per_step(self) -> int:
        """Visual tokens of one temporal step."""
        return self.grid[0] * self.grid[1]

    @property
    def cached_per_step(self) -> int:
        """Cache slots one temporal step may take: its visual tokens and its markers."""
        return self.tokens_per_step + self.marker_tokens_per_step

    @property
    def budget_steps(self) -> int:
        """Temporal steps the budget holds whole."""
        return self.budget_tokens // self.cached_per_step

    @property
    def chunk_frames(self) -> int:
        return self.chunk_steps * self.frame_multiple


def keep_tokens(budget_tokens: int, keep_ratio: float) -> int:
    """C = floor(keep_ratio * M), with a tolerance so 0.29 * 100 does not floor to 28."""
    return min(budget_tokens, math.floor(keep_ratio * budget_tokens + 1e-9))


def smallest_budget(tokens_per_step: int, keep_ratio: float) -> int:
    """The smallest M that leaves room for one temporal step after a compression.

    M - floor(keep_ratio * M) never decreases as M grows (it steps by 0 or 1), so the first M
    that works is the answer; the scan starts just below (tokens - 1) / (1 - keep_ratio).
    """
    budget = max(tokens_per_step, math.floor((tokens_per_step - 1) / (1 - keep_ratio)) - 1)
    while budget - keep_tokens(budget, keep_ratio) < tokens_per_step:
        budget += 1
    return budget


def plan_budget(policy: Policy, budget_tokens: int, keep_ratio: float, chunk_frames: int,
                grid: tuple[int, int], frame_multiple: int, marker_tokens_per_step: int = 0) -> BudgetPlan:
    """Choose the chunk size, or explain in one line why the settings cannot work for this video."""
    tokens = grid[0] * grid[1] + marker_tokens_per_step
    steps_wanted = max(1, chunk_frames // frame_multiple)
    if not policy.compresses:
        return BudgetPlan(budget_tokens, budget_tokens, grid, frame_multiple, steps_wanted, compress=False,
                          marker_tokens_per_step=marker_tokens_per_step)
    keep = keep_tokens(budget_tokens, keep_ratio)
    room = budget_tokens - keep  # tokens a chunk may add before the cache must be compressed again
    if room < tokens:
        if keep_ratio >= 1:
            raise InfinipotError(
                f"`keep_ratio` {keep_ratio:g} keeps the whole budget, leaving no room for new frames: "
                "lower `keep_ratio` below 1 (0.75 is the paper's)"
            )
        raise InfinipotError(
            f"the budget leaves room for {room} new tokens after each compression but one frame holds "
            f"{tokens}: raise `budget` to at least {smallest_budget(tokens, keep_ratio)} or lower `keep_ratio`"
        )
    plan = BudgetPlan(budget_tokens, keep, grid, frame_multiple, min(steps_wanted, room // tokens), compress=True,
                      marker_tokens_per_step=marker_tokens_per_step)
    policy.check(plan)
    return plan


def parse_budget(text: str | int, bytes_per_token: int | None = None) -> int:
    """'6000', '6k' -> tokens; '2GiB', '512MB' -> tokens via bytes_per_token (all layers, K and V)."""
    if isinstance(text, int):
        return _bounded(text, str(text))
    number, unit = _split(text)
    if unit in _TOKEN_SUFFIX:
        return _bounded(int(number * _TOKEN_SUFFIX[unit]), text)
    if bytes_per_token is None:
        raise InfinipotError(f"`budget` {text!r} is memory, which needs the model's KV size: give tokens instead")
    return _bounded(int(number * _BYTE_SUFFIX[unit]) // bytes_per_token, text)


def parse_memory(text: str) -> int:
    """'40GiB', '512MB' -> bytes."""
    number, unit = _split(text)
    if unit not in _BYTE_SUFFIX:
        raise InfinipotError(f"{text!r} is not a memory size: give e.g. 40GiB or 512MB")
    return int(number * _BYTE_SUFFIX[unit])


def normalize_budget(text: str | int) -> int | str:
    """Tokens as an int now; a memory budget stays text until the model's KV size is known."""
    if isinstance(text, int):
        return _bounded(text, str(text))
    _, unit = _split(text)
    return parse_budget(text) if unit in _TOKEN_SUFFIX else text.strip()


def _split(text: str) -> tuple[float, str]:
    raw = text.strip().lower().replace("_", "")
    match = _BUDGET.fullmatch(raw)
    if not match:
        shown = text if len(text) <= 30 else text[:30] + "…"
        raise InfinipotError(f"cannot read `budget` {shown!r}: give tokens (6000, 6k) or memory (2GiB, 512MB)")
    unit = match.group(2)
    if unit not in _TOKEN_SUFFIX and unit not in _BYTE_SUFFIX:
        raise InfinipotError(f"unknown `budget` unit {unit!r} in {text!r}: use k, m, MB, MiB, GB or GiB")
    return float(match.group(1)), unit


def _bounded(tokens: int, text: str) -> int:
    if not 0 < tokens <= MAX_BUDGET_TOKENS:
        raise InfinipotError(
            f"`budget` {text} is {tokens:,} tokens; it must be between 1 and {MAX_BUDGET_TOKENS:,}: "
            "pass e.g. 6000, 6k or 2GiB"
        )
    return tokens
