"""Shared by tests/test_policies_new.py: a BudgetedCache fed random chunks without a model, and plain
references for recent-frames, sink, HERMES and StreamMem written from docs/design.md ("Policies") and
the papers, with Python loops and lists, independently of the vectorised code."""

from __future__ import annotations

import math

import torch

from infinipot.budget import BudgetPlan
from infinipot.cache import BudgetedCache
from infinipot.layout import ChunkLayout
from infinipot.rope import KeyRotator

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
