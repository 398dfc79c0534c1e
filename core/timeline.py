"""When each temporal step of a stream was shown: the map from a cached token to video time.

A cached token knows its temporal step (`VisualLayout.frame`); its position is no clock (compact
positions renumber it, Qwen2.5-VL's grow with seconds, LLaVA's with tokens). The stream records
the source's own time of each step's first frame as the frames arrive, so skipped damaged
seconds, a window's start and a variable frame rate all read right (docs/design.md, "Evidence").
One float per step, 8 bytes in an `array`: an hour at 1 step per 2 s is 14 KiB, so the record is
kept whole rather than pruned with the cache, and a retention map can place evicted steps too.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

SAVED_DIGITS = 4  # a step's start is saved to 0.1 ms


@dataclass
class Timeline:
    """Video time (seconds) of every temporal step's first frame, and how long a step lasts."""

    step_seconds: float  # frame_multiple / sample_fps: the video one step stands for
    frame_multiple: int  # frames per temporal step (2 for the Qwen families, 1 for LLaVA)
    starts: array = field(default_factory=lambda: array("d"))  # [steps] seconds
    until: float | None = None  # video time the stream has reached: where the last step ends at the latest

    @property
    def steps(self) -> int:
        return len(self.starts)

    def record(self, first_step: int, step_starts: Sequence[float], until: float | None = None) -> None:
        """Note the start times of steps `first_step`, `first_step + 1`, ... (a chunk just prefilled, the
        stream now at video time `until`)."""
        if first_step < len(self.starts):  # steps taken back and streamed again
            self.cut(first_step)
        while len(self.starts) < first_step:  # steps streamed by a caller that gave no times: evenly spaced
            self.starts.append(self.starts[-1] + self.step_seconds if self.starts else 0.0)
        self.starts.extend(float(start) for start in step_starts)
        self.until = until

    def cut(self, steps: int, until: float | None = None) -> None:
        """Forget the steps from `steps` on (a tentative chunk taken back; the stream back at `until`)."""
        del self.starts[steps:]
        self.until = until

    def span(self, first: int, last: int | None = None) -> tuple[float, float]:
        """(start, end) seconds of steps `first` .. `last` (inclusive): first frame shown to the end of the last."""
        last = first if last is None else last
        return self.starts[first], self.end(last)

    def end(self, step: int) -> float:
        """When step `step` ends: its start plus a step's length, or the next step's start (or for the last
        step, the time the stream reached) when sooner."""
        end = self.starts[step] + self.step_seconds
        if step + 1 < len(self.starts):
            return min(end, self.starts[step + 1])
        return max(self.starts[step], min(end, self.until)) if self.until is not None else end

    def frames(self, first: int, last: int | None = None) -> tuple[int, int]:
        """Indices of the first and last frame of steps `first` .. `last` among the frames the model saw."""
        last = first if last is None else last
        return first * self.frame_multiple, (last + 1) * self.frame_multiple - 1

    def step_at(self, seconds: float) -> int:
        """The last step starting at or before `seconds` (0 before the first)."""
        from bisect import bisect_right

        return max(0, bisect_right(self.starts, seconds + 1e-9) - 1)

    def as_list(self) -> list[float]:
        return [round(start, SAVED_DIGITS) for start in self.starts]

    @classmethod
    def from_saved(cls, state: dict, steps: int) -> Timeline:
        """The timeline in a saved stream state (`StreamState.as_dict`) that streamed `steps` steps.

        A cache saved before timelines were kept gets evenly spaced steps from its start.
        """
        multiple = int(state["plan"]["frame_multiple"])
        step_seconds = multiple / float(state["sample_fps"])
        start = float(state.get("start_seconds", 0.0))
        until = start + float((state.get("stats") or {}).get("video_seconds", 0.0))
        if "timeline" not in state:
            timeline = cls.evenly(step_seconds, multiple, steps, start)
            timeline.until = until
            return timeline
        timeline = cls(step_seconds, multiple, array("d", map(float, state["timeline"])), until)
        if timeline.steps != steps:
            raise ValueError(f"the timeline dates {timeline.steps} steps, the stream streamed {steps}")
        return timeline

    @classmethod
    def evenly(cls, step_seconds: float, frame_multiple: int, steps: int, start: float) -> Timeline:
        """Steps at a constant rate from `start`: the timeline of a cache saved before timelines were kept."""
        return cls(step_seconds, frame_multiple, array("d", (start + step * step_seconds for step in range(steps))))
