"""The benchmarks' own question files, read as published; grouping by video; finding the videos.

`read_benchmark(path, format=None)` recognises the format from the file (or takes `format`, one of
FORMATS) and returns a QuestionFile: its entries (each with its `video`, `time`, `categories`,
`scoring`), the malformed entries skipped as Problems (line for JSON lines, index for JSON lists
and parquet), and the format's name. JSON files may be a list or JSON lines; Video-MME's parquet
is read when `pyarrow` is installed.

What each mapping was checked against (public sources, read 2025):
- Video-MME: lmms-eval `lmms_eval/tasks/videomme/utils.py` (fields videoID, question_id, duration,
  domain, sub_category, task_type, question, options "A. ...", answer letter; video file
  `<videoID>.mp4`; accuracy by duration, domain, sub_category and task_type).
- MLVU (dev): the MLVU repo's `videochat2/choice_bench.py` (one JSON list per task; video,
  question, candidates, answer = the right candidate's text, found by exact equality) and
  lmms-eval `tasks/mlvu/utils.py` (accuracy per task type).
- LongVideoBench: the official loader `longvideobench/longvideobench_dataset.py` (id, video_path,
  question, candidates, correct_choice as a 0-based index) and lmms-eval
  `tasks/longvideobench/utils.py` (accuracy by duration_group and question_category; its parquet
  holds option0..option4 with "N/A" for unused ones, read here too).
- EgoSchema: the EgoSchema repo (`questions.json`: q_uid, question, "option 0".."option 4";
  `subset_answers.json`: {q_uid: index}; videos named `<q_uid>.mp4`).
- OVO-Bench: the OVO-Bench repo's `data/ovo_bench_new.json`, `constant.py`, `utils/OVOBench.py`
  and `utils/OVOBenchScore.py` (id, task, video, realtime, question, options, gt; forward tasks
  REC (activity, test_info[].count), SSR (test_info[].step, type), CRR (question,
  test_info[].type), each check asked at its own realtime).
- StreamingBench: the StreamingBench repo's `src/data/questions_*.json` (all nine files read here
  end to end: real, omni, sqa, proactive and their _stream variants) and `src/benchmark/*.py`
  (per video: video_path, questions[] with task_type, question, time_stamp "HH:MM:SS", options
  "A. ..." (sometimes "A.text", sometimes with empty strings between them), answer letter; the
  sequential-QA files hold one list of such objects per video; proactive questions have no
  options or answer, only ground_truth_time_stamp/ground_truth_output).
- RVS-Ego / RVS-Movie (ReKV's annotations of Flash-VStream's VStream-QA, HF `Becomebright/RVS`):
  a public loader of `ego/ego4d_oe.json`, `movie/movienet_oe.json` (per video: video_id,
  video_path, duration, conversations[] with question, answer, start_time, end_time).

Choices the sources leave open, made here:
- Multiple choice is always stored as the option letter and scored by reading a letter back
  from the answer (`parse_choice`); OVO-Bench's own scorer only checks that the letter occurs in
  the response, lmms-eval takes the first A-E in it.
- Ids: MLVU, StreamingBench and RVS publish none: MLVU's is '<question_type>-<n>', StreamingBench's
  and RVS's is n, counting that video's questions in file order from 1. OVO-Bench forward checks
  are '<id>.<k>' (k: the test_info index).
- Video names: the file path the benchmark gives when it gives one (LongVideoBench video_path,
  StreamingBench video_path, RVS video_path, OVO-Bench video), else its id (Video-MME videoID,
  EgoSchema q_uid). `resolve_video` finds either in a folder.
- StreamingBench: empty option strings are dropped; the long `captions` field is left out of the
  results; a time_stamp that is not a clock time (the real-time file has one '00:12450') is a
  problem for that question, though StreamingBench's own parser would read it as 12450 s.
- Categories: Video-MME duration, domain, task_type (sub_category stays in the record's other
  fields); MLVU question_type (else the file's name); LongVideoBench duration_group,
  question_category; OVO-Bench group (backward/realtime/forward) and task; StreamingBench
  task_type; EgoSchema and RVS none.
- OVO-Bench forward checks are asked in our own words (not the repo's prompt text) and scored
  "exact": REC by the digits of the answer, SSR and CRR by a leading yes/no.
- EgoSchema questions without an answer in `subset_answers.json` (or without that file beside
  the questions) have scoring "none". RVS answers are open: scoring "judge".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from infinipot.bench_formats import MAPPERS, Context
from infinipot.bench_input import (
    check_regular, clip, document_text, excerpt, json_document, json_value, read_input, text_lines,
)
from infinipot.errors import InfinipotError
from infinipot.questions import KINDS, Problem, QuestionEntry, QuestionFile, read_questions

FORMATS = tuple(MAPPERS)
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
LINE_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")
Item = tuple[int, "int | None", object]  # (line, index, JSON value or the Problem reading it)


def read_benchmark(path: str | Path, format: str | None = None) -> QuestionFile:
    """Read a question file in any of FORMATS; `format` None: recognised from the file."""
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise InfinipotError(f"unknown format {excerpt(format)}: choose one of {', '.join(FORMATS)}")
    suffix = path.suffix.lower()
    if suffix in KINDS and (format == "infinipot" or (format is None and suffix != ".jsonl")):
        return read_questions(path)
    if format is not None and suffix in KINDS and suffix != ".jsonl":
        raise InfinipotError(f"{path.name} is a {suffix} file; {format} files are JSON: give the benchmark's "
                             "own file, or drop --format")
    items = _items(path)
    format = _settle_format(path, items, format)
    if format == "infinipot" and suffix == ".jsonl":
        return read_questions(path)  # exactly as `ask --questions` reads it
    context = Context(path, answers=egoschema_answers(path) if format == "egoschema" else None)
    entries, problems = _map(items, format, context)
    return QuestionFile(path, entries, problems, format)


def _settle_format(path: Path, items: list[Item], format: str | None) -> str:
    """The format named, checked against what the first objects look like; or recognised from them."""
    objects = [value for _, _, item in items[:50] for value in (item if isinstance(item, list) else [item])
               if isinstance(value, dict)]
    detected = next((name for name in map(detect_format, objects) if name is not None), None)
    if format is not None:
        if detected not in (None, format):
            raise InfinipotError(f"{path.name} looks like {detected}, not {format}: pass --format {detected} "
                                 "or drop --format")
        return format
    if detected is None and objects and path.suffix.lower() != ".jsonl":
        fields = clip(", ".join(map(str, objects[0])), 80)
        raise InfinipotError(f"cannot tell the format of {path.name} from its entries (fields: {fields}): "
                             f"pass --format, one of {', '.join(FORMATS)}")
    return detected or "infinipot"


def detect_format(item: dict) -> str | None:
    """The format a benchmark entry belongs to, from the fields it has (None if none fits)."""
    keys = set(item)
    rules = (
        ("egoschema", "q_uid" in keys),
        ("rvs", isinstance(item.get("conversations"), list)),
        ("streamingbench", isinstance(item.get("questions"), list)),
        ("ovobench", "task" in keys and ("realtime" in keys or "test_info" in keys)),
        ("longvideobench", bool(keys & {"correct_choice", "duration_group", "option0"})),
        ("mlvu", "candidates" in keys),
        ("videomme", "videoID" in keys or {"question_id", "options"} <= keys),
        ("infinipot", "question" in keys),
    )
    return next((name for name, fits in rules if fits), None)


def egoschema_answers(path: Path) -> dict[str, int] | None:
    """EgoSchema's public answers, `subset_answers.json` beside the questions; None without it."""
    answers_path = path.with_name("subset_answers.json")
    if answers_path == path or not answers_path.exists():
        return None
    answers = json_document(read_input(answers_path, "answers file"), answers_path)
    if not isinstance(answers, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                for v in answers.values()):
        raise InfinipotError(f"{answers_path}: expected {{q_uid: answer number}}: use EgoSchema's own file")
    return {str(uid): number for uid, number in answers.items()}


# --- reading the objects ------------------------------------------------------------------------
def _items(path: Path) -> list[Item]:
    """Every object of a JSON list, JSON-lines or parquet file, with where it is."""
    if path.suffix.lower() == ".parquet":
        return [(0, index, row) for index, row in enumerate(_parquet_rows(path))]
    data = read_input(path, "question file")
    if path.suffix.lower() in LINE_SUFFIXES:
        return _json_lines(data, path)
    text = document_text(data, path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and text.lstrip().startswith("{"):  # JSON lines in a .json file
            return _json_lines(data, path)
        raise InfinipotError(f"{path}:{error.lineno}: not valid JSON ({error.msg} at column {error.colno}): "
                             "fix the file") from None
    except RecursionError:
        raise InfinipotError(f"{path}: not usable JSON (nested too deeply): fix the file") from None
    if isinstance(document, dict):
        if document and all(isinstance(value, dict) for value in document.values()):
            raise InfinipotError(f"{path.name} holds columns, not entries: export it as a list of records "
                                 "(pandas: df.to_json(path, orient='records'))")
        document = [document]
    if not isinstance(document, list):
        raise InfinipotError(f"{path}: expected a list of entries, found a {type(document).__name__}")
    return [(0, index, item) for index, item in enumerate(document)]


def _json_lines(data: bytes, path: Path) -> list[Item]:
    items: list[Item] = []
    for number, line, problem in text_lines(data, path):
        if line is None:
            items.append((number, None, Problem(number, problem)))
        elif line.strip():
            try:
                items.append((number, None, json_value(line)))
            except ValueError as error:
                items.append((number, None, Problem(number, str(error))))
    return items


def _parquet_rows(path: Path) -> list[dict]:
    check_regular(path, "question file")
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise InfinipotError(f"reading {path.name} needs pyarrow, which is not installed: pip install pyarrow, "
                             "or convert it to JSON (pandas: df.to_json('videomme.json', orient='records'))") from None
    try:
        return parquet.read_table(path).to_pylist()
    except (OSError, ValueError, TypeError, NotImplementedError) as error:
        raise InfinipotError(f"{path}: not a readable parquet file ({clip(str(error))}): download it again") from None


def _map(items: list[Item], format: str, context: Context) -> tuple[list[QuestionEntry], list[Problem]]:
    """Entries from the objects; bad objects, bad questions in them and repeated ids become Problems."""
    entries: list[QuestionEntry] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str], str] = {}
    for line, index, item in items:
        if isinstance(item, Problem):
            problems.append(item)
            continue
        context.line, context.index = line, index
        for entry in _produce(item, format, context):
            if isinstance(entry, ValueError):
                problems.append(Problem(line, str(entry), index))
            elif entry.key in seen:
                problems.append(Problem(line, f"duplicate id {excerpt(entry.id)} for video "
                                              f"{excerpt(entry.video or '')} (first at {seen[entry.key]})", index))
            else:
                seen[entry.key] = f"index {index}" if index is not None else f"line {line}"
                entries.append(entry)
    return entries, problems


def _produce(item: object, format: str, context: Context) -> list[QuestionEntry | ValueError]:
    """What one object of the file gives: entries, and ValueErrors for what is wrong in it. A list of
    objects (StreamingBench's sequential QA file: one list per video) gives what each of them gives."""
    if not isinstance(item, list) or format == "infinipot":
        return _produce_object(item, format, context)
    produced: list[QuestionEntry | ValueError] = []
    for number, value in enumerate(item):
        produced += [ValueError(f"[{number}] {result}") if isinstance(result, ValueError) else result
                     for result in _produce_object(value, format, context)]
    return produced


def _produce_object(item: object, format: str, context: Context) -> list[QuestionEntry | ValueError]:
    try:
        if not isinstance(item, dict) and format != "infinipot":
            raise ValueError(f"expected an object, found {type(item).__name__}")
        return list(MAPPERS[format](item, context))
    except ValueError as error:
        return [error]


# --- videos -------------------------------------------------------------------------------------
def group_by_video(entries: Iterable[QuestionEntry]) -> dict[str, list[QuestionEntry]]:
    """Entries per video, videos and entries in file order (entries without a video under "")."""
    groups: dict[str, list[QuestionEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.video or "", []).append(entry)
    return groups


def resolve_video(name: str, videos_dir: Path) -> Path | None:
    """The file for a benchmark's video name or path inside `videos_dir`: the name as given (and
    its tail, dropping leading folders such as the benchmark authors' own mount points), then with
    a video extension, then the same inside each sub-folder. None when nothing fits."""
    videos_dir = Path(videos_dir)
    if "\x00" in name:
        return None
    raw = Path(name.strip())
    parts = [part for part in raw.parts if part not in (raw.anchor, ".")]
    if not parts or ".." in parts:
        return None
    tails = [Path(*parts[start:]) for start in range(len(parts))]
    folders = [videos_dir] + _subfolders(videos_dir)
    for folder in folders:
        for tail in tails if folder == videos_dir else tails[-1:]:
            found = _existing(folder / tail)
            if found is not None:
                return found
    return raw if raw.is_absolute() and _is_file(raw) else None


def _existing(path: Path) -> Path | None:
    extensions = VIDEO_EXTENSIONS + tuple(extension.upper() for extension in VIDEO_EXTENSIONS)
    return next((candidate for candidate in (path, *(Path(f"{path}{ext}") for ext in extensions))
                 if _is_file(candidate)), None)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system is simply not there
        return False


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(child for child in folder.iterdir() if child.is_dir())
    except OSError:
        return []
