"""Questions in time: where one stream stops for the questions due, for every caller that asks over a stream.

`stops(session, entries)` streams the session's open source once and yields a `Stop` at each
timed entry's moment (all the entries of one moment together, answered from the same cache),
then at the end (the untimed entries), then for the entries timed past the end (answered at the
end and flagged `past_end`). The caller asks a stop's entries before taking the next stop; the
stream then goes on exactly as one uninterrupted stream would (docs/design.md, "Questions in time").
`infinipot ask` and `infinipot.evaluation` both take their stops from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

TIME_TOLERANCE = 1e-3  # seconds: `moment()` rounds video time to milliseconds


@dataclass(frozen=True)
class Stop:
    """Entries due now. `kind`: "moment" (timed, the stream stopped at their time), "end" (untimed,
    the stream is over: a good point to save the cache) or "past_end" (timed after the video's end)."""

    kind: str
    entries: list = field(default_factory=list)

    @property
    def flags(self) -> dict[str, Any]:
        """What to add to these entries' results beyond the session's moment."""
        return {"past_end": True} if self.kind == "past_end" else {}


def stops(session, entries: list, on_event: Callable | None = None) -> Iterator[Stop]:
    """Stream `session`'s open source once, stopping wherever `entries` are due (see the module docstring).

    The "end" stop always comes (with no entries when all are timed); "past_end" only when needed.
    """
    past_end: list = []
    for moment in sorted({entry.time for entry in entries if entry.time is not None}):
        group = [entry for entry in entries if entry.time == moment]
        if past_end or not _reach(session, moment, on_event):
            past_end += group
            continue
        yield Stop("moment", group)
    session.stream(on_event=on_event)
    yield Stop("end", [entry for entry in entries if entry.time is None])
    if past_end:
        yield Stop("past_end", past_end)


def _reach(session, moment: float, on_event: Callable | None) -> bool:
    """Stream up to video time `moment`; False when the source ends before it."""
    session.stream(until=moment, on_event=on_event)
    return session.moment()["asked_at"] >= moment - TIME_TOLERANCE
