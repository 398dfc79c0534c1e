"""recent-frames, sink, HERMES and StreamMem: plain references from the papers' equations, invariants, sessions.

The references (tests/new_policy_cases.py) are written from docs/design.md ("Policies") and the papers (POLICIES.md)
with Python loops and lists, independently of the vectorised code, and compared on caches built
without a model: chunks of random keys and values appended to a BudgetedCache, compressed by the
cache itself (the policy's choice, merged tokens made with an exact key rotation and inserted in
time order), again and again. The guidance prompts' attention is random here; a test at the end
checks the adapter hook that measures it against transformers' own eager attention weights.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import frames, session
from infinipot.budget import BudgetPlan
from infinipot.errors import InfinipotError
from infinipot.policies import make_policy
from infinipot.policies.hermes import GLOBAL_PROMPT, LOCAL_PROMPT
from infinipot.rope import KeyRotator
from infinipot.session import Session

from new_policy_cases import (NEW, Stream, assert_same_tokens, cache_tokens, ref_hermes, ref_streammem,
                             ref_whole_frames, rotator_for)

# ----------------------------------------------------------------------------- agreement with the references


@pytest.mark.parametrize("axes", [1, 3])
@pytest.mark.parametrize("knobs", [{}, {"depth_schedule": "llava"}, {"cross_layer_smoothing": False},
                                   {"summary_tokens": False}], ids=["qwen", "llava", "no-smoothing", "no-summary"])
def test_hermes_matches_the_reference_over_many_compressions(axes, knobs):
    policy = make_policy("hermes", knobs)
    stream = Stream(layers=10, heads=2, axes=axes, seed=axes)
    budget, keep = 30, 22
    compressions, scrambled = 0, False
    for _ in range(14):
        if stream.cache.visual_tokens + 6 > budget:
            before = stream.compress(policy, keep, budget)
            # Smoothing by identity only differs from smoothing by slot once layers hold different tokens.
            scrambled |= before[5]["frame"] != before[6]["frame"] or before[5]["row"] != before[6]["row"]
            for head in range(2):
                expected = ref_hermes(before, keep, knobs.get("depth_schedule", "qwen"),
                                      knobs.get("cross_layer_smoothing", True), knobs.get("summary_tokens", True),
                                      stream.rotator, head)
                for layer in range(10):
                    assert_same_tokens(cache_tokens(stream, layer, head), expected[layer], f"layer {layer} head {head}")
            compressions += 1
        stream.add(1)
    assert compressions >= 6 and scrambled
    deep = [int(layout.merged[0].sum()) for layout in stream.cache.layouts[7:]]
    assert (min(deep) >= 1) == knobs.get("summary_tokens", True)  # summaries kept in deep layers
    assert all(int(layout.merged.sum()) == 0 for layout in stream.cache.layouts[:7])


@pytest.mark.parametrize("axes", [1, 3])
@pytest.mark.parametrize("prototypes", [True, False])
def test_streammem_matches_the_reference_over_many_compressions(axes, prototypes):
    policy = make_policy("streammem", {"frame_prototypes": prototypes})
    stream = Stream(layers=3, heads=2, axes=axes, seed=10 + axes)
    budget, keep = 36, 24
    compressions = 0
    for _ in range(16):
        if stream.cache.visual_tokens + 12 > budget:
            last = stream.memory.get("streammem_last_frame", -1)
            before = stream.compress(policy, keep, budget)
            for head in range(2):
                expected = ref_streammem(before, keep, last, stream.rotator, prototypes, head)
                for layer in range(3):
                    assert_same_tokens(cache_tokens(stream, layer, head), expected[layer], f"layer {layer} head {head}")
            compressions += 1
        stream.add(2)
    assert compressions >= 5
    merged = int(stream.cache.layouts[0].merged[0].sum())
    assert (merged > 0) == prototypes


@pytest.mark.parametrize("name,sinks", [("recent-frames", 0), ("sink", 1)])
def test_whole_frame_policies_match_the_reference_over_many_compressions(name, sinks):
    policy = make_policy(name)
    stream = Stream(layers=2, heads=2, rows=2, cols=2, seed=3)
    budget, keep = 22, 15  # 3 whole frames of 4 fit in 15: 3 slots stay empty
    for _ in range(20):
        if stream.cache.visual_tokens + 4 > budget:
            before = stream.compress(policy, keep, budget)
            expected = ref_whole_frames(before[0], keep, 4, sinks)
            for layout in stream.cache.layouts:
                assert layout.tokens == 12
                for head in range(2):
                    assert sorted(set(layout.frame[head].tolist())) == expected
        stream.add(1)
    kept = sorted(set(stream.cache.layouts[0].frame[0].tolist()))
    assert (kept[0] == 0) == (name == "sink")  # the stream's first frame stays a sink
    assert kept[-1] == stream.frames - 1


def test_the_summary_key_is_turned_to_its_position():
    """Averaging the evicted keys where they were made (no turn) gives another key: the check has teeth."""
    stream = Stream(layers=10, heads=2, axes=3, seed=5)
    for _ in range(5):
        stream.add(1)
    before = stream.compress(make_policy("hermes"), 22, 30)
    still = KeyRotator(torch.zeros_like(stream.rotator.inv_freq), stream.rotator.freq_axis)
    right = ref_hermes(before, 22, rotator=stream.rotator)[9][-1]
    unturned = ref_hermes(before, 22, rotator=still)[9][-1]
    actual = cache_tokens(stream, 9)[-1]
    assert actual["merged"] and actual["frame"] == -1 and actual["position"] == right["position"]
    assert max(abs(x - y) for x, y in zip(actual["key"], right["key"])) < 1e-5
    assert max(abs(x - y) for x, y in zip(actual["key"], unturned["key"])) > 1e-3


# ----------------------------------------------------------------------------- invariants (hypothesis)


@st.composite
def streams(draw):
    return dict(
        name=draw(st.sampled_from(NEW)),
        layers=draw(st.integers(1, 8)), heads=draw(st.sampled_from([1, 2, 4])), axes=draw(st.sampled_from([1, 3])),
        rows=draw(st.integers(1, 3)), cols=draw(st.integers(1, 3)), steps=draw(st.integers(1, 3)),
        keep_frames=draw(st.integers(2, 6)), extra=draw(st.integers(0, 3)), chunks=draw(st.integers(4, 14)),
        compact=draw(st.booleans()), seed=draw(st.integers(0, 10_000)),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=streams())
def test_new_policies_keep_the_budget_after_many_compressions(case):
    """Never over budget; every head of every layer the same count; merged tokens marked; time order kept."""
    stream = Stream(case["layers"], case["heads"], 8, case["axes"], case["rows"], case["cols"], case["seed"])
    per_step, policy = case["rows"] * case["cols"], make_policy(case["name"])
    incoming = case["steps"] * per_step
    keep = case["keep_frames"] * per_step + case["extra"]
    budget = keep + incoming
    for _ in range(case["chunks"]):
        if stream.cache.visual_tokens + incoming > budget:
            stream.compress(policy, keep, budget)
            counts = {layout.tokens for layout in stream.cache.layouts}
            assert len(counts) == 1 and counts.pop() <= keep
            for layer, layout in zip(stream.cache.layers, stream.cache.layouts):
                assert layer.keys.shape[2] == stream.cache.prefix_len + layout.tokens
                first = layout.position[..., 0]
                assert bool((first[:, 1:] >= first[:, :-1]).all()), "cache order must stay time order"
                assert bool((layout.frame[layout.merged] >= -1).all())
                assert bool((layout.row[layout.merged] == -1).all() and (layout.col[layout.merged] == -1).all())
                if case["name"] in ("recent-frames", "sink"):
                    assert not bool(layout.merged.any())
                    assert layout.tokens == keep // per_step * per_step
                if case["name"] != "recent-frames":  # one set of tokens for every head of a layer
                    assert all(torch.equal(layout.frame[0], layout.frame[h]) for h in range(layout.heads))
            if case["compact"]:
                stream.next_position = stream.cache.compact(stream.rotator)
        stream.add(case["steps"])
        assert stream.cache.visual_tokens <= budget


def test_a_merged_key_is_the_key_the_model_would_make_there():
    """One source at weight 1 turned to a new position equals RoPE applied at that position to the raw key."""
    from infinipot.merging import merged_rows
    from infinipot.policies.base import LayerView, MergedTokens

    rotator = rotator_for(3, 8)
    raw = torch.randn(2, 4, 8, dtype=torch.float64)
    at = torch.tensor([[5, 3, 4], [6, 3, 5], [6, 4, 3], [7, 4, 4]]).expand(2, -1, -1)
    layout = make_layout(at)
    keys = rotator.rotate(raw, torch.zeros_like(at), at)  # as cached: post-RoPE
    view = LayerView(keys, raw.clone(), layout, 0, 1, None)
    target = torch.tensor([[[9, 1, 2]]]).expand(2, 1, 3)
    merged = MergedTokens(torch.full((2, 1, 1), 2), torch.ones(2, 1, 1), target, torch.full((2, 1), 6))
    key, value, merged_layout = merged_rows(view, merged, rotator)
    assert torch.allclose(key[:, 0], rotator.rotate(raw[:, 2:3], torch.zeros_like(target), target)[:, 0], atol=1e-6)
    assert torch.equal(value[:, 0], raw[:, 2]) and bool(merged_layout.merged.all())


def make_layout(position):
    from infinipot.layout import VisualLayout

    heads, tokens = position.shape[:2]
    zeros = torch.zeros(heads, tokens, dtype=torch.long)
    return VisualLayout(position[..., 0].clone(), zeros, zeros, position.clone(), zeros.bool(), zeros.bool())


# ----------------------------------------------------------------------------- knobs and budgets


def test_knobs_are_checked_by_name():
    with pytest.raises(InfinipotError, match="`depth_schedule`"):
        make_policy("hermes", {"depth_schedule": "gpt"})
    with pytest.raises(InfinipotError, match="`sink_frames` must be between 1"):
        make_policy("sink", {"sink_frames": 0})
    assert make_policy("hermes").guidance() == (LOCAL_PROMPT, GLOBAL_PROMPT, f"{LOCAL_PROMPT}; {GLOBAL_PROMPT}")
    assert make_policy("streammem").guidance() == ("",)
    assert make_policy("sink").guidance() == make_policy("recent-frames").guidance() == ()


@pytest.mark.parametrize("name,message", [
    ("recent-frames", "recent-frames need 12 tokens"),
    ("sink", "1 sink frames and one recent frame need 24 tokens"),
])
def test_budgets_too_small_for_whole_frames_are_refused_before_streaming(name, message):
    plan = BudgetPlan(40, 11, (3, 4), 2, 1, compress=True)
    with pytest.raises(InfinipotError, match=message):
        make_policy(name).check(plan)


# ----------------------------------------------------------------------------- on the tiny models


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
@pytest.mark.parametrize("policy", NEW)
def test_sessions_stream_save_and_load_with_merged_tokens(models, tmp_path, family, policy):
    original = session(models, family, policy=policy, budget=96, chunk_frames=8)
    original.feed(frames(24, seed=4))
    stats = original.state.stats
    assert stats.compressions >= 2 and stats.peak_cached_tokens <= 96
    assert (stats.timings["guidance_s"] > 0) == (policy in ("hermes", "streammem"))
    merged = [int(layout.merged.sum()) for layout in original.cache.layouts]
    assert (sum(merged) > 0) == (policy in ("hermes", "streammem"))
    path = tmp_path / "merged.ipv"
    original.save(path)
    loaded = Session.load(path, model=models(family))
    for mine, theirs in zip(loaded.cache.layouts, original.cache.layouts):
        assert torch.equal(mine.merged, theirs.merged) and torch.equal(mine.position, theirs.position)
    assert loaded.ask("What now?", max_new_tokens=4).text == original.ask("What now?", max_new_tokens=4).text
    more = frames(8, seed=5)
    loaded.feed(more)
    original.feed(more)
    assert loaded.state.policy_memory == original.state.policy_memory
    for mine, theirs in zip(loaded.cache.layers, original.cache.layers):
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)


def test_guidance_attention_equals_transformers_eager_weights(models):
    """The hook recomputes each layer's queries; eager attention's own weights must agree (catches upstream drift)."""
    from infinipot.model import Model

    base = models("qwen2_5_vl").settings
    model = Model(base.replace(attn_implementation="eager", dtype="float32"), device="cpu")
    streamed_session = Session(base.replace(attn_implementation="eager", dtype="float32", policy="full"), model=model)
    streamed_session.feed(frames(8, seed=6))
    adapter, cache = model.adapter, streamed_session.cache
    prompt = adapter.question(LOCAL_PROMPT, streamed_session.state.positions)
    length = cache.seq_length()
    mine = adapter.guidance_attention(prompt, cache.kv)
    cache.truncate(length)
    with torch.inference_mode():
        out = adapter.model.model.language_model(inputs_embeds=adapter.embed_ids(prompt.ids),
                                                 position_ids=prompt.positions.unsqueeze(1), cache=cache.kv,
                                                 use_cache=True, output_attentions=True)
    cache.truncate(length)
    assert len(out.attentions) == len(mine) == adapter.num_layers
    for weights, measured in zip(out.attentions, mine):
        expected = weights[0].float().view(adapter.kv_heads, -1, *weights.shape[-2:]).mean(dim=(1, 2))
        assert measured.shape == (adapter.kv_heads, length + prompt.ids.shape[1])
        assert torch.allclose(measured, expected, atol=1e-6)
        assert torch.allclose(measured.sum(dim=-1), torch.ones(adapter.kv_heads))
