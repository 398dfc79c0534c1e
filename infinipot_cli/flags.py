"""The flags several commands share, declared once, and the one table from library names to flags.

Each `Flag` names the library setting or argument it sets (`keep_ratio`, `max_frames`,
`max_new_tokens` ...). `FLAG_OF` is built from these declarations, so the library's error
messages, which name settings in backticks, are shown with the flag a user types (`flagged`).

`with_flags(STREAM, ANSWER)` adds a group's flags to a command's signature (Typer reads the
signature) and hands the command one frozen dataclass per group instead of a dozen arguments.
Nothing here imports the library's heavy parts: `--help` and usage errors stay fast.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from typing import Annotated, Any

import typer

POLICIES_PLACEHOLDER = "{policies}"  # filled from the policy registry when help is shown


@dataclass(frozen=True)
class Flag:
    """One command-line flag: its parameter name, option, type, help, and the library name it sets."""

    name: str
    option: str
    kind: Any
    help: str
    setting: str | None = None  # the library's name for it, as its messages spell it
    metavar: str | None = None
    default: Any = None
    minimum: float | None = None
    parse: Callable[[Any], Any] | None = None  # a converter run at parse time (a usage error on failure)
    target: str = "settings"  # where the value goes: settings, open (the source), session, answer, or "" (itself)


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _finite_not_negative(value: float | None) -> float | None:
    """A range check alone would call nan "not >= 0"; say what is wrong with it."""
    if _finite(value) is not None and value < 0:
        raise typer.BadParameter(f"{value:g} is negative; give 0 or more")
    return value


_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
_CLOCK = re.compile(r"^\s*(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)\s*$")


def parse_seconds(text: str | None) -> float | None:
    """Seconds from '90', '90s', '10m', '1.5h', 'MM:SS' or 'HH:MM:SS[.fff]'."""
    if text is None:
        return None
    found = _SECONDS.match(text)
    if found:
        return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[found.group(2)]
    clock = _CLOCK.match(text)
    if clock and float(clock.group(3)) < 60 and (clock.group(1) is None or int(clock.group(2)) < 60):
        return int(clock.group(1) or 0) * 3600 + int(clock.group(2)) * 60 + float(clock.group(3))
    raise typer.BadParameter(f"{text!r} is not a time: give seconds (90, 90s, 10m, 1.5h) or HH:MM:SS")


def _key_values(items: list[str] | None) -> list[str] | None:
    for item in items or []:
        if "=" not in item or not item.partition("=")[0].strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE, e.g. --set chunk_frames=8")
    return items


STREAM_FLAGS: tuple[Flag, ...] = (
    Flag("preset", "--preset", str, "Preset name (see `infinipot presets`) or a YAML file (default: "
         "qwen2.5-vl-7b).", metavar="NAME|FILE", target=""),
    Flag("model", "--model", str, "Load this local model folder or hub id instead of the preset's, with the "
         "preset's other settings.", "model", "PATH_OR_ID"),
    Flag("budget", "--budget", str, "Visual-token budget M: tokens (6000, 6k) or memory (2GiB, 512MB).", "budget",
         "SIZE"),
    Flag("policy", "--policy", str, f"Compression policy: {POLICIES_PLACEHOLDER}.", "policy", "NAME"),
    Flag("keep_ratio", "--keep-ratio", float, "Share of the budget each compression keeps (C/M), in (0, 1).",
         "keep_ratio", "RATIO", parse=_finite),
    Flag("recent", "--recent", float, "Share of the budget's frames always kept whole (r).", "recent_ratio", "RATIO",
         parse=_finite),
    Flag("tar_ratio", "--tar-ratio", float, "Share of the kept tokens chosen by TaR (alpha).", "tar_ratio", "RATIO",
         parse=_finite),
    Flag("pooling", "--pooling", str, "VaN pooling of the value norms: none, quartile (the official code's "
         "schedule) or cv (the paper's).", "pooling", "MODE"),
    Flag("fps", "--fps", float, "Frames sampled per second of video (at most the video's own rate).", "fps", "FPS",
         parse=_finite),
    Flag("start", "--start", str, "Start of the window to read: seconds or HH:MM:SS.", "start", "TIME",
         target="open", parse=parse_seconds),
    Flag("end", "--end", str, "End of the window to read: seconds or HH:MM:SS.", "end", "TIME", target="open",
         parse=parse_seconds),
    Flag("duration", "--duration", str, "How much to read (90, 10m, 1h); for a live source, when to stop.",
         "duration", "TIME", target="open", parse=parse_seconds),
    Flag("stall_timeout", "--stall-timeout", str, "A live source that sends no frame for this long ends the stream "
         "(what was built is kept and answered from; default 30s).", "stall_timeout", "TIME", target="open",
         parse=parse_seconds),
    Flag("max_frames", "--max-frames", int, "Read at most this many frames (evenly spread).", "max_frames", "N",
         target="open", minimum=1),
    Flag("positions", "--positions", str, "original | compact: how kept tokens are positioned (default: the "
         "preset's, else the model family's).", "positions", "MODE"),
    Flag("device", "--device", str, "auto | cuda | cpu | mps.", "device", "DEVICE", target="session",
         default="auto"),
    Flag("set", "--set", list[str], "Any setting or policy knob, repeatable: --set chunk_frames=8 "
         "--set cv_thresholds=[0.2,0.4,0.6].", metavar="KEY=VALUE", target="",
         parse=_key_values),
)

ANSWER_FLAGS: tuple[Flag, ...] = (
    Flag("max_new_tokens", "--max-new-tokens", int, "Longest answer, in tokens.", "max_new_tokens", "N",
         target="answer", default=256, minimum=1),
    Flag("temperature", "--temperature", float, "0 answers greedily; above 0 samples.", "temperature", "T",
         target="answer", default=0.0, parse=_finite_not_negative),
    Flag("seed", "--seed", int, "Random seed for sampling.", "seed", "N", target="answer"),
    Flag("evidence", "--evidence", bool, "Show under each answer the moments of the video its question and answer "
         "attended to most (times, frames, share of the attention; where the model looked, not proof); the "
         "answer is the same.", "evidence", target="answer", default=False),
)

RAY_FLAGS: tuple[Flag, ...] = (
    Flag("address", "--ray", str, "Spread the videos over Ray workers: `local` starts Ray on this machine (stopped at "
         "the end); an address (auto, HOST:6379, ray://HOST:10001) joins that cluster and leaves it running. "
         "Needs pip install 'infinipot[ray]'.", metavar="local|ADDRESS", target=""),
    Flag("workers", "--ray-workers", int, "With --ray: how many workers, each loading the model once (default: one "
         "per GPU of the cluster, or per --cpus-per-worker CPUs without GPUs; at most one per video).", "workers",
         "N", minimum=1, target=""),
    Flag("cpus_per_worker", "--cpus-per-worker", float, "With --ray: CPUs each worker reserves (default: 1 with "
         "GPUs, else 8 or all the cluster has).", "cpus_per_worker", "N", minimum=0.01, target=""),
    Flag("gpus_per_worker", "--gpus-per-worker", float, "With --ray: GPUs each worker reserves (default: 1 when the "
         "cluster has GPUs and --device is not cpu; 0.5 puts two workers on each GPU).", "gpus_per_worker", "N",
         minimum=0, target=""),
)

MAP_HELP = ("Also draw what the cache kept into this PNG file: video time across, layers up, the share of "
            "visual tokens kept as colour.")


def map_option() -> Any:
    """`--map FILE`, the same on every command that has a cache to draw."""
    return typer.Option("--map", metavar="PNG", help=MAP_HELP, show_default=False)


FLAG_OF: dict[str, str] = {flag.setting: flag.option for flag in (*STREAM_FLAGS, *ANSWER_FLAGS, *RAY_FLAGS)
                            if flag.setting}
_BACKTICKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")
_ABOUT_A_PRESET = re.compile(r"\S+\.ya?ml:")


def flagged(message: str) -> str:
    """A library message with each backticked setting that has a flag written as that flag.

    A message about a preset file ("p.yaml: `budget` ...") keeps the key as the file spells it.
    """
    if _ABOUT_A_PRESET.match(message):
        return message
    return _BACKTICKED.sub(lambda found: FLAG_OF.get(found.group(1), found.group(0)), message)


@dataclass(frozen=True)
class FlagGroup:
    """Flags added together, handed to the command as one dataclass in parameter `param`."""

    param: str
    flags: tuple[Flag, ...]
    values: type = field(init=False)

    def __post_init__(self) -> None:
        spec = [(flag.name, Any, flag.default) for flag in self.flags]
        object.__setattr__(self, "values", make_dataclass(self.param.title() + "Flags", spec, frozen=True))


STREAM = FlagGroup("stream", STREAM_FLAGS)
ANSWER = FlagGroup("answer", ANSWER_FLAGS)
RAY = FlagGroup("ray", RAY_FLAGS)  # eval's --ray and its workers (infinipot.eval_ray.RayOptions)


def _parameter(flag: Flag) -> inspect.Parameter:
    option = typer.Option(flag.option, help=flag.help, metavar=flag.metavar, show_default=False,
                          min=flag.minimum, callback=flag.parse)
    kind = flag.kind if flag.default is not None else flag.kind | None
    return inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, default=flag.default,
                             annotation=Annotated[kind, option])


def with_flags(*groups: FlagGroup) -> Callable[[Callable], Callable]:
    """Give a command the flags of `groups`; it receives each group as one dataclass (`stream=`, `answer=`)."""

    def decorate(command: Callable) -> Callable:
        return add_parameters(command, [flag for group in groups for flag in group.flags],
                              lambda values: {group.param: group.values(**{flag.name: values[flag.name]
                                                                            for flag in group.flags})
                                              for group in groups},
                              drop={group.param for group in groups})

    return decorate


def add_parameters(command: Callable, flags: list[Flag], collect: Callable[[dict], dict],
                   drop: set[str] = frozenset()) -> Callable:
    """`command` with `flags` added to its signature; `collect` turns their values into its arguments."""
    signature = inspect.signature(command, eval_str=True)
    kept = [param for name, param in signature.parameters.items() if name not in drop]
    added = [_parameter(flag) for flag in flags]
    names = {flag.name for flag in flags}

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
        return command(**kwargs, **collect(values))

    wrapper.__signature__ = signature.replace(parameters=[*kept, *added])
    wrapper.__annotations__ = {param.name: param.annotation for param in [*kept, *added]}
    return wrapper


def given(group: FlagGroup, values: Any) -> dict[str, Any]:
    """The flags of `group` set to something other than their default, by parameter name."""
    return {flag.name: getattr(values, flag.name) for flag in group.flags
            if getattr(values, flag.name) not in (flag.default, None, [], ())}
