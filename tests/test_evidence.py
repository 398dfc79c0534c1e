"""Evidence (issue 17): the mechanics, for every family. Random weights mean no test of meaning.

The attention is checked against transformers' own eager attention weights (captured from every
attention module while the same answer is generated), each head's mass sums to 1 over the cached
keys, the answer is the same with and without evidence, and a slot's attention lands on the video
time its step was fed at through compressions, compact positions and a question mid-stream.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from helpers import ALL_FAMILIES, TINY_CLI, frames, invoke, session
from infinipot import evidence as evidence_module
from infinipot.evidence import Moment, attention_weights, moments_of, pick_moments, step_mass
from infinipot.families import FAMILIES
from infinipot.model import Model
from infinipot.session import Session
from infinipot.timeline import Timeline

QUESTION = "What happens in the video?"


def gapped_times(count: int, start: float = 100.0, gap_after: int = 8, gap: float = 7.0) -> np.ndarray:
    """Frame times at 1 fps from `start`, with `gap` seconds skipped after frame `gap_after` (damaged video)."""
    times = start + np.arange(count, dtype=np.float64)
    times[gap_after:] += gap
    return times


@pytest.fixture(scope="module")
def eager_models(tiny_cache):
    """Each family's tiny model with eager attention in float32, whose modules return their attention weights."""
    loaded: dict[str, Model] = {}

    def get(family: str) -> Model:
        if family not in loaded:
            from infinipot.presets import load_preset

            base = load_preset(FAMILIES[family].tiny_preset)
            loaded[family] = Model(base.replace(attn_implementation="eager", dtype="float32"), device="cpu")
        return loaded[family]

    return get


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_attention_mass_equals_eager_weights_and_sums_to_one_per_head(eager_models, monkeypatch, family):
    model = eager_models(family)
    stream = Session(model.settings.replace(policy="infinipot", budget=96, chunk_frames=8), model=model)
    stream.feed(frames(24, seed=3))
    stream.finish()
    layers = model.adapter.model.model.language_model.layers
    eager: list[list[torch.Tensor]] = [[] for _ in layers]  # per layer: each forward's [heads, new, keys]
    hooks = [layer.self_attn.register_forward_hook(
        lambda module, args, output, index=index: eager[index].append(output[1][0].detach().clone()))
        for index, layer in enumerate(layers)]
    measured = {}

    def spy(recorder, cache, first):
        measured["masses"], measured["first"] = real(recorder, cache, first), first
        return measured["masses"]

    real = evidence_module.recorded_masses
    monkeypatch.setattr(evidence_module, "recorded_masses", spy)
    try:
        answer = stream.ask(QUESTION, max_new_tokens=5, evidence=True)
    finally:
        for hook in hooks:
            hook.remove()
    kv_heads = model.adapter.kv_heads
    for forwards, mass in zip(eager, measured["masses"]):
        length = forwards[-1].shape[-1]
        rows = torch.cat([torch.nn.functional.pad(w, (0, length - w.shape[-1])) for w in forwards], dim=1)
        assert torch.allclose(rows.sum(dim=-1), torch.ones(rows.shape[:2]), atol=1e-5)  # eager's own rows
        expected = rows.view(kv_heads, -1, *rows.shape[1:]).mean(dim=(1, 2))  # [kv_heads, keys]
        assert mass.shape == expected.shape == (kv_heads, measured["first"] + answer.evidence.query_tokens)
        assert torch.allclose(mass, expected, atol=1e-5)
        assert torch.allclose(mass.sum(dim=-1), torch.ones(kv_heads), atol=1e-5)


def test_attention_weights_are_causal_softmax_rows():
    torch.manual_seed(0)
    query, keys = torch.randn(4, 3, 8), torch.randn(2, 10, 8)  # 4 query heads over 2 KV heads, 3 tokens from 7
    weights = attention_weights(query, keys, first=7, scaling=8 ** -0.5)
    assert weights.shape == (2, 2, 3, 10)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 2, 3))
    for token in range(3):  # token t sits at sequence index 7 + t: nothing after it
        assert torch.all(weights[:, :, token, 8 + token:] == 0)
    logits = query[3, 1] @ keys[1, :9].T * 8 ** -0.5  # head 3 belongs to KV head 1
    assert torch.allclose(weights[1, 1, 1, :9], logits.softmax(dim=-1), atol=1e-6)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_evidence_leaves_the_answer_and_the_cache_unchanged(models, family):
    stream = session(models, family, policy="infinipot", budget=96, chunk_frames=8)
    stream.feed(frames(24, seed=1))
    stream.finish()
    length = stream.cache.seq_length()
    logits = stream.first_token_logits(QUESTION)
    plain = stream.ask(QUESTION, max_new_tokens=12)
    found = stream.ask(QUESTION, max_new_tokens=12, evidence=True)
    assert (found.text, found.tokens) == (plain.text, plain.tokens) and plain.evidence is None
    assert stream.cache.seq_length() == length
    assert torch.equal(stream.first_token_logits(QUESTION), logits)
    evidence = found.evidence
    assert evidence.moments and 0 < evidence.video_share <= 1 + 1e-6 and evidence.seconds >= 0
    assert sum(moment.share for moment in evidence.moments) <= 1 + 1e-9
    held = {int(frame) for layout in stream.cache.layouts for frame in layout.frame.flatten()}
    for moment in evidence.moments:  # moments are cached steps, dated inside the video streamed
        assert {moment.first_step, moment.last_step} <= held
        assert 0 <= moment.start < moment.end <= stream.state.asked_at + 1e-9


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])  # LLaVA keeps no conversation
def test_chat_turns_with_evidence_are_the_same_turns(models, family):
    def converse(evidence: bool):
        stream = session(models, family, policy="infinipot", budget=96, chunk_frames=8)
        stream.feed(frames(16, seed=2))
        first = stream.chat(QUESTION, max_new_tokens=6, evidence=evidence)
        second = stream.chat("And then?", max_new_tokens=6, evidence=evidence)
        return stream, first, second

    plain, *plain_turns = converse(False)
    found, *found_turns = converse(True)
    assert [(t.text, t.tokens) for t in found_turns] == [(t.text, t.tokens) for t in plain_turns]
    assert all(turn.evidence is not None for turn in found_turns)
    assert all(turn.evidence is None for turn in found.state.turns)  # the conversation keeps none
    assert found.cache.seq_length() == plain.cache.seq_length()


def test_moments_grow_from_peaks_by_a_plain_rule():
    mass = [0.0, 1.0, 5.0, 4.0, 0.0, 0.0, 3.0, 0.0]
    assert pick_moments(mass, widest=3) == [(2, 3, 9.0), (6, 6, 3.0), (1, 1, 1.0)]
    assert pick_moments([2.0, 2.0, 2.0, 2.0], widest=2, top=5) == [(0, 1, 4.0), (2, 3, 4.0)]  # ties: earlier
    assert pick_moments([0.0, 0.0], widest=4) == []
    assert pick_moments([1.0, 4.0, 3.0], widest=3, breaks={0}) == [(1, 2, 7.0), (0, 0, 1.0)]
    timeline = Timeline(2.0, 2)
    timeline.record(0, [10.0, 12.0, 20.0, 22.0], until=24.0)  # 6 s missing between steps 1 and 2
    moments = moments_of(torch.tensor([0.0, 3.0, 3.0, 2.0], dtype=torch.float64), timeline)
    assert moments == (Moment(20.0, 24.0, 4, 7, 2, 3, 0.625), Moment(12.0, 14.0, 2, 3, 1, 1, 0.375))


def _fed_session(models, family: str, **settings) -> tuple[Session, np.ndarray]:
    times = gapped_times(40)
    stream = session(models, family, policy="infinipot", budget=96, chunk_frames=8, **settings)
    stream.feed(frames(40, seed=4), timestamps=times)
    stream.finish()
    return stream, times


@pytest.mark.parametrize("family, positions", [("qwen2_5_vl", "compact"), ("qwen3_vl", "compact"),
                                               ("llava_onevision", "compact"), ("qwen2_vl", "original")])
def test_a_slots_attention_lands_on_the_time_its_step_was_fed(models, family, positions):
    stream, times = _fed_session(models, family, positions=positions)
    assert stream.state.stats.compressions >= 2 and stream.state.position_mode == positions
    cache, multiple = stream.cache, stream.state.plan.frame_multiple
    layouts = cache.layouts
    rng = np.random.RandomState(0)
    for _ in range(6):
        layer, head = rng.randint(len(layouts)), rng.randint(layouts[0].heads)
        slot = rng.randint(layouts[layer].tokens)
        masses = [torch.zeros(layout.heads, cache.prefix_len + layout.tokens) for layout in layouts]
        masses[layer][head, cache.prefix_len + slot] = 1.0
        step = int(layouts[layer].frame[head, slot])
        mass = step_mass(masses, layouts, cache.prefix_len, stream.state.timeline.steps)
        (moment,) = moments_of(mass, stream.state.timeline)
        assert (moment.first_step, moment.last_step) == (step, step)
        assert moment.start == times[step * multiple]  # the source's time of the step's first frame
        assert (moment.first_frame, moment.last_frame) == (step * multiple, step * multiple + multiple - 1)
        assert moment.share == 1.0
        assert math.isclose(float(mass.sum()), 1 / (len(layouts) * layouts[0].heads))


def test_the_timeline_survives_questions_midway_and_a_saved_cache(models, short_video, tmp_path):
    whole = session(models, "qwen2_5_vl", policy="infinipot", budget=48, chunk_frames=8)
    whole.stream(short_video)
    midway = session(models, "qwen2_5_vl", policy="infinipot", budget=48, chunk_frames=8)
    midway.stream(short_video, until=5.0)
    midway.ask(QUESTION, max_new_tokens=2, evidence=True)
    assert midway.state.timeline.steps == midway.state.positions.steps
    midway.stream()
    assert list(midway.state.timeline.starts) == list(whole.state.timeline.starts)
    assert midway.state.timeline.until == whole.state.timeline.until == 20.0
    whole.save(tmp_path / "short.ipv")
    loaded = Session.load(tmp_path / "short.ipv", model=models("qwen2_5_vl"))
    assert list(loaded.state.timeline.starts) == list(whole.state.timeline.starts)
    assert loaded.ask(QUESTION, max_new_tokens=3, evidence=True).text == whole.ask(QUESTION, max_new_tokens=3).text


def test_timeline_record_cut_and_spans():
    timeline = Timeline(1.0, 1)
    timeline.record(0, [5.0, 6.0, 9.0], until=10.0)
    assert timeline.span(0, 1) == (5.0, 7.0) and timeline.end(2) == 10.0
    timeline.record(4, [20.0], until=21.0)  # a step given no time: evenly spaced after the last
    assert list(timeline.starts) == [5.0, 6.0, 9.0, 10.0, 20.0]
    timeline.cut(2, until=7.0)
    assert list(timeline.starts) == [5.0, 6.0] and timeline.end(1) == 7.0
    assert timeline.step_at(6.5) == 1 and timeline.frames(1) == (1, 1)


# ----------------------------------------------------------------------------- the CLI


def _library_answer(family: str, video, models) -> str:
    preset = FAMILIES[family].tiny_preset
    stream = Session.from_preset(preset, model=models(family), budget=96)
    stream.stream(video)
    return stream.ask(QUESTION, max_new_tokens=8).text


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_ask_evidence_json_carries_moments_with_times_and_the_same_answer(models, short_video, family):
    preset = FAMILIES[family].tiny_preset
    result = invoke("ask", short_video, QUESTION, "--preset", preset, "--budget", "96", "--device", "cpu",
                    "--max-new-tokens", "8", "--evidence", "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)["answers"]
    assert record["answer"] == _library_answer(family, short_video, models)  # computed without evidence
    evidence = record["evidence"]
    assert evidence["moments"] and evidence["query_tokens"] > 0 and 0 <= evidence["answer_share"]
    for moment in evidence["moments"]:
        assert 0.0 <= moment["start"] < moment["end"] <= 20.0 and 0 < moment["share"] <= 1
        assert 0 <= moment["first_frame"] <= moment["last_frame"] < 20
    assert record["cache_span"][0] >= 0.0 and record["cache_span"][1] == 20.0
    assert all(0 <= part["kept"] <= 1 for part in record["kept_share"])


def test_ask_evidence_prints_moments_under_the_answer(short_video):
    result = invoke("ask", short_video, QUESTION, *TINY_CLI, "--max-new-tokens", "4", "--evidence", "-q")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  evidence:"))
    assert lines[start - 1].startswith("A:")
    assert "of the answer time" in lines[start]
    assert all("–" in line and "frame" in line and line.rstrip().endswith("%")
               for line in lines[start + 1 : -1])
    assert lines[-1].startswith("  cache holds 0:00–0:20; kept per")


def test_chat_evidence_prints_moments_after_each_answer(short_video):
    result = invoke("chat", short_video, *TINY_CLI, "--max-new-tokens", "4", "--evidence", "-q",
                    input="What is shown?\n/exit\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("  evidence:") == 1 and "  cache holds 0:00–0:20" in result.output


def test_eval_evidence_writes_moments_before_each_questions_moment(tmp_path):
    from infinipot.synthetic import write_test_video

    videos = tmp_path / "videos"
    videos.mkdir()
    write_test_video(videos / "one.mp4", seconds=12, fps=2)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(item) for item in (
        {"id": "early", "video": "one.mp4", "question": "What moved?", "time": 5},
        {"id": "end", "video": "one.mp4", "question": "And at the end?"})))
    output = tmp_path / "results.jsonl"
    result = invoke("eval", questions, "--videos", videos, "-o", output, *TINY_CLI, "--max-new-tokens", "2",
                    "--evidence", "--json")
    assert result.exit_code == 0, result.output
    records = {record["id"]: record for record in map(json.loads, output.read_text().splitlines())}
    for record in records.values():
        assert record["evidence"]["moments"]
        assert all(moment["end"] <= record["asked_at"] + 1e-9 for moment in record["evidence"]["moments"])
    assert records["early"]["cache_span"][1] <= 5.0 < records["end"]["cache_span"][1] == 12.0


def test_the_cost_benchmark_dry_run_passes_on_the_cpu(tmp_path, tiny_cache):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "evidence_cost.py"
    out = tmp_path / "evidence_cost.json"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--dry-run", "--models", "qwen2.5-vl-7b",
                           "--rounds", "1", "--tokens", "4", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = json.loads(out.read_text())["models"].values()
    assert report["same_answer"] and report["evidence_pass_s"] > 0 and report["moments"]


def test_compare_evidence_per_policy_with_the_same_answers(short_video, tmp_path):
    policies = "infinipot,recent-frames"
    run = ("compare", short_video, QUESTION, "--policies", policies, *TINY_CLI, "--max-new-tokens", "4", "-q")
    plain = invoke(*run, "-o", tmp_path / "plain.jsonl")
    found = invoke(*run, "--evidence", "-o", tmp_path / "found.jsonl")
    assert plain.exit_code == found.exit_code == 0, found.output
    plain_records, records = ([json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
                              for name in ("plain.jsonl", "found.jsonl"))
    assert [(r["policy"], r["answer"]) for r in records] == [(r["policy"], r["answer"]) for r in plain_records]
    assert {record["policy"] for record in records} == set(policies.split(","))
    assert all(record["evidence"]["moments"] for record in records)
    assert not any("evidence" in record for record in plain_records)
    for policy in policies.split(","):
        assert f"evidence 1 {policy}: " in found.stdout and "of the answer time" in found.stdout
