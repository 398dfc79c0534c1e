"""The policy interface, and the selection plumbing every policy shares.

A policy is a small frozen dataclass: its fields are its knobs (checked in `__post_init__`),
`check` refuses a budget it cannot work with before any weights load, and `select` picks which
visual tokens of one layer each KV head keeps. The cache calls `compress` with every layer's
view before it prunes any layer, so a policy that needs all layers' scores first (VaN's CV
pooling calibrates across layers) overrides `compress` instead (docs/design.md, "Policies").

`memory` is a small JSON-able dict the stream keeps for the policy across compressions and
saves with the cache (calibrated thresholds, pool sizes): the policy itself holds no state.

What a policy may ask of the engine beyond keys and values (docs/design.md, "Policies"):
- `guidance()`: prompts the engine runs over the cache before each compression (without keeping
  them); their attention over the cached visual tokens arrives in `LayerView.extras["guidance"]`.
- `compress` may return a `Selection` per layer instead of kept indices: the kept tokens plus
  `MergedTokens`, new tokens the cache builds as weighted sums of cached ones (a summary, a frame
  prototype), marked `merged` in the layout and counted in the budget. Such a policy sets
  `merges`, so the engine has the model's rotary geometry at hand to turn their keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from infinipot.lazy import torch

from infinipot.errors import InfinipotError

if TYPE_CHECKING:
    from infinipot.layout import VisualLayout
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
class MergedTokens:
    """New tokens made from cached ones: key and value are weighted sums of their sources' (docs/design.md, "Policies").

    Every source key is first turned from its own rotary position to `position` (exact: RoPE is a
    rotation), so a merged key is a key made at `position`. Weights of a token sum to 1; padding
    sources carry weight 0.
    """

    sources: torch.Tensor  # [heads, merged, sources] long: token indices of the layer view
    weights: torch.Tensor  # [heads, merged, sources] float
    position: torch.Tensor  # [heads, merged, axes] long: where each merged key is made
    frame: torch.Tensor  # [heads, merged] long: the frame it stands for; -1 for several

    @property
    def count(self) -> int:
        return self.sources.shape[1]


@dataclass(frozen=True)
class Selection:
    """One layer's compression by a merging policy: the cached tokens kept, and the tokens merged in."""

    kept: torch.Tensor  # [heads, keep - merged] long, sorted and unique per head
    merged: MergedTokens | None = None

    @property
    def count(self) -> int:
        return self.kept.shape[1] + (self.merged.count if self.merged is not None else 0)


@dataclass(frozen=True)
class Policy:
    """Base class: subclasses set `name` and `summary`, declare knobs as fields, and write `select`."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help, the README and `infinipot presets`
    compresses: ClassVar[bool] = True
    merges: ClassVar[bool] = False  # compress may return Selections holding MergedTokens

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

    def guidance(self) -> tuple[str, ...]:
        """Prompts (question texts; "" is the chat template's answer turn alone) whose attention this policy needs."""
        return ()

    def compress(self, layers: Sequence[LayerView], keep: int, memory: dict) -> list[torch.Tensor | Selection]:
        """Per layer: kept token indices `[heads, keep]` (sorted, unique per head), or a `Selection` whose
        kept tokens and merged tokens together number `keep` per head (a merging policy)."""
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
