"""The `infinipot` entry point: signal handling first, then the command line (infinipot_cli.cli).

This module stays tiny so that the handlers for Ctrl-C, SIGTERM and SIGHUP are in place before
anything else is imported. `app` (the Typer app, for tests and embedding) is imported on demand.
"""

from __future__ import annotations

import sys


def main() -> None:
    from infinipot_cli.signals import exit_interrupted, install_signal_handlers

    install_signal_handlers()
    try:
        from infinipot_cli.cli import app
    except KeyboardInterrupt as error:
        exit_interrupted(error)
    app()


def __getattr__(name: str):
    if name == "app":
        from infinipot_cli.cli import app

        return app
    raise AttributeError(f"module 'infinipot_cli.app' has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
