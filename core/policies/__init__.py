"""Compression policies by name. Adding one = one function + one line in POLICIES.

`full` never compresses, so it has no function: the engine skips compression for it.
"""

from __future__ import annotations

from infinipot.errors import InfinipotError
from infinipot.policies.base import Policy, PolicySettings
from infinipot.policies.baselines import recent, uniform
from infinipot.policies.infinipot import infinipot
from infinipot.policies.tar import tar
from infinipot.policies.van import van

POLICIES: dict[str, Policy] = {
    "recent": recent,
    "uniform": uniform,
    "tar": tar,
    "van": van,
    "infinipot": infinipot,
}

POLICY_NAMES: tuple[str, ...] = ("full", *POLICIES)


def get_policy(name: str) -> Policy | None:
    """The policy function for `name`, or None for `full` (never compress)."""
    if name == "full":
        return None
    if name not in POLICIES:
        raise InfinipotError(f"unknown policy {name!r}: choose one of {', '.join(POLICY_NAMES)}")
    return POLICIES[name]


__all__ = ["POLICIES", "POLICY_NAMES", "Policy", "PolicySettings", "get_policy"]
