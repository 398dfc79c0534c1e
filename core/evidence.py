"""Evidence for an answer: the moments of the video whose cached tokens the question and answer attended to most.

While an answer is generated, forward hooks keep what the model computes anyway: each layer's
query projection (the `q_proj` output) and the rotary cos/sin its attention module is given.
After the last token, before the question is cut from the cache, one pass per layer rebuilds the
post-RoPE queries (with the layer's own `q_norm` when it has one) and takes their softmax over
the cached keys, causal as the model ran; the answer is untouched and sdpa stays in use. The
attention is averaged over query tokens, over the heads of each KV group, over KV heads and
layers, then summed per temporal step through the layout's `frame` (never positions, which
compact mode renumbers), and steps are grouped into moments dated by the stream's timeline
(docs/design.md, "Evidence"). It shows where the model looked, not proof of why it answered.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from infinipot.errors import InfinipotError

if TYPE_CHECKING:
    from infinipot.layout import VisualLayout
    from infinipot.timeline import Timeline

MOMENTS = 3  # moments shown per answer
SPREAD = 0.5  # a neighbouring step joins a moment while it holds at least this share of the moment's peak
MOMENT_SECONDS = 10.0  # a moment spans at most about this much video
BLOCK_ELEMENTS = 1 << 24  # attention weights materialised at once (64 MiB in float32)


@dataclass(frozen=True)
class Moment:
    """A stretch of video the answer's attention fell on."""

    start: float  # seconds, the source's video time
    end: float
    first_frame: int  # indices among the frames the model saw (0-based)
    last_frame: int
    first_step: int  # temporal steps (the layout's `frame`)
    last_step: int
    share: float  # of the attention that went to cached video tokens


@dataclass(frozen=True)
class Evidence:
    """Where an answer's attention went over the cached video, and what finding that out cost."""

    moments: tuple[Moment, ...]
    video_share: float  # of all the question's and answer's attention, the share on cached video tokens
    query_tokens: int  # question and answer tokens whose attention is counted
    seconds: float  # the evidence pass after the answer
    answer_share: float  # seconds / the answer's generation time

    def as_dict(self) -> dict:
        data = asdict(self)
        data["moments"] = [{key: round(value, 4) if isinstance(value, float) else value
                            for key, value in moment.items()} for moment in data["moments"]]
        for key in ("video_share", "seconds", "answer_share"):
            data[key] = round(data[key], 4)
        return data


class AttentionRecorder:
    """Forward hooks that keep every layer's query projections and rotary cos/sin while tokens are generated."""

    def __init__(self, layers) -> None:
        self.layers = list(layers)  # the language model's decoder layers
        self.queries: list[list[torch.Tensor]] = [[] for _ in self.layers]  # per layer: [1, new, heads * dim]
        self.rotary: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in self.layers]
        self._handles: list = []
        for index, layer in enumerate(self.layers):
            if getattr(layer.self_attn, "sliding_window", None):
                raise InfinipotError(f"layer {index} of this model attends through a sliding window, which "
                                     "evidence does not model: ask without `evidence`")

    def __enter__(self) -> AttentionRecorder:
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            self._handles.append(attention.q_proj.register_forward_hook(self._keep_query(index)))
            self._handles.append(attention.register_forward_pre_hook(self._keep_rotary(index), with_kwargs=True))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _keep_query(self, index: int):
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.queries[index].append(output)

        return hook

    def _keep_rotary(self, index: int):
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            self.rotary[index].append(kwargs["position_embeddings"])

        return hook

    @property
    def tokens(self) -> int:
        return sum(query.shape[1] for query in self.queries[0]) if self.layers else 0


def rotated_queries(attention: torch.nn.Module, queries: torch.Tensor, cos: torch.Tensor,
                    sin: torch.Tensor) -> torch.Tensor:
    """Post-RoPE queries `[heads, tokens, dim]` float32 from a layer's `q_proj` output `[1, tokens, heads * dim]`."""
    tokens = queries.shape[1]
    query = queries.view(1, tokens, -1, attention.head_dim)
    if getattr(attention, "q_norm", None) is not None:  # Qwen3: RMS norm per head before RoPE
        query = attention.q_norm(query)
    query = query[0].transpose(0, 1).float()  # [heads, tokens, dim]
    half = query.shape[-1] // 2
    turned = torch.cat((-query[..., half:], query[..., :half]), dim=-1)
    return query * cos[0].float() + turned * sin[0].float()


def attention_weights(query: torch.Tensor, keys: torch.Tensor, first: int, scaling: float) -> torch.Tensor:
    """Softmax attention `[kv_heads, group, tokens, length]` of queries at sequence indices `first`, `first + 1`,
    ... over `keys` `[kv_heads, length, dim]`, causal (a query sees the keys up to its own index)."""
    kv_heads, length = keys.shape[0], keys.shape[1]
    tokens = query.shape[1]
    grouped = query.reshape(kv_heads, -1, query.shape[-1])  # [kv_heads, group * tokens, dim]
    logits = (grouped @ keys.transpose(-1, -2)).mul_(scaling).view(kv_heads, -1, tokens, length)
    index = torch.arange(tokens, device=keys.device) + first
    future = torch.arange(length, device=keys.device) > index[:, None]  # [tokens, length]
    return logits.masked_fill_(future, float("-inf")).softmax(dim=-1)  # [kv_heads, group, tokens, length]


def layer_mass(attention: torch.nn.Module, queries: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               keys: torch.Tensor, first: int) -> torch.Tensor:
    """One layer's attention over its keys `[kv_heads, length]`, averaged over query tokens and grouped heads.

    `keys` `[kv_heads, length, dim]` are the layer's cached keys up to the last recorded token;
    the queries are processed a block at a time so memory stays bounded for long answers.
    """
    query = rotated_queries(attention, queries, cos, sin)  # [heads, tokens, dim]
    keys = keys.float()
    heads, tokens = query.shape[0], query.shape[1]
    block = max(1, BLOCK_ELEMENTS // (heads * keys.shape[1]))
    total = torch.zeros(keys.shape[0], keys.shape[1], dtype=torch.float32, device=keys.device)
    for start in range(0, tokens, block):
        weights = attention_weights(query[:, start : start + block], keys, first + start, attention.scaling)
        total += weights.sum(dim=(1, 2))
    return total / (heads // keys.shape[0] * tokens)


def recorded_masses(recorder: AttentionRecorder, cache, first: int) -> list[torch.Tensor]:
    """Per layer, the recorded tokens' mean attention over the whole cached sequence `[kv_heads, length]`.

    `first` is the sequence index of the first recorded token; the cache must still hold every
    recorded token (each row sums to 1 before averaging, so each head's mass sums to 1).
    """
    masses = []
    for index, layer in enumerate(recorder.layers):
        queries = torch.cat(recorder.queries[index], dim=1)
        cos = torch.cat([pair[0] for pair in recorder.rotary[index]], dim=1)
        sin = torch.cat([pair[1] for pair in recorder.rotary[index]], dim=1)
        length = first + queries.shape[1]
        keys = cache.layers[index].keys[0, :, :length]  # [kv_heads, length, dim]
        if keys.shape[1] != length:
            raise RuntimeError(f"the cache holds {keys.shape[1]} tokens of layer {index}, the evidence needs {length}")
        masses.append(layer_mass(layer.self_attn, queries, cos, sin, keys, first))
    return masses


def step_mass(masses: list[torch.Tensor], layouts: list[VisualLayout], prefix_len: int, steps: int) -> torch.Tensor:
    """The attention on each temporal step's cached tokens `[steps]` float64, mean over layers and KV heads.

    A head's slot maps to its step through the layout's `frame` (markers and merged tokens count for
    the step they belong to), so compressions and renumbered positions do not move it.
    """
    total = torch.zeros(steps, dtype=torch.float64)
    for mass, layout in zip(masses, layouts):
        visual = mass[:, prefix_len : prefix_len + layout.tokens].double().cpu()  # [kv_heads, visual]
        total.index_add_(0, layout.frame.flatten().cpu(), visual.flatten())
    heads = layouts[0].heads if layouts else 1
    return total / max(1, len(layouts) * heads)


def pick_moments(mass: list[float], widest: int, top: int = MOMENTS, spread: float = SPREAD,
                 breaks: set[int] = frozenset()) -> list[tuple[int, int, float]]:
    """Up to `top` moments `(first_step, last_step, mass)`, heaviest first.

    From the heaviest step not yet taken, a moment grows to the heavier neighbour while that holds
    at least `spread` times the peak, up to `widest` steps, never across a break (step s in
    `breaks`: video is missing between s and s + 1); ties go to the earlier step.
    """
    taken = [False] * len(mass)
    found: list[tuple[int, int, float]] = []
    for peak in sorted(range(len(mass)), key=lambda step: (-mass[step], step)):
        if len(found) == top or mass[peak] <= 0:
            break
        if taken[peak]:
            continue
        first = last = peak
        floor = spread * mass[peak]

        def joins(step: int, across: int) -> bool:
            return (0 <= step < len(mass) and not taken[step] and mass[step] >= floor and mass[step] > 0
                    and across not in breaks)

        while last - first + 1 < widest and (joins(first - 1, first - 1) or joins(last + 1, last)):
            left = mass[first - 1] if joins(first - 1, first - 1) else -1.0
            right = mass[last + 1] if joins(last + 1, last) else -1.0
            if left >= right:
                first -= 1
            else:
                last += 1
        for step in range(first, last + 1):
            taken[step] = True
        found.append((first, last, sum(mass[first : last + 1])))
    return sorted(found, key=lambda moment: (-moment[2], moment[0]))


def moments_of(mass: torch.Tensor, timeline: Timeline, top: int = MOMENTS) -> tuple[Moment, ...]:
    """The moments of a per-step attention `mass`, dated by `timeline`, with their share of the video's mass."""
    values = mass.tolist()
    video = sum(values)
    widest = max(1, round(MOMENT_SECONDS / timeline.step_seconds))
    starts = timeline.starts
    breaks = {step for step in range(len(starts) - 1) if starts[step + 1] - starts[step] > 1.5 * timeline.step_seconds}
    moments = []
    for first, last, weight in pick_moments(values, widest, top, breaks=breaks):
        start, end = timeline.span(first, last)
        first_frame, last_frame = timeline.frames(first, last)
        moments.append(Moment(start, end, first_frame, last_frame, first, last, weight / video if video else 0.0))
    return tuple(moments)


def measure(recorder: AttentionRecorder, cache, timeline: Timeline, first: int, answer_seconds: float) -> Evidence:
    """The evidence of the tokens `recorder` saw, from `cache` before their tokens are cut from it."""
    start = time.perf_counter()
    with torch.inference_mode():
        masses = recorded_masses(recorder, cache, first)
        mass = step_mass(masses, cache.layouts, cache.prefix_len, timeline.steps)
    moments = moments_of(mass, timeline)
    seconds = time.perf_counter() - start
    return Evidence(moments, float(mass.sum()), recorder.tokens, seconds,
                    seconds / answer_seconds if answer_seconds > 0 else 0.0)
