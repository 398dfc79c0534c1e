"""Compression policies: a plain reference implementation, invariants, and planted structure.

The reference below is written straight from the equations in docs/design.md ("The method") with Python
loops over heads and tokens. The vectorised policies must pick exactly the same tokens on
layouts that look like a cache after 0 to 3 compressions (each head keeping its own,
scrambled set of cells).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from infinipot.budget import BudgetPlan
from infinipot.errors import InfinipotError
from infinipot.layout import ChunkLayout, VisualLayout
from infinipot.policies import POLICIES, LayerView, make_policy
from infinipot.policies.infinipot import tar_share
from infinipot.policies.pooling import calibrate_thresholds, cv_pool_size, layer_cv, pool_plans, pool_value_norms
from infinipot.policies.tar import tar_scores

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


# ----------------------------------------------------------------------------- agreement with the reference

# (heads, rows, cols, compressions, chunk_frames, recent_frames at the test, seed)
CACHES = [
    (1, 3, 4, 0, 2, 1, 0),
    (2, 4, 5, 1, 2, 2, 1),
    (4, 3, 4, 2, 2, 2, 2),
    (2, 2, 7, 3, 1, 3, 3),  # the 3rd newest frame was cut by a compression: recent counts differ per head
    (4, 5, 3, 3, 2, 1, 4),
]

# thresholds that give pools 7, 5, 3 and 1 for any CV between 0.01 and 9
CV_THRESHOLDS = [(9.0, 9.5, 10.0), (0.0, 9.0, 9.5), (0.0, 0.001, 9.0), (0.0, 0.001, 0.002)]

POOLINGS = [
    dict(pooling="none"),
    *[dict(pooling="quartile", layer=layer, num_layers=4) for layer in range(4)],
    *[dict(pooling="cv", cv_thresholds=t) for t in CV_THRESHOLDS[:3]],
    dict(pooling="cv", cv_thresholds=CV_THRESHOLDS[3]),
]


@pytest.mark.parametrize("cache", CACHES, ids=lambda c: f"h{c[0]}-{c[1]}x{c[2]}-c{c[3]}-r{c[5]}")
def test_vectorised_policies_match_reference(cache):
    heads, rows, cols, compressions, chunk_frames, recent_frames, seed = cache
    keys, values, layout = simulate(heads, rows, cols, compressions, seed, chunk_frames=chunk_frames)
    recent_counts = [sum(flags) for flags in ref_recent(layout, recent_frames)]
    if compressions == 3 and recent_frames == 3:
        assert len(set(recent_counts)) > 1, "this cache must hold a partially kept recent frame"
    keep = max(int(layout.tokens * 0.6), max(recent_counts) + 4)
    assert keep < layout.tokens
    # the smallest TaR share that holds the recent frames
    tar_ratio = next(a for a in (0.5, 0.625, 0.75, 0.875, 1.0) if math.floor(a * keep) >= max(recent_counts))
    checked = 0
    for pooling in POOLINGS:
        config = PolicySettings(recent_frames=recent_frames, tar_ratio=tar_ratio, grid=(rows, cols), **pooling)
        for name in ("tar", "van", "infinipot"):
            if name == "tar" and pooling["pooling"] != "none":
                continue  # TaR ignores pooling
            expected = ref_policy(name, keys, values, layout, keep, config)
            actual = get_policy(name)(keys, values, layout, keep, config)
            assert torch.equal(actual, expected), f"{name} {pooling}"
            checked += 1
    assert checked == 1 + 2 * len(POOLINGS)


@pytest.mark.parametrize("cache", CACHES, ids=lambda c: f"h{c[0]}-{c[1]}x{c[2]}-c{c[3]}-r{c[5]}")
def test_tar_scores_match_reference_values(cache):
    """Scores, not just rankings: a sum instead of a mean over the recent frames ranks alike
    when every cell has the same number of recent tokens, but not when a recent frame was cut."""
    heads, rows, cols, compressions, chunk_frames, recent_frames, seed = cache
    keys, _, layout = simulate(heads, rows, cols, compressions, seed, chunk_frames=chunk_frames)
    recent = ref_recent(layout, recent_frames)
    expected = torch.tensor(ref_tar_scores(keys, layout, recent), dtype=torch.float64)
    actual = tar_scores(keys, layout, torch.tensor(recent), (rows, cols))
    assert torch.allclose(actual, expected, rtol=0, atol=1e-12)


def test_reference_pooling_sizes_are_all_exercised():
    """The cv thresholds above really select pool sizes 7, 5, 3 and 1 (else the test proves less)."""
    _, values, _ = simulate(2, 3, 4, 1, seed=5)
    cv = layer_cv(values.norm(dim=-1))
    assert [cv_pool_size(cv, t) for t in CV_THRESHOLDS] == [7, 5, 3, 1]


# ----------------------------------------------------------------------------- invariants (hypothesis)

PROMISE_RECENT = ("recent", "tar", "van", "infinipot")  # uniform spaces tokens evenly, recent or not


@st.composite
def caches(draw):
    heads = draw(st.sampled_from([1, 2, 4]))
    rows, cols = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    compressions = draw(st.integers(0, 3))
    chunk_frames = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 10_000))
    keys, values, layout = simulate(heads, rows, cols, compressions, seed, chunk_frames=chunk_frames, dim=4)
    recent_frames = draw(st.integers(1, 3))
    most_recent = int((layout.frame > layout.frame.max() - recent_frames).sum(dim=-1).max())
    assume(2 * most_recent <= layout.tokens)
    # keep >= 2 * recent tokens, so the TaR share (alpha >= 0.5) always holds the recent frames
    keep = draw(st.integers(min(2 * most_recent, layout.tokens), layout.tokens))
    pooling = draw(st.sampled_from(["none", "quartile", "cv"]))
    layer = draw(st.integers(0, 7))
    config = PolicySettings(
        recent_frames=recent_frames,
        tar_ratio=draw(st.sampled_from([0.5, 0.625, 0.75, 1.0])),
        pooling=pooling,
        cv_thresholds=draw(st.sampled_from(CV_THRESHOLDS)) if pooling == "cv" else None,
        layer=layer,
        num_layers=8,
        grid=(rows, cols),
    )
    return keys, values, layout, keep, config


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cache=caches())
def test_every_policy_keeps_exactly_keep_sorted_unique_and_deterministic(cache):
    keys, values, layout, keep, config = cache
    recent = layout.frame > layout.frame.max() - config.recent_frames
    for name in POLICIES:
        if not POLICIES[name].compresses:
            continue
        policy = get_policy(name)
        kept = policy(keys, values, layout, keep, config)
        assert kept.shape == (layout.heads, keep), name
        assert kept.dtype == torch.long, name
        assert bool((kept >= 0).all()) and bool((kept < layout.tokens).all()), name
        assert bool((kept[:, 1:] > kept[:, :-1]).all()), f"{name}: not strictly increasing (sorted and unique)"
        assert torch.equal(kept, policy(keys.clone(), values.clone(), layout, keep, config)), name
        if name in PROMISE_RECENT:
            kept_mask = torch.zeros_like(recent).scatter_(1, kept, True)
            assert bool(kept_mask[recent].all()), f"{name} dropped a recent token"


# ----------------------------------------------------------------------------- planted structure


def moving_object_cache(seed: int = 0):
    """A static background (one key per cell, tiny noise) with a 2x2 object that moves one
    column per frame and changes its look every frame. The older frames are compressed to
    per-head random subsets (the last two kept whole), so each head's slots are scrambled and
    slot i no longer sits at the cell of the recent frame's slot i."""
    heads, rows, cols, frames, dim = 2, 5, 10, 8, 32
    gen = torch.Generator().manual_seed(seed)
    background = torch.randn(heads, rows * cols, dim, generator=gen, dtype=torch.float64)
    layout = VisualLayout.for_chunk(heads, chunk(0, frames, rows, cols))
    noise = torch.randn(heads, layout.tokens, dim, generator=gen, dtype=torch.float64)
    keys = background.repeat(1, frames, 1) + 0.01 * noise
    on_object = (layout.row >= 1) & (layout.row <= 2) & (layout.col >= layout.frame) & (layout.col <= layout.frame + 1)
    keys[on_object] = torch.randn(int(on_object.sum()), dim, generator=gen, dtype=torch.float64)
    # compress the first 6 frames to a scrambled per-head subset, keep the last 2 frames whole
    kept = random_selection(layout, layout.tokens - 100, 2, gen)
    keys = keys.gather(1, kept.unsqueeze(-1).expand(-1, -1, dim))
    return keys, layout.gather(kept), on_object.gather(1, kept)


def test_tar_keeps_the_moving_object_over_the_static_background():
    keys, layout, on_object = moving_object_cache()
    config = PolicySettings(recent_frames=1, grid=(5, 10))
    recent = layout.frame == layout.frame.max()
    recent_object_cells = {(1, 7), (1, 8), (2, 7), (2, 8)}
    for head in range(layout.heads):
        cells = list(zip(layout.row[head].tolist(), layout.col[head].tolist()))
        # new relative to now: the object where it was, and the background where the object is now
        changed = [
            not recent[head, t] and (bool(on_object[head, t]) or cells[t] in recent_object_cells)
            for t in range(layout.tokens)
        ]
        keep = int(recent[head].sum()) + sum(changed)
        kept = get_policy("tar")(keys[head : head + 1], None, _head(layout, head), keep, config)[0].tolist()
        older_kept = {t for t in kept if not recent[head, t]}
        assert older_kept == {t for t, flag in enumerate(changed) if flag}
        assert any(on_object[head, t] for t in older_kept)


def _head(layout: VisualLayout, head: int) -> VisualLayout:
    pick = slice(head, head + 1)
    return VisualLayout(
        layout.frame[pick], layout.row[pick], layout.col[pick], layout.position[pick], layout.merged[pick],
        layout.marker[pick],
    )


def test_van_keeps_planted_large_value_norms():
    _, values, layout = simulate(2, 4, 4, 1, seed=7, dim=16)
    values = values * 0.1
    recent = layout.frame == layout.frame.max()
    gen = torch.Generator().manual_seed(1)
    planted = torch.zeros_like(recent)
    for head in range(layout.heads):  # a different planted set per head
        older = (~recent[head]).nonzero().flatten()
        planted[head, older[torch.randperm(older.numel(), generator=gen)[:7]]] = True
    values[planted] *= 50
    keep = int(recent[0].sum()) + 7
    kept = get_policy("van")(None, values, layout, keep, PolicySettings(recent_frames=1, grid=(4, 4)))
    expected = (recent | planted).nonzero()[:, 1].view(layout.heads, keep)
    assert torch.equal(kept, expected)


def test_infinipot_takes_the_moving_object_by_tar_and_the_salient_tokens_by_van():
    keys, layout, on_object = moving_object_cache(seed=3)
    layout, keys, on_object = _head(layout, 0), keys[:1], on_object[:1]
    recent = layout.frame == layout.frame.max()
    values = torch.ones_like(keys)  # all value norms equal ...
    static_older = (~recent & ~on_object & (layout.col < 6)).nonzero()[:, 1]
    salient = static_older[[3, 17, 40, 90]]
    values[0, salient] *= 10  # ... but four static background tokens
    under_object_now = (layout.col >= 7) & (layout.col <= 8) & (layout.row >= 1) & (layout.row <= 2)
    changed = int((~recent & (on_object | under_object_now)).sum())
    tar_keep = int(recent.sum()) + changed
    keep = tar_keep + 4
    config = PolicySettings(recent_frames=1, tar_ratio=tar_keep / keep, grid=(5, 10))
    assert tar_share(keep, config.tar_ratio) == tar_keep
    kept = set(get_policy("infinipot")(keys, values, layout, keep, config)[0].tolist())
    assert set(salient.tolist()) <= kept, "VaN share must take the planted large norms"
    assert set(on_object[0].nonzero().flatten().tolist()) <= kept, "TaR share must take the moving object"
    # the split matters: TaR alone would not keep the planted norms
    assert not set(salient.tolist()) <= set(get_policy("tar")(keys, values, layout, keep, config)[0].tolist())


def block_and_spikes():
    """Norm 1 everywhere, a 5x5x5 block of norm 3 (frames 2-6, rows 2-6, cols 2-6) and
    isolated spikes of norm 6; grid 9x9, frames 0-9, the newest frame is recent."""
    rows = cols = 9
    layout = VisualLayout.for_chunk(1, chunk(0, 10, rows, cols))
    frame, row, col = layout.frame[0], layout.row[0], layout.col[0]
    norms = torch.ones(layout.tokens, dtype=torch.float64)
    block = (frame >= 2) & (frame <= 6) & (row >= 2) & (row <= 6) & (col >= 2) & (col <= 6)
    norms[block] = 3.0
    spike_cells = [(0, 1, 1), (1, 8, 8), (4, 0, 8), (8, 8, 0), (5, 8, 4)]
    spikes = torch.zeros_like(block)
    for f, r, c in spike_cells:
        spikes |= (frame == f) & (row == r) & (col == c)
    norms[spikes] = 6.0
    gen = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(layout.tokens, 16, generator=gen, dtype=torch.float64), dim=-1)
    values = (direction * norms.unsqueeze(-1)).unsqueeze(0)
    return values, layout, block, spikes


@pytest.mark.parametrize(
    "pooling",
    [
        dict(pooling="quartile", layer=0, num_layers=4),  # 3-D, 7
        dict(pooling="quartile", layer=1, num_layers=4),  # 2-D, 5
        dict(pooling="quartile", layer=2, num_layers=4),  # 1-D, 3
        dict(pooling="cv", cv_thresholds=CV_THRESHOLDS[0]),  # 2-D, 7
        dict(pooling="cv", cv_thresholds=CV_THRESHOLDS[1]),  # 2-D, 5
        dict(pooling="cv", cv_thresholds=CV_THRESHOLDS[2]),  # 2-D, 3
    ],
    ids=["quartile-3d7", "quartile-2d5", "quartile-1d3", "cv-7", "cv-5", "cv-3"],
)
def test_pooling_keeps_a_salient_block_over_isolated_spikes(pooling):
    values, layout, block, spikes = block_and_spikes()
    keep = 81 + 9  # the recent frame and nine more
    unpooled = set(get_policy("van")(None, values, layout, keep, PolicySettings(grid=(9, 9)))[0].tolist())
    assert set(spikes.nonzero().flatten().tolist()) <= unpooled, "without pooling the spikes win"
    kept = get_policy("van")(None, values, layout, keep, PolicySettings(grid=(9, 9), **pooling))[0]
    older = kept[kept < 81 * 9]
    assert bool(block[older].all()), "pooled VaN keeps tokens of the salient block"
    assert not bool(spikes[kept].any()), "pooled VaN down-weights isolated spikes"


def test_volume_pooling_makes_frames_around_a_dropped_frame_neighbours():
    """A frame dropped from every head leaves a gap in the frame indices; the 3-D pool works on
    the frames that are present, so frames 2 and 4 become neighbours."""
    keys, values, layout = simulate(2, 3, 3, 0, seed=9, first_frames=9)
    present = (layout.frame[0] != 3).nonzero().flatten().repeat(2, 1)
    index = present.unsqueeze(-1).expand(-1, -1, values.shape[-1])
    keys, values, layout = keys.gather(1, index), values.gather(1, index), layout.gather(present)
    config = PolicySettings(pooling="quartile", layer=0, num_layers=4, grid=(3, 3))
    for keep in (20, 30, 40):
        expected = ref_policy("van", keys, values, layout, keep, config)
        assert torch.equal(get_policy("van")(keys, values, layout, keep, config), expected)


def test_pooling_averages_only_present_tokens():
    """Every norm is 1, so any masked average is exactly 1; counting holes (or the border
    padding) as zeros would pull tokens near them below 1."""
    _, values, layout = simulate(4, 4, 5, 3, seed=11)
    norms = torch.ones(layout.heads, layout.tokens, dtype=torch.float64)
    for pooling in POOLINGS:
        pooled = pool_for(norms, layout, PolicySettings(grid=(4, 5), **pooling))
        assert torch.allclose(pooled, norms, rtol=0, atol=1e-12), pooling


def test_cv_gives_flat_maps_larger_pools():
    """The paper's direction: a low coefficient of variation (smooth, local) gets the largest pool."""
    flat = 1.0 + 0.01 * (torch.arange(200) % 2).view(2, 100).float()  # cv = 0.005
    mild = 1.0 + 0.6 * (torch.arange(100) % 2).repeat(2, 1).float()  # cv = 0.23
    spiky = torch.ones(2, 100)
    spiky[:, ::10] = 8.0  # cv = 1.24
    thresholds = (0.1, 0.3, 1.0)
    assert [cv_pool_size(layer_cv(norms), thresholds) for norms in (flat, mild, spiky)] == [7, 5, 1]


def test_cv_thresholds_calibrate_from_the_first_compression_and_stay():
    """Without thresholds: the quartiles of the first compression's per-layer CVs, then kept fixed."""
    layers = [torch.ones(2, 50) + scale * torch.rand(2, 50, generator=torch.Generator().manual_seed(i))
              for i, scale in enumerate((0.01, 0.2, 0.5, 1.0, 3.0, 9.0, 20.0, 50.0))]
    memory: dict = {}
    plans = pool_plans("cv", layers, None, memory)
    cvs = [layer_cv(norms) for norms in layers]
    t1, t2, t3 = memory["cv_thresholds"]
    assert (t1, t2, t3) == calibrate_thresholds(cvs)
    assert t1 < t2 < t3
    assert memory["pool_sizes"][0] == 7 and memory["pool_sizes"][-1] == 1  # lowest CV -> 7, highest -> none
    assert [size for _, size in plans] == [size if size > 1 else 1 for size in memory["pool_sizes"]]
    again = dict(memory)
    pool_plans("cv", [norms * 3 + torch.rand(2, 50) for norms in layers], None, again)
    assert again["cv_thresholds"] == memory["cv_thresholds"]  # fixed for the rest of the stream
    assert calibrate_thresholds(cvs) == calibrate_thresholds(list(cvs))  # deterministic


def test_ties_go_to_the_earlier_token():
    _, _, layout = simulate(2, 3, 3, 2, seed=2)
    keys = torch.ones(layout.heads, layout.tokens, 4)  # every TaR score is -1
    values = torch.ones(layout.heads, layout.tokens, 4)  # every norm is 2
    recent = layout.frame == layout.frame.max()
    keep = int(recent[0].sum()) + 5
    recent_indices = recent.nonzero()[:, 1].view(layout.heads, -1)
    expected = torch.cat([torch.arange(5).repeat(layout.heads, 1), recent_indices], dim=1)
    for name in ("tar", "van", "infinipot"):
        config = PolicySettings(tar_ratio=0.75, grid=(3, 3))  # TaR: the recent frame + token 0
        assert torch.equal(get_policy(name)(keys, values, layout, keep, config), expected), name


def test_tar_scores_a_cell_without_a_recent_token_as_neutral():
    layout = VisualLayout.for_chunk(1, chunk(0, 3, 2, 2))
    missing = layout.gather(torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]))  # the newest frame lacks cell (1, 1)
    keys = torch.randn(1, 11, 8)
    scores = tar_scores(keys, missing, missing.frame == 2, (2, 2))
    cell_11 = (missing.row == 1) & (missing.col == 1) & (missing.frame < 2)
    assert torch.equal(scores[cell_11], torch.zeros(2))
    assert bool((scores[~cell_11 & (missing.frame < 2)] != 0).all())


# ----------------------------------------------------------------------------- errors


def test_infinipot_refuses_recent_frames_larger_than_the_tar_share():
    keys, values, layout = simulate(2, 3, 4, 0, seed=0)  # 6 frames of 12 tokens
    config = PolicySettings(recent_frames=2, tar_ratio=0.5)  # 24 recent tokens
    get_policy("infinipot")(keys, values, layout, 48, config)  # share 24: fits
    message = r"recent frames hold 24 tokens but the TaR share.*keeps only 23: raise `tar_ratio`"
    with pytest.raises(InfinipotError, match=message):
        get_policy("infinipot")(keys, values, layout, 47, config)


@pytest.mark.parametrize("name", ["tar", "van"])
def test_single_score_policies_refuse_recent_frames_larger_than_the_budget(name):
    keys, values, layout = simulate(1, 3, 4, 0, seed=0)
    with pytest.raises(InfinipotError, match="recent frames hold 24 tokens but the kept budget.*keeps only 20"):
        get_policy(name)(keys, values, layout, 20, PolicySettings(recent_frames=2))


def test_tar_share_floors_without_float_noise():
    assert tar_share(100, 0.29) == 29  # 0.29 * 100 = 28.999999999999996 in floating point
    assert tar_share(11, 0.5) == 5
    assert tar_share(10, 1.0) == 10
