"""The `infinipot` Typer app: its commands, registered here explicitly, and nothing heavy imported.

Each command module imports only Typer and the library's light modules at import time; the
library's heavy parts (torch, transformers, PyAV) are imported inside the command bodies, so
`infinipot --help`, `infinipot ask --help` and usage errors answer in a fraction of a second.
"""

from __future__ import annotations

from typing import Annotated

import typer

from infinipot_cli.ask import ask_command
from infinipot_cli.chat import chat_command
from infinipot_cli.compare import compare_command
from infinipot_cli.compress import compress_command
from infinipot_cli.eval import eval_command
from infinipot_cli.failures import InfinipotCommand, InfinipotGroup, guarded
from infinipot_cli.info import info_command
from infinipot_cli.presets import presets_command
from infinipot_cli.watch import watch_command

ABOUT = "Ask questions about videos of any length under a fixed KV-cache memory budget (InfiniPot-V)."

app = typer.Typer(
    name="infinipot", help=ABOUT, cls=InfinipotGroup, no_args_is_help=True, add_completion=False,
    rich_markup_mode=None, pretty_exceptions_enable=False,
)

COMMANDS = {
    "ask": ask_command,
    "compress": compress_command,
    "info": info_command,
    "chat": chat_command,
    "presets": presets_command,
    "eval": eval_command,
    "watch": watch_command,
    "compare": compare_command,
}
for _name, _command in COMMANDS.items():
    app.command(_name, cls=InfinipotCommand)(guarded(_command))


def _version(value: bool) -> None:
    if value:
        from infinipot import __version__

        print(f"infinipot {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Ask questions about videos of any length under a fixed KV-cache memory budget (InfiniPot-V)."""
