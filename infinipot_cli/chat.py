"""`infinipot chat VIDEO|CACHE`: a conversation about one video; earlier turns stay in context.

Ctrl-C while an answer is being generated stops it (the turn is dropped) and returns to the
prompt; Ctrl-C again at the prompt, or Ctrl-D, leaves, saying how `/save` keeps the conversation.
SIGTERM and SIGHUP end the chat like any command ("interrupted").
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from infinipot.errors import InfinipotError

from infinipot_cli import console
from infinipot_cli.display import StreamDisplay
from infinipot_cli.flags import ANSWER, STREAM, flagged, with_flags
from infinipot_cli.opening import (
    Inputs, Source, Warnings, closed_on_error, closing, load_cache, open_video, run_inputs,
)
from infinipot_cli.render import format_bytes, format_seconds
from infinipot_cli.signals import by_user

PROMPT = "you> "
HELP = ("/reset forgets the conversation (back to the video alone), /save FILE writes the current cache, "
        "/exit ends (so does Ctrl-D)")


@dataclass
class Chat:
    session: Any
    inputs: Inputs
    answer: Any
    saved_turns: int = 0  # turns in the last file /save wrote (or the cache it started from)
    interrupted: bool = False  # the last thing was a Ctrl-C: one more at the prompt leaves

    @property
    def unsaved(self) -> int:
        return len(self.session.state.turns) - self.saved_turns if self.session.state.turns else 0


@with_flags(STREAM, ANSWER)
def chat_command(
    source: Annotated[str, typer.Argument(
        metavar="VIDEO|CACHE", help="Video file or stream to stream, or a cache written by `infinipot compress`.",
        show_default=False)],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display while streaming.")] = False,
    *, stream: Any, answer: Any,
) -> None:
    """Ask questions about VIDEO or CACHE one after another; each answer sees the earlier turns."""
    origin = Source.of(source)
    inputs = run_inputs(origin, stream)
    with StreamDisplay(not quiet) as display:
        session = load_cache(origin, stream, display) if origin.is_cache else open_video(origin, stream, display)
        with closed_on_error(session):
            if not origin.is_cache:
                warnings = Warnings()
                warnings.report(session)
                session.stream(on_event=display)
                warnings.report(session)
    with closing(session):
        _converse(Chat(session, inputs, answer, saved_turns=len(session.state.turns)), origin)


def _converse(chat: Chat, origin: Source) -> None:
    from infinipot.generation import check_sampling

    check_sampling(chat.answer.max_new_tokens, chat.answer.temperature)
    session = chat.session
    console.note(f"chatting about {origin.name}: {format_seconds(session.state.stats.video_seconds)} of video, "
                 f"{session.cache.visual_tokens:,} visual tokens cached. {HELP}.")
    if session.state.turns:
        console.note(f"resuming the {len(session.state.turns)} earlier turns saved in the cache")
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  line editing and history for input()
    while (line := _read_line(chat)) is not None:
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not _command(line, chat):
                    break
                continue
            _turn(chat, line)
        except InfinipotError as error:
            console.error_line(flagged(str(error)))
    if chat.unsaved:
        console.note(f"left without saving the last {chat.unsaved} turn(s); /save FILE before leaving keeps a "
                     "conversation, and `infinipot chat FILE` resumes it")


def _read_line(chat: Chat) -> str | None:
    """The next line typed, stripped; None to leave (Ctrl-D, or a second Ctrl-C in a row)."""
    while True:
        try:
            line = input(PROMPT).strip()
        except EOFError:
            console.out().print()
            return None
        except KeyboardInterrupt as error:
            if not by_user(error) or chat.interrupted:
                console.out().print()
                if not by_user(error):
                    raise
                return None
            chat.interrupted = True
            console.out().print()
            console.note("(Ctrl-C again or Ctrl-D leaves; /save FILE keeps the conversation)")
            continue
        chat.interrupted = False
        return line


def _turn(chat: Chat, question: str) -> None:
    out = console.out()
    out.print("[bold]A:[/bold] ", end="")
    options = {"max_new_tokens": chat.answer.max_new_tokens, "temperature": chat.answer.temperature,
               "seed": chat.answer.seed, "evidence": chat.answer.evidence}
    try:
        answer = chat.session.chat(question, **options,
                                   on_text=lambda piece: out.print(piece, end="", markup=False))
    except KeyboardInterrupt as error:  # the turn is dropped from the cache; the conversation goes on
        if not by_user(error):
            raise
        out.print()
        chat.interrupted = True
        console.note("interrupted: this answer was dropped (Ctrl-C again at the prompt leaves)")
        return
    out.print()
    if answer.evidence is not None:
        from infinipot_cli.render import evidence_block

        out.print(evidence_block(answer.evidence.as_dict(), chat.session.moment()), soft_wrap=True, markup=False)


def _command(line: str, chat: Chat) -> bool:
    """Run a /command; False when the chat should end."""
    name, _, argument = line.partition(" ")
    argument = argument.strip()
    session = chat.session
    if name in ("/exit", "/quit"):
        return False
    if name == "/help":
        console.note(HELP)
    elif name == "/reset":
        forgotten = len(session.state.turns)
        session.reset()
        chat.saved_turns = 0
        console.note(f"back to the video alone ({forgotten} turns forgotten)")
    elif name == "/save":
        if not argument:
            raise InfinipotError("/save needs a file name: /save movie.ipv")
        path = Path(argument).expanduser()
        chat.inputs.check_output(path, "/save")
        size = session.save(path)
        chat.saved_turns = len(session.state.turns)
        console.note(f"saved {argument} ({format_bytes(size)}, {len(session.state.turns)} turns)")
    else:
        raise InfinipotError(f"unknown command {name}: {HELP}")
    return True
