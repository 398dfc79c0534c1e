"""LLaVA-OneVision and LLaVA-NeXT-Video: the exactness contract and the families' token layout.

The reference is what a Hugging Face user writes: the family's processor turns the chat prompt
and all frames into one input and the model runs once. The stream encodes the same frames a
chunk at a time with 1-D positions computed incrementally; OneVision's closing image_newline
comes with the question.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.video_utils import VideoMetadata

from helpers import until_eos
from infinipot.budget import CompressionSettings
from infinipot.engine import FrameBatch, Session
from infinipot.errors import InfinipotError

QUESTION = "What happened in the video?"
LLAVA_FAMILIES = ["llava_onevision", "llava_next_video"]
GRIDS = {"llava_onevision": (3, 3), "llava_next_video": (4, 4)}  # the tiny towers, after pooling


def random_frames(count: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (count, 84, 112, 3), dtype=np.uint8)


def one_shot_inputs(adapter, frames: np.ndarray, question: str = QUESTION):
    processor = adapter.processor
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    metadata = VideoMetadata(total_num_frames=len(frames), fps=1.0, width=frames.shape[2], height=frames.shape[1],
                             frames_indices=list(range(len(frames))))
    return processor(text=[text], videos=[frames], video_metadata=[metadata], return_tensors="pt")


def stream(adapter, frames: np.ndarray, chunk_frames: int, settings: CompressionSettings,
           positions: str | None = None) -> Session:
    session = Session(adapter, settings, positions=positions)
    session.prepare(frames.shape[1], frames.shape[2])
    batches = [FrameBatch(frames[i : i + chunk_frames], float(i + chunk_frames))
               for i in range(0, len(frames), chunk_frames)]
    session.stream(batches, sample_fps=1.0, frames_total=len(frames))
    return session


@pytest.mark.parametrize("positions", ["original", "compact"])
@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_exact_first_token_logits_full_policy(adapters, family, positions):
    adapter = adapters(family)
    frames = random_frames(7, seed=0)
    inputs = one_shot_inputs(adapter, frames)
    with torch.no_grad():
        reference = adapter.model(**inputs).logits[0, -1]
    session = stream(adapter, frames, 3, CompressionSettings(policy="full"), positions)  # chunks of 3, 3, 1
    streamed = session.first_token_logits(QUESTION)
    assert session.stats.compressions == 0
    closing = 1 if family == "llava_onevision" else 0
    video_tokens = int((inputs["input_ids"] == adapter.video_token_id).sum())
    rows, cols = GRIDS[family]
    assert session.cache.visual_tokens == video_tokens - closing == 7 * rows * cols
    assert (streamed - reference).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_exact_when_frames_arrive_one_by_one_and_budget_evicts_nothing(adapters, family):
    adapter = adapters(family)
    frames = random_frames(5, seed=1)
    with torch.no_grad():
        reference = adapter.model(**one_shot_inputs(adapter, frames)).logits[0, -1]
    session = stream(adapter, frames, 1, CompressionSettings(policy="infinipot", budget_tokens=400, chunk_frames=1))
    assert session.stats.compressions == 0 and session.positions == "compact"
    assert (session.first_token_logits(QUESTION) - reference).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_exact_greedy_answer_matches_generate(adapters, family):
    adapter = adapters(family)
    frames = random_frames(6, seed=2)
    inputs = one_shot_inputs(adapter, frames)
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad():
        expected = adapter.model.generate(**inputs, do_sample=False, max_new_tokens=10)[0, prompt_len:]
    session = stream(adapter, frames, 2, CompressionSettings(policy="full"))
    answer = session.ask(QUESTION, max_new_tokens=10)
    eos = adapter.eos_token_ids()
    expected_ids = until_eos(expected.tolist(), eos)
    assert answer.tokens == len(expected_ids) > 0
    assert answer.text == adapter.tokenizer.decode(expected_ids, skip_special_tokens=True).strip()


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_frame_grid_and_layout(adapters, family):
    adapter = adapters(family)
    rows, cols = GRIDS[family]
    assert adapter.frame_multiple() == 1
    assert adapter.tokens_per_frame(84, 112) == adapter.tokens_per_frame(480, 640) == (rows, cols)
    session = stream(adapter, random_frames(4, seed=3), 3, CompressionSettings(policy="full"), "original")
    layout = session.cache.layouts[0]
    prefix = session.cache.prefix_len
    assert torch.equal(layout.frame[0], torch.arange(4).repeat_interleave(rows * cols))
    assert torch.equal(layout.row[0], torch.arange(rows).repeat_interleave(cols).repeat(4))
    assert torch.equal(layout.col[0], torch.arange(cols).repeat(4 * rows))
    assert torch.equal(layout.position[0, :, 0], torch.arange(4 * rows * cols) + prefix)


def test_onevision_newline_comes_with_the_question_and_leaves_with_it(adapters):
    adapter = adapters("llava_onevision")
    session = stream(adapter, random_frames(3, seed=4), 3, CompressionSettings(policy="full"))
    length = session.cache.seq_length()
    prompt = adapter.question(QUESTION)
    assert int(prompt.ids[0, 0]) == adapter.video_token_id  # the slot of the closing newline
    assert int(prompt.positions[0, 0]) == session.cache.prefix_len + 27  # right after the 3 x 9 video tokens
    newline = adapter.embed_ids(prompt.ids)[0, 0]
    assert torch.equal(newline, adapter.model.model.image_newline.detach())
    session.ask(QUESTION, max_new_tokens=3)
    assert session.cache.seq_length() == length == session.cache.video_length


def test_next_video_prompt_keeps_the_tokenizers_bos(adapters):
    adapter = adapters("llava_next_video")
    prefix = adapter.begin_stream(1.0)
    assert int(prefix.ids[0, 0]) == adapter.tokenizer.bos_token_id
    assert torch.equal(prefix.positions[0], torch.arange(prefix.ids.shape[1]))


def test_asking_before_streaming_is_refused(adapters):
    adapter = adapters("llava_next_video")
    adapter.begin_stream(1.0)
    with pytest.raises(InfinipotError, match="no video has been streamed"):
        adapter.question(QUESTION)


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_second_chat_turn_matches_one_forward_over_the_conversation(adapters, family):
    """The kept answer plus the template's follow-up text is what one pass over both turns sees."""
    adapter = adapters(family)
    frames = random_frames(4, seed=5)
    inputs = one_shot_inputs(adapter, frames)
    prompt_len = inputs["input_ids"].shape[1]
    eos = adapter.eos_token_ids()
    with torch.no_grad():
        generated = adapter.model.generate(**inputs, do_sample=False, max_new_tokens=6)[0, prompt_len:].tolist()
    answer_ids = until_eos(generated, eos)
    session = stream(adapter, frames, 2, CompressionSettings(policy="full"))
    first = session.chat(QUESTION, max_new_tokens=6)
    assert first.tokens == len(answer_ids) > 0

    follow = adapter.follow_up("And then?", session.next_turn_position[:, -1])
    expected_tail = {"llava_onevision": "<|im_end|><|im_start|>user \nAnd then?<|im_end|><|im_start|>assistant\n",
                     "llava_next_video": "USER: And then? ASSISTANT:"}[family]
    assert adapter.tokenizer.decode(follow.ids[0]).strip() == expected_tail.strip()
    ids = torch.cat([inputs["input_ids"][0], torch.tensor(answer_ids), follow.ids[0]]).unsqueeze(0)
    extra = {key: value for key, value in inputs.items() if key not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        reference = adapter.model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits[0, -1]
    length = session.cache.seq_length()
    streamed = adapter.forward(adapter.embed_ids(follow.ids), follow.positions, session.cache.kv)
    session.cache.truncate(length)
    assert (streamed - reference).abs().max().item() <= 1e-4
    second = session.chat("And then?", max_new_tokens=4)
    assert len(session.turns) == 2 and second.tokens > 0
