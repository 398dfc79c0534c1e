"""Question entries, and infinipot's own question files.

A question file is `.txt` (one question a line), `.jsonl` (one JSON object a line) or `.yaml`
(a list, or a mapping holding one under `questions:`). Entries may carry an `id`, `options`
(multiple choice: the prompt lists them as lettered choices and the chosen letter is read back
from the answer), the expected `answer`, a `category` (or `categories`, a mapping of axis to
value), a `time` (when the question is asked, in video seconds: a number, or 'HH:MM:SS[.fff]',
'MM:SS[.fff]') and a `video`. A malformed entry is reported with its line number and skipped;
the good ones still run. The benchmarks' own files are read by `infinipot.benchmarks`.

Everything about scoring lives in `infinipot.bench_scoring` and is re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from infinipot.bench_input import document_text, excerpt, json_value, parse_time, read_input, text_lines, yaml_document
from infinipot.bench_scoring import (  # noqa: F401  (re-exported: the public scoring API)
    CHOICE_INSTRUCTION, LETTERS, SCORINGS, Accuracy, AnswerLike, Result, Tally, format_prompt, leading_letter,
    normalize, parse_choice, score, text_matches,
)
from infinipot.errors import InfinipotError

KINDS = {".txt": "txt", ".jsonl": "jsonl", ".yaml": "yaml", ".yml": "yaml"}
ENTRY_KEYS = ("id", "question", "options", "answer", "category", "categories", "time", "video")
# "A. a dog", "(A) a dog"; the lenient form also takes StreamingBench's "A.A dog".
_OPTION_PREFIX = re.compile(r"^\s*[(\[]?([A-Z])[)\].:]\s+")
_OPTION_PREFIX_LENIENT = re.compile(r"^\s*[(\[]?([A-Z])[)\].:]\s*")


@dataclass(frozen=True)
class QuestionEntry:
    """One question, as read from a question file or a benchmark file.

    `answer` is the expected answer: for multiple choice always the option's letter; for "judge"
    entries the reference answer. `scoring` is derived when not given: "choice" with options and
    an answer, "exact" with an answer alone, "none" without one. `time` is when the question is
    asked (video seconds; None: at the end). `categories` are the benchmark's own axes, e.g.
    {"duration": "short", "task_type": "Counting"}.
    """

    id: str | int
    question: str
    options: tuple[str, ...] = ()
    answer: str | None = None
    line: int = 0
    extra: dict = field(default_factory=dict)  # other fields of the entry, carried into the results
    time: float | None = None
    video: str | None = None
    categories: dict[str, str] = field(default_factory=dict)
    scoring: str = ""

    def __post_init__(self) -> None:
        scoring = self.scoring or ("none" if self.answer is None else "choice" if self.options else "exact")
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}, not {scoring!r}")
        if scoring != "none" and self.answer is None:
            raise ValueError(f"scoring {scoring!r} needs an expected answer")
        if scoring == "choice" and (not self.options or self.answer not in LETTERS[: len(self.options)]):
            raise ValueError("multiple choice needs options and the expected option's letter")
        object.__setattr__(self, "scoring", scoring)

    @property
    def prompt(self) -> str:
        return format_prompt(self.question, self.options)

    @property
    def category(self) -> str | None:
        """The plain formats' single `category` (or the first axis' value): for older callers."""
        return self.categories.get("category", next(iter(self.categories.values()), None))

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the entry across runs (resume): (video or "", id as text)."""
        return (self.video or "", str(self.id))


@dataclass(frozen=True)
class Problem:
    """A malformed entry: where it is (a line, or an index in a JSON list) and what is wrong with it."""

    line: int
    message: str
    index: int | None = None

    @property
    def where(self) -> str:
        return f"index {self.index}" if self.index is not None else f"line {self.line}"


@dataclass(frozen=True)
class QuestionFile:
    path: Path
    entries: list[QuestionEntry]
    problems: list[Problem]
    format: str = "infinipot"

    @property
    def skipped(self) -> int:
        return len(self.problems)


# --- reading ------------------------------------------------------------------------------------
def read_questions(path: str | Path) -> QuestionFile:
    """Parse a question file; malformed entries become Problems, a wholly unreadable file an error."""
    path = Path(path)
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise InfinipotError(f"unknown question file type {excerpt(path.suffix or '(none)')} for {path}: "
                             "use .txt (one question a line), .jsonl or .yaml")
    data = read_input(path, "question file")
    raw = _yaml_entries(data, path) if kind == "yaml" else _line_entries(data, path, kind)
    entries, problems = validate(raw)
    return QuestionFile(path, entries, problems)


def _line_entries(data: bytes, path: Path, kind: str) -> list[tuple[int, object]]:
    """(line number, raw entry or Problem) for every non-blank line of a .txt or .jsonl file."""
    found: list[tuple[int, object]] = []
    for number, line, problem in text_lines(data, path):
        if line is None:
            found.append((number, Problem(number, problem)))
            continue
        line = line.strip()
        if not line or (kind == "txt" and line.startswith("#")):
            continue
        if kind == "txt":
            found.append((number, {"question": line}))
            continue
        try:
            found.append((number, json_value(line)))
        except ValueError as error:
            found.append((number, Problem(number, str(error))))
    return found


def _yaml_entries(data: bytes, path: Path) -> list[tuple[int, object]]:
    document, node = yaml_document(document_text(data, path), path)
    if isinstance(document, dict) and "questions" in document:
        document = document["questions"]
        node = next(value for key, value in node.value if key.value == "questions")
    if document is None:
        return []
    if not isinstance(document, list):
        raise InfinipotError(f"{path}: expected a list of questions (or `questions:` holding one), "
                             f"found a {type(document).__name__}")
    return [(item.start_mark.line + 1, entry) for item, entry in zip(node.value, document)]


def validate(raw: Iterable[tuple[int, object]]) -> tuple[list[QuestionEntry], list[Problem]]:
    """Entries from (line, raw item or Problem) pairs; bad items and repeated ids become Problems."""
    entries: list[QuestionEntry] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for line, item in raw:
        if isinstance(item, Problem):
            problems.append(item)
            continue
        try:
            entry = parse_entry(item, line)
        except ValueError as error:
            problems.append(Problem(line, str(error)))
            continue
        if entry.key in seen:
            problems.append(Problem(line, f"duplicate id {excerpt(entry.id)} (first on line {seen[entry.key]})"))
            continue
        seen[entry.key] = line
        entries.append(entry)
    return entries, problems


def parse_entry(item: object, line: int = 0) -> QuestionEntry:
    """One entry of infinipot's own format (a string or a mapping); ValueError says what is wrong."""
    if isinstance(item, str):
        item = {"question": item}
    if not isinstance(item, dict):
        raise ValueError(f"expected an object with a `question`, found {type(item).__name__}")
    question = item.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing `question` (a non-empty string)")
    entry_id = item.get("id", line)
    if isinstance(entry_id, bool) or not isinstance(entry_id, (str, int)):
        raise ValueError(f"`id` must be a string or an integer, found {excerpt(entry_id)}")
    options = parse_options(item.get("options"))
    answer = expected_answer(item.get("answer"), options)
    time = parse_time(item["time"]) if item.get("time") is not None else None
    video = item.get("video")
    if video is not None and (not isinstance(video, (str, int)) or isinstance(video, bool) or not str(video).strip()):
        raise ValueError(f"`video` must be a file name or id, found {excerpt(video)}")
    extra = {key: value for key, value in item.items() if key not in ENTRY_KEYS}
    return QuestionEntry(entry_id, question.strip(), options, answer, line, extra, time,
                         None if video is None else str(video).strip(), _categories(item))


def _categories(item: dict) -> dict[str, str]:
    categories: dict[str, str] = {}
    category = item.get("category")
    if category is not None:
        if isinstance(category, bool) or not isinstance(category, (str, int)):
            raise ValueError(f"`category` must be a string, found {excerpt(category)}")
        categories["category"] = str(category)
    axes = item.get("categories")
    if axes is not None:
        if not isinstance(axes, dict) or not all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                 for v in axes.values()):
            raise ValueError(f"`categories` must map names to strings, found {excerpt(axes)}")
        categories.update({str(axis): str(value) for axis, value in axes.items()})
    return categories


def parse_options(raw: object, lenient_prefix: bool = False) -> tuple[str, ...]:
    """Option texts from a list (or an A/B/C... mapping). A leading letter matching the option's
    place ("A. a dog") is dropped; `lenient_prefix` also drops it without a following space ("A.A dog")."""
    if raw is None:
        return ()
    if isinstance(raw, dict):
        keys = [str(key).strip().upper() for key in raw]
        if keys != list(LETTERS[: len(keys)]):
            raise ValueError(f"`options` keys must be the letters A, B, C, ... in order, found {excerpt(list(raw))}")
        raw = list(raw.values())
    if not isinstance(raw, list) or not all(isinstance(o, (str, int, float)) and not isinstance(o, bool) for o in raw):
        raise ValueError("`options` must be a list of strings")
    if not 2 <= len(raw) <= len(LETTERS):
        raise ValueError(f"`options` needs 2 to {len(LETTERS)} choices, found {len(raw)}")
    prefix = _OPTION_PREFIX_LENIENT if lenient_prefix else _OPTION_PREFIX
    options = []
    for letter, option in zip(LETTERS, raw):
        text = str(option).strip()
        found = prefix.match(text)
        if found and found.group(1) == letter:  # already lettered ("A. a dog"): keep the text only
            text = text[found.end():].strip()
        if not text:
            raise ValueError(f"option {letter} is empty")
        options.append(text)
    return tuple(options)


def expected_answer(raw: object, options: tuple[str, ...]) -> str | None:
    """The expected answer: for multiple choice the letter, given as a letter or as an option's text."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raw = "yes" if raw else "no"
    if not isinstance(raw, (str, int, float)):
        raise ValueError(f"`answer` must be a string, found {excerpt(raw)}")
    text = str(raw).strip()
    if not options:
        if not text:
            raise ValueError("`answer` is empty")
        return text
    letters = LETTERS[: len(options)]
    letter = leading_letter(text.upper()) if len(text) <= 4 else None  # "b", "(B)", "B."
    if letter is not None and letter in letters:
        return letter
    matching = [LETTERS[i] for i, option in enumerate(options) if normalize(option) == normalize(text)]
    if len(matching) == 1:
        return matching[0]
    raise ValueError(f"`answer` {excerpt(text)} is neither a letter {letters[0]}-{letters[-1]} nor one of the options")


# --- asking -------------------------------------------------------------------------------------
class Asks(Protocol):
    def ask(self, question: str, **options: object) -> AnswerLike: ...


def run_batch(session: Asks, entries: Iterable[QuestionEntry], **ask_options: object) -> Iterator[Result]:
    """Ask every entry from the same video cache, scoring each answer as it comes (untimed use)."""
    for entry in entries:
        yield score(entry, session.ask(entry.prompt, **ask_options))
