"""Prompts, reading a choice back from an answer, scoring, and accuracy by the benchmark's categories.

Four ways an entry is scored (`QuestionEntry.scoring`):
- "choice": multiple choice; the expected answer is an option letter and the letter read back
  from the answer (`parse_choice`) must equal it.
- "exact": a short expected text; the answer matches when it is the same text once normalised,
  or — for yes/no and counting questions — when its first word is the expected yes/no, or its
  digits spell the expected number (OVO-Bench's counting rule).
- "judge": open-ended; the reference answer is recorded for a judge (a person or a model) to
  score later. Never scored here.
- "none": no expected answer; the answer is recorded only.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from infinipot.questions import QuestionEntry

SCORINGS = ("choice", "exact", "judge", "none")
LETTERS = string.ascii_uppercase
CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
# "B", "B.", "B) ...", "(B) ...", "[B]": a letter opening the answer (not "A man ...").
_LEADING_CHOICE = re.compile(r"^\s*(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])(?=$|[.:,)]))")
# "The answer is B", "Option: (C)": a letter stated after a keyword.
_STATED_CHOICE = re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*[:\-]?\s*[(\[]?([A-Z])(?![A-Za-z0-9])")
_DIGITS = re.compile(r"\d+")


class AnswerLike(Protocol):
    """What scoring needs of an answer (`infinipot.answer.Answer` is one)."""

    text: str
    tokens: int
    seconds: float


def format_prompt(question: str, options: Iterable[str] = ()) -> str:
    """The question, and for multiple choice its options as lettered lines and an instruction."""
    options = list(options)
    if not options:
        return question
    lines = [question, *(f"{letter}. {option}" for letter, option in zip(LETTERS, options)), CHOICE_INSTRUCTION]
    return "\n".join(lines)


def normalize(text: str) -> str:
    """Lower case, single spaces, no surrounding punctuation: for comparing short answers."""
    return " ".join(text.casefold().split()).strip(string.punctuation + " ")


def leading_letter(text: str) -> str | None:
    """The capital letter an answer opens with as a choice ("B", "(B)", "B." ...), if any."""
    found = _LEADING_CHOICE.match(text)
    return next((group for group in found.groups() if group), None) if found else None


def parse_choice(answer: str, options: tuple[str, ...]) -> str | None:
    """The option letter an answer picks: a leading letter, 'the answer is X', or one option's text."""
    letters = LETTERS[: len(options)]
    text = answer.strip()
    leading = leading_letter(text)
    if leading is not None and leading in letters:
        return leading
    stated = _STATED_CHOICE.search(text)
    if stated and stated.group(1) in letters:
        return stated.group(1)
    said = normalize(text)
    named = [LETTERS[i] for i, option in enumerate(options) if normalize(option) and normalize(option) in said]
    return named[0] if len(named) == 1 else None


def text_matches(expected: str, said: str) -> bool:
    """Whether a free-text answer gives the expected short answer (see the module docstring)."""
    want, got = normalize(expected), normalize(said)
    if want == got:
        return True
    if want in ("yes", "no"):
        first = got.split(" ", 1)[0].strip(string.punctuation)
        return first == want
    if want.isdigit():
        return "".join(_DIGITS.findall(said)) == want
    return False


@dataclass(frozen=True)
class Result:
    """One answered entry: the answer, the letter read from it, whether it is right, and the moment
    it was asked at (filled by the engine: asked_at, frames_seen, cached_tokens, past_end ...)."""

    entry: QuestionEntry
    answer: AnswerLike
    choice: str | None  # the letter read from the answer (multiple choice only)
    correct: bool | None  # None when not scored here (scoring "judge" or "none")
    moment: dict = field(default_factory=dict)

    def record(self) -> dict:
        """One JSON line of results: the entry's own fields, the answer, how it scored, the moment."""
        entry = self.entry
        data = {**entry.extra, "id": entry.id}
        if entry.video is not None:
            data["video"] = entry.video
        data["question"] = entry.question
        if entry.options:
            data["options"] = list(entry.options)
        if entry.categories:
            data["categories"] = dict(entry.categories)
        if entry.time is not None:
            data["time"] = entry.time
        data["answer"] = self.answer.text
        if entry.options:
            data["choice"] = self.choice
        data["scoring"] = entry.scoring
        if entry.scoring in ("choice", "exact"):
            data["expected"] = entry.answer
        elif entry.scoring == "judge":
            data["reference"] = entry.answer
        if entry.scoring != "none":
            data["correct"] = self.correct
        data["tokens"] = self.answer.tokens
        data["seconds"] = round(self.answer.seconds, 4)
        core = set(data) - set(entry.extra)
        data.update({key: value for key, value in self.moment.items() if key not in core})
        return data


def score(entry: QuestionEntry, answer: AnswerLike, moment: dict | None = None) -> Result:
    """Score `answer` against `entry` by the entry's own scoring rule."""
    choice = parse_choice(answer.text, entry.options) if entry.options else None
    correct: bool | None = None
    if entry.scoring == "choice":
        correct = choice == entry.answer
    elif entry.scoring == "exact":
        correct = text_matches(entry.answer or "", answer.text)
    return Result(entry, answer, choice, correct, dict(moment or {}))


@dataclass
class Tally:
    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        return {"correct": self.correct, "total": self.total, "accuracy": round(self.accuracy, 4)}


@dataclass
class Accuracy:
    """Accuracy over the scored results, overall and per value of each of the benchmark's category
    axes (`by_category[axis][value]`); results not scored here are counted in `unscored`."""

    overall: Tally = field(default_factory=Tally)
    by_category: dict[str, dict[str, Tally]] = field(default_factory=dict)
    unscored: int = 0

    def add(self, result: Result) -> None:
        self._count(result.correct, result.entry.categories)

    def add_record(self, record: dict) -> None:
        """Count a result line read back from a results file (a resumed run's earlier answers)."""
        correct = record.get("correct")
        categories = record.get("categories")
        self._count(correct if isinstance(correct, bool) else None,
                    categories if isinstance(categories, dict) else {})

    def _count(self, correct: bool | None, categories: dict) -> None:
        if correct is None:
            self.unscored += 1
            return
        tallies = [self.overall]
        for axis, value in categories.items():
            tallies.append(self.by_category.setdefault(str(axis), {}).setdefault(str(value), Tally()))
        for tally in tallies:
            tally.total += 1
            tally.correct += int(correct)

    def as_dict(self) -> dict:
        return {"overall": self.overall.as_dict(),
                "by_category": {axis: {value: tally.as_dict() for value, tally in sorted(values.items())}
                                for axis, values in self.by_category.items()},
                "unscored": self.unscored}
