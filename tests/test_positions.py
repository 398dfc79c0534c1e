"""Position modes: exact re-rotation of cached keys, dense renumbering, positions that stay bounded.

Every claim is checked against the model's own code: its rotary module with transformers'
apply_rotary_pos_emb, or the keys its attention layers actually wrote into the cache.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import DynamicCache, Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding, apply_rotary_pos_emb

from helpers import ALL_FAMILIES, LLAVA_FAMILIES, frames, session
from infinipot.errors import InfinipotError
from infinipot.positions import dense_positions
from infinipot.rope import KeyRotator
MROPE_FREQ_AXIS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])  # the tiny Qwen's mrope_section [2, 3, 3]


# --- plain references ---------------------------------------------------------------------------
def model_keys_at(rotary: torch.nn.Module, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Keys rotated the model's way. keys [heads, tokens, dim] (pre-RoPE), positions [heads, tokens, axes]."""
    out = []
    for head in range(keys.shape[0]):
        ids = positions[head].T.unsqueeze(1)  # [axes, batch=1, tokens]
        ids = ids[0] if ids.shape[0] == 1 else ids
        cos, sin = rotary(keys, ids)
        _, rotated = apply_rotary_pos_emb(keys[head][None, None], keys[head][None, None], cos, sin)
        out.append(rotated[0, 0])
    return torch.stack(out)


def reference_turn(keys, old, new, inv_freq, freq_axis) -> torch.Tensor:
    """Frequency by frequency: turn the pair (d, d + half) by fl32(new * f) - fl32(old * f), in float64."""
    half = inv_freq.shape[0]
    out = keys.double().clone()
    for j in range(half):
        axis = int(freq_axis[j])
        turn = (new[..., axis].float() * inv_freq[j]).double() - (old[..., axis].float() * inv_freq[j]).double()
        x, y = keys[..., j].double(), keys[..., j + half].double()
        out[..., j] = x * turn.cos() - y * turn.sin()
        out[..., j + half] = y * turn.cos() + x * turn.sin()
    return out.float()


def reference_dense(position: torch.Tensor, start: int) -> torch.Tensor:
    out = position.clone()
    for head in range(position.shape[0]):
        distinct = sorted(set(position[head, :, 0].tolist()))
        out[head, :, 0] = torch.tensor([start + distinct.index(v) for v in position[head, :, 0].tolist()])
    return out


def random_positions(heads: int, tokens: int, axes: int, high: int, seed: int) -> torch.Tensor:
    return torch.randint(0, high, (heads, tokens, axes), generator=torch.Generator().manual_seed(seed))


# --- re-rotation --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_rotated_key_equals_the_models_key_at_the_new_position(models, family):
    adapter = models(family).adapter
    rotary, axes = adapter.rotary_embedding(), adapter.position_axes
    rotator = KeyRotator.from_rotary_embedding(rotary, axes)
    keys = torch.randn(2, 64, adapter.head_dim, generator=torch.Generator().manual_seed(0))
    old = random_positions(2, 64, axes, 200_000, seed=1)  # far past any window: fp32 angle rounding matters
    new = random_positions(2, 64, axes, 6_000, seed=2)
    at_old, at_new = model_keys_at(rotary, keys, old), model_keys_at(rotary, keys, new)
    error = (rotator.rotate(at_old, old, new) - at_new).abs().max().item()
    assert error <= 1e-5
    back = (rotator.rotate(at_new, new, old) - at_old).abs().max().item()
    assert back <= 1e-5
    # The reason for turning by the difference of the model's own float32 angles: a float32 delta misses.
    delta = ((new - old)[..., rotator.freq_axis].float() * rotator.inv_freq)
    delta = torch.cat([delta, delta], dim=-1)
    naive = at_old * delta.cos() + torch.cat([-at_old[..., 8:], at_old[..., :8]], dim=-1) * delta.sin()
    assert (naive - at_new).abs().max().item() > 1e-4


@pytest.mark.parametrize("family", ["llava_next_video", "qwen2_5_vl"])
def test_rotation_agrees_with_the_plain_reference(models, family):
    adapter = models(family).adapter
    rotator = KeyRotator.from_rotary_embedding(adapter.rotary_embedding(), adapter.position_axes)
    expected_axis = MROPE_FREQ_AXIS if adapter.position_axes == 3 else torch.zeros(8, dtype=torch.long)
    assert torch.equal(rotator.freq_axis, expected_axis)
    keys = torch.randn(2, 40, 16, generator=torch.Generator().manual_seed(3))
    old = random_positions(2, 40, adapter.position_axes, 50_000, seed=4)
    new = random_positions(2, 40, adapter.position_axes, 50_000, seed=5)
    reference = reference_turn(keys, old, new, rotator.inv_freq, expected_axis)
    assert (rotator.rotate(keys, old, new) - reference).abs().max().item() <= 1e-6


def test_mrope_sections_turn_by_their_own_axis_delta(models):
    """Moving only the height axis leaves the temporal and width frequencies untouched."""
    rotator = KeyRotator.from_rotary_embedding(models("qwen2_vl").adapter.rotary_embedding(), 3)
    keys = torch.randn(1, 5, 16)
    old = random_positions(1, 5, 3, 1_000, seed=6)
    new = old.clone()
    new[..., 1] += 37
    turned = rotator.rotate(keys, old, new)
    untouched = torch.tensor([0, 1, 5, 6, 7, 8, 9, 13, 14, 15])  # temporal and width dims of both halves
    assert torch.allclose(turned[..., untouched], keys[..., untouched], atol=1e-6)
    assert not torch.allclose(turned, keys, atol=1e-3)


def test_attention_scaling_is_not_applied_twice():
    config = Qwen2Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                          "original_max_position_embeddings": 8192})
    rotary = Qwen2RotaryEmbedding(config)
    assert rotary.attention_scaling > 1.1
    rotator = KeyRotator.from_rotary_embedding(rotary, 1)
    keys = torch.randn(2, 30, 16)
    old, new = random_positions(2, 30, 1, 30_000, seed=7), random_positions(2, 30, 1, 3_000, seed=8)
    turned = rotator.rotate(model_keys_at(rotary, keys, old), old, new)
    assert (turned - model_keys_at(rotary, keys, new)).abs().max().item() <= 1e-5


def test_length_dependent_rope_is_refused():
    config = Qwen2Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                         rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4})
    with pytest.raises(InfinipotError, match="dynamic.*use `positions` original"):
        KeyRotator.from_rotary_embedding(Qwen2RotaryEmbedding(config), 1)


@pytest.mark.parametrize("family", ["llava_next_video", "qwen2_5_vl"])
def test_the_models_cached_keys_move_exactly(models, family):
    """Run the language model twice over the same tokens with every position axis shifted by its own
    constant: attention sees the same relative positions, so each layer's keys differ only by the turn."""
    adapter = models(family).adapter
    axes = adapter.position_axes
    embeds = torch.randn(1, 12, adapter.text_config.hidden_size, generator=torch.Generator().manual_seed(9))
    old = torch.arange(12).unsqueeze(0).expand(axes, 12) + torch.tensor([40_000, 7, 900][:axes]).unsqueeze(1)
    new = torch.arange(12).unsqueeze(0).expand(axes, 12) + torch.tensor([25, 3_000, 11][:axes]).unsqueeze(1)
    caches = [DynamicCache(), DynamicCache()]
    for positions, cache in zip((old, new), caches):
        adapter.forward(embeds, positions, cache)
    rotator = KeyRotator.from_rotary_embedding(adapter.rotary_embedding(), axes)
    heads = adapter.kv_heads
    per_head = lambda p: p.T.unsqueeze(0).expand(heads, -1, -1)  # noqa: E731  [axes, tokens] -> [heads, tokens, axes]
    for at_old, at_new in zip(caches[0].layers, caches[1].layers):
        turned = rotator.rotate(at_old.keys[0], per_head(old), per_head(new))
        assert (turned - at_new.keys[0]).abs().max().item() <= 1e-5


# --- dense renumbering --------------------------------------------------------------------------
def test_dense_positions_match_the_plain_reference():
    one_d = torch.sort(random_positions(3, 20, 1, 10_000, seed=10), dim=1).values
    assert torch.equal(dense_positions(one_d, 7), reference_dense(one_d, 7))
    assert torch.equal(dense_positions(one_d, 7)[..., 0], (torch.arange(20) + 7).expand(3, 20))
    temporal = torch.tensor([[100, 100, 104, 104, 104, 230, 231], [4, 9, 9, 9, 12, 12, 90]])
    mrope = torch.stack([temporal, temporal % 5, temporal % 3], dim=-1)  # [2, 7, 3]
    dense = dense_positions(mrope, 7)
    assert torch.equal(dense, reference_dense(mrope, 7))
    assert dense[0, :, 0].tolist() == [7, 7, 8, 8, 8, 9, 10]
    assert torch.equal(dense[..., 1:], mrope[..., 1:])  # rows and columns keep their ids


# --- streams ------------------------------------------------------------------------------------
def largest_cached_position(result) -> int:
    return max(int(layout.position[..., 0].max()) for layout in result.cache.layouts)


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_compact_positions_stay_below_prefix_plus_budget_plus_question(models, family):
    adapter = models(family).adapter
    budget = 144
    for count in (30, 120):
        result = session(models, family, policy="infinipot", budget=budget, keep_ratio=0.5, chunk_frames=8)
        largest = []

        def watch(_, result=result):
            prefix = result.cache.prefix_len
            for layout in result.cache.layouts:  # every head holds exactly prefix, prefix + 1, ...
                dense = torch.arange(layout.tokens) + prefix
                assert torch.equal(layout.position[..., 0], dense.expand(layout.heads, -1))
            largest.append(largest_cached_position(result))

        result.feed(frames(count, seed=count), on_event=watch)
        prefix, question = result.cache.prefix_len, adapter.question("What happened?", result.state.positions)
        assert result.state.position_mode == "compact" and result.state.stats.compressions >= 2
        assert max(largest) < prefix + budget
        assert int(question.positions.max()) < prefix + budget + question.ids.shape[1]
        assert int(question.positions[0, 0]) == largest_cached_position(result) + 1
        assert result.ask("What happened?", max_new_tokens=3).tokens > 0
    original = session(models, family, policy="infinipot", budget=budget, keep_ratio=0.5, chunk_frames=8,
                       positions="original")
    original.feed(frames(120, seed=120))
    stats = original.state.stats
    assert largest_cached_position(original) == original.cache.prefix_len + stats.visual_tokens_seen - 1


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_compacted_cache_holds_the_models_keys_at_the_new_positions(models, family):
    """Layer-0 keys depend only on a token and its position, so every cached layer-0 key, old or
    new, moved or not, must be the model's key for that token at the position the layout records."""
    adapter = models(family).adapter
    attention = adapter.model.model.language_model.layers[0].self_attn
    captured = []
    hook = attention.k_proj.register_forward_hook(lambda module, args, output: captured.append(output[0].clone()))
    try:
        result = session(models, family, policy="infinipot", budget=96, chunk_frames=4, positions="compact")
        result.feed(frames(40, seed=11))
    finally:
        hook.remove()
    assert result.state.stats.compressions > 0
    pre_rope = torch.cat(captured[1:]).view(-1, adapter.kv_heads, adapter.head_dim)  # chunks in order, prefix dropped
    layout = result.cache.layouts[0]
    rows, cols = result.state.plan.grid
    token = layout.frame * rows * cols + layout.row * cols + layout.col  # [heads, kept] index into pre_rope
    heads = torch.arange(adapter.kv_heads).unsqueeze(1)
    expected = model_keys_at(adapter.rotary_embedding(), pre_rope[token, heads], layout.position)
    cached = result.cache.layers[0].keys[0, :, result.cache.prefix_len :]
    assert (cached - expected).abs().max().item() <= 1e-5


def test_mrope_compact_renumbers_time_and_keeps_the_grid(models):
    compact = session(models, "qwen2_5_vl", policy="uniform", budget=96, chunk_frames=8, positions="compact")
    compact.feed(frames(80, seed=12))  # 1 fps: temporal ids 4 apart in original positions
    prefix = compact.cache.prefix_len
    for layout in compact.cache.layouts:
        assert torch.equal(layout.position[..., 1], layout.row + prefix)
        assert torch.equal(layout.position[..., 2], layout.col + prefix)
        assert int(layout.position[..., 0].diff(dim=1).min()) >= 0
    original = session(models, "qwen2_5_vl", policy="uniform", budget=96, chunk_frames=8, positions="original")
    original.feed(frames(80, seed=12))
    assert largest_cached_position(compact) < prefix + 96 <= largest_cached_position(original)
    assert compact.ask("What happened?", max_new_tokens=3).tokens > 0


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_next_video"])
def test_compact_equals_original_when_nothing_is_compressed(models, family):
    video = frames(8, seed=13)
    logits = []
    for mode in ("original", "compact"):
        result = session(models, family, policy="full", chunk_frames=2, positions=mode)
        result.feed(video)
        logits.append(result.first_token_logits("What happened?"))
    assert torch.equal(logits[0], logits[1])


# --- the trained window -------------------------------------------------------------------------
def test_original_positions_past_the_window_are_warned_about(models, tmp_path, caplog):
    """LLaVA-NeXT-Video: 16 tokens a frame, trained on 4,096 positions; 300 frames pass it."""
    from infinipot.synthetic import write_test_video

    short, long = (write_test_video(tmp_path / f"{n}.mp4", seconds=n, fps=1) for n in (4, 300))
    with caplog.at_level(logging.WARNING, logger="infinipot.positions"):
        session(models, "llava_next_video", policy="recent", budget=96, positions="original").open(short)
        assert not caplog.records
        session(models, "llava_next_video", policy="recent", budget=96, positions="original").open(long)
        assert len(caplog.records) == 1
        message = caplog.records[0].getMessage()
        assert f"reach {300 * 16 - 1} " in message and "4096" in message and "use `positions` compact" in message
        caplog.clear()
        session(models, "llava_next_video", policy="recent", budget=96, positions="compact").open(long)
        assert not caplog.records
        session(models, "llava_next_video", policy="recent", budget=5000, keep_ratio=0.9,
                positions="compact").open(long)
    assert "lower `budget`" in caplog.records[0].getMessage()


def test_unknown_position_mode_is_refused(models):
    with pytest.raises(InfinipotError, match="unknown `positions` 'sparse'"):
        session(models, "llava_onevision", positions="sparse")
