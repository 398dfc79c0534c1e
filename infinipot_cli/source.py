"""Where a command's session comes from: a video streamed now, or a cache file written earlier.

The options shared by every command that reads a video are declared here once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import typer

from infinipot.cache_file import Provenance, load_session, looks_like_cache, read_header
from infinipot.fingerprints import describe_video
from infinipot.engine import Session
from infinipot.errors import InfinipotError
from infinipot.presets import DEFAULT_PRESET, load_preset
from infinipot_cli.app import err
from infinipot_cli.streaming import StreamOptions, stream_with_display

PresetOption = Annotated[str | None, typer.Option(
    "--preset", help=f"Preset name (see `infinipot presets`) or YAML file. Default: {DEFAULT_PRESET} for a video, "
    "the cache's own for a cache.", show_default=False)]
BudgetOption = Annotated[str | None, typer.Option(
    "--budget", help="Visual-token budget M: tokens (6000, 6k) or memory (2GiB).")]
PolicyOption = Annotated[str | None, typer.Option("--policy", help="full | recent | uniform | tar | van | infinipot.")]
KeepRatioOption = Annotated[float | None, typer.Option(
    "--keep-ratio", help="Share of the budget kept by each compression (C/M).")]
RecentOption = Annotated[float | None, typer.Option(
    "--recent", help="Share of the budget's frames always kept whole (r).")]
TarRatioOption = Annotated[float | None, typer.Option("--tar-ratio", help="Share of kept tokens chosen by TaR (alpha).")]
PoolingOption = Annotated[str | None, typer.Option("--pooling", help="VaN pooling: none | quartile | spread.")]
FpsOption = Annotated[float | None, typer.Option("--fps", help="Frames sampled per second of video.")]
StartOption = Annotated[float | None, typer.Option("--start", help="Start of the window to read, in seconds.")]
EndOption = Annotated[float | None, typer.Option("--end", help="End of the window to read, in seconds.")]
MaxFramesOption = Annotated[int | None, typer.Option(
    "--max-frames", help="Read at most this many frames (evenly spread).")]
PositionsOption = Annotated[str | None, typer.Option(
    "--positions", help="original | compact: how kept tokens are positioned (default: the preset's, else the "
    "model family's).")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto | cuda | cpu | mps.")]
MaxNewTokensOption = Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")]
TemperatureOption = Annotated[float, typer.Option("--temperature", help="0 answers greedily; above 0 samples.")]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Random seed for sampling.")]

# StreamOptions fields that only mean something while a video is streamed, with their flags.
_STREAM_ONLY = {"budget": "--budget", "policy": "--policy", "keep_ratio": "--keep-ratio", "recent": "--recent",
                "tar_ratio": "--tar-ratio", "pooling": "--pooling", "fps": "--fps", "start": "--start",
                "end": "--end", "max_frames": "--max-frames", "positions": "--positions"}


@dataclass(frozen=True)
class Opened:
    """A session ready to answer, and what to record if it is saved."""

    session: Session
    provenance: Provenance
    from_cache: bool


def stream_options(source: Path, preset: str | None, **flags) -> StreamOptions:
    """StreamOptions from a command's flags (an unset preset means the default one)."""
    known = {field.name for field in fields(StreamOptions)}
    return StreamOptions(video=source, preset=preset or DEFAULT_PRESET, **{k: v for k, v in flags.items() if k in known})


def open_source(options: StreamOptions, preset_given: bool, show: bool) -> Opened:
    """Load the cache file, or stream the video, named by `options.video`."""
    if looks_like_cache(options.video):
        return _open_cache(options, preset_given, show)
    session, _, setup = stream_with_display(options, show)
    return Opened(session, Provenance(setup.preset, describe_video(setup.video)), from_cache=False)


def _open_cache(options: StreamOptions, preset_given: bool, show: bool) -> Opened:
    from infinipot.adapters import load_adapter, resolve_device

    path = options.video
    header = read_header(path)
    for name, flag in _STREAM_ONLY.items():
        if getattr(options, name, None) is not None:
            raise InfinipotError(f"{flag} only applies when a video is streamed, and {path} is a cache that is "
                                 f"already compressed: drop {flag}, or compress the video again with it")
    preset = load_preset(options.preset) if preset_given else header.preset()
    resolve_device(options.device)
    if show:
        with err.status(f"loading {preset.model} for {path.name} ...", spinner="dots"):
            adapter = load_adapter(preset, options.device)
            session = load_session(path, adapter, header)
    else:
        adapter = load_adapter(preset, options.device)
        session = load_session(path, adapter, header)
    return Opened(session, header.provenance(preset), from_cache=True)


def same_file(first: Path, second: Path) -> bool:
    try:
        return first.exists() and second.exists() and first.samefile(second)
    except OSError:
        return False
