"""The `infinipot` command: a thin Typer shell over the library. No tensors here."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infinipot import __version__
from infinipot.errors import InfinipotError

app = typer.Typer(
    name="infinipot",
    help="Ask questions about videos of any length under a fixed KV-cache memory budget (InfiniPot-V).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

out = Console()
err = Console(stderr=True)

Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks and library logs.")]


def handles_errors(command: Callable) -> Callable:
    """One line and exit code 1 for any failure; the traceback only with --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False)
        _quiet_libraries(debug)
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except InfinipotError as error:
            if debug:
                raise
            err.print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None
        except Exception as error:  # noqa: BLE001 - last resort: a line, not a traceback
            if debug:
                raise
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            err.print(
                f"[bold red]error:[/bold red] unexpected {type(error).__name__}: {message} "
                "(rerun with --debug for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper


def _quiet_libraries(debug: bool) -> None:
    import transformers

    if debug:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"infinipot {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Ask questions about videos of any length under a fixed KV-cache memory budget (InfiniPot-V)."""


@app.command("presets")
@handles_errors
def presets_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the presets as JSON.")] = False,
    debug: Debug = False,
) -> None:
    """List the model presets shipped with infinipot."""
    from dataclasses import asdict

    from infinipot.presets import DEFAULT_PRESET, all_presets
    from infinipot_cli.render import presets_table

    presets = all_presets()
    if as_json:
        print(json.dumps([asdict(preset) for preset in presets], indent=2))
        return
    out.print(presets_table(presets, DEFAULT_PRESET))


def main() -> None:
    from infinipot_cli import ask  # noqa: F401  registers the command
    from infinipot_cli import chat, compress, info  # noqa: F401  register the cache commands

    app()


if __name__ == "__main__":
    sys.exit(main())
