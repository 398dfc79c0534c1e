"""`infinipot presets`: the model presets shipped with infinipot, and the policies they can use."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from infinipot_cli import console


def presets_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the presets' settings as JSON.")] = False,
) -> None:
    """List the model presets shipped with infinipot (use one with --preset NAME, or --preset my.yaml)."""
    from infinipot.presets import DEFAULT_PRESET, all_presets

    presets = all_presets()
    if as_json:
        print(json.dumps([preset.as_dict() for preset in presets], indent=2))
        return
    from infinipot_cli.failures import policy_help
    from infinipot_cli.render import presets_table

    console.out().print(presets_table(presets, DEFAULT_PRESET))
    console.out().print(f"policies (--policy): {policy_help()}", soft_wrap=True)
