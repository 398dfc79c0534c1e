"""Results as JSON lines: appended one whole line at a time, read back to resume a run.

Each result is one line, written with a single `os.write` on an O_APPEND descriptor and synced,
so after a crash, Ctrl-C or a full disk every line in the file is whole (a failed write is cut
back off before the error is raised). Rerunning with the same file skips what is already there:
a result is identified by `result_key` = (video or "", id as text) — the same as
`QuestionEntry.key` — so benchmark entries of different videos may share ids. A trailing
partial line (a crash mid-write) is cut off before the first new line is written; a corrupt
line elsewhere is reported and its question asked again.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from infinipot.bench_input import excerpt, file_kind, json_value, read_input
from infinipot.errors import InfinipotError
from infinipot.questions import QuestionEntry

log = logging.getLogger(__name__)
RESULT_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")


def result_key(record: dict) -> tuple[str, str]:
    """What identifies a result line: (video or "", id as text); matches QuestionEntry.key."""
    return (str(record.get("video") or ""), str(record["id"]))


def check_output_name(path: Path) -> None:
    """Refuse a name suggesting another format, or an existing output that is not a regular file."""
    if path.suffix and path.suffix.lower() not in RESULT_SUFFIXES:
        raise InfinipotError(f"output {path}: results are written as JSON lines, not {path.suffix} — "
                             f"name it {path.with_suffix('.jsonl').name}")
    parent = path.parent if str(path.parent) else Path(".")
    limit = _name_limit(parent) if parent.is_dir() else 255
    if len(path.name.encode()) > limit:  # results are appended in place: no temporary name to make room for
        raise InfinipotError(f"output name {excerpt(path.name)} is {len(path.name.encode())} bytes, more than this "
                             f"file system allows ({limit}): choose a shorter name")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise InfinipotError(f"output {path}: {error.strerror} — choose another output") from None
    if not stat.S_ISREG(mode):
        raise InfinipotError(f"output {path} is a {file_kind(mode)}, not a regular file: give a file name "
                             "such as results.jsonl")


def check_output(path: str | Path, inputs: Iterable[str | Path] = ()) -> None:
    """Everything that would make writing `path` fail or destroy something, checked before any work:
    its name, its kind, being one of the run's inputs, its folder, its permissions, its length."""
    path = Path(path)
    check_output_name(path)
    for other in inputs:
        if _same_file(path, Path(other)):
            raise InfinipotError(f"output {path} is one of this run's inputs ({other}): choose another name, "
                                 "e.g. results.jsonl")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InfinipotError(f"directory does not exist: {parent} — create it first or choose another output")
    if not os.access(parent, os.W_OK):
        raise InfinipotError(f"cannot write to directory {parent} (permission denied): choose another output")
    _probe(parent)


def _same_file(first: Path, second: Path) -> bool:
    try:
        if first.exists() and second.exists():
            return first.samefile(second)
        return first.resolve() == second.resolve()
    except OSError:
        return False


def _name_limit(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _probe(folder: Path) -> None:
    """Create and remove a file in `folder`: catches read-only file systems, which os.access misses."""
    probe = folder / f".infinipot-probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except FileExistsError:
        pass
    except OSError as error:
        raise InfinipotError(f"cannot write to directory {folder} ({error.strerror}): choose another output") from None


def _line(record: dict) -> bytes:
    """One result as one line of UTF-8 JSON. Values JSON has no type for (a YAML date) become text;
    text that UTF-8 cannot hold (a lone surrogate from a JSON escape) is written escaped."""
    try:
        return (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, ensure_ascii=True, default=str) + "\n").encode("ascii")


class ResultLog:
    """An append-only JSON-lines results file that a rerun resumes.

    On opening an existing file (unless `overwrite`), `done_ids` holds the keys of the results in
    it, `previous` those results (for `Accuracy.add_record`), `problems` its corrupt lines
    ("line N: ...") and `partial_line` the number of an unfinished last line, if any. The file is
    created, truncated (`overwrite`) or repaired only when the first result is written, so a run
    that fails earlier leaves it as it was.
    """

    def __init__(self, path: str | Path, overwrite: bool = False, sync: bool = True) -> None:
        self.path = Path(path)
        check_output_name(self.path)
        self.overwrite = overwrite
        self.sync = sync
        self.done_ids: set[tuple[str, str]] = set()
        self.previous: list[dict] = []
        self.problems: list[str] = []
        self.written = 0
        self._fd: int | None = None
        self._clean_size: int | None = None  # where a trailing partial line starts (cut before writing)
        self.partial_line: int | None = None  # the number of that line, for the caller to mention
        self._needs_newline = False
        if not overwrite and self.path.exists():
            self._load()

    @property
    def kept(self) -> int:
        """Results in the file: the earlier run's and this one's."""
        return len(self.previous) + self.written

    def pending(self, entries: Iterable[QuestionEntry]) -> tuple[list[QuestionEntry], int]:
        """The entries not answered yet, and how many were skipped as already answered."""
        entries = list(entries)
        todo = [entry for entry in entries if entry.key not in self.done_ids]
        return todo, len(entries) - len(todo)

    def _load(self) -> None:
        data = read_input(self.path, "results file")
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: b"" when the file ends cleanly
        offset = 0
        for number, raw in enumerate(lines, start=1):
            self._take(number, raw)
            offset += len(raw) + 1
        if tail.strip():
            if self._take(len(lines) + 1, tail, report=False):
                self._needs_newline = True  # a whole result missing only its newline
            else:
                self._clean_size = offset  # a crash mid-write: cut it off before appending
                self.partial_line = len(lines) + 1

    def _take(self, number: int, raw: bytes, report: bool = True) -> bool:
        if not raw.strip():
            return True
        try:
            record = json_value(raw.decode("utf-8"))
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError("not a result (no `id`)")
        except (ValueError, UnicodeDecodeError) as error:
            if report:
                self.problems.append(f"line {number}: {error}")
            return False
        key = result_key(record)
        if key not in self.done_ids:
            self.done_ids.add(key)
            self.previous.append(record)
        return True

    def write(self, record: dict) -> None:
        """Append one result as one whole line (or nothing, with a clear error)."""
        payload = _line(record)
        fd = self._open()
        if self._needs_newline:
            payload = b"\n" + payload
        start = os.fstat(fd).st_size
        try:
            if os.write(fd, payload) != len(payload):
                raise OSError(errno.ENOSPC, "the disk took only part of the line")
            if self.sync:
                os.fsync(fd)
        except OSError as error:
            self._cut(fd, start)
            raise InfinipotError(f"could not write to {self.path} ({error.strerror}): the {self.kept} complete "
                                 f"results written so far are kept ({self.written} from this run); free some "
                                 "space and rerun with the same output to resume") from None
        self.written += 1
        self._needs_newline = False
        if "id" in record:
            self.done_ids.add(result_key(record))

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags | (os.O_TRUNC if self.overwrite else 0), 0o644)
        except OSError as error:
            raise InfinipotError(f"cannot write {self.path} ({error.strerror}): choose another output") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise InfinipotError(f"output {self.path} is a {file_kind(mode)}, not a regular file: give a file name")
        if self._clean_size is not None:
            os.ftruncate(fd, self._clean_size)
            self._clean_size = None
        self._fd = fd
        return fd

    def _cut(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError as error:  # the error raised next still says what was kept
            log.warning("could not cut %s back to %d bytes: %s", self.path, size, error.strerror)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
