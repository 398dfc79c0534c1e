"""Video files, read with decord: the frames planned by `infinipot.video`, decoded chunk by chunk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from infinipot.errors import InfinipotError
from infinipot.fingerprints import video_fingerprint
from infinipot.sources.base import FrameChunk, SourceInfo
from infinipot.video import FramePlan, VideoInfo, iter_chunks, plan_frames, probe


class FileSource:
    """A window of a video file sampled at a rate; `info` is known before any frame is decoded."""

    def __init__(self, video: VideoInfo, plan: FramePlan) -> None:
        self.video = video
        self.plan = plan
        seconds = plan.seconds
        sample_fps = plan.frames / seconds if seconds > 0 else plan.fps
        self.info = SourceInfo(
            name=str(video.path), width=video.width, height=video.height, sample_fps=sample_fps,
            start=plan.start or 0.0, seconds_total=seconds, frames_total=plan.frames,
            description={
                **video_fingerprint(video.path, video.duration_s), "width": video.width, "height": video.height,
                "native_fps": video.native_fps, "fps": plan.fps, "sample_fps": sample_fps,
                "start": plan.start, "end": plan.end, "frames": plan.frames,
            },
        )

    def chunks(self, chunk_frames: int) -> Iterator[FrameChunk]:
        plan, start = self.plan, self.info.start
        step = plan.seconds / plan.frames  # each sampled frame stands for this much video
        for chunk in iter_chunks(self.video, plan, chunk_frames):
            covered = min(plan.seconds, (chunk.first + len(chunk.frames)) * step)
            yield FrameChunk(chunk.frames, chunk.timestamps, chunk.first, start + covered)

    def close(self) -> None:
        """Nothing to release: the reader lives inside `chunks`."""


def open_file(path: str | Path, fps: float, start: float | None = None, end: float | None = None,
              max_frames: int | None = None, frame_multiple: int = 2) -> FileSource:
    """Probe `path` and plan its frames; InfinipotError on a bad file or window."""
    video = probe(path)
    plan = plan_frames(video, fps, start, end, max_frames, frame_multiple=frame_multiple)
    if plan.frames == 0:
        raise InfinipotError(f"no frames to read in {path}: widen --start/--end")
    return FileSource(video, plan)
