"""Saved caches: a round trip answers exactly as before; a file that does not fit, is damaged or newer is refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from helpers import until_eos
from infinipot import cache_file
from infinipot.budget import CompressionSettings
from infinipot.cache_file import Provenance, load_session, read_header, save_session, verify
from infinipot.engine import FrameBatch, Session
from infinipot.errors import InfinipotError
from infinipot.presets import load_preset

PRESETS = {"qwen2_5_vl": "tiny", "qwen2_vl": "tiny-qwen2-vl", "llava_onevision": "tiny-llava-onevision",
           "llava_next_video": "tiny-llava-next-video"}
QUESTIONS = ["What happened?", "What color is the square?", "Where does it go?"]


def frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (count, 84, 112, 3), dtype=np.uint8)


def streamed(adapter, count: int = 24, seed: int = 0, policy: str = "infinipot", budget: int = 96) -> Session:
    session = Session(adapter, CompressionSettings(policy=policy, budget_tokens=budget, chunk_frames=8))
    session.prepare(84, 112)
    size, video = session.chunk_frames, frames(count, seed)
    session.stream([FrameBatch(video[i : i + size], float(i + size)) for i in range(0, count, size)], sample_fps=1.0)
    return session


def provenance(family: str = "qwen2_5_vl") -> Provenance:
    return Provenance(load_preset(PRESETS[family]))


@pytest.fixture(scope="module")
def written(adapters, tmp_path_factory):
    session = streamed(adapters("qwen2_5_vl"))
    path = tmp_path_factory.mktemp("written") / "video.ipv"
    save_session(session, path, provenance())
    return path.read_bytes(), session


@pytest.fixture
def saved(written, tmp_path):
    """A compressed qwen2_5_vl cache on disk (this test's own copy), and the session that wrote it."""
    path = tmp_path / "video.ipv"
    path.write_bytes(written[0])
    return path, written[1]


@pytest.mark.parametrize("family", list(PRESETS))
def test_round_trip_answers_exactly_as_right_after_compression(adapters, tmp_path, family):
    adapter = adapters(family)
    session = streamed(adapter, budget=200 if family.startswith("llava") else 96)
    assert session.stats.compressions > 0
    before = [session.ask(question, max_new_tokens=8) for question in QUESTIONS]
    logits = session.first_token_logits(QUESTIONS[0])
    path = tmp_path / "video.ipv"
    size = save_session(session, path, provenance(family))
    assert size == path.stat().st_size > 0

    streamed(adapter, count=8, seed=7)  # another, shorter stream moves the adapter's position state on
    loaded = load_session(path, adapter)

    after = [loaded.ask(question, max_new_tokens=8) for question in QUESTIONS]
    assert [(a.text, a.tokens) for a in after] == [(b.text, b.tokens) for b in before]
    assert torch.equal(loaded.first_token_logits(QUESTIONS[0]), logits)
    assert loaded.cache.prefix_len == session.cache.prefix_len
    assert torch.equal(loaded.prefix_ids, session.prefix_ids)
    for original, restored in zip(session.cache.kv.layers, loaded.cache.kv.layers):
        assert torch.equal(original.keys, restored.keys) and torch.equal(original.values, restored.values)
    for original, restored in zip(session.cache.layouts, loaded.cache.layouts):
        for name in cache_file.LAYOUT_FIELDS:
            assert torch.equal(getattr(original, name), getattr(restored, name))
    assert loaded.stats.as_dict() == session.stats.as_dict()
    assert loaded.settings == session.settings and loaded.grid == session.grid


def test_metadata_describes_the_cache(saved):
    path, session = saved
    meta = read_header(path).meta
    assert meta["format_version"] == cache_file.FORMAT_VERSION
    assert meta["model"]["id"] == "tiny:qwen2_5_vl" and meta["model"]["family"] == "qwen2_5_vl"
    assert meta["model"]["config"]["num_hidden_layers"] == 2 and meta["model"]["config"]["num_key_value_heads"] == 2
    assert meta["settings"]["policy"] == "infinipot" and meta["settings"]["budget_tokens"] == 96
    assert meta["preset"]["name"] == "tiny"
    assert meta["layout"]["visual_tokens"] == [96, 96]
    assert meta["layout"]["prefix_len"] == session.cache.prefix_len
    assert meta["stats"]["frames"] == 24 and meta["stats"]["compressions"] == session.stats.compressions
    assert meta["prefix"]["text"].endswith("<|vision_start|>")
    question_start = session.adapter.question("?").positions[:, 0].tolist()
    assert meta["next_position"] == question_start
    with safe_open(str(path), framework="pt") as handle:  # plain safetensors: any reader can list it
        assert "layers.1.values" in handle.keys()


def test_cache_moves_to_the_adapters_dtype(adapters, tmp_path):
    adapter = adapters("qwen2_5_vl")
    session = streamed(adapter)
    for layer in session.cache.kv.layers:  # as if made by a bfloat16 model
        layer.keys, layer.values = layer.keys.bfloat16(), layer.values.bfloat16()
    path = tmp_path / "half.ipv"
    save_session(session, path, provenance())
    assert read_header(path).meta["kv_dtype"] == "bfloat16"
    loaded = load_session(path, adapter)
    layer = loaded.cache.kv.layers[0]
    assert layer.keys.dtype == adapter.dtype == torch.float32
    assert torch.equal(layer.keys, session.cache.kv.layers[0].keys.float())


# --- caches that do not fit ---------------------------------------------------------------------
def test_other_family_is_refused(saved, adapters):
    with pytest.raises(InfinipotError, match=r"made with a qwen2_5_vl model.*loaded model is tiny:qwen2_vl"):
        load_session(saved[0], adapters("qwen2_vl"))


def test_other_config_is_refused_naming_the_field(saved, adapters, monkeypatch):
    adapter = adapters("qwen2_5_vl")
    monkeypatch.setattr(adapter.text_config, "vocab_size", 401)
    with pytest.raises(InfinipotError, match=r"another config.*expected vocab_size 400 \(found 401\)"):
        load_session(saved[0], adapter)


def test_other_weights_are_refused(saved, adapters):
    adapter = adapters("qwen2_5_vl")
    weight = adapter.model.get_input_embeddings().weight
    original = weight[0].clone()
    with torch.no_grad():
        weight[0] += 1.0
    try:
        with pytest.raises(InfinipotError, match=r"other weights \(tiny:qwen2_5_vl, fingerprint \w+\)"):
            load_session(saved[0], adapter)
    finally:
        with torch.no_grad():
            weight[0] = original
    load_session(saved[0], adapter)  # the same weights load again


# --- damaged files ------------------------------------------------------------------------------
def header_end(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def rewritten(source, target, **outer_changes) -> None:
    """A copy of a cache with some of its outer safetensors metadata replaced."""
    with safe_open(str(source), framework="pt") as handle:
        metadata = {**handle.metadata(), **outer_changes}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    save_file(tensors, str(target), metadata=metadata)


@pytest.mark.parametrize("keep", ["nothing", "4 bytes", "8 bytes", "half the header", "the header", "half",
                                  "all but 1 byte"])
def test_truncated_file_is_refused(saved, adapters, keep):
    path = saved[0]
    data = path.read_bytes()
    cut = {"nothing": 0, "4 bytes": 4, "8 bytes": 8, "half the header": header_end(data) // 2,
           "the header": header_end(data), "half": len(data) // 2, "all but 1 byte": len(data) - 1}[keep]
    path.write_bytes(data[:cut])
    with pytest.raises(InfinipotError, match="damaged or truncated.*re-create it"):
        load_session(path, adapters("qwen2_5_vl"))


def test_every_flipped_byte_is_caught(saved, adapters):
    """Flip one bit at offsets across the length, the header and the metadata, and across the tensor data."""
    path, _ = saved
    adapter = adapters("qwen2_5_vl")
    data = path.read_bytes()
    end = header_end(data)
    offsets = sorted({*range(0, 8), *range(8, end, max(1, (end - 8) // 60)), *range(end, len(data), (len(data) - end) // 40)})
    damaged = path.with_name("damaged.ipv")
    for offset in offsets:
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        damaged.write_bytes(bytes(flipped))
        with pytest.raises(InfinipotError):
            load_session(damaged, adapter)
    damaged.write_bytes(data)
    load_session(damaged, adapter)  # the unflipped copy loads


def test_flipped_tensor_byte_names_the_tensor(saved, adapters):
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(InfinipotError, match=r"tensor [\w.]+ does not match its checksum"):
        load_session(path, adapters("qwen2_5_vl"))
    with pytest.raises(InfinipotError, match="does not match its checksum"):
        verify(path)  # `infinipot info --verify` needs no model


def test_wrong_headers(saved, tmp_path, adapters):
    adapter = adapters("qwen2_5_vl")
    data = saved[0].read_bytes()
    huge = tmp_path / "huge.ipv"
    huge.write_bytes((2**40).to_bytes(8, "little") + data[8:])
    with pytest.raises(InfinipotError, match="damaged or truncated.*header too large"):
        load_session(huge, adapter)
    text = tmp_path / "notes.ipv"
    text.write_text("this is not a cache\n" * 20)
    with pytest.raises(InfinipotError, match="damaged or truncated"):
        load_session(text, adapter)
    weights = tmp_path / "weights.ipv"
    save_file({"w": torch.zeros(2)}, str(weights), metadata={"format": "pt"})
    with pytest.raises(InfinipotError, match=r"not an infinipot cache \(expected format 'infinipot-kv-cache', found 'pt'\)"):
        load_session(weights, adapter)
    video_like = tmp_path / "clip.bin"
    video_like.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    with pytest.raises(InfinipotError, match="not an infinipot cache"):
        read_header(video_like)


def test_newer_format_version_is_refused(saved, tmp_path):
    newer = tmp_path / "newer.ipv"
    rewritten(saved[0], newer, format_version="2")
    with pytest.raises(InfinipotError, match=r"uses cache format 2 but infinipot [\d.]+ reads format 1 at most: upgrade"):
        read_header(newer)


def test_edited_metadata_is_refused(saved, tmp_path):
    path = saved[0]
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["infinipot"])
    meta["layout"]["prefix_len"] += 1  # valid JSON, wrong content
    edited = tmp_path / "edited.ipv"
    rewritten(path, edited, infinipot=json.dumps(meta))
    with pytest.raises(InfinipotError, match="metadata does not match its checksum"):
        read_header(edited)


# --- atomic writes ------------------------------------------------------------------------------
def test_interrupted_write_leaves_the_old_file_intact(saved, adapters, monkeypatch):
    path, session = saved
    old = path.read_bytes()

    def interrupted(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_file, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_session(session, path, provenance())
    assert path.read_bytes() == old
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    new = path.with_name("new.ipv")
    with pytest.raises(KeyboardInterrupt):
        save_session(session, new, provenance())
    assert not new.exists()
    load_session(path, adapters("qwen2_5_vl"))


def test_failed_rename_is_one_error_and_keeps_the_old_file(saved, monkeypatch):
    path, session = saved
    old = path.read_bytes()

    def disk_full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(InfinipotError, match=r"could not write .*No space left on device"):
        save_session(session, path, provenance())
    assert path.read_bytes() == old
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_unwritable_targets_fail_before_writing(saved, tmp_path):
    session = saved[1]
    with pytest.raises(InfinipotError, match="directory does not exist"):
        save_session(session, tmp_path / "missing" / "video.ipv", provenance())
    with pytest.raises(InfinipotError, match="is a directory"):
        save_session(session, tmp_path, provenance())


# --- chat turns ---------------------------------------------------------------------------------
def test_chat_keeps_turns_and_reset_returns_to_the_video(adapters):
    adapter = adapters("qwen2_5_vl")
    session = streamed(adapter, count=8, policy="full")
    video_length = session.cache.video_length
    alone = session.ask("What happened?", max_new_tokens=5)
    first = session.chat("What happened?", max_new_tokens=5)
    assert first.text == alone.text  # the first turn is an ordinary question
    after_first = session.cache.seq_length()
    assert after_first > video_length
    start = int(session.next_turn_position.max())
    follow = adapter.follow_up("And then?", session.next_turn_position[:, -1])
    assert adapter.tokenizer.decode(follow.ids[0]) == "<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n"
    assert int(follow.positions[0, 0]) == start and torch.equal(follow.positions[0], torch.arange(start, start + follow.ids.shape[1]))
    session.chat("And then?", max_new_tokens=5)
    assert session.cache.seq_length() > after_first and len(session.turns) == 2
    session.reset()
    assert session.cache.seq_length() == video_length and session.turns == []
    assert session.ask("What happened?", max_new_tokens=5).text == alone.text


def test_ask_during_a_chat_answers_from_the_video_alone(adapters):
    session = streamed(adapters("qwen2_vl"), count=8, policy="full")
    alone = session.ask("Where is it?", max_new_tokens=5)
    session.chat("What happened?", max_new_tokens=5)
    assert session.ask("Where is it?", max_new_tokens=5).text == alone.text
    assert session.cache.seq_length() == session.cache.video_length and not session.turns


def test_second_turn_matches_one_forward_over_the_whole_conversation(adapters):
    """The kept turn and the follow-up are exactly what the model sees in one pass over both turns."""
    from test_exactness import QUESTION, one_shot_inputs, random_frames, streamed_session

    adapter = adapters("qwen2_vl")
    video = random_frames(8, seed=3)
    inputs, sample_fps = one_shot_inputs(adapter, video, native_fps=1.0, stride=1)
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad():
        generated = adapter.model.generate(**inputs, do_sample=False, max_new_tokens=6)[0, prompt_len:].tolist()
    eos = adapter.eos_token_ids()
    answer_ids = until_eos(generated, eos)
    session = streamed_session(adapter, video, sample_fps, 2, CompressionSettings(policy="full"))
    first = session.chat(QUESTION, max_new_tokens=6)
    assert first.tokens == len(answer_ids) > 0
    assert first.text == adapter.tokenizer.decode(answer_ids, skip_special_tokens=True).strip()

    follow = adapter.follow_up("And then?", session.next_turn_position[:, -1])
    ids = torch.cat([inputs["input_ids"][0], torch.tensor(answer_ids), follow.ids[0]]).unsqueeze(0)
    extra = {key: value for key, value in inputs.items() if key not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:  # the appended tokens are text
        types = extra["mm_token_type_ids"]
        extra["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, ids.shape[1] - types.shape[1])], dim=1)
    with torch.no_grad():
        reference = adapter.model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits[0, -1]
        expected = adapter.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **extra,
                                          do_sample=False, max_new_tokens=6)[0, ids.shape[1]:].tolist()
    length = session.cache.seq_length()
    streamed_logits = adapter.forward(adapter.embed_ids(follow.ids), follow.positions, session.cache.kv)
    session.cache.truncate(length)
    assert (streamed_logits - reference).abs().max().item() <= 1e-4
    expected = until_eos(expected, eos)
    second = session.chat("And then?", max_new_tokens=6)
    assert second.text == adapter.tokenizer.decode(expected, skip_special_tokens=True).strip()


def test_saved_conversation_resumes(adapters, tmp_path):
    adapter = adapters("qwen2_5_vl")
    session = streamed(adapter)
    session.chat("What happened?", max_new_tokens=4)
    session.chat("And then?", max_new_tokens=4)
    path = tmp_path / "chat.ipv"
    save_session(session, path, provenance())
    meta = read_header(path).meta
    assert [turn["question"] for turn in meta["conversation"]] == ["What happened?", "And then?"]
    assert meta["layout"]["seq_length"] > meta["layout"]["video_length"]
    continued = session.chat("Why?", max_new_tokens=6)
    loaded = load_session(path, adapter)
    assert [turn.text for turn in loaded.turns] == [turn.text for turn in session.turns[:2]]
    assert loaded.chat("Why?", max_new_tokens=6).text == continued.text
    loaded.reset()
    assert loaded.cache.seq_length() == loaded.cache.video_length == session.cache.video_length


def test_a_character_split_across_tokens_is_shown_whole(adapters, monkeypatch):
    """Byte-level tokens of 中 (e4 b8 ad) and é (c3 a9): the pieces shown are whole characters."""
    adapter = adapters("qwen2_5_vl")
    session = streamed(adapter, count=8, policy="full")
    tokens = adapter.tokenizer.convert_tokens_to_ids(["ä", "¸", "Ń", "Ã", "©", "Ã"])  # ends mid-character
    picks = iter(tokens)
    monkeypatch.setattr("infinipot.engine._pick", lambda logits, temperature, generator: next(picks))
    pieces = []
    answer = session.ask("What happened?", max_new_tokens=len(tokens), on_text=pieces.append)
    assert pieces == ["中", "é", "\ufffd"]  # the unfinished last byte is shown once, at the end
    assert answer.text == "中é\ufffd" == adapter.tokenizer.decode(tokens) and answer.tokens == 6
