"""Saved caches: a round trip answers exactly as before; a file that does not fit, is damaged, edited,
crafted or newer is refused in one line, before anything it asks for is allocated."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from helpers import ALL_FAMILIES, streamed
from infinipot import InfinipotError, Session
from infinipot.cache_file import read_header, verify
from infinipot.cache_header import FORMAT_VERSION, LAYOUT_FIELDS
from infinipot.fingerprints import sha256_hex

QUESTIONS = ["What happened?", "What color is the square?", "Where does it go?"]


@pytest.fixture(scope="module")
def written(models, tmp_path_factory):
    session = streamed(models, "qwen2_5_vl")
    path = tmp_path_factory.mktemp("written") / "video.ipv"
    session.save(path)
    return path.read_bytes(), session


@pytest.fixture
def saved(written, tmp_path):
    """A compressed qwen2_5_vl cache on disk (this test's own copy), and the session that wrote it."""
    path = tmp_path / "video.ipv"
    path.write_bytes(written[0])
    return path, written[1]


def load(path, models, family="qwen2_5_vl", **kwargs):
    return Session.load(path, model=models(family), **kwargs)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_round_trip_answers_exactly_as_right_after_compression(models, tmp_path, family):
    session = streamed(models, family, budget=200 if family.startswith("llava") else 96)
    assert session.state.stats.compressions > 0
    before = [session.ask(question, max_new_tokens=8) for question in QUESTIONS]
    logits = session.first_token_logits(QUESTIONS[0])
    path = tmp_path / "video.ipv"
    assert session.save(path) == path.stat().st_size > 0
    streamed(models, family, count=8, seed=7)  # another stream on the same model changes nothing
    loaded = load(path, models, family)
    after = [loaded.ask(question, max_new_tokens=8) for question in QUESTIONS]
    assert [(a.text, a.tokens) for a in after] == [(b.text, b.tokens) for b in before]
    assert torch.equal(loaded.first_token_logits(QUESTIONS[0]), logits)
    assert loaded.state.prefix_ids == session.state.prefix_ids
    for original, restored in zip(session.cache.layers, loaded.cache.layers):
        assert torch.equal(original.keys, restored.keys) and torch.equal(original.values, restored.values)
    for original, restored in zip(session.cache.layouts, loaded.cache.layouts):
        for name in LAYOUT_FIELDS:
            assert torch.equal(getattr(original, name), getattr(restored, name))
    assert loaded.state.stats.as_dict() == session.state.stats.as_dict()
    assert loaded.settings == session.settings and loaded.state.plan == session.state.plan
    assert loaded.state.positions == session.state.positions


def test_metadata_describes_the_cache(saved):
    path, session = saved
    meta = read_header(path).meta
    assert meta["format_version"] == FORMAT_VERSION == 2
    assert meta["model"]["id"] == "tiny:qwen2_5_vl" and meta["model"]["family"] == "qwen2_5_vl"
    assert meta["model"]["config"]["num_hidden_layers"] == 2 and meta["model"]["config"]["num_key_value_heads"] == 2
    assert meta["settings"]["policy"] == "infinipot" and meta["state"]["plan"]["budget_tokens"] == 96
    assert meta["settings"]["name"] == "tiny" and meta["policy"]["tar_ratio"] == 0.5
    assert meta["layout"]["visual_tokens"] == [96, 96] and meta["layout"]["prefix_len"] == session.cache.prefix_len
    assert meta["state"]["stats"]["frames"] == 24
    assert meta["state"]["stats"]["compressions"] == session.state.stats.compressions
    assert meta["prefix_text"].endswith("<|vision_start|>")
    assert meta["state"]["positions"]["largest"] == session.state.positions.largest
    assert meta["tensors"]["layers.0.keys"]["dtype"] == "F32"
    with safe_open(str(path), framework="pt") as handle:  # plain safetensors: any reader can list it
        assert "layers.1.values" in handle.keys()


def test_cv_thresholds_and_pool_sizes_are_saved(models, tmp_path):
    session = streamed(models, "qwen2_5_vl", pooling="cv")
    memory = session.state.policy_memory
    assert len(memory["cv_thresholds"]) == 3 and len(memory["pool_sizes"]) == 2
    path = tmp_path / "cv.ipv"
    session.save(path)
    assert read_header(path).meta["state"]["policy_memory"]["cv_thresholds"] == memory["cv_thresholds"]
    assert load(path, models).state.policy_memory["cv_thresholds"] == memory["cv_thresholds"]


def test_cache_moves_to_the_models_dtype(models, tmp_path):
    session = streamed(models, "qwen2_5_vl")
    for layer in session.cache.layers:  # as if made by a bfloat16 model
        layer.key_buffer, layer.value_buffer = layer.key_buffer.bfloat16(), layer.value_buffer.bfloat16()
        layer._refresh()
    path = tmp_path / "half.ipv"
    session.save(path)
    assert read_header(path).meta["kv_dtype"] == "bfloat16"
    layer = load(path, models).cache.layers[0]
    assert layer.keys.dtype == torch.float32
    assert torch.equal(layer.keys, session.cache.layers[0].keys.float())


# --- caches that do not fit ---------------------------------------------------------------------
def test_other_family_is_refused(saved, models):
    with pytest.raises(InfinipotError, match=r"made with a qwen2_5_vl model.*loaded model is tiny:qwen2_vl"):
        load(saved[0], models, "qwen2_vl", preset="tiny-qwen2-vl")


def test_other_config_is_refused_naming_the_field(saved, models, monkeypatch):
    monkeypatch.setattr(models("qwen2_5_vl").adapter.text_config, "vocab_size", 401)
    with pytest.raises(InfinipotError, match=r"another config.*expected vocab_size 400 \(found 401\)"):
        load(saved[0], models)


def test_other_weights_are_refused(saved, models):
    weight = models("qwen2_5_vl").adapter.model.get_input_embeddings().weight
    original = weight[0].clone()
    with torch.no_grad():
        weight[0] += 1.0
    try:
        with pytest.raises(InfinipotError, match=r"other weights \(tiny:qwen2_5_vl, fingerprint \w+\)"):
            load(saved[0], models)
    finally:
        with torch.no_grad():
            weight[0] = original
    load(saved[0], models)  # the same weights load again


# --- damaged, edited and crafted files ------------------------------------------------------------
def header_end(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def rewritten(source, target, meta_changes=None, tensors=None, **outer_changes) -> None:
    """A copy of a cache with its metadata edited and its checksum recomputed (a crafted file)."""
    with safe_open(str(source), framework="pt") as handle:
        outer = {**handle.metadata(), **outer_changes}
        tensors = tensors or {name: handle.get_tensor(name) for name in handle.keys()}
    if meta_changes is not None:
        meta = json.loads(outer["infinipot"])
        meta_changes(meta)
        outer["infinipot"] = json.dumps(meta)
        outer["infinipot_sha256"] = sha256_hex(outer["infinipot"].encode())
    save_file(tensors, str(target), metadata=outer)


@pytest.mark.parametrize("keep", ["nothing", "4 bytes", "8 bytes", "half the header", "the header", "half",
                                  "all but 1 byte"])
def test_truncated_file_is_refused(saved, models, keep):
    path = saved[0]
    data = path.read_bytes()
    cut = {"nothing": 0, "4 bytes": 4, "8 bytes": 8, "half the header": header_end(data) // 2,
           "the header": header_end(data), "half": len(data) // 2, "all but 1 byte": len(data) - 1}[keep]
    path.write_bytes(data[:cut])
    with pytest.raises(InfinipotError, match="damaged or truncated.*re-create it"):
        load(path, models)


def test_every_flipped_byte_is_caught(saved, models):
    """Flip one bit at offsets across the length, the header and the metadata, and across the tensor data."""
    path, _ = saved
    data = path.read_bytes()
    end = header_end(data)
    offsets = sorted({*range(0, 8), *range(8, end, max(1, (end - 8) // 60)), *range(end, len(data), (len(data) - end) // 40)})
    damaged = path.with_name("damaged.ipv")
    for offset in offsets:
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        damaged.write_bytes(bytes(flipped))
        with pytest.raises(InfinipotError):
            load(damaged, models)
    damaged.write_bytes(data)
    load(damaged, models)  # the unflipped copy loads


def test_a_dtype_edited_in_the_header_is_caught(saved, models):
    """`"dtype":"F32"` -> `"I32"` in the safetensors header: same bytes, other numbers."""
    path, _ = saved
    data = path.read_bytes()
    end = header_end(data)
    header = data[8:end].decode()
    edited = header.replace('"dtype":"F32"', '"dtype":"I32"', 1)
    assert edited != header
    path.write_bytes(data[:8] + edited.encode() + data[end:])
    with pytest.raises(InfinipotError, match="is not the dtype and shape its checksum covers"):
        verify(path)
    with pytest.raises(InfinipotError, match="damaged"):
        load(path, models)


def test_crafted_counts_are_refused_before_anything_is_allocated(saved, tmp_path):
    crafted = tmp_path / "crafted.ipv"
    rewritten(saved[0], crafted, lambda meta: meta["layout"].update(layers=100_000_000))
    with pytest.raises(InfinipotError, match="claims 100000000 layers"):
        verify(crafted)
    rewritten(saved[0], crafted, lambda meta: meta["layout"].update(visual_tokens=[96, 10**9]))
    with pytest.raises(InfinipotError, match="layout of layer 1 does not match"):
        verify(crafted)
    for change in (lambda meta: meta.update(layout="x"), lambda meta: meta["layout"].update(kv_heads="2"),
                   lambda meta: meta.pop("state"), lambda meta: meta["tensors"].update({"layers.0.keys": 5})):
        rewritten(saved[0], crafted, change)
        with pytest.raises(InfinipotError, match="damaged"):
            verify(crafted)


def test_crafted_state_is_damaged_not_a_traceback(saved, models, tmp_path):
    crafted = tmp_path / "state.ipv"
    rewritten(saved[0], crafted, lambda meta: meta["state"].pop("plan"))
    with pytest.raises(InfinipotError, match="damaged.*unreadable stream state"):
        load(crafted, models)


def test_flipped_tensor_byte_names_the_tensor(saved, models):
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(InfinipotError, match=r"tensor [\w.]+ does not match its checksum"):
        load(path, models)
    with pytest.raises(InfinipotError, match="does not match its checksum"):
        verify(path)  # `infinipot info --verify` needs no model


def test_wrong_headers(saved, tmp_path, models):
    data = saved[0].read_bytes()
    huge = tmp_path / "huge.ipv"
    huge.write_bytes((2**40).to_bytes(8, "little") + data[8:])
    with pytest.raises(InfinipotError, match="damaged or truncated.*header too large"):
        load(huge, models)
    text = tmp_path / "notes.ipv"
    text.write_text("this is not a cache\n" * 20)
    with pytest.raises(InfinipotError, match="damaged or truncated"):
        load(text, models)
    weights = tmp_path / "weights.ipv"
    save_file({"w": torch.zeros(2)}, str(weights), metadata={"format": "pt"})
    with pytest.raises(InfinipotError, match=r"not an infinipot cache \(expected format 'infinipot-kv-cache', found 'pt'\)"):
        load(weights, models)
    video_like = tmp_path / "clip.bin"
    video_like.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    with pytest.raises(InfinipotError, match="not an infinipot cache"):
        read_header(video_like)


def test_non_regular_files_are_refused_without_opening_them(tmp_path):
    fifo = tmp_path / "fifo.ipv"
    os.mkfifo(fifo)
    with pytest.raises(InfinipotError, match="not a regular file"):
        read_header(fifo)  # opening a FIFO would wait forever for a writer
    with pytest.raises(InfinipotError, match="is a directory"):
        read_header(tmp_path)


def test_newer_and_older_formats_are_refused(saved, tmp_path):
    other = tmp_path / "other.ipv"
    rewritten(saved[0], other, format_version="3")
    with pytest.raises(InfinipotError, match=r"uses cache format 3 but infinipot [\d.]+ reads format 2 at most: upgrade"):
        read_header(other)
    rewritten(saved[0], other, format_version="1")
    with pytest.raises(InfinipotError, match="infinipot 0.1.*compress the video again"):
        read_header(other)


def test_edited_metadata_is_refused(saved, tmp_path):
    path = saved[0]
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["infinipot"])
    meta["layout"]["prefix_len"] += 1  # valid JSON, wrong content, checksum not recomputed
    edited = tmp_path / "edited.ipv"
    rewritten(path, edited, infinipot=json.dumps(meta))
    with pytest.raises(InfinipotError, match="metadata does not match its checksum"):
        read_header(edited)


# --- atomic writes ------------------------------------------------------------------------------
def test_interrupted_write_leaves_the_old_file_intact(saved, models, monkeypatch):
    path, session = saved
    old = path.read_bytes()

    def interrupted(tensors, temporary, header):
        temporary.write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("infinipot.cache_file._save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        session.save(path)
    assert path.read_bytes() == old
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    new = path.with_name("new.ipv")
    with pytest.raises(KeyboardInterrupt):
        session.save(new)
    assert not new.exists()
    load(path, models)


def test_failed_rename_is_one_error_and_keeps_the_old_file(saved, monkeypatch):
    path, session = saved
    old = path.read_bytes()

    def disk_full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(InfinipotError, match=r"could not write .*No space left on device"):
        session.save(path)
    assert path.read_bytes() == old
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_unwritable_targets_fail_before_writing(saved, tmp_path):
    session = saved[1]
    with pytest.raises(InfinipotError, match="directory does not exist"):
        session.save(tmp_path / "missing" / "video.ipv")
    with pytest.raises(InfinipotError, match="is a directory"):
        session.save(tmp_path)
    fifo = tmp_path / "pipe.ipv"
    os.mkfifo(fifo)
    with pytest.raises(InfinipotError, match="not a regular file"):
        session.save(fifo)
    with pytest.raises(InfinipotError, match="more than this file system allows"):
        session.save(tmp_path / ("x" * 300 + ".ipv"))
    long_but_legal = tmp_path / ("y" * 250 + ".ipv")  # the temporary name stays short
    session.save(long_but_legal)
    assert long_but_legal.stat().st_size > 0


# --- conversations ------------------------------------------------------------------------------
def test_chat_keeps_turns_and_reset_returns_to_the_video(models):
    session = streamed(models, "qwen2_5_vl", count=8, policy="full")
    video_length = session.cache.video_length
    alone = session.ask("What happened?", max_new_tokens=5)
    first = session.chat("What happened?", max_new_tokens=5)
    assert first.text == alone.text  # the first turn is an ordinary question
    after_first = session.cache.seq_length()
    assert after_first > video_length
    start = session.state.next_turn_start
    adapter = session.model.adapter
    follow = adapter.follow_up("And then?", start)
    assert adapter.tokenizer.decode(follow.ids[0]) == "<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n"
    assert torch.equal(follow.positions[0], torch.arange(start, start + follow.ids.shape[1]))
    session.chat("And then?", max_new_tokens=5)
    assert session.cache.seq_length() > after_first and len(session.state.turns) == 2
    session.reset()
    assert session.cache.seq_length() == video_length and session.state.turns == []
    assert session.ask("What happened?", max_new_tokens=5).text == alone.text


def test_ask_during_a_chat_answers_from_the_video_alone(models):
    session = streamed(models, "qwen2_vl", count=8, policy="full")
    alone = session.ask("Where is it?", max_new_tokens=5)
    session.chat("What happened?", max_new_tokens=5)
    assert session.ask("Where is it?", max_new_tokens=5).text == alone.text
    assert session.cache.seq_length() == session.cache.video_length and not session.state.turns


def test_saved_conversation_resumes(models, tmp_path):
    session = streamed(models, "qwen2_5_vl")
    session.chat("What happened?", max_new_tokens=4)
    session.chat("And then?", max_new_tokens=4)
    path = tmp_path / "chat.ipv"
    session.save(path)
    meta = read_header(path).meta
    assert [turn["question"] for turn in meta["state"]["turns"]] == ["What happened?", "And then?"]
    assert meta["layout"]["seq_length"] > meta["layout"]["video_length"]
    continued = session.chat("Why?", max_new_tokens=6)
    loaded = load(path, models)
    assert [turn.text for turn in loaded.state.turns] == [turn.text for turn in session.state.turns[:2]]
    assert loaded.chat("Why?", max_new_tokens=6).text == continued.text
    loaded.reset()
    assert loaded.cache.seq_length() == loaded.cache.video_length == session.cache.video_length
