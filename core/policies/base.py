"""The policy interface, and the selection plumbing every policy shares.

A policy is a small frozen dataclass: its fields are its knobs (checked in `__post_init__`),
`check` refuses a budget it cannot work with before any weights load, and `select` picks which
visual tokens of one layer each KV head keeps. The cache calls `compress` with every layer's
view before it prunes any layer, so a policy that needs all layers' scores first (VaN's CV
pooling calibrates across layers) overrides `compress` instead (docs/design.md, "Policies").

`memory` is a small JSON-able dict the stream keeps for the policy across compressions and
saves with the cache (calibrated thresholds, pool sizes): the policy itself holds no state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from infinipot.errors import InfinipotError
from infinipot.layout import VisualLayout

if TYPE_CHECKING:
    from infinipot.budget import BudgetPlan


@dataclass(frozen=True)
class LayerView:
    """One layer's cached visual tokens, as a policy sees them (the prefix is never included)."""

    keys: torch.Tensor  # [heads, tokens, dim] post-RoPE
    values: torch.Tensor  # [heads, tokens, dim]
    layout: VisualLayout
    index: int  # layer index
    num_layers: int
    plan: BudgetPlan
    # What a policy computed across all layers before selecting in this one (VaN's pool plan),
    # and what the engine provides on request (docs/design.md, "Policies").
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """Base class: subclasses set `name` and `summary`, declare knobs as fields, and write `select`."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help, the README and `infinipot presets`
    compresses: ClassVar[bool] = True

    @classmethod
    def knobs(cls) -> dict[str, Any]:
        """Knob name -> type, from the dataclass fields."""
        import typing

        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_knobs(cls, knobs: Mapping[str, Any]) -> Policy:
        """This policy with the knobs it declares taken from `knobs` (others are for other policies)."""
        own = {name: value for name, value in knobs.items() if name in cls.knobs()}
        return cls(**own)

    def describe(self) -> dict:
        return {"policy": self.name, **dataclasses.asdict(self)}

    def check(self, plan: BudgetPlan) -> None:
        """Raise InfinipotError when this policy cannot work with `plan` (no weights needed)."""

    def compress(self, layers: Sequence[LayerView], keep: int, memory: dict) -> list[torch.Tensor]:
        """Kept token indices per layer, `[heads, keep]` each, sorted and unique per head."""
        return [self.select(layer, keep, memory) for layer in layers]

    def select(self, layer: LayerView, keep: int, memory: dict) -> torch.Tensor:  # [heads, keep] long
        raise NotImplementedError


def check_ratio(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise InfinipotError(f"`{name}` must be in (0, 1], got {value:g}")


def recent_mask(layout: VisualLayout, recent_frames: int) -> torch.Tensor:
    """True for tokens of the `recent_frames` newest temporal steps in this layer. [heads, tokens] bool"""
    newest = layout.frame.max()
    return layout.frame > newest - recent_frames


def select_forced_then_topk(
    scores: torch.Tensor,  # [heads, tokens] float
    forced: torch.Tensor,  # [heads, tokens] bool: kept whatever their score
    keep: int,
) -> torch.Tensor:  # [heads, keep] long, sorted ascending
    """Keep every `forced` token, then the highest-scoring others, `keep` per head in all.

    Ties go to the earlier token. The caller guarantees at most `keep` forced tokens per head.
    """
    if keep > scores.shape[-1]:
        raise ValueError(f"cannot keep {keep} of {scores.shape[-1]} tokens")
    # Forced tokens rank at +inf, every score is clamped below that, and one stable sort ranks
    # the rest: a forced token outranks any score, and equal scores keep their original order.
    finite = scores.clamp(max=torch.finfo(scores.dtype).max)
    ranked = finite.masked_fill(forced, float("inf"))
    chosen = torch.sort(ranked, dim=-1, descending=True, stable=True).indices[..., :keep]
    # Back to original order without a second sort: mark the chosen slots, read them in order.
    marked = torch.zeros_like(forced).scatter_(-1, chosen, True)
    return marked.nonzero()[:, -1].view(*scores.shape[:-1], keep)


def scoring_dtype(tensor: torch.Tensor) -> torch.dtype:
    """Score in at least float32 (half-precision norms and dot products lose ties and overflow)."""
    return torch.promote_types(tensor.dtype, torch.float32)


def grid_size(layout: VisualLayout, grid: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the frame grid: the stream's grid, grown to fit any cell in the layout."""
    rows, cols = grid
    if layout.tokens:
        rows = max(rows, int(layout.row.max()) + 1)
        cols = max(cols, int(layout.col.max()) + 1)
    return rows, cols


def check_recent_fits(recent: torch.Tensor, budget: int, budget_name: str, fix: str) -> None:
    """Raise when some head's recent tokens ([heads, tokens] bool) exceed `budget`."""
    most = int(recent.sum(dim=-1).max()) if recent.numel() else 0
    if most > budget:
        raise InfinipotError(f"the recent frames hold {most} tokens but {budget_name} keeps only {budget}: {fix}")
