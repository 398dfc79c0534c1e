"""An answer as the session returns it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    tokens: int  # generated tokens, the stop token not counted
    seconds: float  # time spent generating
    evidence: Any = None  # infinipot.evidence.Evidence when asked with `evidence=True`; never saved
