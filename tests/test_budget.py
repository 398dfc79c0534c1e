"""Budgets users can state, and impossible settings refused before any weights load."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from infinipot import InfinipotError, Session
from infinipot.budget import keep_tokens, parse_budget, plan_budget, smallest_budget
from infinipot.policies import make_policy
from infinipot.tiny import ensure_tiny_checkpoint


@pytest.mark.parametrize(("text", "tokens"), [
    ("6000", 6000), ("6k", 6000), ("6K", 6000), ("1.5k", 1500), ("2m", 2_000_000), (" 6_000 ", 6000),
])
def test_token_budgets(text, tokens):
    assert parse_budget(text) == tokens


@pytest.mark.parametrize(("text", "per_token", "tokens"), [
    ("2GiB", 2**20, 2048), ("512MB", 10**6, 512), ("1.5GiB", 2**20, 1536), ("300KiB", 512, 600), ("1gb", 10**9, 1),
])
def test_memory_budgets_use_the_model_kv_size(text, per_token, tokens):
    assert parse_budget(text, per_token) == tokens


@pytest.mark.parametrize("text", ["abc", "6 tokens", "5 parsecs", "1e3", "", "1e24", "-5", "0", "2000000k"])
def test_unreadable_or_impossible_budgets(text):
    with pytest.raises(InfinipotError, match="budget"):
        parse_budget(text, 512)


def test_memory_budget_without_model_size():
    with pytest.raises(InfinipotError, match="needs the model's KV size"):
        parse_budget("2GiB")


def plan(policy="infinipot", budget=400, keep_ratio=0.75, chunk_frames=16, tokens=36, **knobs):
    side = int(tokens ** 0.5)
    return plan_budget(make_policy(policy, knobs), budget, keep_ratio, chunk_frames, (side, tokens // side), 2)


@pytest.mark.parametrize(("tokens", "keep_ratio"), [(12, 0.75), (36, 0.75), (36, 0.5), (196, 0.9), (16, 0.3)])
def test_the_smallest_budget_named_is_the_true_one(tokens, keep_ratio):
    """The 'raise `budget` to at least N' figure: N works, N - 1 does not (the old message said 48.0 for 45)."""
    least = smallest_budget(tokens, keep_ratio)
    assert isinstance(least, int)
    assert least - keep_tokens(least, keep_ratio) >= tokens
    assert (least - 1) - keep_tokens(least - 1, keep_ratio) < tokens
    side = {12: (3, 4), 36: (6, 6), 196: (14, 14), 16: (4, 4)}[tokens]
    plan_budget(make_policy("uniform"), least, keep_ratio, 16, side, 2)
    with pytest.raises(InfinipotError, match=f"raise `budget` to at least {least} "):
        plan_budget(make_policy("uniform"), least - 1, keep_ratio, 16, side, 2)


def test_keep_ratio_one_is_a_clear_line_not_a_crash():
    with pytest.raises(InfinipotError, match="`keep_ratio` 1 keeps the whole budget.*lower `keep_ratio` below 1"):
        plan(keep_ratio=1.0)


def test_tar_share_smaller_than_the_recent_frames():
    # 36 tokens a step, M=2880 -> 80 steps, r=10 steps = 360 tokens; alpha*C = 0.1*2160 = 216 < 360
    with pytest.raises(InfinipotError, match="360 tokens but the TaR share.*keeps only 216.*raise `tar_ratio`"):
        plan(budget=2880, tar_ratio=0.1)


def test_chunks_shrink_to_fit_the_room_after_a_compression():
    result = plan(budget=400, chunk_frames=16)
    assert result.chunk_steps * 36 <= 400 - 300 and result.chunk_steps == 2 and result.chunk_frames == 4
    assert make_policy("infinipot").recent_frames(result) == 1


def test_full_policy_ignores_the_budget():
    assert not plan(policy="full", budget=1).compress


@pytest.fixture()
def weightless(tmp_path):
    """A model folder with config and processor but no weights: loading them fails."""
    source = ensure_tiny_checkpoint("qwen2_5_vl")
    target = tmp_path / "no-weights"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors"))
    return target


def test_impossible_budget_fails_before_weights_load(short_video, weightless):
    result = Session.from_preset("tiny", model=None, budget=20, device="cpu").settings.replace(model=str(weightless))
    with pytest.raises(InfinipotError, match="one frame holds 12"):
        Session(result, device="cpu").open(short_video)
    ready = Session(result.replace(budget=600), device="cpu")
    ready.open(short_video)  # the checks pass without weights ...
    with pytest.raises(InfinipotError, match="could not load model"):
        ready.stream()  # ... and the weights are needed only now


def test_memory_budget_converts_with_the_models_kv_size(models):
    # tiny: 2 layers x 2 KV heads x 16 dims x 2 (K and V) x 4 bytes = 512 bytes a token
    result = Session.from_preset("tiny", model=models("qwen2_5_vl"), budget="48KiB", chunk_frames=8)
    result.feed(np.random.RandomState(0).randint(0, 256, (40, 84, 112, 3), dtype=np.uint8))
    assert result.setup.geometry.kv_bytes_per_token == 512
    assert result.state.plan.budget_tokens == 96 and result.state.stats.peak_cached_tokens <= 96
