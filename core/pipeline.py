"""From a video file to a streamed session: the glue the CLI and library users call.

Everything that can be checked without the model's weights (the file, the window, the settings,
the budget against the model's token grid) is checked before they load, so a typo costs
milliseconds, not a model load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from infinipot.adapters import Adapter, ModelGeometry, load_adapter, load_geometry, load_processor
from infinipot.budget import StreamPlan, parse_budget, plan_stream
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


@dataclass(frozen=True)
class StreamSetup:
    """Everything decided before the model's weights load: a bad input has failed by now."""

    preset: Preset  # with the budget resolved to tokens
    video: PreparedVideo
    geometry: ModelGeometry
    plan: StreamPlan
    processor: object  # the model's processor, loaded once and reused by the adapter


def setup_stream(request: VideoRequest, preset: Preset, budget: str | None = None) -> StreamSetup:
    """Probe the video, read the model's geometry (no weights), resolve the budget, check the plan."""
    info = probe(request.path)
    processor = load_processor(preset)
    shape = load_geometry(preset, info.height, info.width, processor)
    preset = resolve_budget(preset, budget, shape.kv_bytes_per_token)
    video = prepare_video(request, preset, info, shape.frame_multiple)
    plan = plan_stream(preset.compression(), shape.tokens_per_frame, shape.frame_multiple)
    return StreamSetup(preset, video, shape, plan, processor)


def prepare_video(request: VideoRequest, preset: Preset, info: VideoInfo | None = None,
                  frame_multiple: int = 2) -> PreparedVideo:
    """Probe the file (unless `info` is given) and choose the frames; InfinipotError on bad input."""
    info = info or probe(request.path)
    fps = request.fps if request.fps is not None else preset.fps
    plan = plan_frames(info, fps, request.start, request.end, request.max_frames, frame_multiple=frame_multiple)
    if plan.frames == 0:
        raise InfinipotError(f"no frames to read in {request.path}: widen --start/--end")
    return PreparedVideo(info, plan)


def resolve_budget(preset: Preset, budget: str | None, bytes_per_token: int | None = None) -> Preset:
    """Apply a --budget given as tokens ('6000', '6k') or memory ('2GiB', needs bytes_per_token)."""
    if budget is None:
        return preset
    tokens = parse_budget(budget, bytes_per_token)
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
