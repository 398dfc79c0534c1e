"""Compression policies on planted structure (a moving object, salient value norms, blocks and spikes),
pooling, ties, and the settings each policy refuses."""

from __future__ import annotations

import pytest
import torch

from infinipot.errors import InfinipotError
from infinipot.layout import VisualLayout
from infinipot.policies.infinipot import tar_share
from infinipot.policies.pooling import calibrate_thresholds, cv_pool_size, layer_cv, pool_plans
from infinipot.policies.tar import tar_scores

from policy_cases import (CV_THRESHOLDS, POOLINGS, PolicySettings, chunk, get_policy, pool_for, random_selection,
                          ref_policy, simulate)


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
