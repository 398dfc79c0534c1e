"""Shared by the commands that stream a video: options -> checks -> model -> progress display."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infinipot.engine import Session, StreamStats
from infinipot.pipeline import StreamSetup, VideoRequest, open_session, setup_stream, stream_video
from infinipot.presets import Preset, load_preset
from infinipot_cli.app import err
from infinipot_cli.render import StreamDisplay


@dataclass(frozen=True)
class StreamOptions:
    video: Path
    preset: str
    budget: str | None = None
    policy: str | None = None
    keep_ratio: float | None = None
    recent: float | None = None
    tar_ratio: float | None = None
    pooling: str | None = None
    fps: float | None = None
    start: float | None = None
    end: float | None = None
    max_frames: int | None = None
    device: str = "auto"
    positions: str | None = None  # original | compact; None: the preset's

    def resolve_preset(self) -> Preset:
        """The preset with this command's overrides (the budget is resolved later, with the model's geometry)."""
        return load_preset(self.preset).with_overrides(
            policy=self.policy, keep_ratio=self.keep_ratio, recent_ratio=self.recent, tar_ratio=self.tar_ratio,
            pooling=self.pooling, fps=self.fps, positions=self.positions,
        )


def stream_with_display(options: StreamOptions, show: bool) -> tuple[Session, StreamStats, StreamSetup]:
    """Check every input without loading weights, load the model, stream the video with a progress display."""
    from infinipot.adapters import load_adapter, resolve_device

    resolve_device(options.device)
    request = VideoRequest(options.video, options.fps, options.start, options.end, options.max_frames)
    setup = setup_stream(request, options.resolve_preset(), options.budget)
    preset = setup.preset
    if show:
        with err.status(f"loading {preset.model} ...", spinner="dots"):
            adapter = load_adapter(preset, options.device, setup.processor)
    else:
        adapter = load_adapter(preset, options.device, setup.processor)
    session = open_session(preset, adapter=adapter)
    if not show:
        return session, stream_video(session, setup.video), setup
    display = StreamDisplay(err, setup.geometry.kv_bytes_per_token)
    with display.running():
        stats = stream_video(session, setup.video, display.update)
    return session, stats, setup
