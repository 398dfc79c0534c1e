"""Answering from a cache: append a prompt, generate token by token with explicit positions.

transformers derives positions from the cache's length when none are given, which is wrong
once a compression has shortened the cache, so every token is positioned here: the prompt
where the adapter put it, then each answer token one past the last (docs/design.md, "Positions").
A small greedy/sampling loop of our own is simpler than bending `generate`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from infinipot.adapters.base import Adapter, PromptParts
from infinipot.answer import Answer
from infinipot.errors import InfinipotError

MAX_NEW_TOKENS_CAP = 32768


@dataclass
class Generated:
    """What a generation left behind: how many tokens, and where the next token would go."""

    tokens: int = 0
    next_position: int | None = None


def check_sampling(max_new_tokens: int, temperature: float) -> None:
    if not 0 < max_new_tokens <= MAX_NEW_TOKENS_CAP:
        raise InfinipotError(f"`max_new_tokens` must be between 1 and {MAX_NEW_TOKENS_CAP}, got {max_new_tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise InfinipotError(f"`temperature` must be a finite number >= 0 (0 answers greedily), got {temperature}")


def generate(adapter: Adapter, cache, prompt: PromptParts, max_new_tokens: int, temperature: float,
             seed: int | None, done: Generated) -> Iterator[str]:
    """Yield the answer's text piece by piece; `done` receives the token count and the next position."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    eos = adapter.eos_token_ids()
    logits = adapter.forward(adapter.embed_ids(prompt.ids), prompt.positions, cache)
    position = int(prompt.positions[:, -1].max()) + 1
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
        done.tokens = len(generated)
        yield text[len(shown):]
        shown = text
        ids = torch.tensor([[token]], dtype=torch.long)
        logits = adapter.forward(adapter.embed_ids(ids), adapter.text_positions(position, 1), cache)
        position += 1
    text = adapter.tokenizer.decode(generated, skip_special_tokens=True)
    if text != shown:  # bytes that never formed a character
        yield text[len(shown):]
    done.next_position = position


def collect(question: str, pieces: Iterator[str], done: Generated, on_text: Callable[[str], None] | None) -> Answer:
    """Run a generation to its end, passing pieces to `on_text`; the whole answer."""
    start = time.perf_counter()
    texts = []
    for piece in pieces:
        if piece:
            texts.append(piece)
            if on_text is not None:
                on_text(piece)
    return Answer(question, "".join(texts).strip(), done.tokens, time.perf_counter() - start)


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
