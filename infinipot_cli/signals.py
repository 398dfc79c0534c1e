"""Ctrl-C, SIGTERM and SIGHUP end a command the same way: cleanup runs, one line, exit 128 + signal.

The handlers are installed by the entry point before anything heavy is imported, so an
interrupt during the first seconds (importing torch) is one line too, not a traceback.
"""

from __future__ import annotations

import signal
import sys

from infinipot_cli.console import _line


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt, so the same cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP behave as Ctrl-C (which Python already turns into KeyboardInterrupt)."""
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, _raise_interrupted)


def interrupt_code(error: BaseException) -> int:
    """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + int(getattr(error, "signum", signal.SIGINT))


def by_user(error: BaseException) -> bool:
    """True for Ctrl-C (SIGINT), False for SIGTERM/SIGHUP: chat goes on after the first only."""
    return getattr(error, "signum", signal.SIGINT) == signal.SIGINT


def say_interrupted() -> None:
    _line("", "", "interrupted")


def exit_interrupted(error: BaseException) -> None:
    say_interrupted()
    sys.exit(interrupt_code(error))
