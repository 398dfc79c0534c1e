"""A module imported on first use, for names a light module needs only in its function bodies.

`from infinipot.lazy import torch` gives a stand-in whose first attribute access imports torch.
The policies use it so that their classes (names, knobs, checks) load without torch: listing
presets, validating settings and building the CLI's help cost milliseconds, not the seconds
importing torch takes (docs/design.md, "Program shape").
"""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


torch = LazyModule("torch")
functional = LazyModule("torch.nn.functional")
