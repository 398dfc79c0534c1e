"""From a video file to a streamed session: the glue the CLI and library users call.

Everything that can be checked without a model (the file, the window, the settings) is
checked before the model is loaded, so a typo costs milliseconds, not a model load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from infinipot.adapters import Adapter, load_adapter
from infinipot.budget import parse_budget
from infinipot.engine import FrameBatch, Progress, Session, StreamStats
from infinipot.errors import InfinipotError
from infinipot.presets import Preset
from infinipot.video import FramePlan, VideoInfo, iter_chunks, plan_frames, probe


@dataclass(frozen=True)
class VideoRequest:
    """Which part of which video to read, and how densely."""

    path: Path
    fps: float | None = None  # None: the preset's
    start: float | None = None
    end: float | None = None
    max_frames: int | None = None


@dataclass(frozen=True)
class PreparedVideo:
    info: VideoInfo
    plan: FramePlan


def prepare_video(request: VideoRequest, preset: Preset, frame_multiple: int = 2) -> PreparedVideo:
    """Probe the file and choose the frames; raises InfinipotError on any bad input."""
    info = probe(request.path)
    fps = request.fps if request.fps is not None else preset.fps
    plan = plan_frames(info, fps, request.start, request.end, request.max_frames, frame_multiple=frame_multiple)
    if plan.frames == 0:
        raise InfinipotError(f"no frames to read in {request.path}: widen --start/--end")
    return PreparedVideo(info, plan)


def resolve_budget(preset: Preset, budget: str | None, adapter: Adapter | None = None) -> Preset:
    """Apply a --budget given as tokens ('6000', '6k') or memory ('2GiB') to the preset."""
    if budget is None:
        return preset
    bytes_per_token = adapter.kv_bytes_per_token() if adapter is not None else None
    try:
        tokens = parse_budget(budget, bytes_per_token)
    except InfinipotError:
        if adapter is None:  # memory budgets need the model; tokens are checked now
            return preset
        raise
    if tokens <= 0:
        raise InfinipotError(f"budget must be positive, got {budget!r}: pass e.g. --budget 6000 or --budget 2GiB")
    return preset.with_overrides(budget=tokens)


def open_session(preset: Preset, device: str = "auto", adapter: Adapter | None = None) -> Session:
    adapter = adapter or load_adapter(preset, device)
    return Session(adapter, preset.compression(), positions=preset.positions)


def stream_video(
    session: Session, video: PreparedVideo, on_progress: Callable[[Progress], None] | None = None
) -> StreamStats:
    """Stream the planned frames of `video` through `session`."""
    info, plan = video.info, video.plan
    session.prepare(info.height, info.width)
    sample_fps = plan.frames / plan.seconds if plan.seconds > 0 else plan.fps
    return session.stream(_batches(video, session.chunk_frames), sample_fps, plan.frames, on_progress)


def _batches(video: PreparedVideo, chunk_frames: int) -> Iterator[FrameBatch]:
    plan = video.plan
    step = plan.seconds / plan.frames  # each sampled frame stands for this much video
    for chunk in iter_chunks(video.info, plan, chunk_frames):
        yield FrameBatch(chunk.frames, min(plan.seconds, (chunk.first + len(chunk.frames)) * step))
