"""infinipot: ask questions about videos of any length under a fixed KV-cache budget (InfiniPot-V).

    from infinipot import Session
    session = Session.from_preset("tiny", budget="6k")
    session.stream("movie.mp4")
    print(session.ask("What happened?").text)

Names are imported on first use, so `import infinipot` (and the CLI's --help) stays fast: torch
and transformers load only when a session needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infinipot.errors import InfinipotError

__version__ = "0.2.0"

_LAZY = {
    "Session": "infinipot.session",
    "Progress": "infinipot.session",
    "Loading": "infinipot.session",
    "Model": "infinipot.model",
    "Settings": "infinipot.settings",
    "Answer": "infinipot.answer",
    "load_preset": "infinipot.presets",
    "preset_names": "infinipot.presets",
}

if TYPE_CHECKING:
    from infinipot.answer import Answer
    from infinipot.model import Model
    from infinipot.presets import load_preset, preset_names
    from infinipot.session import Loading, Progress, Session
    from infinipot.settings import Settings


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'infinipot' has no attribute {name!r}")


__all__ = ["Answer", "InfinipotError", "Loading", "Model", "Progress", "Session", "Settings", "__version__",
           "load_preset", "preset_names"]
