"""Qwen3-VL beyond the conformance suite: the prompt it was trained on, timestamps as markers under
compression, DeepStack per chunk, interleaved M-RoPE, packed compact positions, the real configs.

The conformance suite (tests/test_conformance.py) already streams the tiny Qwen3-VL against one
plain forward (fp32 and bf16), greedy answers, chat, invariants and cache files.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding, apply_rotary_pos_emb
from transformers.video_utils import VideoMetadata

import reference
from helpers import frames, invoke, session
from infinipot.adapters.qwen3_vl import timestamp
from infinipot.positions import packed_positions
from infinipot.rope import KeyRotator

FAMILY = "qwen3_vl"
GRID = (3, 4)  # the tiny tower's merged grid for 84 x 112 frames


# --- plain references ---------------------------------------------------------------------------
def marker_ids(adapter, step: int, sample_fps: float) -> tuple[list[int], list[int]]:
    """The text a patch brings, as the processor writes it: `<t seconds>`, vision start; vision end after."""
    text = adapter.tokenizer(timestamp(step, sample_fps, 2), add_special_tokens=False).input_ids
    return text + [adapter.vision_start_id], [adapter.vision_end_id]


def stream_order(layout, head: int, adapter, sample_fps: float) -> torch.Tensor:
    """Each kept token's index among all streamed tokens (prefix excluded), from its frame, cell or marker rank."""
    rows, cols = GRID
    sizes, firsts = [], [0]
    for step in range(int(layout.frame.max()) + 1):
        lead, _ = marker_ids(adapter, step, sample_fps)
        sizes.append(len(lead))
        firsts.append(firsts[-1] + len(lead) + rows * cols + 1)
    seen: dict[int, int] = {}
    order = []
    for frame, row, col, marker in zip(*(t[head].tolist() for t in (layout.frame, layout.row, layout.col,
                                                                       layout.marker))):
        if marker:  # a frame's markers are kept together, in order: lead text..., vision end
            rank = seen.get(frame, 0)
            seen[frame] = rank + 1
            order.append(firsts[frame] + (rank if rank < sizes[frame] else sizes[frame] + rows * cols))
        else:
            order.append(firsts[frame] + sizes[frame] + row * cols + col)
    return torch.tensor(order)


def model_keys(rotary, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Keys rotated by the model's own rotary module. keys [heads, n, dim] (pre-RoPE), positions [heads, n, 3]."""
    out = []
    for head in range(keys.shape[0]):
        cos, sin = rotary(keys, positions[head].T.unsqueeze(1))
        out.append(apply_rotary_pos_emb(keys[head][None, None], keys[head][None, None], cos, sin)[1][0, 0])
    return torch.stack(out)


def captured_stream(models, video, **settings):
    """A session streamed while layer 0's pre-RoPE keys are captured: (session, keys [tokens, kv_heads, dim])."""
    attention = models(FAMILY).adapter.model.model.language_model.layers[0].self_attn
    captured = []
    hook = attention.k_norm.register_forward_hook(lambda module, args, output: captured.append(output[0].clone()))
    try:
        result = session(models, FAMILY, **settings)
        result.feed(video)
    finally:
        hook.remove()
    return result, torch.cat(captured[1:])  # the prefix first, then the chunks in order


def assert_cache_holds_the_models_keys(result, pre_rope: torch.Tensor) -> None:
    """Layer-0 keys depend only on a token and its position: every cached one, visual or marker, moved or
    not, must be the model's key for the token the layout names at the position it records."""
    adapter, layout = result.model.adapter, result.cache.layouts[0]
    for head in range(layout.heads):
        index = stream_order(layout, head, adapter, result.state.sample_fps)
        expected = model_keys(adapter.rotary_embedding(), pre_rope[index, head].unsqueeze(0),
                              layout.position[head : head + 1])
        cached = result.cache.layers[0].keys[0, head, result.cache.prefix_len :]
        assert (cached - expected[0]).abs().max().item() <= 1e-5


# --- the prompt and its positions -----------------------------------------------------------------
def test_the_prompt_is_qwens_layout_and_the_cache_holds_it(models):
    """Per patch `<t seconds><|vision_start|> 12 pads <|vision_end|>` right after the user turn opens; the
    stream caches those markers with their patch, and counts them before encoding them."""
    model = models(FAMILY)
    adapter = model.adapter
    video, fps = frames(8, seed=0), 2.0
    ids = reference.one_shot_inputs(model, video, fps)["input_ids"][0].tolist()
    text = adapter.tokenizer.decode(ids)
    patch = "<|vision_start|>" + "<|video_pad|>" * 12 + "<|vision_end|>"
    video_text = "".join(f"<{t} seconds>" + patch for t in ("0.2", "1.2", "2.2", "3.2"))  # (0/2 + 1/2) / 2 = 0.25
    assert f"<|im_start|>user\n{video_text}What happened in the video?<|im_end|>" in text
    # transformers 5.24's processor keeps the template's outer pair; if that changes, revisit the docs.
    wrapped = model.processor.apply_chat_template([{"role": "user", "content": [
        {"type": "video"}, {"type": "text", "text": "Q"}]}], add_generation_prompt=True, tokenize=False)
    metadata = VideoMetadata(total_num_frames=8, fps=fps, width=112, height=84, frames_indices=list(range(8)))
    upstream = model.processor(text=[wrapped], videos=[video], video_metadata=[metadata], return_tensors="pt",
                               do_sample_frames=False, cap_pixels_per_frame=False)
    assert "user\n<|vision_start|><0.2 seconds>" in adapter.tokenizer.decode(upstream["input_ids"][0])
    result = session(models, FAMILY, policy="full", fps=fps, chunk_frames=4)
    predicted = adapter.marker_tokens(8, adapter.begin(fps)[0])
    result.feed(video)
    layout = result.cache.layouts[0]
    question = adapter.question_ids("What happened in the video?", result.state.positions).shape[1]
    between = len(ids) - ids.count(adapter.video_token_id) - result.cache.prefix_len - question
    assert int(layout.marker[0].sum()) == predicted == between  # every text token between prefix and question
    assert torch.equal(layout.row[0][layout.marker[0]], torch.full((predicted,), -1))


def test_positions_are_qwen3_vl_get_rope_index_and_the_question_follows_the_largest(models):
    model = models(FAMILY)
    video, fps = frames(8, seed=1), 1.0
    inputs = reference.one_shot_inputs(model, video, fps)
    ours = reference.reference_positions(model, inputs, fps)
    theirs, _ = model.adapter.model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                                           video_grid_thw=inputs["video_grid_thw"])
    assert torch.equal(ours, theirs)
    result = session(models, FAMILY, policy="full", fps=fps, chunk_frames=2)
    result.feed(video)
    prefix, layout = result.cache.prefix_len, result.cache.layouts[0]
    assert torch.equal(layout.position[0].T, ours[:, 0, prefix : prefix + layout.tokens])
    last_end = int(layout.position[0, -1, 0])  # the last vision end: one past the last patch's largest id
    patch = layout.position[0][~layout.marker[0]][-12:]
    assert last_end == int(patch.max()) + 1 == int(patch[0, 0]) + max(GRID) == result.state.positions.largest
    question = model.adapter.question("What happened in the video?", result.state.positions)
    assert question.positions[:, 0].tolist() == [last_end + 1] * 3 == ours[:, 0, prefix + layout.tokens].tolist()


def test_frames_are_sized_per_frame_whatever_the_chunk(models):
    """Qwen3VLVideoProcessor applies its pixel limits to a whole clip; we apply them per frame, so a
    patch has one grid whether it comes in a chunk of 2 frames or 16, as the one-shot reference has it."""
    model = models(FAMILY)
    processor = model.processor.video_processor
    assert model.geometry(84, 112).grid == GRID and model.geometry(84, 112).frame_multiple == 2
    for count in (2, 16):
        result = session(models, FAMILY, policy="full", chunk_frames=count)
        result.feed(frames(count, seed=2))
        assert tuple(result.state.positions.grid) == GRID
    clip = processor(videos=[frames(16, seed=2)], return_tensors="pt", do_sample_frames=False,
                     cap_pixels_per_frame=False)["video_grid_thw"][0]
    assert (int(clip[1]) // 2, int(clip[2]) // 2) != GRID  # the clip-wide limits shrink 16 frames


# --- DeepStack ------------------------------------------------------------------------------------
def test_dropping_a_chunks_deepstack_features_breaks_exactness(models, monkeypatch):
    """Three levels of features a chunk, added after decoder layers 0-2: without them the logits move."""
    model = models(FAMILY)
    adapter = model.adapter
    video, fps = frames(8, seed=3), 1.0
    inputs = reference.one_shot_inputs(model, video, fps)
    expected = reference.forward(model, inputs, reference.reference_positions(model, inputs, fps)).logits[0, -1]

    def logits() -> torch.Tensor:
        result = session(models, FAMILY, policy="full", fps=fps, chunk_frames=4)
        result.feed(video)
        return result.first_token_logits(reference.QUESTION)

    assert (logits() - expected).abs().max().item() <= 1e-4
    encode = adapter.encode
    chunk = encode(video[:2], adapter.begin(fps)[0])
    levels = chunk.extras["deepstack_visual_embeds"]
    assert len(levels) == 3 and all(level.shape == (12, 64) and level.abs().max() > 0 for level in levels)
    assert int(chunk.extras["visual_pos_masks"].sum()) == 12
    monkeypatch.setattr(adapter, "encode", lambda frames, state: dataclasses.replace(encode(frames, state), extras={}))
    assert (logits() - expected).abs().max().item() > 1e-2


def test_asking_midway_leaves_the_stream_as_one_stream(models, short_video):
    """A tentative chunk's timestamps and positions are taken back with it."""
    straight = session(models, FAMILY, budget=96, chunk_frames=8)
    straight.stream(short_video)
    stopped = session(models, FAMILY, budget=96, chunk_frames=8)
    for moment in (5.0, 9.6):
        stopped.stream(short_video if moment == 5.0 else None, until=moment)
        assert stopped.ask("What happened?", max_new_tokens=2).tokens > 0
    stopped.stream()
    assert stopped.state.positions == straight.state.positions and stopped.state.stats.compressions > 0
    for mine, theirs in zip(stopped.cache.layers, straight.cache.layers):
        assert torch.equal(mine.keys, theirs.keys)
    for mine, theirs in zip(stopped.cache.layouts, straight.cache.layouts):
        assert torch.equal(mine.position, theirs.position) and torch.equal(mine.marker, theirs.marker)


# --- compression with markers ----------------------------------------------------------------------
def test_the_budget_counts_markers_and_the_end_keeps_its_timestamps(models):
    """60 frames at 0.5 fps: timestamps from <1.0 seconds> to <117.0 seconds> (1 to 3 digits)."""
    budget, fps = 200, 0.5
    result, pre_rope = captured_stream(models, frames(60, seed=4), policy="infinipot", budget=budget, fps=fps,
                                       chunk_frames=4)
    stats, plan = result.state.stats, result.state.plan
    assert plan.marker_tokens_per_step == 12 and plan.chunk_steps == 2  # room 50: two patches of 12 + 12
    assert stats.compressions > 5 and stats.peak_cached_tokens <= budget
    adapter = result.model.adapter
    recent = result.policy.recent_frames(plan)
    newest = int(result.cache.layouts[0].frame.max())
    marker_frames = set(result.cache.layouts[0].frame[0][result.cache.layouts[0].marker[0]].tolist())
    assert set(range(newest - recent + 1, newest + 1)) <= marker_frames  # the newest patches keep their time
    for layout in result.cache.layouts:
        for head in range(layout.heads):
            frames_here = layout.frame[head][layout.marker[head]].tolist()
            assert set(frames_here) == marker_frames  # the same patches in every layer and head
            for frame in marker_frames:  # whole groups: its `<t seconds>`, vision start and end
                lead, tail = marker_ids(adapter, frame, fps)
                assert frames_here.count(frame) == len(lead) + len(tail)
    assert timestamp(newest, fps, 2) == "<117.0 seconds>"
    assert_cache_holds_the_models_keys(result, pre_rope)  # the tokens there are those timestamps
    assert result.ask("When did it change?", max_new_tokens=3).tokens > 0


# --- compact positions ----------------------------------------------------------------------------
def plain_packed(position: torch.Tensor, start: int) -> torch.Tensor:
    """Run by run: each run of one temporal id moves, all axes alike, to one past the previous run's largest."""
    out = position.clone()
    for head in range(position.shape[0]):
        next_free, previous = start, None
        for index in range(position.shape[1]):
            if previous is None or position[head, index, 0] != previous:
                previous = int(position[head, index, 0])
                shift = next_free - previous
            out[head, index] = position[head, index] + shift
            next_free = max(next_free, int(out[head, index].max()) + 1)
    return out


def test_packed_positions_match_the_plain_reference_and_leave_a_whole_stream_alone(models):
    result = session(models, FAMILY, policy="full", chunk_frames=4)
    result.feed(frames(8, seed=5))
    layout, prefix = result.cache.layouts[0], result.cache.prefix_len
    assert torch.equal(packed_positions(layout.position, prefix), layout.position)
    generator = torch.Generator().manual_seed(6)
    for trial in range(5):
        kept = torch.sort(torch.randperm(layout.tokens, generator=generator)[: 10 + 5 * trial]).values
        some = layout.position[:, kept]
        assert torch.equal(packed_positions(some, prefix), plain_packed(some, prefix))


@pytest.mark.parametrize("sections", [[4, 2, 2], [24, 20, 20]])
def test_interleaved_rotation_is_the_models_own(sections):
    """Qwen3-VL's rotary module at the tiny and the real sizes (head dim 16 and 128, θ 5e6)."""
    from transformers import Qwen3VLTextConfig

    half = sum(sections)
    config = Qwen3VLTextConfig(hidden_size=8 * half, num_attention_heads=4, head_dim=2 * half, rope_parameters={
        "rope_type": "default", "mrope_section": sections, "mrope_interleaved": True, "rope_theta": 5_000_000.0})
    rotary = Qwen3VLTextRotaryEmbedding(config)
    rotator = KeyRotator.from_rotary_embedding(rotary, 3)
    plain = [1 if j % 3 == 1 and j < 3 * sections[1] else 2 if j % 3 == 2 and j < 3 * sections[2] else 0
             for j in range(half)]  # t, h, w, t, h, w, ..., then t
    assert rotator.freq_axis.tolist() == plain and rotator.interleaved
    generator = torch.Generator().manual_seed(7)
    keys = torch.randn(2, 40, 2 * half, generator=generator)
    old = torch.randint(0, 250_000, (2, 40, 3), generator=generator)
    new = torch.randint(0, 5_000, (2, 40, 3), generator=generator)

    def at(positions):
        return model_keys(rotary, keys, positions)

    assert (rotator.rotate(at(old), old, new) - at(new)).abs().max().item() <= 1e-5
    assert torch.equal(rotator.renumber(new[:, :1], 9), packed_positions(new[:, :1], 9))


def runs_in_order(position: torch.Tensor) -> bool:
    """Each run of one temporal id starts past the largest id of the run before it. position [tokens, 3]"""
    first = position[:, 0]
    starts = torch.cat([torch.tensor([True]), first[1:] != first[:-1]]).nonzero().flatten().tolist()
    bounds = starts + [len(first)]
    return all(int(position[bounds[i] : bounds[i + 1]].min()) > int(position[bounds[i - 1] : bounds[i]].max())
               for i in range(1, len(starts)))


def test_compact_packs_every_axis_exactly_and_stays_bounded(models):
    """Compact positions: every axis of a kept run moves together, keys turn exactly, positions stay small."""
    video = frames(96, seed=8)
    result, pre_rope = captured_stream(models, video[:48], policy="infinipot", budget=200, chunk_frames=4,
                                       positions="compact")
    assert result.state.stats.compressions > 5
    assert_cache_holds_the_models_keys(result, pre_rope)  # keys turned exactly, markers too
    for layout in result.cache.layouts:
        for head in range(layout.heads):
            visual = layout.position[head][~layout.marker[head]]  # a patch keeps its (t, t + row, t + col) shape
            assert torch.equal(visual[:, 1] - visual[:, 0], layout.row[head][~layout.marker[head]])
            assert torch.equal(visual[:, 2] - visual[:, 0], layout.col[head][~layout.marker[head]])
            assert runs_in_order(layout.position[head])
    halfway = result.cache.largest_position()
    assert halfway == result.state.positions.largest
    question = result.model.adapter.question("What happened?", result.state.positions)
    assert int(question.positions[0, 0]) == halfway + 1
    assert result.ask("What happened?", max_new_tokens=3).tokens > 0
    largest = []
    result.feed(video[48:], on_event=lambda event: largest.append(result.state.positions.largest))
    # Packed, each kept run takes at most max(rows, cols) positions and a new token at most one more.
    prefix, plan = result.cache.prefix_len, result.state.plan
    assert max(largest) < prefix + plan.budget_tokens * max(GRID)
    adapter = result.model.adapter  # original positions grow by every patch's markers and max(rows, cols)
    original = prefix - 1 + adapter.marker_tokens(96, adapter.begin(1.0)[0]) + 48 * max(GRID)
    assert largest[-1] < original / 2


# --- the real models -----------------------------------------------------------------------------
REAL = {  # text configs of Qwen/Qwen3-VL-{2B,4B,8B}-Instruct (hidden, layers, heads, KV heads, head dim)
    "qwen3-vl-2b": (2048, 28, 16, 8, 128),
    "qwen3-vl-4b": (2560, 36, 32, 8, 128),
    "qwen3-vl-8b": (4096, 36, 32, 8, 128),
}


@pytest.mark.parametrize(("preset", "kib"), [("qwen3-vl-2b", 112), ("qwen3-vl-4b", 144), ("qwen3-vl-8b", 144)])
def test_a_memory_budget_converts_with_the_real_kv_size(models, tmp_path, short_video, preset, kib):
    """The preset against a folder holding the real model's config (no weights) and the tiny processor:
    everything up to the budget plan needs no weights."""
    import shutil
    from pathlib import Path

    from transformers import Qwen3VLConfig

    from infinipot import Session
    from infinipot.presets import load_preset

    hidden, layers, heads, kv_heads, head_dim = REAL[preset]
    text = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                head_dim=head_dim, max_position_embeddings=262144, rope_parameters={
                    "rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True,
                    "rope_theta": 5_000_000})
    Qwen3VLConfig(text_config=text).save_pretrained(tmp_path)
    for src in Path(models(FAMILY).source).iterdir():  # the tiny processor: the same patch, merge and sizing code
        if src.name not in ("config.json", "generation_config.json", "model.safetensors"):
            shutil.copy(src, tmp_path / src.name)
    settings = load_preset(preset)
    assert settings.model == f"Qwen/Qwen3-VL-{preset[-2:].upper()}-Instruct" and settings.dtype == "bfloat16"
    result = Session.from_preset(settings.replace(model=str(tmp_path), budget="1GiB"), device="cpu")
    setup = result.open(short_video)
    result.close()
    assert setup.geometry.kv_bytes_per_token == kib * 1024 == layers * kv_heads * head_dim * 2 * 2
    assert setup.plan.budget_tokens == 2**30 // (kib * 1024)
    assert result.model.geometry(720, 1280).grid == (8, 15)  # 120 tokens a patch at the preset's pixels
    assert result.model.geometry(480, 640).grid == (10, 13)
    assert not result.model.loaded


# --- the CLI ------------------------------------------------------------------------------------
def test_ask_on_a_ten_minute_video_compresses_under_budget_and_answers(long_video, tmp_path):
    saved = tmp_path / "long.ipv"
    result = invoke("ask", long_video, "What happened?", "--preset", "tiny-qwen3-vl", "--device", "cpu",
                    "--max-new-tokens", "3", "--save-cache", saved, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    stats = data["stats"]
    assert stats["frames"] == 600 and stats["compressions"] > 0
    assert stats["peak_cached_tokens"] <= stats["budget_tokens"] == 600
    assert isinstance(data["answers"][0]["answer"], str)
    info = invoke("info", saved, "--json")
    assert info.exit_code == 0, info.output
    described = json.loads(info.stdout)
    assert described["stats"]["frames"] == 600 and "qwen3_vl" in json.dumps(described)
