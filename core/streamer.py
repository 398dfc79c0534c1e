"""The body of the streaming loop: frames -> (compress if they would not fit) -> encode -> prefill.

A chunk's token count is known before it is encoded (whole temporal steps of the stream's
grid), so the cache is compressed, and in compact mode renumbered, before the chunk is encoded
at the positions that follow. A *tentative* chunk (frames up to a question's moment, part of a
chunk the source has not finished) is prefilled, answered from, then rolled back, so asking in
the middle of a stream never changes what the stream does next (docs/design.md, "Questions
in time").

Before a compression, a policy that asks for guidance prompts (`Policy.guidance`) gets their
attention over the cache: each prompt is run like a question and cut back, and the time it
takes is counted apart (`timings["guidance_s"]`) so its cost shows. A caller streaming several
caches from one encoding passes `encode` (infinipot.compare).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from infinipot.adapters.base import Adapter, EncodedChunk, PositionState, PromptParts
from infinipot.cache import BudgetedCache
from infinipot.policies import Policy
from infinipot.rope import KeyRotator
from infinipot.stream_state import StreamState, StreamStats


Encoder = Callable[[np.ndarray, PositionState], EncodedChunk]


@dataclass
class Checkpoint:
    """What a tentative chunk changes, to put back afterwards."""

    visual_tokens: int
    positions: object
    stats: StreamStats


class Streamer:
    """Writes frames into one stream's cache; the session owns it and its state."""

    def __init__(self, adapter: Adapter, cache: BudgetedCache, state: StreamState, policy: Policy) -> None:
        self.adapter = adapter
        self.cache = cache
        self.state = state
        self.policy = policy
        self.compacts = state.position_mode == "compact"
        self.rotator = (  # compact mode turns cached keys; merging policies turn the keys they merge
            KeyRotator.from_rotary_embedding(adapter.rotary_embedding(), adapter.position_axes)
            if self.compacts or policy.merges else None
        )
        self._work_at_last_compression = 0.0

    def prefill_prefix(self, prefix: PromptParts) -> None:
        self.adapter.forward(self.adapter.embed_ids(prefix.ids), prefix.positions, self.cache.kv)
        self.cache.mark_prefix()

    def add(self, frames: np.ndarray, end_seconds: float, encode: Encoder | None = None,
            timestamps: np.ndarray | None = None) -> None:
        """Prefill whole temporal steps of frames (`[n, H, W, 3]`, n a multiple of the frame multiple).

        `encode(frames, positions)` replaces the adapter's own encoding (a shared one); it must
        return what `adapter.encode` would and advance `positions` alike. `timestamps` (`[n]`
        seconds, the source's) date the steps in the timeline; without them frames are evenly spaced.
        """
        state, plan, stats = self.state, self.state.plan, self.state.stats
        if plan.compress and self.cache.visual_tokens + self.incoming(len(frames)) > plan.budget_tokens:
            self.compress()
        timings = stats.timings
        start = time.perf_counter()
        first_step = state.positions.steps
        if timestamps is None:
            timestamps = state.start_seconds + (stats.frames + np.arange(len(frames))) / state.sample_fps
        chunk = (encode or self.adapter.encode)(frames, state.positions)
        encoded = time.perf_counter()
        self.adapter.forward(chunk.embeds, chunk.positions, self.cache.kv, chunk.extras)
        self.cache.add_chunk(chunk.layout)
        timings["encode_s"] += encoded - start
        timings["prefill_s"] += time.perf_counter() - encoded
        stats.frames += len(frames)
        stats.video_seconds = max(stats.video_seconds, end_seconds - state.start_seconds)
        state.timeline.record(first_step, np.asarray(timestamps)[:: plan.frame_multiple].tolist(), state.asked_at)
        stats.visual_tokens_seen += chunk.layout.tokens
        stats.peak_cached_tokens = max(stats.peak_cached_tokens, self.cache.visual_tokens)

    def incoming(self, frames: int) -> int:
        """Tokens `frames` more frames will add to the cache (known before they are encoded)."""
        plan = self.state.plan
        steps = frames // plan.frame_multiple
        return steps * plan.tokens_per_step + self.adapter.marker_tokens(frames, self.state.positions)

    def compress(self) -> None:
        """Compress every layer to the kept budget; in compact mode renumber and continue after the kept tokens."""
        state, stats = self.state, self.state.stats
        guided = time.perf_counter()
        extras = self.guidance()
        start = time.perf_counter()
        result = self.cache.compress(self.policy, state.plan.keep_tokens, state.plan, state.policy_memory,
                                     self.rotator, extras)
        if self.compacts:
            next_start = self.cache.compact(self.rotator)
            state.positions.largest = self.cache.largest_position()
            self.adapter.restart_at(next_start, state.positions)
        end = time.perf_counter()
        stats.compressions += 1
        stats.tokens_evicted += result.before - result.after
        stats.timings["compress_s"] += end - start
        if extras is not None:  # only a policy that asks for guidance pays for it
            stats.timings["guidance_s"] += start - guided
        work = stats.timings["encode_s"] + stats.timings["prefill_s"]
        stats.cycles.append((end - guided, work - self._work_at_last_compression))
        self._work_at_last_compression = work

    def guidance(self) -> list[dict] | None:
        """Per layer, {"guidance": each of the policy's prompts' attention over the cache}; None if it asks none."""
        prompts = self.policy.guidance()
        if not prompts:
            return None
        length = self.cache.seq_length()
        per_prompt = []
        for text in prompts:
            prompt = self.adapter.question(text, self.state.positions)
            try:
                per_prompt.append(self.adapter.guidance_attention(prompt, self.cache.kv))
            finally:
                self.cache.truncate(length)
        return [{"guidance": tuple(attention[layer] for attention in per_prompt)}
                for layer in range(self.cache.num_layers)]

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.cache.visual_tokens, copy.deepcopy(self.state.positions),
                          copy.deepcopy(self.state.stats))

    def add_tentative(self, frames: np.ndarray, end_seconds: float, encode: Encoder | None = None,
                      timestamps: np.ndarray | None = None) -> Checkpoint:
        """Prefill `frames` so they can be answered from, returning how to take them back.

        A compression they need is done for good first: the whole chunk they belong to would
        need it too, at the same cache state, so it happens either way.
        """
        plan = self.state.plan
        if plan.compress and self.cache.visual_tokens + self.incoming(len(frames)) > plan.budget_tokens:
            self.compress()
        saved = self.checkpoint()
        self.add(frames, end_seconds, encode, timestamps)
        return saved

    def roll_back(self, saved: Checkpoint) -> None:
        peak = self.state.stats.peak_cached_tokens
        self.cache.drop_visual_after(saved.visual_tokens)
        self.state.positions = saved.positions
        self.state.stats = saved.stats
        self.state.timeline.cut(saved.positions.steps, self.state.asked_at)
        self.state.stats.peak_cached_tokens = peak  # the cache really held them
