"""Writing files safely: check a target before any work, write it whole or not at all.

A cache or results file is checked when the command starts (not after an hour of streaming):
its folder exists and is writable, and the name is not something else (a folder, a FIFO, a
device such as /dev/full). It is written to a short temporary name in the same folder, synced,
and renamed over the target, so an interrupt (Ctrl-C, SIGTERM, SIGHUP), a full disk or a crash
never leaves half a file under the target's name, nor a temporary file behind.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from infinipot.errors import InfinipotError


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def input_file(path: Path, what: str, fix: str) -> os.stat_result:
    """`path`'s stat if it is a regular file to read; else one line naming what it is and `fix`.

    Only `stat` is called: opening a FIFO to look at it would wait for a writer forever.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InfinipotError(f"{what} not found: {path} — check the path") from None
    except OSError as error:
        raise InfinipotError(f"cannot read {what} {path} ({error.strerror}) — check the path and its permissions") \
            from None
    if stat.S_ISDIR(info.st_mode):
        raise InfinipotError(f"{what} {path} is a directory — {fix}")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "something else")
        raise InfinipotError(f"{what} {path} is not a regular file ({kind}) — {fix}")
    return info


def check_writable(path: Path, what: str = "output") -> None:
    """Fail now, before any work, if `path` cannot be written as a regular file."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    limit = _name_limit(parent) if parent.is_dir() else 255
    if len(path.name.encode()) > limit:
        raise InfinipotError(f"{what} name is {len(path.name.encode())} bytes, more than this file system allows "
                             f"({limit}): choose a shorter name")
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise InfinipotError(f"cannot use {what} {path} ({error.strerror}): choose another path") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise InfinipotError(f"{what} {path} is a directory: give a file name inside it, e.g. {path / 'video.ipv'}")
        if not stat.S_ISREG(info.st_mode):
            raise InfinipotError(f"{what} {path} exists and is not a regular file (a FIFO or device): choose a file "
                                 "name")
    if not parent.is_dir():
        raise InfinipotError(f"directory does not exist: {parent} — create it first or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InfinipotError(f"cannot write to directory {parent} (permission denied): choose another path")


def _name_limit(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary)`, then sync and rename over `path`; on any failure nothing is left behind."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    descriptor, name = tempfile.mkstemp(prefix=".infinipot-", suffix=".tmp", dir=parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        write(temporary)
        os.chmod(temporary, _file_mode(path))
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException as error:  # Ctrl-C and SIGTERM too: the temporary file goes, an old file stays
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) or type(error).__name__ == "SafetensorError":
            reason = getattr(error, "strerror", None) or str(error).splitlines()[0][:200]
            raise InfinipotError(f"could not write {path} ({reason}): free some space or choose another path") from None
        raise
    _fsync_directory(parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _file_mode(path: Path) -> int:
    """The replaced file's permissions, else what a plain new file gets (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (not possible on every platform; then the OS decides)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
