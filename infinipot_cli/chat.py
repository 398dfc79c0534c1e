"""`infinipot chat VIDEO|CACHE`: a conversation about one video; earlier turns stay in context."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from infinipot.cache_file import save_session
from infinipot.errors import InfinipotError
from infinipot_cli.app import Debug, app, err, handles_errors, out
from infinipot_cli.render import format_bytes, format_seconds
from infinipot_cli.source import (
    BudgetOption, DeviceOption, EndOption, FpsOption, KeepRatioOption, MaxFramesOption, MaxNewTokensOption, Opened,
    PolicyOption, PoolingOption, PositionsOption, PresetOption, RecentOption, SeedOption, StartOption,
    TarRatioOption, TemperatureOption, open_source, stream_options,
)

PROMPT = "you> "
HELP = ("/reset forgets the conversation (back to the video alone), /save FILE writes the current cache, "
        "/exit ends (so does Ctrl-D)")


@app.command("chat")
@handles_errors
def chat_command(
    source: Annotated[Path, typer.Argument(
        metavar="VIDEO|CACHE", help="Video file to stream or a cache written by `infinipot compress`.",
        show_default=False)],
    preset: PresetOption = None,
    budget: BudgetOption = None,
    policy: PolicyOption = None,
    keep_ratio: KeepRatioOption = None,
    recent: RecentOption = None,
    tar_ratio: TarRatioOption = None,
    pooling: PoolingOption = None,
    fps: FpsOption = None,
    start: StartOption = None,
    end: EndOption = None,
    max_frames: MaxFramesOption = None,
    positions: PositionsOption = None,
    device: DeviceOption = "auto",
    max_new_tokens: MaxNewTokensOption = 256,
    temperature: TemperatureOption = 0.0,
    seed: SeedOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display while streaming.")] = False,
    debug: Debug = False,
) -> None:
    """Ask questions about VIDEO or CACHE one after another; each answer sees the earlier turns."""
    if max_new_tokens <= 0:
        raise InfinipotError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    options = stream_options(source, preset, budget=budget, policy=policy, keep_ratio=keep_ratio, recent=recent,
                             tar_ratio=tar_ratio, pooling=pooling, fps=fps, start=start, end=end,
                             max_frames=max_frames, positions=positions, device=device)
    opened = open_source(options, preset_given=preset is not None, show=not quiet)
    stats = opened.session.stats
    err.print(f"chatting about {source.name}: {format_seconds(stats.video_seconds)} of video, "
              f"{opened.session.cache.visual_tokens:,} visual tokens cached. {HELP}.", highlight=False)
    if opened.session.turns:
        err.print(f"resuming the {len(opened.session.turns)} earlier turns saved in the cache", highlight=False)
    ask_options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  line editing and history for input()
    while (line := _read_line()) is not None:
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not _command(line, opened):
                    break
                continue
            _turn(opened, line, ask_options)
        except InfinipotError as error:
            err.print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)


def _read_line() -> str | None:
    """The next line typed, stripped; None at end of input or Ctrl-C at the prompt."""
    try:
        return input(PROMPT).strip()
    except (EOFError, KeyboardInterrupt):
        out.print()
        return None


def _turn(opened: Opened, question: str, ask_options: dict) -> None:
    out.print("[bold]A:[/bold] ", end="")
    try:
        opened.session.chat(question, **ask_options,
                            on_text=lambda piece: out.print(piece, end="", markup=False, highlight=False))
    except KeyboardInterrupt:  # the turn is dropped from the cache; the conversation goes on
        out.print()
        err.print("[yellow]interrupted: this turn was dropped[/yellow]")
        return
    out.print()


def _command(line: str, opened: Opened) -> bool:
    """Run a /command; False when the chat should end."""
    name, _, argument = line.partition(" ")
    argument = argument.strip()
    session = opened.session
    if name in ("/exit", "/quit"):
        return False
    if name == "/help":
        err.print(HELP, highlight=False)
    elif name == "/reset":
        forgotten = len(session.turns)
        session.reset()
        err.print(f"back to the video alone ({forgotten} turns forgotten)", highlight=False)
    elif name == "/save":
        if not argument:
            raise InfinipotError("/save needs a file name: /save movie.ipv")
        size = save_session(session, Path(argument).expanduser(), opened.provenance)
        err.print(f"saved {argument} ({format_bytes(size)}, {len(session.turns)} turns)", highlight=False)
    else:
        raise InfinipotError(f"unknown command {name}: {HELP}")
    return True
