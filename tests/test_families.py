"""Family-specific layouts the conformance suite does not see: token grids, closing tokens, prefixes."""

from __future__ import annotations

import pytest
import torch

from helpers import LLAVA_FAMILIES, frames, session, streamed
from infinipot.errors import InfinipotError

QUESTION = "What happened in the video?"
GRIDS = {"llava_onevision": (3, 3), "llava_next_video": (4, 4)}  # the tiny towers, after pooling


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_llava_frame_grid_and_layout(models, family):
    model = models(family)
    cls = model.family.adapter_class()
    rows, cols = GRIDS[family]
    assert cls.frame_multiple(model.config, model.processor) == 1
    assert model.geometry(84, 112).grid == model.geometry(480, 640).grid == (rows, cols)
    result = session(models, family, policy="full", chunk_frames=3, positions="original")
    result.feed(frames(4, seed=3))
    layout = result.cache.layouts[0]
    prefix = result.cache.prefix_len
    assert torch.equal(layout.frame[0], torch.arange(4).repeat_interleave(rows * cols))
    assert torch.equal(layout.row[0], torch.arange(rows).repeat_interleave(cols).repeat(4))
    assert torch.equal(layout.col[0], torch.arange(cols).repeat(4 * rows))
    assert torch.equal(layout.position[0, :, 0], torch.arange(4 * rows * cols) + prefix)


def test_onevision_newline_comes_with_the_question_and_leaves_with_it(models):
    result = session(models, "llava_onevision", policy="full", chunk_frames=3)
    result.feed(frames(3, seed=4))
    adapter = result.model.adapter
    length = result.cache.seq_length()
    prompt = adapter.question(QUESTION, result.state.positions)
    assert int(prompt.ids[0, 0]) == adapter.video_token_id  # the slot of the closing newline
    assert int(prompt.positions[0, 0]) == result.cache.prefix_len + 27  # right after the 3 x 9 video tokens
    newline = adapter.embed_ids(prompt.ids)[0, 0]
    assert torch.equal(newline, adapter.model.model.image_newline.detach())
    result.ask(QUESTION, max_new_tokens=3)
    assert result.cache.seq_length() == length == result.cache.video_length


def test_next_video_prompt_keeps_the_tokenizers_bos(models):
    adapter = models("llava_next_video").adapter
    _, prefix = adapter.begin(1.0)
    assert int(prefix.ids[0, 0]) == adapter.tokenizer.bos_token_id
    assert torch.equal(prefix.positions[0], torch.arange(prefix.ids.shape[1]))


def test_qwen_layout_positions_follow_the_kept_tokens(models):
    """After compression each kept token still carries the M-RoPE position it was rotated with."""
    result = streamed(models, "qwen2_5_vl", count=40, policy="uniform")
    layout = result.cache.layouts[0]
    prefix = result.cache.prefix_len
    interval = result.state.positions.interval  # 4.0 at 1 fps: tokens_per_second 2, two frames a step
    assert interval == 4.0
    assert torch.equal(layout.position[..., 0], (layout.frame.float() * interval).long() + prefix)
    assert torch.equal(layout.position[..., 1], layout.row + prefix)
    assert torch.equal(layout.position[..., 2], layout.col + prefix)


def test_questions_see_the_same_cache_and_sampling_is_reproducible(models):
    result = streamed(models, "qwen2_vl", count=24, policy="recent")
    length = result.cache.seq_length()
    first = result.ask("What happened?", max_new_tokens=6)
    second = result.ask("What color is it?", max_new_tokens=6)
    again = result.ask("What happened?", max_new_tokens=6)
    assert result.cache.seq_length() == length
    assert first.text == again.text and first.tokens == again.tokens == 6 and second.question == "What color is it?"
    one = result.ask("What happened?", max_new_tokens=8, temperature=1.5, seed=3)
    two = result.ask("What happened?", max_new_tokens=8, temperature=1.5, seed=3)
    assert one.text == two.text != result.ask("What happened?", max_new_tokens=8).text


def test_a_character_split_across_tokens_is_shown_whole(models, monkeypatch):
    """Byte-level tokens of 中 (e4 b8 ad) and é (c3 a9): the pieces shown are whole characters."""
    result = streamed(models, count=8, policy="full")
    tokenizer = result.model.adapter.tokenizer
    tokens = tokenizer.convert_tokens_to_ids(["ä", "¸", "Ń", "Ã", "©", "Ã"])  # ends mid-character
    picks = iter(tokens)
    monkeypatch.setattr("infinipot.generation._pick", lambda logits, temperature, generator: next(picks))
    pieces = []
    answer = result.ask("What happened?", max_new_tokens=len(tokens), on_text=pieces.append)
    assert pieces == ["中", "é", "\ufffd"]  # the unfinished last byte is shown once, at the end
    assert answer.text == "中é\ufffd" == tokenizer.decode(tokens) and answer.tokens == 6


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_a_template_without_one_video_placeholder_is_one_clear_error(models, family, monkeypatch):
    adapter = models(family).adapter
    before, after = adapter.split_at_video("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Why?",
                                           "<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>")
    assert (before, after) == ("<|im_start|>user\n", "Why?")  # the wrapped form first: the processor swaps it whole
    monkeypatch.setattr(type(adapter), "video_prompt", lambda self, question: f"user: {question}")
    with pytest.raises(InfinipotError, match=r"does not place exactly one <\|video_pad\|>: use the model's own"):
        adapter.begin(1.0)
