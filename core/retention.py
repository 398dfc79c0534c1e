"""What the cache kept of each part of the video: per layer and time bin, the share of the visual tokens still cached.

The counts come from the layout alone (a token's `frame` is its temporal step; markers and merged
tokens are not a step's visual tokens), the times from the stream's timeline, so a live session
and a cache file give the same map, and reading a file's map needs neither the model nor torch
(`info` stays light): only its layout tensors are read, as numpy arrays, each checked against its
recorded checksum (docs/design.md, "Evidence").
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from infinipot.timeline import Timeline

if TYPE_CHECKING:
    from infinipot.cache_header import CacheHeader

NICE_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
CONTEXT_BINS = 10  # time bins in each answer's context


@dataclass(frozen=True)
class Bin:
    """A stretch of video and the share of its visual tokens still cached (None: no frame was streamed there)."""

    start: float
    end: float
    kept: float | None

    def as_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3),
                "kept": None if self.kept is None else round(self.kept, 4)}


@dataclass(frozen=True)
class RetentionMap:
    """Per layer and temporal step, the visual tokens the cache still holds (summed over KV heads)."""

    counts: np.ndarray  # [layers, steps] int64
    merged: list[int]  # per layer, merged tokens (summaries, prototypes) summed over KV heads
    kv_heads: int
    tokens_per_step: int  # a step's visual tokens per head when nothing is evicted
    timeline: Timeline
    budget_tokens: int  # 0: the policy never compresses
    policy: str
    video: str = ""  # the source's name, for titles

    @property
    def layers(self) -> int:
        return self.counts.shape[0]

    @property
    def steps(self) -> int:
        return self.counts.shape[1]

    def span(self) -> tuple[float, float] | None:
        """(start, end) seconds from the oldest to the newest step any layer still holds; None when empty."""
        held = np.flatnonzero(self.counts.sum(axis=0))
        if held.size == 0:
            return None
        return self.timeline.span(int(held[0]), int(held[-1]))

    def bins(self, bin_seconds: float) -> tuple[list[tuple[float, float]], np.ndarray]:
        """Time bins of `bin_seconds` from the first step, and each layer's kept share in each `[layers, bins]`.

        A step counts in the bin holding its start (the last bin ends with the last step); a bin no
        step starts in (skipped video) is NaN.
        """
        timeline = self.timeline
        if self.steps == 0:
            return [], np.zeros((self.layers, 0))
        origin = timeline.starts[0]
        end = timeline.end(self.steps - 1)
        index = np.array([int((start - origin) / bin_seconds + 1e-9) for start in timeline.starts])
        count = int(index[-1]) + 1  # the last bin is the last step's, and ends with it
        kept = np.zeros((self.layers, count))
        np.add.at(kept, (slice(None), index), self.counts)
        steps = np.bincount(index, minlength=count)  # steps starting in each bin
        with np.errstate(invalid="ignore"):  # 0 / 0 = NaN where no step starts
            share = kept / (steps * self.kv_heads * self.tokens_per_step)
        edges = [(origin + k * bin_seconds, min(end, origin + (k + 1) * bin_seconds)) for k in range(count)]
        return edges, share

    def overall(self, bin_seconds: float) -> list[Bin]:
        """Kept share per time bin, mean over layers."""
        edges, share = self.bins(bin_seconds)
        return [Bin(start, end, None if math.isnan(value) else value)
                for (start, end), value in zip(edges, share.mean(axis=0).tolist())]

    def kept_per_step(self) -> list[float]:
        """Visual tokens of each temporal step still cached, mean over layers and KV heads."""
        return (self.counts.sum(axis=0) / max(self.layers * self.kv_heads, 1)).tolist()

    def merged_mean(self) -> float:
        """Merged tokens (summaries, prototypes), mean over layers and KV heads."""
        return sum(self.merged) / max(self.layers * self.kv_heads, 1)

    def duration(self) -> float:
        return self.timeline.end(self.steps - 1) - self.timeline.starts[0] if self.steps else 0.0


def nice_bin(seconds: float, most: int, at_least: float = 0.0) -> float:
    """The smallest round bin width (1 s, 2 s, 5 s, ... 1 day) that cuts `seconds` into at most `most` bins."""
    for width in NICE_SECONDS:
        if width >= at_least and seconds / width <= most:
            return float(width)
    return float(NICE_SECONDS[-1] * math.ceil(seconds / (NICE_SECONDS[-1] * most)))


def step_counts(layers: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], steps: int) -> tuple[np.ndarray, list[int]]:
    """Per layer, visual tokens per temporal step summed over heads `[layers, steps]`, and merged tokens.

    `layers` gives each layer's `frame`, `merged` and `marker` (`[heads, tokens]` arrays of its layout).
    """
    counts, merged = [], []
    for frame, is_merged, is_marker in layers:
        visual = ~is_merged & ~is_marker
        counts.append(np.bincount(frame[visual], minlength=steps)[:steps])
        merged.append(int(is_merged.sum()))
    return np.array(counts, dtype=np.int64).reshape(len(counts), steps), merged


def retention_of(session) -> RetentionMap:
    """The retention map of a live session's cache."""
    state = session.state
    layers = ((layout.frame.cpu().numpy(), layout.merged.cpu().numpy(), layout.marker.cpu().numpy())
              for layout in session.cache.layouts)
    counts, merged = step_counts(layers, state.timeline.steps)
    return RetentionMap(counts, merged, session.cache.kv_heads, state.plan.tokens_per_step, state.timeline,
                        state.plan.budget_tokens if state.plan.compress else 0, session.settings.policy,
                        str(state.source.get("name") or ""))


def retention_of_file(header: CacheHeader) -> RetentionMap:
    """The retention map of a cache file, from its metadata and layout tensors (no model, no torch)."""
    from infinipot.cache_header import damaged

    meta = header.meta
    state, layout = meta["state"], meta["layout"]
    try:
        steps = int(state["positions"]["steps"])
        timeline = Timeline.from_saved(state, steps)
        tokens_per_step = int(state["plan"]["grid"][0]) * int(state["plan"]["grid"][1])
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise damaged(header.path, f"unreadable stream state ({type(error).__name__})") from None
    fields = _layout_tensors(header, ("frame", "merged", "marker"))
    counts, merged = step_counts(((layer["frame"], layer["merged"], layer["marker"]) for layer in fields), steps)
    plan = state["plan"]
    return RetentionMap(counts, merged, int(layout["kv_heads"]), tokens_per_step, timeline,
                        int(plan["budget_tokens"]) if plan.get("compress", True) else 0,
                        str(meta["settings"].get("policy", "?")), str((state.get("source") or {}).get("name") or ""))


NUMPY_DTYPES = {"I64": np.int64, "BOOL": np.bool_}  # safetensors' names of the layout's dtypes


def _layout_tensors(header: CacheHeader, names: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    """The named layout tensors of every layer, each checked against its recorded dtype, shape and sha256."""
    from safetensors import SafetensorError, safe_open

    from infinipot.cache_header import damaged

    records = header.meta["tensors"]
    layers = []
    try:
        with safe_open(str(header.path), framework="np") as handle:
            for index in range(header.meta["layout"]["layers"]):
                fields = {}
                for name in names:
                    key = f"layers.{index}.layout.{name}"
                    array = np.ascontiguousarray(handle.get_tensor(key))
                    record = records[key]
                    if (array.dtype != NUMPY_DTYPES.get(record["dtype"]) or list(array.shape) != record["shape"]
                            or hashlib.sha256(array.tobytes()).hexdigest() != record["sha256"]):
                        raise damaged(header.path, f"tensor {key} does not match its checksum")
                    fields[name] = array
                layers.append(fields)
    except (SafetensorError, OSError) as error:
        raise damaged(header.path, str(error).splitlines()[0][:200]) from None
    return layers


def context_of(session) -> dict:
    """What an answer's cache held: the video span it covers and the kept share per time bin (mean over layers)."""
    retention = retention_of(session)
    span = retention.span()
    width = nice_bin(retention.duration(), CONTEXT_BINS, retention.timeline.step_seconds)
    return {"cache_span": None if span is None else [round(span[0], 3), round(span[1], 3)],
            "kept_share": [part.as_dict() for part in retention.overall(width)]}
