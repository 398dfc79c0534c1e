"""Question files: each kind parses with line numbers, malformed entries are reported; prompts; scoring."""

from __future__ import annotations

import pytest

from infinipot.engine import Answer
from infinipot.errors import InfinipotError
from infinipot.questions import (
    CHOICE_INSTRUCTION, Accuracy, QuestionEntry, format_prompt, parse_choice, read_questions, score,
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
    assert [(p.line, p.message) for p in parsed.problems] == [(5, "not UTF-8 text")]


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
    assert first.options == ("red", "blue", "green") and first.answer == "B" and first.category == "color"
    assert first.extra == {"video_id": "v7"} and first.line == 1
    assert entries[2].answer == "It moved." and entries[2].options == ()
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


def test_accuracy_overall_and_per_category():
    choice = dict(options=("red", "blue", "green"))
    results = [
        score(QuestionEntry(1, "q", answer="A", category="color", **choice), answer("A")),            # right
        score(QuestionEntry(2, "q", answer="B", category="color", **choice), answer("The answer is C")),  # wrong
        score(QuestionEntry(3, "q", answer="C", category="color", **choice), answer("green")),         # right
        score(QuestionEntry(4, "q", answer="Red", category="words"), answer(" red. ")),                  # right
        score(QuestionEntry(5, "q", answer="B", **choice), answer("no idea")),                         # wrong
        score(QuestionEntry(6, "q"), answer("anything")),                                              # not scored
    ]
    assert [r.correct for r in results] == [True, False, True, True, False, None]
    assert [r.choice for r in results] == ["A", "C", "C", None, None, None]
    accuracy = Accuracy()
    for result in results:
        accuracy.add(result)
    assert (accuracy.overall.correct, accuracy.overall.total) == (3, 5)
    assert accuracy.as_dict() == {
        "overall": {"correct": 3, "total": 5, "accuracy": 0.6},
        "by_category": {"color": {"correct": 2, "total": 3, "accuracy": 0.6667},
                        "words": {"correct": 1, "total": 1, "accuracy": 1.0}},
    }
    assert Accuracy().overall.accuracy == 0.0


def test_result_record_carries_the_entry():
    entry = QuestionEntry("q1", "What color?", ("red", "blue"), "B", "color", 3, {"video_id": "v7"})
    record = score(entry, answer("B")).record()
    assert record == {"video_id": "v7", "id": "q1", "question": "What color?", "options": ["red", "blue"],
                      "category": "color", "answer": "B", "choice": "B", "expected": "B", "correct": True,
                      "tokens": 3, "seconds": 0.5}
