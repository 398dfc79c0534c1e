"""recent-frames, sink, HERMES and StreamMem: plain references from the papers' equations, invariants, sessions.

The references below are written from docs/design.md ("Policies") and the papers (POLICIES.md)
with Python loops and lists, independently of the vectorised code, and compared on caches built
without a model: chunks of random keys and values appended to a BudgetedCache, compressed by the
cache itself (the policy's choice, merged tokens made with an exact key rotation and inserted in
time order), again and again. The guidance prompts' attention is random here; a test at the end
checks the adapter hook that measures it against transformers' own eager attention weights.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import frames, session
from infinipot.budget import BudgetPlan
from infinipot.cache import BudgetedCache
from infinipot.errors import InfinipotError
from infinipot.layout import ChunkLayout
from infinipot.policies import make_policy
from infinipot.policies.hermes import GLOBAL_PROMPT, LOCAL_PROMPT
from infinipot.rope import KeyRotator
from infinipot.session import Session

NEW = ("recent-frames", "sink", "hermes", "streammem")
PREFIX = 3

# ----------------------------------------------------------------------------- a cache without a model


def rotator_for(axes: int, dim: int) -> KeyRotator:
    half = dim // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float32) * 2 / dim))
    if axes == 1:
        return KeyRotator(inv_freq, torch.zeros(half, dtype=torch.long))
    owners = [0] * (half - 2 * (half // 4)) + [1] * (half // 4) + [2] * (half // 4)  # sections like M-RoPE's
    return KeyRotator(inv_freq, torch.tensor(owners))


def chunk_layout(first_frame: int, steps: int, rows: int, cols: int, axes: int, next_position: int) -> ChunkLayout:
    """Steps of a row-major grid; 1-D: one position a token; 3-D: (time, row, col) like Qwen's M-RoPE."""
    frame = torch.arange(first_frame, first_frame + steps).repeat_interleave(rows * cols)
    cell = torch.arange(rows * cols).repeat(steps)
    row, col = cell // cols, cell % cols
    if axes == 1:
        position = (torch.arange(frame.numel()) + next_position).unsqueeze(1)
    else:
        position = torch.stack([frame - first_frame + next_position, row + PREFIX, col + PREFIX], dim=1)
    return ChunkLayout(frame, row, col, position)


class Stream:
    """A BudgetedCache fed random chunks and compressed by a policy, as the streamer would (original positions)."""

    def __init__(self, layers=4, heads=2, dim=8, axes=1, rows=2, cols=3, seed=0):
        self.gen = torch.Generator().manual_seed(seed)
        self.cache = BudgetedCache(layers, heads, axes, capacity=64)
        self.heads, self.dim, self.axes, self.rows, self.cols = heads, dim, axes, rows, cols
        for layer in self.cache.layers:
            layer.update(*self.random(PREFIX))
        self.cache.mark_prefix()
        self.rotator = rotator_for(axes, dim)
        self.frames, self.next_position = 0, PREFIX
        self.memory: dict = {}

    def random(self, count: int):
        shape = (1, self.heads, count, self.dim)
        return torch.randn(*shape, generator=self.gen, dtype=torch.float64), \
            torch.randn(*shape, generator=self.gen, dtype=torch.float64)

    def add(self, steps: int) -> None:
        chunk = chunk_layout(self.frames, steps, self.rows, self.cols, self.axes, self.next_position)
        for layer in self.cache.layers:
            layer.update(*self.random(chunk.tokens))
        self.cache.add_chunk(chunk)
        self.frames += steps
        self.next_position = int(chunk.position[:, 0].max()) + 1

    def guidance(self, prompts: int) -> list[dict]:
        seq = self.cache.seq_length() + 5  # the prompt's own tokens follow the cache
        return [{"guidance": tuple(torch.rand(self.heads, seq, generator=self.gen) for _ in range(prompts))}
                for _ in self.cache.layers]

    def plan(self, budget: int, keep: int) -> BudgetPlan:
        return BudgetPlan(budget, keep, (self.rows, self.cols), 1, 1, compress=True)

    def snapshot(self, extras) -> list[dict]:
        """Each layer's visual tokens as the policy sees them, as plain lists (head by head)."""
        start, out = self.cache.prefix_len, []
        for index, (layer, layout) in enumerate(zip(self.cache.layers, self.cache.layouts)):
            guidance = extras[index]["guidance"] if extras else ()
            out.append({
                "keys": layer.keys[0, :, start:].tolist(), "values": layer.values[0, :, start:].tolist(),
                "frame": layout.frame[0].tolist(), "row": layout.row[0].tolist(), "col": layout.col[0].tolist(),
                "position": layout.position[0].tolist(), "merged": layout.merged[0].tolist(),
                "attention": [a[:, start : start + layout.tokens].tolist() for a in guidance],
            })
        return out

    def compress(self, policy, keep: int, budget: int):
        prompts = len(policy.guidance())
        extras = self.guidance(prompts) if prompts else None
        before = self.snapshot(extras)
        self.cache.compress(policy, keep, self.plan(budget, keep), self.memory, self.rotator, extras)
        return before


def cache_tokens(stream: Stream, layer: int, head: int = 0) -> list[dict]:
    """What one head of one layer holds after a compression, token by token."""
    cache, index = stream.cache, layer
    start, layout = cache.prefix_len, cache.layouts[index]
    return [{"key": cache.layers[index].keys[0, head, start + t].tolist(),
             "value": cache.layers[index].values[0, head, start + t].tolist(),
             "frame": int(layout.frame[head, t]), "position": layout.position[head, t].tolist(),
             "merged": bool(layout.merged[head, t])} for t in range(layout.tokens)]


# ----------------------------------------------------------------------------- the references


def ref_rotate(key: list[float], old: list[int], new: list[int], rotator: KeyRotator) -> list[float]:
    """RoPE (rotate-half pairs d, d + half) turned by the angle difference of each pair's position axis."""
    half = len(key) // 2
    out = list(key)
    for d in range(half):
        axis = int(rotator.freq_axis[d])
        theta = (new[axis] - old[axis]) * float(rotator.inv_freq[d])
        x1, x2 = key[d], key[d + half]
        out[d], out[d + half] = x1 * math.cos(theta) - x2 * math.sin(theta), x2 * math.cos(theta) + x1 * math.sin(theta)
    return out


def ref_mean(vectors: list[list[float]], weights: list[float]) -> list[float]:
    return [sum(w * v[i] for v, w in zip(vectors, weights)) for i in range(len(vectors[0]))]


def ref_top(scores: list[float], keep: int) -> list[int]:
    """The `keep` highest scores, ties to the earlier token, in time order."""
    return sorted(sorted(range(len(scores)), key=lambda t: (-scores[t], t))[:keep])


def ref_minmax(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    return [(v - low) / (high - low + 1e-6) for v in values]


def ref_head_mean(attention: list[list[float]]) -> list[float]:
    return [sum(head[t] for head in attention) / len(attention) for t in range(len(attention[0]))]


def ref_hermes_band(layer: int, layers: int, schedule: str) -> tuple[str, float, float]:
    """(band, a, k): shallowest 10% recency, deepest 30% attention, a linear mix in between."""
    shallow_end, deep_start = math.floor(layers / 10), math.floor(layers * 7 / 10)
    if layer < shallow_end:
        return "shallow", 1.0, 20.0
    if layer >= deep_start:
        return "deep", 0.0, 0.0
    p = (layer - shallow_end) / (deep_start - shallow_end)
    return ("middle", 0.75 - 0.6 * p, 20 - 12 * p) if schedule == "qwen" else ("middle", 1 - 0.9 * p, 20 - 19.5 * p)


def ref_hermes_scores(snap: dict, layer: int, layers: int, schedule: str) -> list[float]:
    band, a, k = ref_hermes_band(layer, layers, schedule)
    prompt = {"shallow": 0, "deep": 1, "middle": 2}[band]
    tokens = len(snap["frame"])
    attention = ref_minmax(ref_head_mean(snap["attention"][prompt])) if snap["attention"] else [0.0] * tokens
    recency = ref_minmax([math.exp(-k * (tokens - 1 - i) / max(tokens - 1, 1)) for i in range(tokens)])
    return [(1 - a) * attention[i] + a * recency[i] for i in range(tokens)]


def ref_identity(snap: dict, t: int):
    return None if snap["merged"][t] else (snap["frame"][t], snap["row"][t], snap["col"][t])


def ref_hermes(snaps: list[dict], keep: int, schedule: str = "qwen", smoothing: bool = True,
               summary: bool = True, rotator: KeyRotator | None = None, head: int = 0) -> list[list[dict]]:
    """Per layer, the tokens `head` holds after a HERMES compression (kept in time order, then the summary)."""
    layers = len(snaps)
    scores = [ref_hermes_scores(snap, index, layers, schedule) for index, snap in enumerate(snaps)]
    if smoothing:
        for index in range(layers - 2, -1, -1):
            share = {"shallow": 0.1, "middle": 0.3, "deep": 0.4}[ref_hermes_band(index, layers, schedule)[0]]
            above = {ref_identity(snaps[index + 1], t): scores[index + 1][t] for t in range(len(scores[index + 1]))}
            for t, own in enumerate(scores[index]):
                ident = ref_identity(snaps[index], t)
                if ident is not None and ident in above:
                    scores[index][t] = (1 - share) * own + share * above[ident]
    result = []
    for index, snap in enumerate(snaps):
        deep = ref_hermes_band(index, layers, schedule)[0] == "deep" and summary
        kept = ref_top(scores[index], keep - 1 if deep else keep)
        tokens = [{"key": snap["keys"][head][t], "value": snap["values"][head][t], "frame": snap["frame"][t],
                   "position": snap["position"][t], "merged": snap["merged"][t]} for t in kept]
        if deep:
            evicted = [t for t in range(len(snap["frame"])) if t not in kept]
            last = snap["position"][kept[-1]]
            position = [min(last[0] + 1, max(p[0] for p in snap["position"])), *last[1:]]
            keys = [ref_rotate(snap["keys"][head][t], snap["position"][t], position, rotator) for t in evicted]
            weights = [1 / len(evicted)] * len(evicted)
            tokens.append({"key": ref_mean(keys, weights),
                           "value": ref_mean([snap["values"][head][t] for t in evicted], weights),
                           "frame": -1, "position": position, "merged": True})
        result.append(tokens)
    return result


def ref_streammem(snaps: list[dict], keep: int, last_frame: int, rotator: KeyRotator,
                  prototypes: bool = True, head: int = 0) -> list[list[dict]]:
    """Per layer, `head` after a StreamMem compression: top-k by proxy attention plus one prototype per new frame."""
    first = snaps[0]
    new = sorted({f for f, m in zip(first["frame"], first["merged"]) if not m and f > last_frame})
    new = new[len(new) - min(len(new), keep // 2):] if prototypes else []
    result = []
    for snap in snaps:
        importance = ref_head_mean(snap["attention"][0])
        kept = ref_top(importance, keep - len(new))
        tokens = [(snap["position"][t][0], 0, t, {"key": snap["keys"][head][t], "value": snap["values"][head][t],
                                                  "frame": snap["frame"][t], "position": snap["position"][t],
                                                  "merged": snap["merged"][t]}) for t in kept]
        for order, frame in enumerate(new):
            members = [t for t in range(len(snap["frame"])) if snap["frame"][t] == frame and not snap["merged"][t]]
            total = sum(importance[t] for t in members)
            weights = [importance[t] / total for t in members]
            position = snap["position"][members[len(members) // 2]]
            keys = [ref_rotate(snap["keys"][head][t], snap["position"][t], position, rotator) for t in members]
            tokens.append((position[0], 1, order, {
                "key": ref_mean(keys, weights), "value": ref_mean([snap["values"][head][t] for t in members], weights),
                "frame": frame, "position": position, "merged": True}))
        result.append([token for *_, token in sorted(tokens, key=lambda item: item[:3])])
    return result


def ref_whole_frames(snap: dict, keep: int, per_step: int, sinks: int) -> list[int]:
    """Frames kept whole: the `sinks` oldest, then the newest, while whole frames fit."""
    frames_ = sorted(set(snap["frame"]))
    room = keep // per_step
    chosen = frames_[:sinks] + [f for f in reversed(frames_[sinks:])][: max(0, room - min(sinks, len(frames_)))]
    return sorted(f for f in chosen)


def assert_same_tokens(actual: list[dict], expected: list[dict], where: str) -> None:
    assert [t["frame"] for t in actual] == [t["frame"] for t in expected], where
    assert [t["merged"] for t in actual] == [t["merged"] for t in expected], where
    assert [t["position"] for t in actual] == [t["position"] for t in expected], where
    for a, e in zip(actual, expected):
        if e["merged"]:  # made here: agreement up to float32 rotation angles
            assert max(abs(x - y) for x, y in zip(a["key"], e["key"])) < 1e-5, where
            assert max(abs(x - y) for x, y in zip(a["value"], e["value"])) < 1e-6, where
        else:  # moved, never changed
            assert a["key"] == e["key"] and a["value"] == e["value"], where


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
