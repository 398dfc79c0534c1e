"""One mapper per benchmark: a published entry (one JSON object) -> QuestionEntry objects.

A mapper raises ValueError when the whole object is unusable, and yields a ValueError (instead of
an entry) for one bad question inside a per-video object, so the rest of that video still runs.
Where each layout was checked, and the choices the sources leave open, are in the docstring of
`infinipot.benchmarks`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from infinipot.bench_input import excerpt, parse_time
from infinipot.questions import LETTERS, QuestionEntry, expected_answer, normalize, parse_entry, parse_options

Produced = Iterator["QuestionEntry | ValueError"]

OVO_GROUPS = {**dict.fromkeys(("EPM", "ASI", "HLD"), "backward"),
              **dict.fromkeys(("STU", "OJR", "ATR", "ACR", "OCR", "FPD"), "realtime"),
              **dict.fromkeys(("REC", "SSR", "CRR"), "forward")}


@dataclass
class Context:
    """What a mapper may need besides the object: where it is, EgoSchema's answers, and a count of
    the questions met per video (ids for benchmarks that publish none)."""

    path: Path
    answers: dict[str, int] | None = None
    line: int = 0  # JSON lines: the object's line; JSON lists: 0
    index: int | None = None  # JSON lists and parquet: the object's index
    counts: Counter = field(default_factory=Counter)

    def number(self, *key: str) -> int:
        """1, 2, 3 ... for the questions of one video (and kind), in file order."""
        self.counts[key] += 1
        return self.counts[key]


# --- fields -------------------------------------------------------------------------------------
def _text(item: dict, key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"missing `{key}` (a non-empty string)")
    return value.strip()


def _name(item: dict, *keys: str) -> str:
    """The first of `keys` holding a non-empty string or integer, as text (video names, ids)."""
    for key in keys:
        value = item.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    raise ValueError(f"missing `{'` or `'.join(keys)}` (a non-empty string)")


def _identifier(item: dict, key: str) -> str | int:
    value = item.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _name(item, key)


def _letter_at(value: object, options: tuple[str, ...], key: str) -> str:
    """The letter of option number `value` (0-based, as the benchmarks give it)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(options):
        raise ValueError(f"`{key}` {excerpt(value)} is not an option number 0-{len(options) - 1}")
    return LETTERS[value]


def _letter_of_text(value: object, options: tuple[str, ...], key: str) -> str | None:
    """The letter of the option whose text is `value` (exactly, else the one equal once normalised)."""
    if value is None:
        return None
    text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    exact = [LETTERS[i] for i, option in enumerate(options) if option == text]
    loose = [LETTERS[i] for i, option in enumerate(options)
             if text is not None and normalize(option) == normalize(text)]
    if exact or len(loose) == 1:
        return (exact or loose)[0]
    raise ValueError(f"`{key}` {excerpt(value)} is not one of the options")


def _categories(item: dict, *axes: str) -> dict[str, str]:
    return {axis: str(item[axis]) for axis in axes
            if isinstance(item.get(axis), (str, int, float)) and str(item[axis]).strip()}


def _extra(item: dict, used: set[str]) -> dict:
    return {key: value for key, value in item.items() if key not in used}


# --- offline benchmarks: every question at the end of its video ---------------------------------
def videomme(item: dict, context: Context) -> Produced:
    options = parse_options(item.get("options"), lenient_prefix=True)
    used = {"videoID", "question_id", "question", "options", "answer", "duration", "domain", "task_type"}
    yield QuestionEntry(_name(item, "question_id"), _text(item, "question"), options,
                        expected_answer(item.get("answer"), options), context.line, _extra(item, used),
                        video=_name(item, "videoID", "video_id"),
                        categories=_categories(item, "duration", "domain", "task_type"))


def mlvu(item: dict, context: Context) -> Produced:
    video = _name(item, "video")
    options = parse_options(item.get("candidates"))
    kind = str(item.get("question_type") or context.path.stem)
    entry_id = item.get("question_id") or f"{kind}-{context.number(video, kind)}"
    used = {"video", "question", "candidates", "answer", "question_type", "question_id"}
    yield QuestionEntry(entry_id, _text(item, "question"), options,
                        _letter_of_text(item.get("answer"), options, "answer"), context.line,
                        _extra(item, used), video=video, categories={"question_type": kind})


def longvideobench(item: dict, context: Context) -> Produced:
    candidates = item.get("candidates")
    if candidates is None:  # the Hugging Face parquet: option0 ... option4, "N/A" when unused
        candidates = []
        for number in range(5):
            option = item.get(f"option{number}")
            if option in (None, "N/A"):
                break
            candidates.append(option)
    options = parse_options(candidates)
    correct = item.get("correct_choice")
    used = {"id", "question", "candidates", "correct_choice", "duration_group", "question_category",
            "video_path", *(f"option{number}" for number in range(5))}
    yield QuestionEntry(_identifier(item, "id"), _text(item, "question"), options,
                        None if correct is None else _letter_at(correct, options, "correct_choice"),
                        context.line, _extra(item, used), video=_name(item, "video_path", "video_id"),
                        categories=_categories(item, "duration_group", "question_category"))


def egoschema(item: dict, context: Context) -> Produced:
    uid = _name(item, "q_uid")
    keys = [f"option {number}" for number in range(5) if f"option {number}" in item]
    options = parse_options([item[key] for key in keys])
    answers = context.answers or {}
    answer = _letter_at(answers[uid], options, "answer in subset_answers.json") if uid in answers else None
    yield QuestionEntry(uid, _text(item, "question"), options, answer, context.line,
                        _extra(item, {"q_uid", "question", *keys}), video=uid)


# --- streaming benchmarks: questions asked at their moment --------------------------------------
def ovobench(item: dict, context: Context) -> Produced:
    task = _text(item, "task")
    group = OVO_GROUPS.get(task)
    if group is None:
        raise ValueError(f"unknown OVO-Bench task {excerpt(task)}: expected one of {', '.join(OVO_GROUPS)}")
    video, base_id = _name(item, "video"), _identifier(item, "id")
    categories = {"group": group, "task": task}
    if group != "forward":
        options = parse_options(item.get("options"))
        used = {"id", "task", "video", "realtime", "question", "options", "gt", "answer"}
        yield QuestionEntry(base_id, _text(item, "question"), options, _letter_at(item.get("gt"), options, "gt"),
                            context.line, _extra(item, used), parse_time(item.get("realtime"), "realtime"),
                            video, categories)
        return
    tests = item.get("test_info")
    if not isinstance(tests, list) or not tests:
        raise ValueError("missing `test_info` (a list of checks, each with its `realtime`)")
    shared = _extra(item, {"id", "task", "video", "test_info", "question", "answer"})
    for number, test in enumerate(tests):
        try:
            if not isinstance(test, dict):
                raise ValueError(f"expected an object, found {type(test).__name__}")
            question, expected = _FORWARD[task](item, test)
            yield QuestionEntry(f"{base_id}.{number}", question, (), expected, context.line,
                                {**shared, "test_info": test}, parse_time(test.get("realtime"), "realtime"),
                                video, categories, "exact")
        except ValueError as error:
            yield ValueError(f"test_info[{number}]: {error}")


def _yes_no(test: dict) -> str:
    kind = test.get("type")
    if kind not in (0, 1) or isinstance(kind, bool):
        raise ValueError(f"`type` {excerpt(kind)} must be 0 (no) or 1 (yes)")
    return "Yes" if kind == 1 else "No"


def _repetition(item: dict, test: dict) -> tuple[str, str]:
    count = test.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"`count` {excerpt(count)} must be a whole number")
    question = (f"People in this video may repeat one kind of action; they are called 'they' here. How many "
                f"times in total did they {_text(item, 'activity')} so far? One complete motion counts as one. "
                "Answer with a single number.")
    return question, str(count)


def _step(item: dict, test: dict) -> tuple[str, str]:
    question = (f"This is a tutorial video made of steps. The step: {_text(test, 'step')}\n"
                "Is the person in the video performing this step right now? Answer only Yes or No.")
    return question, _yes_no(test)


def _clues(item: dict, test: dict) -> tuple[str, str]:
    question = (f"A question about the latest frames: {_text(item, 'question')}\n"
                "Do the frames so far, the latest ones above all, give enough information to answer it? "
                "Answer only Yes or No.")
    return question, _yes_no(test)


_FORWARD = {"REC": _repetition, "SSR": _step, "CRR": _clues}


def streamingbench(item: dict, context: Context) -> Produced:
    video = _name(item, "video_path")
    questions = item.get("questions")
    if not isinstance(questions, list):
        raise ValueError("missing `questions` (a list)")
    shared = _extra(item, {"video_path", "questions", "captions"})  # captions: long, and no use in results
    for number, question in enumerate(questions):
        entry_id = context.number(video)  # counted even when malformed: the other ids stay put
        try:
            yield _streaming_question(question, entry_id, video, shared, context)
        except ValueError as error:
            yield ValueError(f"questions[{number}]: {error}")


def _streaming_question(item: object, entry_id: int, video: str, shared: dict, context: Context) -> QuestionEntry:
    if not isinstance(item, dict):
        raise ValueError(f"expected an object, found {type(item).__name__}")
    options = item.get("options")
    if isinstance(options, list):  # some omni-source entries interleave empty strings with the options
        options = [option for option in options if not (isinstance(option, str) and not option.strip())]
    options = parse_options(options, lenient_prefix=True)
    answer = expected_answer(item.get("answer"), options)
    scoring = "" if options or answer is None else "judge"  # open questions (no options): for a judge
    used = {"question", "options", "answer", "time_stamp", "task_type"}
    return QuestionEntry(entry_id, _text(item, "question"), options, answer, context.line,
                         {**shared, **_extra(item, used)}, parse_time(item.get("time_stamp"), "time_stamp"),
                         video, _categories(item, "task_type"), scoring)


def rvs(item: dict, context: Context) -> Produced:
    video = _name(item, "video_path", "video_id")
    conversations = item.get("conversations")
    if not isinstance(conversations, list):
        raise ValueError("missing `conversations` (a list)")
    shared = _extra(item, {"video_path", "conversations"})
    for number, turn in enumerate(conversations):
        entry_id = context.number(video)
        try:
            if not isinstance(turn, dict):
                raise ValueError(f"expected an object, found {type(turn).__name__}")
            used = {"question", "answer", "end_time", "id"}
            yield QuestionEntry(turn.get("id", entry_id), _text(turn, "question"), (), _text(turn, "answer"),
                                context.line, {**shared, **_extra(turn, used)},
                                parse_time(turn.get("end_time"), "end_time"), video, {}, "judge")
        except ValueError as error:
            yield ValueError(f"conversations[{number}]: {error}")


def infinipot(item: object, context: Context) -> Produced:
    """infinipot's own entries in a JSON list or JSON-lines file (ids default to the position)."""
    entry = parse_entry(item, context.line if context.index is None else context.index + 1)
    yield replace(entry, line=context.line)


MAPPERS = {"infinipot": infinipot, "videomme": videomme, "mlvu": mlvu, "longvideobench": longvideobench,
           "egoschema": egoschema, "ovobench": ovobench, "streamingbench": streamingbench, "rvs": rvs}
