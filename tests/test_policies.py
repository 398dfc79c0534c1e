"""Compression policies against a plain reference, and their invariants.

The reference (tests/policy_cases.py) is written straight from the equations in docs/design.md ("The
method") with Python loops over heads and tokens. The vectorised policies must pick exactly the same tokens on
layouts that look like a cache after 0 to 3 compressions (each head keeping its own,
scrambled set of cells).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from infinipot.policies import POLICIES
from infinipot.policies.pooling import cv_pool_size, layer_cv
from infinipot.policies.tar import tar_scores

from policy_cases import (CV_THRESHOLDS, POOLINGS, PolicySettings, get_policy, ref_policy, ref_recent, ref_tar_scores,
                          simulate)

# ----------------------------------------------------------------------------- agreement with the reference

# (heads, rows, cols, compressions, chunk_frames, recent_frames at the test, seed)
CACHES = [
    (1, 3, 4, 0, 2, 1, 0),
    (2, 4, 5, 1, 2, 2, 1),
    (4, 3, 4, 2, 2, 2, 2),
    (2, 2, 7, 3, 1, 3, 3),  # the 3rd newest frame was cut by a compression: recent counts differ per head
    (4, 5, 3, 3, 2, 1, 4),
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
