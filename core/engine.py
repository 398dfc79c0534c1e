"""The streaming loop and the answering loop.

Streaming: decode a chunk of frames -> encode it -> compress the cache if the chunk would push
it past the budget -> prefill the chunk. Answering: append the question, generate token by
token with explicit positions, then truncate the cache back to the video so the next question
sees exactly the same cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from infinipot.adapters.base import Adapter, EncodedChunk, PromptParts
from infinipot.answer import Answer
from infinipot.budget import CompressionSettings, StreamPlan, plan_stream
from infinipot.cache import BudgetedCache
from infinipot.errors import InfinipotError
from infinipot.policies import PolicySettings, get_policy
from infinipot.positions import check_position_mode, compact_cache, warn_if_past_window
from infinipot.rope import KeyRotator


@dataclass
class StreamStats:
    frames: int = 0
    video_seconds: float = 0.0
    visual_tokens_seen: int = 0
    budget_tokens: int = 0
    keep_tokens: int = 0
    peak_cached_tokens: int = 0
    compressions: int = 0
    tokens_evicted: int = 0
    timings: dict[str, float] = field(
        default_factory=lambda: {"decode_s": 0.0, "encode_s": 0.0, "prefill_s": 0.0, "compress_s": 0.0}
    )
    # Per compression cycle: (seconds compressing, seconds encoding + prefilling since the last one).
    cycles: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The summary figures (per-cycle timings left out: they grow with the video)."""
        data = asdict(self)
        data.pop("cycles")
        return data


@dataclass(frozen=True)
class Progress:
    """One step of the stream, for progress displays."""

    frames_done: int
    frames_total: int | None
    video_seconds: float
    cached_tokens: int
    budget_tokens: int
    compressions: int


@dataclass(frozen=True)
class FrameBatch:
    """Frames handed to the engine: pixels plus the video time they reach."""

    frames: np.ndarray  # [n, H, W, 3] uint8
    end_seconds: float


class Session:
    """One video streamed into a budgeted cache, then any number of questions."""

    def __init__(self, adapter: Adapter, settings: CompressionSettings, positions: str | None = None) -> None:
        settings.validate()
        self.positions = check_position_mode(positions or adapter.default_positions)  # DESIGN.md §2
        self.rotator = (  # only compact mode turns cached keys
            KeyRotator.from_rotary_embedding(adapter.rotary_embedding(), adapter.position_axes)
            if self.positions == "compact" else None
        )
        self.adapter = adapter
        self.settings = settings
        self.policy = get_policy(settings.policy)
        self.cache = BudgetedCache(adapter.num_layers, adapter.kv_heads, adapter.position_axes)
        self.stats = StreamStats(budget_tokens=settings.budget_tokens, keep_tokens=settings.keep_tokens)
        self.plan: StreamPlan | None = None
        self.grid: tuple[int, int] = (1, 1)  # (rows, cols) of one temporal grid step
        self._work_at_last_compression = 0.0
        self.prefix_ids: torch.Tensor | None = None  # [1, prefix] long: the prompt prefix, saved with the cache
        self.turns: list[Answer] = []  # the conversation kept in the cache by `chat`
        self.next_turn_position: torch.Tensor | None = None  # [axes, 1]: where the next chat turn starts

    @classmethod
    def restore(cls, adapter: Adapter, settings: CompressionSettings, cache: BudgetedCache, stats: StreamStats,
                grid: tuple[int, int], turns: Iterable[Answer] = (),
                next_turn_position: torch.Tensor | None = None, positions: str | None = None) -> Session:
        """A session around a cache streamed earlier (see infinipot.cache_file), ready to answer.

        The adapter's stream state must already be restored; it cannot stream more video.
        """
        session = cls(adapter, settings, positions)
        session.cache, session.stats, session.grid = cache, stats, grid
        session.turns, session.next_turn_position = list(turns), next_turn_position
        return session

    # --- streaming ----------------------------------------------------------------------------
    def prepare(self, height: int, width: int) -> StreamPlan:
        """Check the settings against this video's token grid; no frame is touched."""
        rows, cols = self.adapter.tokens_per_frame(height, width)
        self.grid = (rows, cols)
        self.plan = plan_stream(self.settings, rows * cols, self.adapter.frame_multiple())
        return self.plan

    @property
    def chunk_frames(self) -> int:
        assert self.plan is not None, "call prepare() first"
        return self.plan.chunk_steps * self.adapter.frame_multiple()

    def stream(
        self,
        batches: Iterable[FrameBatch],
        sample_fps: float,
        frames_total: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> StreamStats:
        """Prefill the prompt prefix, then every batch of frames (each a multiple of the frame multiple)."""
        if self.plan is None:
            raise InfinipotError("call prepare() with the video's frame size before streaming")
        prefix = self.adapter.begin_stream(sample_fps)
        self.prefix_ids = prefix.ids
        self.adapter.forward(self.adapter.embed_ids(prefix.ids), prefix.positions, self.cache.kv)
        self.cache.mark_prefix()
        warn_if_past_window(self.adapter, self.positions, frames_total, self.grid, self.plan.compress,
                            self.settings.budget_tokens)
        timings = self.stats.timings
        clock = time.perf_counter()
        for batch in batches:
            timings["decode_s"] += time.perf_counter() - clock
            self._add_frames(batch.frames)
            self.stats.frames += len(batch.frames)
            self.stats.video_seconds = batch.end_seconds
            if on_progress is not None:
                on_progress(self._progress(frames_total))
            clock = time.perf_counter()
        if self.stats.frames == 0:
            raise InfinipotError("the video yielded no frames: check --start/--end and the file")
        return self.stats

    def _add_frames(self, frames: np.ndarray) -> None:
        timings = self.stats.timings
        start = time.perf_counter()
        chunk = self.adapter.encode_chunk(frames)
        encoded = time.perf_counter()
        timings["encode_s"] += encoded - start
        incoming = chunk.layout.tokens
        budget = self.settings.budget_tokens
        if self.plan.compress and self.cache.visual_tokens + incoming > budget:
            self._compress()
            if self.rotator is not None:
                chunk = self._compact(chunk)
        start = time.perf_counter()
        self.adapter.forward(chunk.embeds, chunk.positions, self.cache.kv)
        self.cache.add_chunk(chunk.layout)
        timings["prefill_s"] += time.perf_counter() - start
        self.stats.visual_tokens_seen += incoming
        self.stats.peak_cached_tokens = max(self.stats.peak_cached_tokens, self.cache.visual_tokens)

    def _compact(self, chunk: EncodedChunk) -> EncodedChunk:
        """Compact positions: renumber the kept tokens densely, turn their keys, move `chunk` right after them."""
        start = time.perf_counter()
        next_start = compact_cache(self.cache, self.rotator)
        self.stats.timings["compress_s"] += time.perf_counter() - start
        return self.adapter.rebase_positions(next_start, chunk)

    def _compress(self) -> None:
        start = time.perf_counter()
        settings = PolicySettings(
            recent_frames=self.plan.recent_frames,
            tar_ratio=self.settings.tar_ratio,
            pooling=self.settings.pooling,
            spread_thresholds=self.settings.spread_thresholds,
            grid=self.grid,
        )
        result = self.cache.compress(self.policy, self.settings.keep_tokens, settings)
        elapsed = time.perf_counter() - start
        timings = self.stats.timings
        self.stats.compressions += 1
        self.stats.tokens_evicted += result.before - result.after
        timings["compress_s"] += elapsed
        work = timings["encode_s"] + timings["prefill_s"]
        self.stats.cycles.append((elapsed, work - self._work_at_last_compression))
        self._work_at_last_compression = work

    def _progress(self, frames_total: int | None) -> Progress:
        return Progress(
            frames_done=self.stats.frames,
            frames_total=frames_total,
            video_seconds=self.stats.video_seconds,
            cached_tokens=self.cache.visual_tokens,
            budget_tokens=self.settings.budget_tokens if self.plan.compress else 0,
            compressions=self.stats.compressions,
        )

    # --- answering ----------------------------------------------------------------------------
    def first_token_logits(self, question: str) -> torch.Tensor:
        """Logits for the first answer token (the video cache is left as it was; a conversation is forgotten)."""
        self.reset()
        length = self.cache.video_length
        try:
            prompt = self.adapter.question(question)
            return self.adapter.forward(self.adapter.embed_ids(prompt.ids), prompt.positions, self.cache.kv)
        finally:
            self.cache.truncate(length)

    def ask(
        self,
        question: str,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer one question from the video cache alone; `on_text` receives the answer as it grows.

        A conversation in progress (see `chat`) is forgotten first.
        """
        _check_question(question)
        self.reset()
        pieces = self._generate(self.adapter.question(question), max_new_tokens, temperature, seed)
        return self._collect(question, pieces, on_text)

    def chat(
        self,
        question: str,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer `question` after the earlier turns and keep this turn in the cache (`reset` forgets them)."""
        _check_question(question)
        if self.turns:
            prompt = self.adapter.follow_up(question, self.next_turn_position[:, -1])
        else:
            prompt = self.adapter.question(question)
        answer = self._collect(question, self._generate(prompt, max_new_tokens, temperature, seed, keep=True), on_text)
        self.turns.append(answer)
        return answer

    def reset(self) -> None:
        """Forget the conversation: back to the cache of the video alone."""
        self.cache.truncate(self.cache.video_length)
        self.turns = []
        self.next_turn_position = None

    def _collect(
        self, question: str, pieces: Iterator[tuple[str, int]], on_text: Callable[[str], None] | None
    ) -> Answer:
        start = time.perf_counter()
        texts = []
        tokens = 0
        for piece, tokens in pieces:
            if piece:
                texts.append(piece)
                if on_text is not None:
                    on_text(piece)
        return Answer(question, "".join(texts).strip(), tokens, time.perf_counter() - start)

    def _generate(
        self, prompt: PromptParts, max_new_tokens: int, temperature: float, seed: int | None, keep: bool = False
    ) -> Iterator[tuple[str, int]]:
        """Yield (new text, tokens so far) per token; the cache is cropped back afterwards unless `keep`."""
        adapter, length = self.adapter, self.cache.seq_length()
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        eos = adapter.eos_token_ids()
        kept = False
        try:
            logits = adapter.forward(adapter.embed_ids(prompt.ids), prompt.positions, self.cache.kv)
            position = adapter.answer_position(prompt)
            generated: list[int] = []
            shown = ""
            for _ in range(max_new_tokens):
                token = _pick(logits, temperature, generator)
                if token in eos:
                    break
                generated.append(token)
                # Decode the whole answer each time: a multi-byte character may span tokens, so an
                # unfinished one (a trailing U+FFFD) is held back until its last byte arrives.
                text = adapter.tokenizer.decode(generated, skip_special_tokens=True).rstrip("\ufffd")
                yield text[len(shown):], len(generated)
                shown = text
                ids = torch.tensor([[token]], dtype=torch.long)
                logits = adapter.forward(adapter.embed_ids(ids), position, self.cache.kv)
                position = adapter.next_positions(position[:, -1], 1)
            text = adapter.tokenizer.decode(generated, skip_special_tokens=True)
            if text != shown:  # bytes that never formed a character
                yield text[len(shown):], len(generated)
            if keep:  # the stop token is not in the cache: the next turn's prompt closes the answer
                self.next_turn_position, kept = position, True
        finally:
            if not kept:
                self.cache.truncate(length)


def _check_question(question: str) -> None:
    if not question.strip():
        raise InfinipotError("the question is empty: ask something about the video")


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
