"""The budgeted stream: the cap holds at every step, the newest frames and the prefix survive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infinipot.budget import CompressionSettings
from infinipot.engine import FrameBatch, Session
from infinipot.errors import InfinipotError
from infinipot.policies import POLICY_NAMES

TOKENS_PER_STEP = 12  # 84x112 frames -> 3x4 merged tokens per 2-frame step for the tiny models


def frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (count, 84, 112, 3), dtype=np.uint8)


def run_stream(adapter, settings: CompressionSettings, video: np.ndarray, watch=None, session=None) -> Session:
    session = session or Session(adapter, settings)
    session.prepare(84, 112)
    size = session.chunk_frames
    batches = [FrameBatch(video[i : i + size], float(i + size)) for i in range(0, len(video), size)]
    session.stream(batches, sample_fps=1.0, frames_total=len(video), on_progress=watch)
    return session


@pytest.mark.parametrize("policy", [name for name in POLICY_NAMES if name != "full"])
def test_budget_never_exceeded_and_recent_frames_and_prefix_survive(adapters, policy):
    adapter = adapters("qwen2_5_vl")
    settings = CompressionSettings(policy=policy, budget_tokens=96, keep_ratio=0.75, chunk_frames=8)
    session = Session(adapter, settings)
    seen = []
    prefix_keys = []

    def watch(event):
        seen.append(event.cached_tokens)
        if not prefix_keys:  # right after the first chunk: nothing compressed yet
            prefix_keys.extend(layer.keys[:, :, : session.cache.prefix_len].clone() for layer in session.cache.kv.layers)

    run_stream(adapter, settings, frames(40), watch, session=session)

    assert session.stats.visual_tokens_seen == 20 * TOKENS_PER_STEP > settings.budget_tokens
    assert session.stats.compressions > 0
    assert max(seen) <= settings.budget_tokens
    assert session.stats.peak_cached_tokens <= settings.budget_tokens
    cache = session.cache
    for index, layer in enumerate(cache.kv.layers):
        assert torch.equal(layer.keys[:, :, : cache.prefix_len], prefix_keys[index])
        layout = cache.layouts[index]
        newest = layout.frame.max()
        recent = session.plan.recent_frames
        for head in range(layout.heads):
            for step in range(newest - recent + 1, newest + 1):
                cells = layout.frame[head] == step
                assert int(cells.sum()) == TOKENS_PER_STEP, f"recent step {step} not whole in head {head}"
            assert torch.all(layout.frame[head][1:] >= layout.frame[head][:-1])  # original order kept


def test_layout_positions_follow_kept_tokens(adapters):
    """After compression each kept token still carries the M-RoPE position it was rotated with."""
    adapter = adapters("qwen2_5_vl")
    session = run_stream(adapter, CompressionSettings(policy="uniform", budget_tokens=96, chunk_frames=8), frames(40))
    layout = session.cache.layouts[0]
    prefix = session.cache.prefix_len
    interval = float(adapter._interval)
    expected_t = (layout.frame.float() * interval).long() + prefix
    assert torch.equal(layout.position[..., 0], expected_t)
    assert torch.equal(layout.position[..., 1], layout.row + prefix)
    assert torch.equal(layout.position[..., 2], layout.col + prefix)


def test_questions_see_the_same_cache(adapters):
    adapter = adapters("qwen2_vl")
    session = run_stream(adapter, CompressionSettings(policy="recent", budget_tokens=96, chunk_frames=8), frames(24))
    length = session.cache.seq_length()
    first = session.ask("What happened?", max_new_tokens=6)
    assert session.cache.seq_length() == length
    second = session.ask("What color is it?", max_new_tokens=6)
    again = session.ask("What happened?", max_new_tokens=6)
    assert session.cache.seq_length() == length
    assert first.text == again.text and first.tokens == again.tokens == 6
    assert second.question == "What color is it?"


def test_sampling_is_reproducible_with_a_seed(adapters):
    adapter = adapters("qwen2_5_vl")
    session = run_stream(adapter, CompressionSettings(policy="full"), frames(8))
    one = session.ask("What happened?", max_new_tokens=8, temperature=1.5, seed=3)
    two = session.ask("What happened?", max_new_tokens=8, temperature=1.5, seed=3)
    greedy = session.ask("What happened?", max_new_tokens=8)
    assert one.text == two.text
    assert one.text != greedy.text


def test_budget_smaller_than_a_frame_is_refused(adapters):
    session = Session(adapters("qwen2_5_vl"), CompressionSettings(policy="uniform", budget_tokens=24))
    with pytest.raises(InfinipotError, match="room for 6 new tokens.*one frame holds 12"):
        session.prepare(84, 112)


def test_empty_question_is_refused(adapters):
    session = run_stream(adapters("qwen2_5_vl"), CompressionSettings(policy="full"), frames(4))
    with pytest.raises(InfinipotError, match="question is empty"):
        session.ask("   ")
