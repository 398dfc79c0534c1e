"""Shared by the policy tests: one layer's compression through the Policy API, caches as they look
after 0 to 3 compressions (per-head random subsets, new chunks appended), and the plain reference
written straight from the equations in docs/design.md ("The method")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from infinipot.budget import BudgetPlan
from infinipot.layout import ChunkLayout, VisualLayout
from infinipot.policies import LayerView, make_policy
from infinipot.policies.pooling import pool_plans, pool_value_norms

# ----------------------------------------------------------------------------- calling a policy on one layer


@dataclass(frozen=True)
class PolicySettings:
    """What a test fixes about one layer's compression: recent frames in steps, knobs, the layer's place."""

    recent_frames: int = 1
    tar_ratio: float = 0.5
    pooling: str = "none"
    cv_thresholds: tuple[float, float, float] | None = None
    layer: int = 0
    num_layers: int = 1
    grid: tuple[int, int] = (1, 1)

    def plan(self) -> BudgetPlan:
        """A budget whose frames give exactly `recent_frames` recent steps at recent_ratio 1/8."""
        rows, cols = self.grid
        return BudgetPlan(8 * self.recent_frames * rows * cols, 0, self.grid, 1, 1, compress=True)


def get_policy(name: str):
    """`policy(keys, values, layout, keep, config)` for one layer, through the Policy API."""

    def run(keys, values, layout, keep, config: PolicySettings) -> torch.Tensor:
        policy = make_policy(name, {"recent_ratio": 0.125, "tar_ratio": config.tar_ratio, "pooling": config.pooling,
                                    "cv_thresholds": config.cv_thresholds})
        keys = keys if keys is not None else torch.zeros(*layout.frame.shape, 2)
        values = values if values is not None else torch.zeros(*layout.frame.shape, 2)
        view = LayerView(keys, values, layout, config.layer, config.num_layers, config.plan())
        return policy.select(view, keep, {})

    return run


def pool_for(norms: torch.Tensor, layout: VisualLayout, config: PolicySettings) -> torch.Tensor:
    if config.pooling == "quartile":
        plan = pool_plans("quartile", [norms] * config.num_layers, None, {})[config.layer]
    else:
        plan = pool_plans(config.pooling, [norms], config.cv_thresholds, {})[0]
    return pool_value_norms(norms, layout, plan, config.grid)

# ----------------------------------------------------------------------------- building caches


def chunk(first_frame: int, frames: int, rows: int, cols: int) -> ChunkLayout:
    """A fresh chunk: every cell of every frame, row-major within a frame."""
    frame = torch.arange(first_frame, first_frame + frames).repeat_interleave(rows * cols)
    cell = torch.arange(rows * cols).repeat(frames)
    row, col = cell // cols, cell % cols
    return ChunkLayout(frame=frame, row=row, col=col, position=torch.stack([frame, row, col], dim=-1))


def random_selection(layout: VisualLayout, keep: int, whole_frames: int, gen: torch.Generator) -> torch.Tensor:
    """A per-head random subset of `keep` tokens that holds the `whole_frames` newest frames whole."""
    newest = int(layout.frame.max())
    kept = []
    for head in range(layout.heads):
        protected = (layout.frame[head] > newest - whole_frames).nonzero().flatten()
        others = (layout.frame[head] <= newest - whole_frames).nonzero().flatten()
        chosen = others[torch.randperm(others.numel(), generator=gen)[: keep - protected.numel()]]
        kept.append(torch.cat([protected, chosen]).sort().values)
    return torch.stack(kept)


def simulate(
    heads: int,
    rows: int,
    cols: int,
    compressions: int,
    seed: int,
    first_frames: int = 6,
    chunk_frames: int = 2,
    dim: int = 8,
    keep_fraction: float = 0.6,
) -> tuple[torch.Tensor, torch.Tensor, VisualLayout]:
    """Keys, values and layout of a cache that was compressed `compressions` times (each time
    to a per-head random subset keeping the newest frame whole), with a new chunk appended after
    each compression. float64, so that reference and vectorised scores round alike."""
    gen = torch.Generator().manual_seed(seed)

    def new_tokens(count: int) -> torch.Tensor:
        return torch.randn(heads, count, dim, generator=gen, dtype=torch.float64)

    layout = VisualLayout.for_chunk(heads, chunk(0, first_frames, rows, cols))
    keys, values = new_tokens(layout.tokens), new_tokens(layout.tokens)
    next_frame = first_frames
    for _ in range(compressions):
        kept = random_selection(layout, int(layout.tokens * keep_fraction), 1, gen)
        index = kept.unsqueeze(-1).expand(-1, -1, dim)
        keys, values, layout = keys.gather(1, index), values.gather(1, index), layout.gather(kept)
        fresh = VisualLayout.for_chunk(heads, chunk(next_frame, chunk_frames, rows, cols))
        layout = layout.append(fresh)
        keys = torch.cat([keys, new_tokens(fresh.tokens)], dim=1)
        values = torch.cat([values, new_tokens(fresh.tokens)], dim=1)
        next_frame += chunk_frames
    return keys, values, layout


# ----------------------------------------------------------------------------- the reference


def ref_recent(layout: VisualLayout, recent_frames: int) -> list[list[bool]]:
    newest = max(max(frames) for frames in layout.frame.tolist())
    return [[frame > newest - recent_frames for frame in frames] for frames in layout.frame.tolist()]


def ref_select(scores: list[float], forced: list[bool], keep: int) -> list[int]:
    """Forced tokens first, then by score (highest first), then the earlier token."""
    order = sorted(range(len(scores)), key=lambda t: (not forced[t], -scores[t], t))
    return sorted(order[:keep])


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def ref_tar_scores(keys: torch.Tensor, layout: VisualLayout, recent: list[list[bool]]) -> list[list[float]]:
    all_scores = []
    for head in range(layout.heads):
        head_keys = keys[head].tolist()
        cells = list(zip(layout.row[head].tolist(), layout.col[head].tolist()))
        recent_keys_at: dict[tuple[int, int], list[list[float]]] = {}
        for token, cell in enumerate(cells):
            if recent[head][token]:
                recent_keys_at.setdefault(cell, []).append(head_keys[token])
        scores = []
        for token, cell in enumerate(cells):
            others = recent_keys_at.get(cell, [])
            if recent[head][token] or not others:
                scores.append(0.0)
            else:
                scores.append(-sum(cosine(head_keys[token], other) for other in others) / len(others))
        all_scores.append(scores)
    return all_scores


def ref_pool_kind(norms: list[list[float]], config: PolicySettings) -> tuple[str, int]:
    if config.pooling == "quartile":
        quarter = math.floor(Fraction(config.layer, config.num_layers) * 4)  # which quarter of the layers
        return [("volume", 7), ("spatial", 5), ("sequence", 3), ("none", 1)][quarter]
    if config.pooling == "cv":  # the paper: the lower the CV, the larger the pool
        flat = [n for head in norms for n in head]
        mean = sum(flat) / len(flat)
        std = math.sqrt(sum((n - mean) ** 2 for n in flat) / len(flat))
        cv = std / mean
        t1, t2, t3 = config.cv_thresholds
        size = 7 if cv < t1 else 5 if cv < t2 else 3 if cv < t3 else 1
        return ("spatial", size) if size > 1 else ("none", 1)
    return "none", 1


def ref_van_scores(values: torch.Tensor, layout: VisualLayout, config: PolicySettings) -> list[list[float]]:
    norms = [[math.sqrt(sum(x * x for x in vector)) for vector in head] for head in values.tolist()]
    kind, size = ref_pool_kind(norms, config)
    if kind == "none":
        return norms
    reach = size // 2
    distinct_frames = sorted({f for head in layout.frame.tolist() for f in head})
    dense = {frame: i for i, frame in enumerate(distinct_frames)}
    pooled = []
    for head in range(layout.heads):
        frames = [dense[f] for f in layout.frame[head].tolist()]
        rows, cols = layout.row[head].tolist(), layout.col[head].tolist()
        head_pooled = []
        for t in range(len(frames)):
            neighbours = []
            for u in range(len(frames)):
                if kind == "sequence":
                    near = abs(u - t) <= reach
                else:
                    near_frame = abs(frames[u] - frames[t]) <= reach if kind == "volume" else frames[u] == frames[t]
                    near = near_frame and abs(rows[u] - rows[t]) <= reach and abs(cols[u] - cols[t]) <= reach
                if near:
                    neighbours.append(norms[head][u])
            head_pooled.append(sum(neighbours) / len(neighbours))
        pooled.append(head_pooled)
    return pooled


def ref_policy(name: str, keys, values, layout: VisualLayout, keep: int, config: PolicySettings) -> torch.Tensor:
    recent = ref_recent(layout, config.recent_frames)
    kept = []
    for head in range(layout.heads):
        if name == "tar":
            kept.append(ref_select(ref_tar_scores(keys, layout, recent)[head], recent[head], keep))
        elif name == "van":
            kept.append(ref_select(ref_van_scores(values, layout, config)[head], recent[head], keep))
        else:  # infinipot
            tar_keep = math.floor(Fraction(str(config.tar_ratio)) * keep)
            assert sum(recent[head]) <= tar_keep
            by_tar = ref_select(ref_tar_scores(keys, layout, recent)[head], recent[head], tar_keep)
            taken = [token in by_tar for token in range(layout.tokens)]
            kept.append(ref_select(ref_van_scores(values, layout, config)[head], taken, keep))
    return torch.tensor(kept)


# thresholds that give pools 7, 5, 3 and 1 for any CV between 0.01 and 9
CV_THRESHOLDS = [(9.0, 9.5, 10.0), (0.0, 9.0, 9.5), (0.0, 0.001, 9.0), (0.0, 0.001, 0.002)]

POOLINGS = [
    dict(pooling="none"),
    *[dict(pooling="quartile", layer=layer, num_layers=4) for layer in range(4)],
    *[dict(pooling="cv", cv_thresholds=t) for t in CV_THRESHOLDS[:3]],
    dict(pooling="cv", cv_thresholds=CV_THRESHOLDS[3]),
]
