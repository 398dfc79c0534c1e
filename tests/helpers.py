"""Helpers shared by the test files: frames, sessions on the shared tiny models, the CLI, assertions."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from typer.testing import CliRunner

from infinipot.families import FAMILIES
from infinipot.session import Session

ALL_FAMILIES = list(FAMILIES)
QWEN_FAMILIES = [name for name in ALL_FAMILIES if name.startswith("qwen")]
LLAVA_FAMILIES = [name for name in ALL_FAMILIES if name.startswith("llava")]
TOKENS_PER_STEP = {"qwen2_5_vl": 12, "qwen2_vl": 12, "qwen3_vl": 12, "llava_onevision": 9,  # visual, at 84x112
                   "llava_next_video": 16}


def frames(count: int, seed: int = 0, height: int = 84, width: int = 112) -> np.ndarray:
    """Random uint8 RGB frames `[count, height, width, 3]`."""
    return np.random.RandomState(seed).randint(0, 256, (count, height, width, 3), dtype=np.uint8)


def session(models, family: str = "qwen2_5_vl", **settings) -> Session:
    """A session on the shared tiny model of `family`, with settings overridden by keyword."""
    model = models(family)
    return Session.from_preset(FAMILIES[family].tiny_preset, model=model, **settings)


def streamed(models, family: str = "qwen2_5_vl", count: int = 24, seed: int = 0, **settings) -> Session:
    """A session that has been fed `count` random frames (1 fps) and finished."""
    settings = {"policy": "infinipot", "budget": 96, "chunk_frames": 8, **settings}
    result = session(models, family, **settings)
    result.feed(frames(count, seed))
    result.finish()
    return result


def invoke(*args, env: dict | None = None, input: str | None = None):
    """Run the CLI in-process with a fixed, wide terminal (tests must not depend on the caller's)."""
    from infinipot_cli.app import app

    return CliRunner().invoke(app, [str(arg) for arg in args], env={"COLUMNS": "200", **(env or {})}, input=input)


def assert_one_line_error(result, *fragments: str) -> None:
    """A CLI failure as users must see it: non-zero exit, one `error:` line, no traceback."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def until_eos(token_ids: list[int], eos: set[int]) -> list[int]:
    """The generated ids before the first stop token."""
    return token_ids[: next((i for i, token in enumerate(token_ids) if token in eos), len(token_ids))]


# --- the CLI (added for the CLI tests) ----------------------------------------------------------
TINY_CLI = ("--preset", "tiny", "--budget", "96", "--device", "cpu")  # the 20-s video then compresses once


def invoke_json(*args, env: dict | None = None, input: str | None = None) -> dict:
    """Run the CLI with --json and return the parsed object (failing the test on a non-zero exit)."""
    import json

    result = invoke(*args, "--json", env=env, input=input)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run_infinipot(*args, **popen) -> "subprocess.Popen":
    """Start the installed `infinipot` entry point in a child process (signals, pipes, imports)."""
    import subprocess
    import sys

    code = "import sys; from infinipot_cli.app import main; sys.argv[0] = 'infinipot'; main()"
    return subprocess.Popen([sys.executable, "-c", code, *[str(arg) for arg in args]], **popen)


def every_frame(path: Path) -> list[np.ndarray]:
    """Reference: all frames of `path` decoded plainly by PyAV, in order, as RGB."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def bright_tile(frame: np.ndarray, side: int) -> tuple[int, int]:
    """(top, left) of the brightest side x side tile: where the white square is."""
    h, w = frame.shape[0] // side * side, frame.shape[1] // side * side
    tiles = frame[:h, :w].astype(np.int64).sum(-1).reshape(h // side, side, w // side, side).mean((1, 3))
    row, col = np.unravel_index(np.argmax(tiles), tiles.shape)
    return int(row) * side, int(col) * side
