"""infinipot: ask questions about videos of any length under a fixed KV-cache budget (InfiniPot-V)."""

from infinipot.errors import InfinipotError

__version__ = "0.1.0"
__all__ = ["InfinipotError", "__version__"]
