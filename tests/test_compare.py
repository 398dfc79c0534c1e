"""`compare`: one decode and one vision pass per chunk shared by every policy's cache, with the same
caches and answers as separate runs; results per (question, policy); the plot of what each kept."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch

from helpers import session
from infinipot.compare import compare
from infinipot.comparison import Comparison, accuracy_of, agreement, same_answer
from infinipot.errors import InfinipotError
from infinipot.plot_retention import plot_retention
from infinipot.questions import QuestionEntry
from infinipot.session import Session

POLICIES = ["infinipot", "hermes", "recent-frames", "streammem", "full"]
QUESTIONS = [
    QuestionEntry(1, "What moved?", time=9.5),  # mid-chunk: a tentative chunk, rolled back afterwards
    QuestionEntry(2, "Which side?", options=("left", "right"), answer="A", categories={"kind": "where"}),
    QuestionEntry(3, "How many squares?", answer="1", categories={"kind": "count"}),
    QuestionEntry(4, "Too late?", time=500.0),  # past the end: answered at the end, flagged
]
ASK = dict(max_new_tokens=4)


@contextmanager
def vision_calls(model) -> Iterator[list[int]]:
    """Counts the vision tower's forwards (the expensive part compare shares) while the block runs."""
    calls = [0]
    handle = model.adapter.model.model.visual.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def separate_run(models, video, name: str, chunk_frames: int, **settings) -> tuple[Session, list]:
    """One policy alone, the way `infinipot ask` answers timed questions."""
    alone = session(models, policy=name, budget=96, chunk_frames=chunk_frames, **settings)
    answers = []
    alone.stream(video, until=9.5)
    answers.append(alone.ask(QUESTIONS[0].prompt, **ASK))
    alone.stream()
    for entry in (QUESTIONS[1], QUESTIONS[2], QUESTIONS[3]):
        answers.append(alone.ask(entry.prompt, **ASK))
    return alone, answers


def cache_state(cache) -> list:
    return [(layer.keys.clone(), layer.values.clone(), layout) for layer, layout in zip(cache.layers, cache.layouts)]


@dataclass
class Compared:
    result: Comparison
    events: list  # progress events
    sessions: dict  # policy -> the session compare streamed it in
    vision_calls: int


@pytest.fixture(scope="module")
def compared(models, short_video) -> Compared:
    """One compare run over the five policies, with its sessions seen as compare summarises them."""
    import infinipot.compare as compare_module

    model = models("qwen2_5_vl")
    sessions, events, original = {}, [], compare_module.retention

    def capture(one_session):
        sessions[one_session.policy.name] = one_session
        return original(one_session)

    compare_module.retention = capture
    try:
        with vision_calls(model) as calls:
            result = compare(short_video, QUESTIONS, POLICIES, preset=model.settings, model=model, budget=96,
                             on_event=events.append, **ASK)
    finally:
        compare_module.retention = original
    return Compared(result, events, sessions, calls[0])


def test_shared_encoding_gives_the_same_caches_and_answers_as_separate_runs(models, short_video, compared):
    """Every policy's final cache is bit-identical to its own run's, and so are its answers."""
    model, result, sessions, shared_calls = models("qwen2_5_vl"), compared.result, compared.sessions, \
        compared.vision_calls
    chunk_frames = result.settings["chunk_frames"]
    assert result.vision_runs == shared_calls == result.chunks + 1  # + the tentative part before question 1
    for name, outcome in zip(POLICIES, result.policies):
        with vision_calls(model) as calls:
            alone, answers = separate_run(models, short_video, name, chunk_frames)
        assert calls[0] == shared_calls, "a run alone encodes every chunk itself"
        assert outcome.shared_encoding and outcome.policy == name
        assert [r["answer"] for r in outcome.records] == [a.text for a in answers], name
        assert [r["tokens"] for r in outcome.records] == [a.tokens for a in answers], name
        mine = sessions[name].cache
        assert mine.prefix_len == alone.cache.prefix_len
        for (keys, values, layout), layer, theirs in zip(cache_state(mine), alone.cache.layers, alone.cache.layouts):
            assert torch.equal(keys, layer.keys) and torch.equal(values, layer.values), name
            for field in ("frame", "row", "col", "position", "merged", "marker"):
                assert torch.equal(getattr(layout, field), getattr(theirs, field)), (name, field)
        assert sessions[name].state.stats.compressions == alone.state.stats.compressions
        assert sessions[name].state.policy_memory == alone.state.policy_memory
        assert sessions[name].state.timeline == alone.state.timeline  # the source's times of every step


def test_results_per_question_and_policy(compared):
    result = compared.result
    assert [type(e).__name__ for e in compared.events] == ["Progress"] * result.chunks
    records = result.records()
    assert len(records) == len(QUESTIONS) * len(POLICIES)
    assert [r["policy"] for r in records[: len(POLICIES)]] == POLICIES
    assert [r["id"] for r in records[:: len(POLICIES)]] == [1, 2, 3, 4]
    first, late = records[0], records[3 * len(POLICIES)]
    assert first["asked_at"] == 9.5 and "past_end" not in first
    assert late["past_end"] is True and late["asked_at"] == 20.0
    by_name = {p.policy: p for p in result.policies}
    for outcome in result.policies:
        assert outcome.accuracy["overall"]["total"] == 2 and outcome.accuracy["unscored"] == 2
        assert set(outcome.accuracy["by_category"]["kind"]) == {"where", "count"}
        # tiny: 2 layers x 2 KV heads x 16 dims x (K, V) x fp32 = 512 bytes a token
        assert outcome.peak_kv_bytes == outcome.peak_cached_tokens * 512
        assert (outcome.timings["guidance_s"] > 0) == (outcome.policy in ("hermes", "streammem"))
        assert outcome.compression_share >= 0
    assert by_name["full"].agreement_with_full is None and by_name["full"].compressions == 0
    assert by_name["full"].peak_cached_tokens == 120 > by_name["infinipot"].peak_cached_tokens == 96
    for name in POLICIES[:-1]:
        expected = agreement(by_name[name].records, by_name["full"].records)
        assert by_name[name].agreement_with_full == expected
    json.dumps(result.as_dict())  # JSON-ready as it stands
    side = result.answers_side_by_side()
    assert side[1]["expected"] == "A" and set(side[1]["answers"]) == set(POLICIES)


def test_retention_accounts_for_every_cached_token(compared):
    result = compared.result
    by_name = {p.policy: p for p in result.policies}
    for outcome in result.policies:
        retention = outcome.retention
        assert retention.step_seconds == 2.0 and len(retention.kept) == 10  # 20 s at 1 fps, 2 frames a step
        at_the_end = outcome.records[-1]["cached_tokens"]
        assert sum(retention.kept) + retention.merged == pytest.approx(at_the_end)
    assert by_name["full"].retention.kept == [12.0] * 10
    recent = by_name["recent-frames"].retention.kept
    assert set(recent) == {0.0, 12.0} and recent[-6:] == [12.0] * 6 and recent[0] == 0.0  # the newest, whole
    assert by_name["hermes"].retention.merged > 0 and by_name["infinipot"].retention.merged == 0


def test_an_agreeing_policy_agrees_with_full(models, short_video):
    """With a budget that evicts nothing a policy's cache is full's, so its answers agree everywhere."""
    model = models("qwen2_5_vl")
    result = compare(short_video, QUESTIONS[1:3], ["full", "infinipot"], preset=model.settings, model=model,
                     budget=800, **ASK)
    infinipot = result.policies[1]
    assert infinipot.compressions == 0 and infinipot.agreement_with_full == 1.0


def test_positions_that_diverge_are_encoded_again_and_still_equal_separate_runs(models):
    """Compact positions renumber per policy: such a stream re-encodes its chunk, and ends as its own run would."""
    model = models("llava_onevision")
    path = _video_file(seconds=20)
    result = compare(path, QUESTIONS[1:2], ["infinipot", "recent-frames"], preset=model.settings, model=model,
                     budget=40, **ASK)
    shared = {p.policy: p.shared_encoding for p in result.policies}
    assert shared == {"infinipot": True, "recent-frames": False}
    assert result.vision_runs > result.chunks
    alone = Session.from_preset(model.settings, model=model, policy="recent-frames", budget=40,
                                chunk_frames=result.settings["chunk_frames"])
    alone.stream(path)
    assert result.policies[1].records[0]["answer"] == alone.ask(QUESTIONS[1].prompt, **ASK).text


def _video_file(seconds: int) -> str:
    import tempfile

    from infinipot.synthetic import write_test_video

    return str(write_test_video(f"{tempfile.mkdtemp()}/clip.mp4", seconds=seconds, fps=1))


def test_refusals_are_one_line(models, short_video):
    model = models("qwen2_5_vl")
    common = dict(preset=model.settings, model=model, budget=96)
    with pytest.raises(InfinipotError, match="`full` would cache 120 tokens .* leave it out of `policies`"):
        compare(short_video, ["?"], ["full", "sink"], full_max_bytes=1000, **common)
    with pytest.raises(InfinipotError, match="names sink more than once"):
        compare(short_video, ["?"], ["sink", "sink"], **common)
    with pytest.raises(InfinipotError, match="unknown `policy` 'magic'"):
        compare(short_video, ["?"], ["magic"], **common)
    with pytest.raises(InfinipotError, match="no questions"):
        compare(short_video, [], ["sink"], **common)


def test_same_answer_reads_choices_and_normalises_text():
    assert same_answer({"choice": "B", "answer": "B. right"}, {"choice": "B", "answer": "(B)"})
    assert not same_answer({"choice": None, "answer": "?"}, {"choice": None, "answer": "?"})
    assert same_answer({"answer": "A red square."}, {"answer": "a red square"})
    assert agreement([{"answer": "x"}, {"answer": "y"}], [{"answer": "x"}, {"answer": "z"}]) == 0.5
    assert accuracy_of([{"correct": True, "categories": {"k": "a"}}, {"correct": False}])["overall"]["total"] == 2


def test_plot_is_a_png_a_person_can_read(compared, tmp_path):
    result = compared.result
    path = plot_retention(result, tmp_path / "kept.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 60 * len(result.policies)
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]  # a valid IHDR chunk
