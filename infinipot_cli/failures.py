"""Every failure reaches the user as one line and an exit code, in one place.

- usage errors (unknown option, `--fps abc`): `error: ...`, exit 2, no Click box;
- the library's InfinipotError: `error: <message, settings named as flags>`, exit 1;
- anything unexpected: `error: unexpected <Type>: ...`, exit 1 (the traceback with --debug);
- Ctrl-C, SIGTERM, SIGHUP: `interrupted`, exit 128 + signal;
- a closed stdout (`infinipot presets --json | head`): quiet, exit 141, as Unix tools do.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from infinipot_cli import console
from infinipot_cli.flags import POLICIES_PLACEHOLDER, Flag, add_parameters, flagged
from infinipot_cli.signals import interrupt_code, say_interrupted

try:  # Typer >= 0.20 vendors Click; its errors derive from TyperException
    _USAGE_ERRORS: type[Exception] = typer.TyperException
except AttributeError:  # older Typer on Click
    import click

    _USAGE_ERRORS = click.ClickException
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
DEBUG = Flag("debug", "--debug", bool, "Show full tracebacks and the libraries' logs.", default=False)


def quiet_stdout() -> None:
    """After a broken pipe: send what is left to /dev/null, so the exit flush raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests): nothing to redirect
        pass


def _unexpected(error: Exception) -> str:
    text = str(error).strip()
    first = text.splitlines()[0][:300] if text else ""
    return f"unexpected {type(error).__name__}: {first} (rerun with --debug for the traceback)"


def guarded(command: Callable) -> Callable:
    """`command` with --debug, library output quieted, and every failure turned into one line."""

    @functools.wraps(command)
    def run(debug: bool = False, **kwargs: Any) -> Any:
        from infinipot.errors import InfinipotError

        console.reset()
        with console.library_output(debug):
            try:
                return command(**kwargs)
            except typer.Exit:
                raise
            except BrokenPipeError:
                quiet_stdout()
                raise typer.Exit(BROKEN_PIPE_EXIT) from None
            except KeyboardInterrupt as error:
                say_interrupted()
                raise typer.Exit(interrupt_code(error)) from None
            except InfinipotError as error:
                if debug:
                    raise
                console.error_line(flagged(str(error)))
                raise typer.Exit(1) from None
            except Exception as error:  # noqa: BLE001 - the last resort: a line, not a traceback
                if debug:
                    raise
                console.error_line(_unexpected(error))
                raise typer.Exit(1) from None

    run.__signature__ = inspect.signature(command, eval_str=True)
    return add_parameters(run, [DEBUG], lambda values: values)


def policy_help() -> str:
    """The registered policies with their one-line summaries (imports the registry: help only)."""
    from infinipot.policies import POLICIES

    return "; ".join(f"{name} ({cls.summary})" for name, cls in POLICIES.items())


class InfinipotCommand(TyperCommand):
    """A command whose help fills in what is read from the library only when help is asked for."""

    def get_help(self, ctx) -> str:
        for param in self.params:
            if param.help and POLICIES_PLACEHOLDER in param.help:
                param.help = param.help.replace(POLICIES_PLACEHOLDER, policy_help())
        return super().get_help(ctx)


class _Stopped(Exception):
    """An interrupt carried past Typer, which would turn it into a silent exit 130 whatever the signal."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__()
        self.interrupt = interrupt


class InfinipotGroup(TyperGroup):
    """The `infinipot` group: usage errors, interrupts and broken pipes as described above."""

    def make_context(self, *args: Any, **kwargs: Any):
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as interrupt:
            raise _Stopped(interrupt) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as interrupt:
            raise _Stopped(interrupt) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra: Any):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _USAGE_ERRORS as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # `infinipot` alone: the help
                error.show()
            else:
                console.error_line(_usage_line(error))
            code = error.exit_code
        except (typer.Abort, KeyboardInterrupt, _Stopped) as error:
            say_interrupted()
            code = interrupt_code(getattr(error, "interrupt", error))
        except BrokenPipeError:
            quiet_stdout()
            code = BROKEN_PIPE_EXIT
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _usage_line(error) -> str:
    message = " ".join(error.format_message().split())
    ctx = getattr(error, "ctx", None)
    if ctx is not None and type(error).__name__ != "ClickException":
        message += f" (see {ctx.command_path} --help)"
    return message
