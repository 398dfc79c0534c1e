"""Asking a session: single questions from the video cache alone, or a conversation kept in the cache.

Every question starts one past the largest position so far (docs/design.md, "Positions"); after
an answer the cache is cut back to the video, so every question sees the same cache. A chat
turn stays in the cache; `reset` forgets the conversation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from infinipot.answer import Answer
from infinipot.errors import InfinipotError
from infinipot.generation import Generated, check_sampling, collect, generate


class Answering:
    """The asking half of a Session (it needs `model`, `cache` and `state`)."""

    def ask(self, question: str, *, max_new_tokens: int = 256, temperature: float = 0.0, seed: int | None = None,
            on_text: Callable[[str], None] | None = None) -> Answer:
        """Answer one question from the video cache alone (a conversation in progress is forgotten first)."""
        self._ready_to_answer(question, max_new_tokens, temperature)
        self.reset()
        adapter = self.model.adapter
        prompt = adapter.question(question, self.state.positions)
        self._check_room(prompt.ids.shape[1], int(prompt.positions.max()), max_new_tokens)
        length = self.cache.seq_length()
        done = Generated()
        try:
            return collect(question, generate(adapter, self.cache.kv, prompt, max_new_tokens, temperature, seed, done),
                           done, on_text)
        finally:
            self.cache.truncate(length)

    def chat(self, question: str, *, max_new_tokens: int = 256, temperature: float = 0.0, seed: int | None = None,
             on_text: Callable[[str], None] | None = None) -> Answer:
        """Answer `question` after the earlier turns and keep this turn in the cache (`reset` forgets them)."""
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
            answer = collect(question, generate(adapter, self.cache.kv, prompt, max_new_tokens, temperature, seed,
                                                done), done, on_text)
            # The stop token is not in the cache: the next turn's prompt closes the answer.
            state.turns.append(answer)
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
        """Where the stream stands, for a result: video time reached, frames and cached tokens."""
        if self.state is None:
            return {}
        stats = self.state.stats
        at = self._stopped_at if self._stopped_at is not None else self.state.asked_at
        return {"asked_at": round(float(at), 3), "frames_seen": stats.frames, "cached_tokens": self.cache.visual_tokens}

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
