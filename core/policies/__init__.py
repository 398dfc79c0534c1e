"""Compression policies by name. Adding one = one module with a Policy subclass + one line in POLICIES.

docs/design.md ("Policies") says what a policy may ask of the engine.
"""

from __future__ import annotations

from typing import Any

from infinipot.errors import InfinipotError
from infinipot.policies.base import LayerView, Policy
from infinipot.policies.baselines import Full, Recent, Uniform
from infinipot.policies.hermes import Hermes
from infinipot.policies.infinipot import Infinipot
from infinipot.policies.sink import Sink
from infinipot.policies.streammem import StreamMem
from infinipot.policies.tar import Tar
from infinipot.policies.van import Van
from infinipot.policies.whole_frames import RecentWholeFrames

POLICIES: dict[str, type[Policy]] = {cls.name: cls for cls in (
    Full, Recent, Uniform, Tar, Van, Infinipot, RecentWholeFrames, Sink, Hermes, StreamMem)}
POLICY_NAMES: tuple[str, ...] = tuple(POLICIES)


def policy_class(name: str) -> type[Policy]:
    if name not in POLICIES:
        raise InfinipotError(f"unknown `policy` {name!r}: choose one of {', '.join(POLICY_NAMES)}")
    return POLICIES[name]


def make_policy(name: str, knobs: dict[str, Any] | None = None) -> Policy:
    """The policy `name` with its knobs taken from `knobs` (knobs of other policies are ignored)."""
    return policy_class(name).from_knobs(knobs or {})


def knob_types() -> dict[str, Any]:
    """Every knob any policy declares, with its type (a name means the same in every policy)."""
    found: dict[str, Any] = {}
    for cls in POLICIES.values():
        found.update(cls.knobs())
    return found


def knob_names() -> tuple[str, ...]:
    return tuple(knob_types())


__all__ = ["POLICIES", "POLICY_NAMES", "LayerView", "Policy", "knob_names", "knob_types", "make_policy",
           "policy_class"]
