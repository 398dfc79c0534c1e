"""The conformance suite every model family passes, parametrized over the family registry.

A family is tested by being registered (infinipot.families) and given a training-rule reference
in tests/reference.py. The contract (docs/design.md, "Exactness"): with a budget that evicts
nothing, streaming chunk by chunk reproduces one plain forward over the whole prompt with the
positions the model was trained with (fp32, <= 1e-4), and greedy answers equal a plain greedy
loop; compression keeps its invariants; a saved cache answers exactly as before.
"""

from __future__ import annotations

import pytest
import torch

import reference
from helpers import ALL_FAMILIES, TOKENS_PER_STEP, frames, session, streamed, until_eos
from infinipot.policies import POLICY_NAMES

COMPACT_FAMILIES = ALL_FAMILIES  # every registered family supports both position modes


def streamed_exactly(models, family: str, video, sample_fps: float, chunk_frames: int = 4, **settings):
    result = session(models, family, policy="full", fps=sample_fps, chunk_frames=chunk_frames, **settings)
    result.feed(video)
    result.finish()
    return result


@pytest.mark.parametrize("positions", ["original", "compact"])
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_exact_first_token_logits_full_policy(models, family, positions):
    model = models(family)
    video, fps = frames(12, seed=0), 2.0
    inputs = reference.one_shot_inputs(model, video, fps)
    expected = reference.forward(model, inputs, reference.reference_positions(model, inputs, fps)).logits[0, -1]
    streamed_session = streamed_exactly(models, family, video, fps, positions=positions)
    assert streamed_session.state.stats.compressions == 0
    closing = 1 if getattr(model.adapter, "closes_with_newline", False) else 0  # OneVision's newline
    visual = int((~streamed_session.cache.layouts[0].marker[0]).sum())  # markers: Qwen3-VL's timestamps
    assert visual + closing == int((inputs["input_ids"] == model.config.video_token_id).sum())
    got = streamed_session.first_token_logits(reference.QUESTION)
    assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("policy", [name for name in POLICY_NAMES if name != "full"])
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_exact_when_the_budget_evicts_nothing(models, family, policy):
    model = models(family)
    video, fps = frames(12, seed=1), 1.0
    inputs = reference.one_shot_inputs(model, video, fps)
    expected = reference.forward(model, inputs, reference.reference_positions(model, inputs, fps)).logits[0, -1]
    result = session(models, family, policy=policy, budget=800, fps=fps, chunk_frames=4)
    result.feed(video)
    assert result.state.stats.compressions == 0
    assert (result.first_token_logits(reference.QUESTION) - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_greedy_answer_equals_a_plain_greedy_loop(models, family):
    """At 1 fps Qwen2.5-VL's temporal ids run far past the spatial ones: the question follows the largest."""
    model = models(family)
    video, fps = frames(16, seed=2), 1.0
    inputs = reference.one_shot_inputs(model, video, fps)
    expected = reference.greedy(model, inputs, fps, max_new_tokens=10)
    answer = streamed_exactly(models, family, video, fps).ask(reference.QUESTION, max_new_tokens=10)
    text = model.adapter.tokenizer.decode(expected, skip_special_tokens=True).strip()
    assert answer.tokens == len(expected) > 0
    assert answer.text == text


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_compression_keeps_its_invariants(models, family):
    """Budget never exceeded (markers counted), the newest steps whole in every head, original order, the prefix
    untouched."""
    tokens = TOKENS_PER_STEP[family]
    budget = 8 * tokens
    result = session(models, family, policy="infinipot", budget=budget, chunk_frames=4)
    seen, prefix = [], []

    def watch(event):
        seen.append(event.cached_tokens)

    video = frames(48, seed=3)
    result.feed(video[:4], on_event=watch)
    prefix = [layer.keys[:, :, : result.cache.prefix_len].clone() for layer in result.cache.layers]
    result.feed(video[4:], on_event=watch)
    stats = result.state.stats
    assert stats.compressions > 0 and max(seen) <= budget and stats.peak_cached_tokens <= budget
    recent = result.policy.recent_frames(result.state.plan)
    for index, (layer, layout) in enumerate(zip(result.cache.layers, result.cache.layouts)):
        assert torch.equal(layer.keys[:, :, : result.cache.prefix_len], prefix[index])
        assert layout.tokens == result.cache.visual_tokens == layer.keys.shape[2] - result.cache.prefix_len
        newest = int(layout.frame.max())
        for head in range(layout.heads):
            for step in range(newest - recent + 1, newest + 1):
                visual = (layout.frame[head] == step) & ~layout.marker[head]
                assert int(visual.sum()) == tokens, f"step {step} not whole in head {head}"
            assert torch.all(layout.frame[head][1:] >= layout.frame[head][:-1])


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_a_saved_cache_answers_and_streams_on_exactly(models, family, tmp_path):
    original = streamed(models, family, count=24)
    path = tmp_path / "video.ipv"
    original.save(path)
    from infinipot.session import Session

    loaded = Session.load(path, model=models(family))
    for question in ("What happened?", "What color is the square?"):
        mine, theirs = loaded.ask(question, max_new_tokens=6), original.ask(question, max_new_tokens=6)
        assert (mine.text, mine.tokens) == (theirs.text, theirs.tokens)
    more = frames(8, seed=9)
    loaded.feed(more)
    original.feed(more)
    assert loaded.ask("And now?", max_new_tokens=6).text == original.ask("And now?", max_new_tokens=6).text
    for mine, theirs in zip(loaded.cache.layers, original.cache.layers):
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_bfloat16_stays_close_to_the_plain_forward(models, family):
    """The same contract in bf16, at a tolerance bf16 allows: catches dtype slips without a GPU."""
    from infinipot.model import Model

    base = models(family)
    model = Model(base.settings.replace(dtype="bfloat16"), device="cpu")
    video, fps = frames(8, seed=4), 1.0
    inputs = reference.one_shot_inputs(model, video, fps)
    expected = reference.forward(model, inputs, reference.reference_positions(model, inputs, fps)).logits[0, -1]
    result = session(lambda _: model, family, policy="full", fps=fps, chunk_frames=4, dtype="bfloat16")
    result.feed(video)
    got = result.first_token_logits(reference.QUESTION)
    assert got.dtype == torch.bfloat16 and result.cache.layers[0].keys.dtype == torch.bfloat16
    scale = expected.float().abs().max().item()
    assert (got.float() - expected.float()).abs().max().item() <= 0.05 * scale + 0.05
    assert int(got.argmax()) == int(expected.argmax())


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_second_chat_turn_matches_one_forward_over_the_conversation(models, family):
    model = models(family)
    video, fps = frames(4, seed=5), 1.0
    inputs = reference.one_shot_inputs(model, video, fps)
    answer_ids = reference.greedy(model, inputs, fps, max_new_tokens=6)
    result = streamed_exactly(models, family, video, fps, chunk_frames=2)
    first = result.chat(reference.QUESTION, max_new_tokens=6)
    assert first.tokens == len(answer_ids) > 0
    adapter = model.adapter
    follow = adapter.follow_up("And then?", result.state.next_turn_start)
    ids = torch.cat([inputs["input_ids"][0], torch.tensor(answer_ids), follow.ids[0]]).unsqueeze(0)
    positions = reference.reference_positions(model, inputs, fps, extra_text=len(answer_ids) + follow.ids.shape[1])
    expected = reference.forward(model, inputs, positions, ids=ids).logits[0, -1]
    length = result.cache.seq_length()
    got = adapter.forward(adapter.embed_ids(follow.ids), follow.positions, result.cache.kv)
    result.cache.truncate(length)
    assert (got - expected).abs().max().item() <= 1e-4
    second = result.chat("And then?", max_new_tokens=4)
    assert len(result.state.turns) == 2 and second.tokens > 0


def test_greedy_reference_stops_at_the_stop_token(models):
    """The plain loop and the session agree on where an answer ends (the loop is itself checked here)."""
    model = models("qwen2_5_vl")
    video = frames(4, seed=6)
    inputs = reference.one_shot_inputs(model, video, 1.0)
    ids = reference.greedy(model, inputs, 1.0, max_new_tokens=40)
    assert ids == until_eos(ids, model.adapter.eos_token_ids())
