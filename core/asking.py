"""Asking a session: single questions from the video cache alone, or a conversation kept in the cache.

Every question starts one past the largest position so far (docs/design.md, "Positions"); after
an answer the cache is cut back to the video, so every question sees the same cache. A chat
turn stays in the cache; `reset` forgets the conversation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from infinipot.answer import Answer
from infinipot.errors import InfinipotError
from infinipot.generation import Generated, check_sampling, collect, generate


class Answering:
    """The asking half of a Session (it needs `model`, `cache` and `state`)."""

    def ask(self, question: str, *, max_new_tokens: int = 256, temperature: float = 0.0, seed: int | None = None,
            on_text: Callable[[str], None] | None = None, evidence: bool = False) -> Answer:
        """Answer one question from the video cache alone (a conversation in progress is forgotten first).

        `evidence=True` also finds the moments the question and answer attended to most
        (`answer.evidence`, infinipot.evidence); the answer is the same either way.
        """
        self._ready_to_answer(question, max_new_tokens, temperature)
        self.reset()
        adapter = self.model.adapter
        prompt = adapter.question(question, self.state.positions)
        self._check_room(prompt.ids.shape[1], int(prompt.positions.max()), max_new_tokens)
        length = self.cache.seq_length()
        try:
            return self._answer(question, prompt, max_new_tokens, temperature, seed, on_text, evidence, Generated())
        finally:
            self.cache.truncate(length)

    def _answer(self, question: str, prompt, max_new_tokens: int, temperature: float, seed: int | None,
                on_text: Callable[[str], None] | None, evidence: bool, done: Generated) -> Answer:
        """Generate the answer to `prompt` (left in the cache); with `evidence`, measured before it is cut."""
        adapter, first = self.model.adapter, self.cache.seq_length()
        pieces = generate(adapter, self.cache.kv, prompt, max_new_tokens, temperature, seed, done)
        if not evidence:
            return collect(question, pieces, done, on_text)
        from infinipot.evidence import AttentionRecorder, measure

        with AttentionRecorder(adapter.model.model.language_model.layers) as recorder:
            answer = collect(question, pieces, done, on_text)
        found = measure(recorder, self.cache, self.state.timeline, first, answer.seconds)
        return dataclasses.replace(answer, evidence=found)

    def chat(self, question: str, *, max_new_tokens: int = 256, temperature: float = 0.0, seed: int | None = None,
             on_text: Callable[[str], None] | None = None, evidence: bool = False) -> Answer:
        """Answer `question` after the earlier turns and keep this turn in the cache (`reset` forgets them).

        `evidence` as for `ask`; the conversation keeps the turn without it.
        """
        self._ready_to_answer(question, max_new_tokens, temperature)
        adapter, state = self.model.adapter, self.state
        if state.turns:
            prompt = adapter.follow_up(question, state.next_turn_start)
        else:
            prompt = adapter.question(question, state.positions)
        self._check_room(prompt.ids.shape[1], int(prompt.positions.max()), max_new_tokens)
        length = self.cache.seq_length()
        done = Generated()
        kept = False
        try:
            answer = self._answer(question, prompt, max_new_tokens, temperature, seed, on_text, evidence, done)
            # The stop token is not in the cache: the next turn's prompt closes the answer.
            state.turns.append(dataclasses.replace(answer, evidence=None))
            state.next_turn_start, kept = done.next_position, True
            return answer
        finally:
            if not kept:
                self.cache.truncate(length)

    def reset(self) -> None:
        """Forget the conversation: back to the cache of the video alone."""
        if self.cache is not None:
            self.cache.truncate(self.cache.video_length)
        if self.state is not None:
            self.state.turns = []
            self.state.next_turn_start = None

    def first_token_logits(self, question: str) -> torch.Tensor:
        """Logits for the first answer token (the cache is left as it was; a conversation is forgotten)."""
        self._ready_to_answer(question, 1, 0.0)
        self.reset()
        adapter = self.model.adapter
        length = self.cache.seq_length()
        try:
            prompt = adapter.question(question, self.state.positions)
            return adapter.forward(adapter.embed_ids(prompt.ids), prompt.positions, self.cache.kv)
        finally:
            self.cache.truncate(length)

    def moment(self) -> dict:
        """Where the stream stands, for a result: video time reached, frames, cached tokens, the video span the
        cache covers and the share of each part of the video it still holds (infinipot.retention)."""
        if self.state is None:
            return {}
        from infinipot.retention import context_of

        stats = self.state.stats
        at = self._stopped_at if self._stopped_at is not None else self.state.asked_at
        return {"asked_at": round(float(at), 3), "frames_seen": stats.frames, "cached_tokens": self.cache.visual_tokens,
                **context_of(self)}

    def _ready_to_answer(self, question: str, max_new_tokens: int, temperature: float) -> None:
        if not question.strip():
            raise InfinipotError("the question is empty: ask something about the video")
        check_sampling(max_new_tokens, temperature)
        if self.state is None or self.state.stats.frames == 0:
            raise InfinipotError("no video has been streamed yet: stream a video before asking")

    def _check_room(self, question_tokens: int, last_position: int, max_new_tokens: int) -> None:
        """Refuse a question that cannot fit the model's window, before anything is allocated for it."""
        window = getattr(self.model.adapter.text_config, "max_position_embeddings", None)
        if window is None:
            return
        start = last_position - question_tokens + 1  # the question's first position
        # Past the window already (original positions, a warning was given): only the window bounds it.
        room = window - start if start < window else window
        if question_tokens >= room:
            raise InfinipotError(
                f"the question is {question_tokens:,} tokens but the model's window leaves room for {room:,} after "
                "the video: shorten the question"
            )
        if max_new_tokens > window:
            raise InfinipotError(f"`max_new_tokens` {max_new_tokens:,} is more than the model's whole window "
                                 f"({window:,} positions): lower it")
