"""The exactness contract: streaming with nothing evicted reproduces one plain forward pass.

The reference is built the way any Hugging Face user would: the processor turns the chat
prompt and all frames into one input, the model runs once. The stream cuts the same frames
into chunks, encodes and prefills them one by one with positions computed incrementally.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.video_utils import VideoMetadata

from helpers import until_eos
from infinipot.budget import CompressionSettings
from infinipot.engine import FrameBatch, Session
from infinipot.policies import POLICY_NAMES

QUESTION = "What happened in the video?"
FAMILIES = ["qwen2_5_vl", "qwen2_vl"]


def random_frames(count: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (count, 84, 112, 3), dtype=np.uint8)


def one_shot_inputs(adapter, frames: np.ndarray, native_fps: float, stride: int):
    """The whole prompt through the family's processor, as a plain user would build it."""
    processor = adapter.processor
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    metadata = VideoMetadata(
        total_num_frames=len(frames) * stride, fps=native_fps, width=frames.shape[2], height=frames.shape[1],
        frames_indices=list(range(0, len(frames) * stride, stride)),
    )
    return processor(
        text=[text], videos=[frames], video_metadata=[metadata], return_tensors="pt",
        do_sample_frames=False, cap_pixels_per_frame=False,
    ), metadata.sampled_fps


def streamed_session(adapter, frames, sample_fps, chunk_frames: int, settings: CompressionSettings) -> Session:
    session = Session(adapter, settings)
    session.prepare(frames.shape[1], frames.shape[2])
    batches = [FrameBatch(frames[i : i + chunk_frames], (i + chunk_frames) / sample_fps)
               for i in range(0, len(frames), chunk_frames)]
    assert len(batches) >= 3
    session.stream(batches, sample_fps)
    return session


@pytest.mark.parametrize("family", FAMILIES)
def test_exact_first_token_logits_full_policy(adapters, family):
    adapter = adapters(family)
    frames = random_frames(12, seed=0)
    inputs, sample_fps = one_shot_inputs(adapter, frames, native_fps=6.0, stride=3)
    with torch.no_grad():
        reference = adapter.model(**inputs).logits[0, -1]
    session = streamed_session(adapter, frames, sample_fps, 4, CompressionSettings(policy="full"))
    streamed = session.first_token_logits(QUESTION)
    assert session.stats.compressions == 0
    assert session.cache.visual_tokens == int((inputs["input_ids"] == adapter.model.config.video_token_id).sum())
    assert (streamed - reference).abs().max().item() <= 1e-4


@pytest.mark.parametrize("policy", [name for name in POLICY_NAMES if name != "full"])
def test_exact_when_budget_evicts_nothing(adapters, policy):
    adapter = adapters("qwen2_5_vl")
    frames = random_frames(12, seed=1)
    inputs, sample_fps = one_shot_inputs(adapter, frames, native_fps=2.0, stride=1)
    with torch.no_grad():
        reference = adapter.model(**inputs).logits[0, -1]
    settings = CompressionSettings(policy=policy, budget_tokens=400)  # the video holds 72 tokens
    session = streamed_session(adapter, frames, sample_fps, 4, settings)
    assert session.stats.compressions == 0
    assert (session.first_token_logits(QUESTION) - reference).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_exact_greedy_answer_matches_generate(adapters, family):
    """Every generated token is positioned as the model's own `generate` positions it.

    At 1 fps the video's temporal positions run past the question's, which is where a naive
    "next token = last position + 1" rule and `generate` part ways.
    """
    adapter = adapters(family)
    frames = random_frames(16, seed=2)
    inputs, sample_fps = one_shot_inputs(adapter, frames, native_fps=1.0, stride=1)
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad():
        expected = adapter.model.generate(**inputs, do_sample=False, max_new_tokens=10)[0, prompt_len:]
    session = streamed_session(adapter, frames, sample_fps, 4, CompressionSettings(policy="full"))
    if family == "qwen2_5_vl":  # the case this test exists for must really occur
        prompt = adapter.question(QUESTION)
        assert int(adapter.answer_position(prompt).max()) > int(prompt.positions.max()) + 1
    answer = session.ask(QUESTION, max_new_tokens=10)
    eos = adapter.eos_token_ids()
    expected_ids = until_eos(expected.tolist(), eos)
    expected_text = adapter.tokenizer.decode(expected_ids, skip_special_tokens=True).strip()
    assert answer.tokens == len(expected_ids) and answer.tokens > 0
    assert answer.text == expected_text
