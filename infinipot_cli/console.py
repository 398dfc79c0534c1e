"""Where the CLI writes: answers and JSON on stdout; progress, notes, warnings and errors on stderr.

Errors and warnings are single plain lines (`error: ...`, `warning: ...`), written without Rich
so that a usage error costs no import. Rich consoles are made per command run: the terminal's
width and the streams (CliRunner swaps them) are read when a command starts.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

_consoles: dict[str, Console] = {}


def out() -> Console:
    """The Rich console on stdout (answers, tables)."""
    return _console("out")


def err() -> Console:
    """The Rich console on stderr (progress, status)."""
    return _console("err")


def _console(which: str) -> Console:
    if which not in _consoles:
        from rich.console import Console

        _consoles[which] = Console(stderr=which == "err", highlight=False)
    return _consoles[which]


def reset() -> None:
    """Forget the consoles: the next command run reads the width and the streams afresh."""
    _consoles.clear()


def _line(prefix: str, colour: str, message: str) -> None:
    stream = sys.stderr
    text = " ".join(str(message).splitlines())
    label = prefix
    if prefix and _isatty(stream) and "NO_COLOR" not in os.environ:
        label = f"\033[{colour}m{prefix}\033[0m"
    stream.write(f"{label} {text}\n" if label else f"{text}\n")
    stream.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def error_line(message: str) -> None:
    _line("error:", "1;31", message)


def warning_line(message: str) -> None:
    _line("warning:", "33", message)


def note(message: str) -> None:
    """A plain line of information on stderr."""
    _line("", "", message)


class _WarningLines(logging.Handler):
    """The library's warnings (positions past the window, dtype conversions) as `warning:` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        from infinipot_cli.flags import flagged

        warning_line(flagged(record.getMessage()))


@contextmanager
def library_output(debug: bool) -> Iterator[None]:
    """Quiet the libraries' own progress bars and logs (all of them with --debug), for one command run."""
    if debug:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        if "transformers" in sys.modules:  # imported earlier in this process (tests): the env is read at import
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
    handler = _WarningLines(logging.WARNING)
    library = logging.getLogger("infinipot")
    library.addHandler(handler)
    try:
        yield
    finally:
        library.removeHandler(handler)
