"""Where a command's session comes from: a video (or stream) opened now, or a cache file written earlier.

Everything that needs no model weights is checked first, in this order: the run's inputs and
outputs (no output may overwrite an input), the settings with the flags applied, the source
(opened and probed by `Session.open`, which also checks the budget against the model's token
grid). Only then do the weights load, with a status line that says so.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infinipot.errors import InfinipotError

from infinipot_cli import console
from infinipot_cli.display import StreamDisplay
from infinipot_cli.flags import STREAM, given


@dataclass(frozen=True)
class Source:
    """What the command was given: a video file, a stream (a URL, '-'), or a cache file."""

    spec: str
    is_cache: bool

    @classmethod
    def of(cls, spec: str) -> Source:
        from infinipot.cache_header import looks_like_cache

        return cls(spec, not _names_a_stream(spec) and looks_like_cache(Path(spec)))

    @property
    def name(self) -> str:
        return self.spec if _names_a_stream(self.spec) else Path(self.spec).name


def _names_a_stream(spec: str) -> bool:
    """A URL or stdin: never a cache file (the library decides how to read it)."""
    return spec == "-" or "://" in spec


@dataclass
class Inputs:
    """The files a run reads; no output of the run may be one of them."""

    paths: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, path: str | Path | None, what: str) -> None:
        if path is not None and Path(path).expanduser().is_file():
            self.paths.append((Path(path).expanduser(), what))

    def check_output(self, path: Path, flag: str) -> None:
        """Refuse `path` as a cache output when it is one of the inputs, a file that is not a cache (a
        video, a question file ...), or cannot be written as a regular file."""
        from infinipot.cache_header import looks_like_cache
        from infinipot.file_io import check_writable

        for other, what in self.paths:
            if same_file(path, other):
                raise InfinipotError(f"{flag} {path} is {what}: an output may not overwrite an input of the same "
                                     "run; choose another file name")
        check_writable(path, flag)
        if path.is_file() and path.stat().st_size and not looks_like_cache(path):
            raise InfinipotError(f"{flag} {path} exists and is not an infinipot cache: choose another file name "
                                 "(a cache is written over an older cache only)")


def same_file(first: Path, second: Path) -> bool:
    try:
        if first.exists() and second.exists():
            return first.samefile(second)
        return first.expanduser().resolve() == second.expanduser().resolve()
    except OSError:
        return False


def run_inputs(source: Source, stream: Any, **others: str | Path | None) -> Inputs:
    """The inputs of a run: the video or cache, the preset file, and `others` (what -> path)."""
    inputs = Inputs()
    inputs.add(source.spec, "the cache read" if source.is_cache else "the video")
    if stream.preset is not None:
        inputs.add(stream.preset, "the preset file")
    for what, path in others.items():
        inputs.add(path, what.replace("_", " "))
    return inputs


def _set_values(items: list[str] | None) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs; VALUE read as JSON when it is JSON (numbers, lists, true), else as text."""
    values = {}
    for item in items or []:
        key, _, text = item.partition("=")
        try:
            values[key.strip()] = json.loads(text)
        except ValueError:
            values[key.strip()] = text.strip()
    return values


def setting_changes(stream: Any) -> dict[str, Any]:
    """The settings the flags change, by the library's names (flags and --set may not say the same twice)."""
    changes = {flag.setting: getattr(stream, flag.name) for flag in STREAM.flags
               if flag.target == "settings" and getattr(stream, flag.name) is not None}
    for key, value in _set_values(stream.set).items():
        if key in changes:
            raise InfinipotError(f"`{key}` is given twice, by its flag and by --set {key}=…: keep one")
        changes[key] = value
    return changes


def video_settings(stream: Any):
    """The preset named by --preset (or the default) with the flags applied."""
    from infinipot.presets import DEFAULT_PRESET, load_preset

    return load_preset(stream.preset or DEFAULT_PRESET).replace(**setting_changes(stream))


def refuse_stream_flags(source: Source, stream: Any) -> None:
    """A cache is already compressed: only --preset, --model and --device still mean something."""
    for flag in STREAM.flags:
        if flag.name in given(STREAM, stream) and flag.target in ("settings", "open", "") and \
                flag.name not in ("preset", "model"):
            raise InfinipotError(f"{flag.option} only applies when a video is streamed, and {source.spec} is a "
                                 f"cache that is already compressed: drop {flag.option}, or compress the video "
                                 "again with it")


def open_video(source: Source, stream: Any, display: StreamDisplay):
    """A session with `source` opened and checked (no weights loaded yet); its source warnings shown."""
    settings = video_settings(stream)
    if not _names_a_stream(source.spec):  # a missing or unreadable file is said before torch is imported
        from infinipot.video import check_video_file

        check_video_file(source.spec)
    display.status(f"opening {source.name} with {settings.name} ({settings.model}) …")
    from infinipot import Session
    from infinipot.model import resolve_device

    resolve_device(stream.device)
    session = Session.from_preset(settings, device=stream.device)
    options = {flag.setting: getattr(stream, flag.name) for flag in STREAM.flags
               if flag.target == "open" and getattr(stream, flag.name) is not None}
    with closed_on_error(session):
        session.open(source.spec, **options)
    return session


@contextlib.contextmanager
def closed_on_error(session) -> Iterator[None]:
    """Close `session` if the block fails, without letting a failure to close hide the first error."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            session.close()
        raise


@contextlib.contextmanager
def closing(session) -> Iterator[None]:
    """Close `session` after the block, whatever happens (the block's own error wins)."""
    with closed_on_error(session):
        yield
    session.close()


def load_cache(source: Source, stream: Any, display: StreamDisplay):
    """A session around a cache file, on the cache's own model or the one --preset/--model name."""
    from infinipot.cache_header import read_header

    refuse_stream_flags(source, stream)
    header = read_header(source.spec)
    chosen = None
    if stream.preset is not None or stream.model is not None:
        chosen = _cache_settings(header, stream)
    display.status(f"loading {(chosen.model if chosen else header.meta['model'].get('id'))} for {source.name} …")
    from infinipot import Session
    from infinipot.model import resolve_device

    resolve_device(stream.device)
    return Session.load(source.spec, device=stream.device, preset=chosen)


def _cache_settings(header, stream: Any):
    """The settings to load a cache with: --preset's, or the cache's own, with --model's folder or id."""
    from infinipot.presets import load_preset
    from infinipot.settings import settings_from_mapping

    if stream.preset is not None:
        base = load_preset(stream.preset)
    else:
        saved = dict(header.meta["settings"])
        base = settings_from_mapping({**saved, **(saved.pop("knobs", None) or {})}, f"the settings in {header.path}")
    return base.replace(model=stream.model)


class Warnings:
    """Shows the session's one-line warnings (fps capped, damaged seconds skipped, ...) once each."""

    def __init__(self, show: bool = True) -> None:
        self.show = show
        self.seen: list[str] = []

    def report(self, session) -> None:
        for message in session.warnings:
            if message not in self.seen:
                self.seen.append(message)
                if self.show:
                    console.warning_line(message)
