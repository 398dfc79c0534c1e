"""Question files: each kind parses with line numbers, malformed entries are reported; times; hostile
files are in test_question_files_hostile.py; prompts; scoring and accuracy by category."""

from __future__ import annotations


import pytest

from infinipot.answer import Answer
from infinipot.bench_input import parse_time
from infinipot.errors import InfinipotError
from infinipot.questions import (
    CHOICE_INSTRUCTION, Accuracy, QuestionEntry, format_prompt, parse_choice, read_questions, run_batch, score,
)


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_txt_one_question_a_line(tmp_path):
    path = write(tmp_path, "q.txt", b"What happened?\n\n# a comment\n  Where is the square?  \n\xff\xfe bad\nWhy?\n")
    parsed = read_questions(path)
    assert [(e.id, e.question, e.line) for e in parsed.entries] == [
        (1, "What happened?", 1), (4, "Where is the square?", 4), (6, "Why?", 6)]
    assert [p.line for p in parsed.problems] == [5]
    assert parsed.problems[0].message.startswith("not UTF-8 text (byte 0xff") and parsed.problems[0].where == "line 5"


JSONL = "\n".join([
    '{"id": "q1", "question": "What color is the square?", "options": ["red", "blue", "green"], "answer": "B",'
    ' "category": "color", "video_id": "v7"}',
    '{"question": "What happened?", "answer": "It moved."}',
    '{"question": "broken", ',                                              # 3: bad JSON
    '{"id": "q4", "options": ["a", "b"]}',                                  # 4: no question
    '{"id": "q5", "question": "Pick", "options": ["only one"]}',            # 5: one option
    '{"id": "q6", "question": "Pick", "options": ["a", "b"], "answer": "E"}',  # 6: answer not an option
    '{"id": "q1", "question": "Again?"}',                                   # 7: duplicate id
    '',
    '"Just a question string?"',
    '[1, 2]',                                                               # 10: not an object
    '{"id": "q11", "question": "Lettered", "options": ["A. a dog", "B. a cat"], "answer": "a cat"}',
    '{"id": true, "question": "Bad id"}',                                   # 12: bool id
])


def test_jsonl_entries_and_malformed_lines(tmp_path):
    parsed = read_questions(write(tmp_path, "q.jsonl", JSONL))
    entries = {entry.id: entry for entry in parsed.entries}
    assert list(entries) == ["q1", 2, 9, "q11"]
    first = entries["q1"]
    assert first.options == ("red", "blue", "green") and first.answer == "B"
    assert first.categories == {"category": "color"} and first.category == "color" and first.scoring == "choice"
    assert first.extra == {"video_id": "v7"} and first.line == 1
    assert entries[2].answer == "It moved." and entries[2].options == () and entries[2].scoring == "exact"
    assert entries[9].question == "Just a question string?"
    assert entries["q11"].options == ("a dog", "a cat") and entries["q11"].answer == "B"
    problems = {problem.line: problem.message for problem in parsed.problems}
    assert sorted(problems) == [3, 4, 5, 6, 7, 10, 12]
    assert problems[3].startswith("not valid JSON")
    assert "missing `question`" in problems[4]
    assert "2 to 26 choices, found 1" in problems[5]
    assert "'E' is neither a letter A-B nor one of the options" in problems[6]
    assert "duplicate id 'q1' (first on line 1)" in problems[7]
    assert "expected an object" in problems[10]
    assert "`id` must be a string or an integer" in problems[12]


YAML = """\
# a small benchmark
- id: a
  question: What color is the square?
  options: {A: red, B: blue}
  answer: a
  category: color
- What happened?
- id: c
  options: [x, y]
- id: d
  question: Is it moving?
  answer: yes
"""


def test_yaml_entries_with_their_lines(tmp_path):
    parsed = read_questions(write(tmp_path, "q.yaml", YAML))
    assert [(e.id, e.line) for e in parsed.entries] == [("a", 2), (7, 7), ("d", 10)]
    assert parsed.entries[0].options == ("red", "blue") and parsed.entries[0].answer == "A"
    assert parsed.entries[2].answer == "yes"  # YAML's boolean yes, read back as the word
    assert [(p.line, p.message) for p in parsed.problems] == [(8, "missing `question` (a non-empty string)")]


def test_yaml_under_a_questions_key(tmp_path):
    parsed = read_questions(write(tmp_path, "q.yml", "name: demo\nquestions:\n  - Why?\n  - question: How?\n"))
    assert [(e.question, e.line) for e in parsed.entries] == [("Why?", 3), ("How?", 4)]


@pytest.mark.parametrize("text, fragment", [
    ("- id: a\n  question: [unclosed\n", "q.yaml:3: not valid YAML"),
    ("question: not a list\n", "expected a list of questions"),
])
def test_unreadable_yaml_is_one_error(tmp_path, text, fragment):
    with pytest.raises(InfinipotError, match=fragment):
        read_questions(write(tmp_path, "q.yaml", text))


def test_unknown_kind_and_missing_file(tmp_path):
    with pytest.raises(InfinipotError, match=r"unknown question file type '.csv'.*\.txt.*\.jsonl.*\.yaml"):
        read_questions(write(tmp_path, "q.csv", "a,b\n"))
    with pytest.raises(InfinipotError, match="question file not found"):
        read_questions(tmp_path / "none.txt")


def test_multiple_choice_prompt():
    assert format_prompt("What color?", ("red", "blue")) == f"What color?\nA. red\nB. blue\n{CHOICE_INSTRUCTION}"
    assert format_prompt("What happened?") == "What happened?"
    assert QuestionEntry(1, "Q?", ("x", "y")).prompt.splitlines()[1:3] == ["A. x", "B. y"]


OPTIONS = ("a red square", "a blue circle", "nothing", "a dog")


@pytest.mark.parametrize("answer, letter", [
    ("B", "B"), ("B.", "B"), ("(C) nothing", "C"), ("[D]", "D"), ("C) nothing", "C"), ("D: a dog", "D"),
    ("The answer is B.", "B"), ("Answer: (C)", "C"), ("the best option is D", "D"),
    ("I see a blue circle moving", "B"), ("a dog", "D"),
    ("A man walks in", None),  # the article, not a choice
    ("option E", None), ("", None), ("something else", None), ("the answer is a dog", "D"),
])
def test_parse_choice(answer, letter):
    assert parse_choice(answer, OPTIONS) == letter


def answer(text: str) -> Answer:
    return Answer("q", text, tokens=3, seconds=0.5)


def test_accuracy_overall_and_per_category_axis():
    choice = dict(options=("red", "blue", "green"))
    color = {"category": "color"}
    results = [
        score(QuestionEntry(1, "q", answer="A", categories=color, **choice), answer("A")),                # right
        score(QuestionEntry(2, "q", answer="B", categories=color, **choice), answer("The answer is C")),  # wrong
        score(QuestionEntry(3, "q", answer="C", categories=color, **choice), answer("green")),            # right
        score(QuestionEntry(4, "q", answer="Red", categories={"category": "words"}), answer(" red. ")),   # right
        score(QuestionEntry(5, "q", answer="B", **choice), answer("no idea")),                            # wrong
        score(QuestionEntry(6, "q"), answer("anything")),                                                 # not scored
        score(QuestionEntry(7, "q", answer="a bird", scoring="judge"), answer("a plane")),                # for a judge
    ]
    assert [r.correct for r in results] == [True, False, True, True, False, None, None]
    assert [r.choice for r in results] == ["A", "C", "C", None, None, None, None]
    accuracy = Accuracy()
    for result in results:
        accuracy.add(result)
    assert (accuracy.overall.correct, accuracy.overall.total, accuracy.unscored) == (3, 5, 2)
    assert accuracy.as_dict() == {
        "overall": {"correct": 3, "total": 5, "accuracy": 0.6},
        "by_category": {"category": {"color": {"correct": 2, "total": 3, "accuracy": 0.6667},
                                     "words": {"correct": 1, "total": 1, "accuracy": 1.0}}},
        "unscored": 2,
    }
    assert Accuracy().overall.accuracy == 0.0


def test_accuracy_on_several_axes_and_from_result_lines():
    entries = [
        QuestionEntry("a", "q", ("x", "y"), "A", categories={"duration": "short", "task_type": "Counting"}),
        QuestionEntry("b", "q", ("x", "y"), "B", categories={"duration": "long", "task_type": "Counting"}),
        QuestionEntry("c", "q", ("x", "y"), "A", categories={"duration": "short", "task_type": "OCR"}),
    ]
    live, replayed = Accuracy(), Accuracy()
    for entry, said in zip(entries, ["A", "A", "A"]):
        result = score(entry, answer(said))
        live.add(result)
        replayed.add_record(result.record())
    assert live.as_dict() == replayed.as_dict()
    by = live.as_dict()["by_category"]
    assert list(by) == ["duration", "task_type"]  # the benchmark's own order of axes
    assert by["duration"] == {"long": {"correct": 0, "total": 1, "accuracy": 0.0},
                              "short": {"correct": 2, "total": 2, "accuracy": 1.0}}
    assert by["task_type"]["Counting"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    # each axis adds up to the overall count
    assert all(sum(t["total"] for t in values.values()) == live.overall.total for values in by.values())


def test_result_record_carries_the_entry_and_the_moment():
    entry = QuestionEntry("q1", "What color?", ("red", "blue"), "B", 3, {"video_id": "v7"},
                          time=12.0, video="v7.mp4", categories={"category": "color"})
    moment = {"asked_at": 12.0, "frames_seen": 24, "cached_tokens": 96, "past_end": False, "id": "clobber"}
    record = score(entry, answer("B"), moment).record()
    assert record == {"video_id": "v7", "id": "q1", "video": "v7.mp4", "question": "What color?",
                      "options": ["red", "blue"], "categories": {"category": "color"}, "time": 12.0,
                      "answer": "B", "choice": "B", "scoring": "choice", "expected": "B", "correct": True,
                      "tokens": 3, "seconds": 0.5, "asked_at": 12.0, "frames_seen": 24, "cached_tokens": 96,
                      "past_end": False}


def test_judge_entries_keep_the_reference_and_are_not_scored():
    entry = QuestionEntry(1, "What am I cooking?", answer="Pasta with tomato sauce.", video="v", scoring="judge")
    result = score(entry, answer("pasta with tomato sauce"))
    assert result.correct is None
    record = result.record()
    assert record["reference"] == "Pasta with tomato sauce." and record["correct"] is None
    assert "expected" not in record and record["scoring"] == "judge"
    unanswered = score(QuestionEntry(2, "Why?"), answer("because")).record()
    assert unanswered["scoring"] == "none" and "correct" not in unanswered and "expected" not in unanswered


@pytest.mark.parametrize("expected, said, right", [
    ("Yes", "Yes.", True), ("Yes", "yes, they are", True), ("No", "Yes", False), ("No", "Not really", False),
    ("2", "2", True), ("2", "They did it 2 times.", True), ("2", "2 or 3", False), ("12", "twelve", False),
    ("It moved.", "it moved", True), ("It moved.", "It moved left", False),
])
def test_exact_answers(expected, said, right):
    assert score(QuestionEntry(1, "q", answer=expected), answer(said)).correct is right


def test_entry_checks_its_scoring():
    assert QuestionEntry(1, "q").scoring == "none"
    assert QuestionEntry(1, "q", ("a", "b")).scoring == "none"  # multiple choice without a known answer
    with pytest.raises(ValueError, match="scoring must be one of"):
        QuestionEntry(1, "q", answer="x", scoring="fuzzy")
    with pytest.raises(ValueError, match="needs an expected answer"):
        QuestionEntry(1, "q", scoring="judge")
    with pytest.raises(ValueError, match="multiple choice needs"):
        QuestionEntry(1, "q", ("a", "b"), "C")
    assert QuestionEntry(1, "q", video="v.mp4").key == ("v.mp4", "1") and QuestionEntry("x", "q").key == ("", "x")


def test_run_batch_asks_every_prompt_from_any_session():
    class Session:
        def __init__(self):
            self.asked = []

        def ask(self, prompt, **options):
            self.asked.append((prompt, options))
            return Answer(prompt, "B", 1, 0.1)

    session = Session()
    entries = [QuestionEntry(1, "Pick", ("x", "y"), "B"), QuestionEntry(2, "Why?")]
    results = list(run_batch(session, entries, max_new_tokens=4))
    assert [r.correct for r in results] == [True, None]
    assert session.asked[0] == (entries[0].prompt, {"max_new_tokens": 4})


# --- times ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, seconds", [
    (12, 12.0), (12.5, 12.5), ("12.5", 12.5), ("01:30", 90.0), ("1:05.25", 65.25), ("00:01:30.5", 90.5),
    ("2:00:00", 7200.0), ("0", 0.0), (" 00:00:50 ", 50.0), ("75:00", 4500.0),
])
def test_times_in_seconds_or_clock_form(value, seconds):
    assert parse_time(value) == seconds


@pytest.mark.parametrize("value, reason", [
    (-1, "is negative"), ("-0:05", "is not a time"), ("abc", "is not a time"), ("1:75", "is not a time"),
    ("1:60:00", "is not a time"), (float("nan"), "not a finite time"), ("inf", "not a finite time"),
    (10 ** 400, "not a finite time"), (True, "is not a time"), (None, "is not a time"), ([1], "is not a time"),
    ("9" * 5000, "is not a time"),
])
def test_bad_times_say_why(value, reason):
    with pytest.raises(ValueError, match=reason) as caught:
        parse_time(value)
    assert len(str(caught.value)) < 160  # never echoes unbounded input


def test_times_videos_and_categories_in_question_files(tmp_path):
    lines = [
        '{"id": "a", "question": "What now?", "time": "00:01:30.5", "video": "v1.mp4", "category": "live"}',
        '{"id": "b", "question": "And now?", "time": 12}',
        '{"id": "c", "question": "Too early?", "time": -3}',
        '{"id": "d", "question": "When?", "time": "soon"}',
        '{"id": "e", "question": "Never?", "time": NaN}',
        '{"id": "f", "question": "Axes?", "categories": {"duration": "short", "task": "OCR"}}',
        '{"id": "g", "question": "Bad axes?", "categories": ["short"]}',
    ]
    parsed = read_questions(write(tmp_path, "q.jsonl", "\n".join(lines)))
    entries = {entry.id: entry for entry in parsed.entries}
    assert list(entries) == ["a", "b", "f"]
    assert (entries["a"].time, entries["a"].video, entries["a"].categories) == (90.5, "v1.mp4", {"category": "live"})
    assert (entries["b"].time, entries["b"].video) == (12.0, None)
    assert entries["f"].categories == {"duration": "short", "task": "OCR"} and entries["f"].time is None
    problems = {p.line: p.message for p in parsed.problems}
    assert sorted(problems) == [3, 4, 5, 7]
    assert "`time` -3 is negative" in problems[3] and "'soon' is not a time" in problems[4]
    assert "not a finite time" in problems[5] and "`categories` must map names to strings" in problems[7]


def test_yaml_times_in_clock_form(tmp_path):
    text = "- question: At ninety seconds?\n  time: '00:01:30'\n- question: Unquoted?\n  time: 01:30\n"
    parsed = read_questions(write(tmp_path, "q.yaml", text))
    assert [entry.time for entry in parsed.entries] == [90.0, 90.0]  # YAML reads 01:30 as 90 (base 60)
