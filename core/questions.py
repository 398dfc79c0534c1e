"""Batches of questions: read a file of them, ask them, score the answers.

A question file is `.txt` (one question a line), `.jsonl` (one JSON object a line) or `.yaml`
(a list). Entries may carry an `id`, `options` (multiple choice: the prompt lists them as
lettered choices and the chosen letter is read back from the answer), the expected `answer`
and a `category`, so a batch doubles as a small benchmark. A malformed entry is reported with
its line number and skipped; the good ones still run.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from infinipot.answer import Answer
from infinipot.engine import Session
from infinipot.errors import InfinipotError

KINDS = {".txt": "txt", ".jsonl": "jsonl", ".yaml": "yaml", ".yml": "yaml"}
LETTERS = string.ascii_uppercase
CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
ENTRY_KEYS = ("id", "question", "options", "answer", "category")
# "B", "B.", "B) ...", "(B) ...", "[B]": a letter opening the answer (not "A man ...").
_LEADING_CHOICE = re.compile(r"^\s*(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])(?=$|[.:,)]))")
# "The answer is B", "Option: (C)": a letter stated after a keyword.
_STATED_CHOICE = re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*[:\-]?\s*[(\[]?([A-Z])(?![A-Za-z0-9])")
_OPTION_PREFIX = re.compile(r"^\s*[(\[]?([A-Z])[)\].:]\s+")


@dataclass(frozen=True)
class QuestionEntry:
    """One question of a batch, as read from its file."""

    id: str | int
    question: str
    options: tuple[str, ...] = ()
    answer: str | None = None  # expected answer; for multiple choice always the option's letter
    category: str | None = None
    line: int = 0
    extra: dict = field(default_factory=dict)  # other fields of the entry, carried into the results

    @property
    def prompt(self) -> str:
        return format_prompt(self.question, self.options)


@dataclass(frozen=True)
class Problem:
    """A malformed entry: where it is and what is wrong with it."""

    line: int
    message: str


@dataclass(frozen=True)
class QuestionFile:
    path: Path
    entries: list[QuestionEntry]
    problems: list[Problem]


# --- reading ------------------------------------------------------------------------------------
def read_questions(path: str | Path) -> QuestionFile:
    """Parse a question file; malformed entries become Problems, a wholly unreadable file an error."""
    path = Path(path)
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise InfinipotError(f"unknown question file type {path.suffix or '(none)'!r} for {path}: "
                             "use .txt (one question a line), .jsonl or .yaml")
    if not path.is_file():
        raise InfinipotError(f"question file not found: {path} — check the path")
    data = path.read_bytes()
    if kind == "yaml":
        raw = _yaml_entries(data, path)
    else:
        raw = _line_entries(data, kind)
    entries, problems = _validate(raw)
    return QuestionFile(path, entries, problems)


def _line_entries(data: bytes, kind: str) -> list[tuple[int, object]]:
    """(line number, raw entry or Problem) for every non-blank line of a .txt or .jsonl file."""
    found: list[tuple[int, object]] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8").strip().lstrip("\ufeff")
        except UnicodeDecodeError:
            found.append((number, Problem(number, "not UTF-8 text")))
            continue
        if not line or (kind == "txt" and line.startswith("#")):
            continue
        if kind == "txt":
            found.append((number, {"question": line}))
            continue
        try:
            found.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            found.append((number, Problem(number, f"not valid JSON ({error.msg} at column {error.colno})")))
    return found


def _yaml_entries(data: bytes, path: Path) -> list[tuple[int, object]]:
    try:
        text = data.decode("utf-8")
        document = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except UnicodeDecodeError as error:
        raise InfinipotError(f"{path} is not UTF-8 text ({error.reason}): save it as UTF-8") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InfinipotError(f"{where}: not valid YAML ({problem}): fix the file") from error
    if isinstance(document, dict) and "questions" in document:
        document = document["questions"]
        node = next(value for key, value in node.value if key.value == "questions")
    if document is None:
        return []
    if not isinstance(document, list):
        raise InfinipotError(f"{path}: expected a list of questions (or `questions:` holding one), "
                             f"found a {type(document).__name__}")
    return [(item.start_mark.line + 1, entry) for item, entry in zip(node.value, document)]


def _validate(raw: list[tuple[int, object]]) -> tuple[list[QuestionEntry], list[Problem]]:
    entries: list[QuestionEntry] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for line, item in raw:
        if isinstance(item, Problem):
            problems.append(item)
            continue
        try:
            entry = _entry(line, item)
        except ValueError as error:
            problems.append(Problem(line, str(error)))
            continue
        key = str(entry.id)
        if key in seen:
            problems.append(Problem(line, f"duplicate id {entry.id!r} (first on line {seen[key]})"))
            continue
        seen[key] = line
        entries.append(entry)
    return entries, problems


def _entry(line: int, item: object) -> QuestionEntry:
    if isinstance(item, str):
        item = {"question": item}
    if not isinstance(item, dict):
        raise ValueError(f"expected an object with a `question`, found {type(item).__name__}")
    question = item.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing `question` (a non-empty string)")
    entry_id = item.get("id", line)
    if isinstance(entry_id, bool) or not isinstance(entry_id, (str, int)):
        raise ValueError(f"`id` must be a string or an integer, found {entry_id!r}")
    options = _options(item.get("options"))
    answer = _expected(item.get("answer"), options)
    category = item.get("category")
    if category is not None and not isinstance(category, (str, int)):
        raise ValueError(f"`category` must be a string, found {category!r}")
    extra = {key: value for key, value in item.items() if key not in ENTRY_KEYS}
    return QuestionEntry(entry_id, question.strip(), options, answer,
                         None if category is None else str(category), line, extra)


def _options(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, dict):
        keys = [str(key).strip().upper() for key in raw]
        if keys != list(LETTERS[: len(keys)]):
            raise ValueError(f"`options` keys must be the letters A, B, C, ... in order, found {list(raw)}")
        raw = list(raw.values())
    if not isinstance(raw, list) or not all(isinstance(option, (str, int, float)) for option in raw):
        raise ValueError("`options` must be a list of strings")
    if not 2 <= len(raw) <= len(LETTERS):
        raise ValueError(f"`options` needs 2 to {len(LETTERS)} choices, found {len(raw)}")
    options = []
    for letter, option in zip(LETTERS, raw):
        text = str(option).strip()
        prefix = _OPTION_PREFIX.match(text)
        if prefix and prefix.group(1) == letter:  # already lettered ("A. a dog"): keep the text only
            text = text[prefix.end():].strip()
        if not text:
            raise ValueError(f"option {letter} is empty")
        options.append(text)
    return tuple(options)


def _expected(raw: object, options: tuple[str, ...]) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        raw = "yes" if raw else "no"
    if not isinstance(raw, (str, int, float)):
        raise ValueError(f"`answer` must be a string, found {raw!r}")
    text = str(raw).strip()
    if not options:
        if not text:
            raise ValueError("`answer` is empty")
        return text
    letters = LETTERS[: len(options)]
    letter = _leading_letter(text.upper()) if len(text) <= 4 else None  # "b", "(B)", "B."
    if letter is not None and letter in letters:
        return letter
    matching = [LETTERS[i] for i, option in enumerate(options) if normalize(option) == normalize(text)]
    if len(matching) == 1:
        return matching[0]
    raise ValueError(f"`answer` {text!r} is neither a letter {letters[0]}-{letters[-1]} nor one of the options")


# --- prompts and scoring ------------------------------------------------------------------------
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


def _leading_letter(text: str) -> str | None:
    found = _LEADING_CHOICE.match(text)
    return next((group for group in found.groups() if group), None) if found else None


def parse_choice(answer: str, options: tuple[str, ...]) -> str | None:
    """The option letter an answer picks: a leading letter, 'the answer is X', or one option's text."""
    letters = LETTERS[: len(options)]
    text = answer.strip()
    leading = _leading_letter(text)
    if leading is not None and leading in letters:
        return leading
    stated = _STATED_CHOICE.search(text)
    if stated and stated.group(1) in letters:
        return stated.group(1)
    said = normalize(text)
    named = [LETTERS[i] for i, option in enumerate(options) if normalize(option) and normalize(option) in said]
    return named[0] if len(named) == 1 else None


@dataclass(frozen=True)
class Result:
    entry: QuestionEntry
    answer: Answer
    choice: str | None  # the letter read from the answer (multiple choice only)
    correct: bool | None  # None when the entry has no expected answer

    def record(self) -> dict:
        """One JSON line of results: the entry's own fields, the answer, and how it scored."""
        entry = self.entry
        data = {**entry.extra, "id": entry.id, "question": entry.question}
        if entry.options:
            data["options"] = list(entry.options)
        if entry.category is not None:
            data["category"] = entry.category
        data["answer"] = self.answer.text
        if entry.options:
            data["choice"] = self.choice
        if entry.answer is not None:
            data["expected"] = entry.answer
            data["correct"] = self.correct
        data["tokens"] = self.answer.tokens
        data["seconds"] = round(self.answer.seconds, 4)
        return data


def score(entry: QuestionEntry, answer: Answer) -> Result:
    choice = parse_choice(answer.text, entry.options) if entry.options else None
    if entry.answer is None:
        return Result(entry, answer, choice, None)
    if entry.options:
        return Result(entry, answer, choice, choice == entry.answer)
    return Result(entry, answer, choice, normalize(answer.text) == normalize(entry.answer))


@dataclass
class Tally:
    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass
class Accuracy:
    """Accuracy over the results that had an expected answer, overall and per category."""

    overall: Tally = field(default_factory=Tally)
    by_category: dict[str, Tally] = field(default_factory=dict)

    def add(self, result: Result) -> None:
        if result.correct is None:
            return
        tallies = [self.overall]
        if result.entry.category is not None:
            tallies.append(self.by_category.setdefault(result.entry.category, Tally()))
        for tally in tallies:
            tally.total += 1
            tally.correct += int(result.correct)

    def as_dict(self) -> dict:
        def one(tally: Tally) -> dict:
            return {"correct": tally.correct, "total": tally.total, "accuracy": round(tally.accuracy, 4)}

        return {"overall": one(self.overall),
                "by_category": {name: one(tally) for name, tally in sorted(self.by_category.items())}}


def run_batch(session: Session, entries: Iterable[QuestionEntry], **ask_options) -> Iterator[Result]:
    """Ask every entry from the same video cache, scoring each answer as it comes."""
    for entry in entries:
        yield score(entry, session.ask(entry.prompt, **ask_options))
