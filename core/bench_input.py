"""Reading question and benchmark files without trusting them.

Question files come from users and from benchmark downloads; a bad one must cost one clear
line, never a hang, a traceback or a memory blow-up. So: only regular files are opened (a FIFO
would block forever), text is decoded by its byte-order mark (UTF-8, UTF-16, UTF-32) or as
UTF-8, YAML anchors and aliases are refused before anything is built from them (a few hundred
bytes of nested aliases expand to hundreds of megabytes), a JSON line nested too deeply is a
problem for that line only, and any piece of the input quoted in a message is cut short.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import reprlib
import stat
from collections.abc import Iterator
from pathlib import Path

import yaml

from infinipot.errors import InfinipotError

MAX_FILE_BYTES = 512 * 1024 * 1024  # far above any published benchmark file (the largest is a few MB)
MAX_LINE_BYTES = 1024 * 1024  # one entry of a JSON-lines file
EXCERPT_CHARS = 60
# Longest first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
         (codecs.BOM_UTF8, "utf-8", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
         (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"))
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")  # [H:]MM:SS[.fff]
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = EXCERPT_CHARS
_REPR.maxlevel = 3


def clip(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` cut to `limit` characters (and a '…' when cut)."""
    return text if len(text) <= limit else text[:limit] + "…"


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A short rendering of a piece of input for a message (strings quoted): never echo unbounded input."""
    return repr(clip(value, limit)) if isinstance(value, str) else clip(_REPR.repr(value), limit)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words a user recognises."""
    kinds = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISDIR, "directory"),
             (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def check_regular(path: Path, what: str) -> os.stat_result:
    """stat `path` without opening it; refuse a missing or non-regular file with its real reason."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise InfinipotError(f"{what} not found: {path} — check the path") from None
    except PermissionError:
        raise InfinipotError(f"cannot read {what} {path} (permission denied): check its permissions") from None
    except OSError as error:
        raise InfinipotError(f"cannot read {what} {path} ({error.strerror}): check the path") from None
    if not stat.S_ISREG(info.st_mode):
        raise InfinipotError(f"{what} {path} is a {file_kind(info.st_mode)}, not a regular file: give a file")
    if info.st_size > MAX_FILE_BYTES:
        raise InfinipotError(f"{what} {path} is {info.st_size:,} bytes, over the {MAX_FILE_BYTES >> 20} MiB "
                             "limit: split it into smaller files")
    return info


def read_input(path: Path, what: str) -> bytes:
    """The bytes of a regular input file. Opened non-blocking and checked again after opening,
    so a FIFO swapped in after the first check cannot hang the read."""
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise InfinipotError(f"cannot read {what} {path} ({error.strerror}): check the path") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InfinipotError(f"{what} {path} is a {file_kind(info.st_mode)}, not a regular file: give a file")
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise InfinipotError(f"cannot read {what} {path} ({error.strerror}): check the file") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise InfinipotError(f"{what} {path} grew past the {MAX_FILE_BYTES >> 20} MiB limit while being read: "
                             "split it into smaller files")
    return data


# --- text ---------------------------------------------------------------------------------------
def _marked_text(data: bytes, path: Path) -> str | None:
    """The text of a file that starts with a byte-order mark (mark removed); None without one."""
    for mark, codec, name in _BOMS:
        if data.startswith(mark):
            try:
                return data[len(mark):].decode(codec)
            except UnicodeDecodeError as error:
                raise InfinipotError(f"{path} starts with a {name} byte-order mark but is not valid {name} "
                                     f"(byte {error.start + len(mark)}): save it as UTF-8") from None
    if b"\x00" in data[:4096]:
        raise InfinipotError(f"{path} holds NUL bytes (UTF-16 without a byte-order mark, or not text): "
                             "save it as UTF-8")
    return None


def document_text(data: bytes, path: Path) -> str:
    """A whole file as text (a YAML or JSON document): one line of error if it cannot be decoded."""
    text = _marked_text(data, path)
    if text is not None:
        return text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InfinipotError(f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x}, perhaps Latin-1): "
                             "save it as UTF-8") from None


def text_lines(data: bytes, path: Path) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text or None, problem) per line: a line that is not UTF-8 or is too long is a
    problem for that line only, the rest of the file goes on."""
    text = _marked_text(data, path)
    raw_lines: list[bytes] | list[str] = text.split("\n") if text is not None else data.split(b"\n")
    for number, raw in enumerate(raw_lines, start=1):
        if len(raw) > MAX_LINE_BYTES:
            limit = f"{MAX_LINE_BYTES >> 20} MiB"
            yield number, None, f"line is {len(raw):,} characters, over the {limit} limit for one entry"
            continue
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                byte = raw[error.start]
                yield number, None, f"not UTF-8 text (byte 0x{byte:02x}, perhaps Latin-1): save the file as UTF-8"
                continue
        yield number, raw.rstrip("\r").lstrip("\ufeff"), ""


# --- JSON ---------------------------------------------------------------------------------------
def json_value(text: str) -> object:
    """One JSON value; ValueError with a short reason for bad or too deeply nested JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise ValueError("not usable JSON (nested too deeply)") from None


def json_document(data: bytes, path: Path) -> object:
    """A whole JSON file; one line of error if it cannot be read."""
    try:
        return json_value(document_text(data, path))
    except ValueError as error:
        raise InfinipotError(f"{path}: {error}: fix the file") from None


# --- YAML ---------------------------------------------------------------------------------------
def yaml_document(text: str, path: Path) -> tuple[object, yaml.Node | None]:
    """The YAML document and its node tree (for line numbers). Anchors and aliases are refused
    from the event stream, before any node is built; only plain YAML types are constructed."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            anchor = getattr(event, "anchor", None)
            if isinstance(event, yaml.AliasEvent) or anchor is not None:
                line, name = event.start_mark.line + 1, clip(str(anchor), 20)
                raise InfinipotError(f"{path}:{line}: YAML anchors and aliases (&{name}, *{name}) are not "
                                     "accepted: write each entry out in full")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.SafeLoader("").construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InfinipotError(f"{where}: not valid YAML ({clip(problem, 120)}): fix the file") from None
    except RecursionError:
        raise InfinipotError(f"{path}: YAML nested too deeply: fix the file") from None
    return document, node


# --- times --------------------------------------------------------------------------------------
def parse_time(value: object, name: str = "time") -> float:
    """Seconds into the video from a number or 'HH:MM:SS[.fff]', 'MM:SS[.fff]', '12.5'.
    ValueError (naming the field `name`) for a missing, negative, non-finite or unreadable time."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str):
        seconds = _clock_seconds(value.strip())
    if seconds is None:
        raise ValueError(f"`{name}` {excerpt(value)} is not a time: give seconds (12.5) or HH:MM:SS[.fff]")
    if not math.isfinite(seconds):
        raise ValueError(f"`{name}` {excerpt(value)} is not a finite time: give seconds (12.5) or HH:MM:SS[.fff]")
    if seconds < 0:
        raise ValueError(f"`{name}` {excerpt(value)} is negative: give seconds from the start of the video")
    return seconds


def _clock_seconds(text: str) -> float | None:
    found = _CLOCK.match(text)
    if found:
        hours, minutes, seconds = int(found.group(1) or 0), int(found.group(2)), float(found.group(3))
        if seconds >= 60 or (found.group(1) is not None and minutes >= 60):
            return None
        return hours * 3600 + minutes * 60 + seconds
    if len(text) > 40:  # float() of a huge digit string is slow and never a real time
        return None
    try:
        return float(text)
    except ValueError:
        return None
