"""The `infinipot` process as a shell sees it: what it imports, signals, and a reader that leaves early."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import TINY_CLI, invoke_json, run_infinipot

HEAVY = ("torch", "transformers", "av")
REPORT_IMPORTS = """
import sys
from infinipot_cli.app import main
sys.argv = ["infinipot", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code
print("heavy:", ",".join(name for name in {heavy!r} if name in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def heavy_imports(*args) -> tuple[int, str, str]:
    """Run the CLI in a fresh interpreter: (exit code, stdout, the heavy modules it imported)."""
    done = subprocess.run([sys.executable, "-c", REPORT_IMPORTS.format(heavy=HEAVY), *map(str, args)],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr.strip().splitlines()[-1].removeprefix("heavy:").strip()


@pytest.fixture(scope="module")
def cache(short_video, tmp_path_factory):
    path = tmp_path_factory.mktemp("process") / "short.ipv"
    invoke_json("compress", short_video, "-o", path, *TINY_CLI)
    return path


@pytest.mark.parametrize("args, code", [(("--help",), 0), (("ask", "x.mp4", "--fps", "abc"), 2),
                                        (("ask", "x.mp4", "What?", "--bogus"), 2), (("info", "--help"), 0)])
def test_help_and_usage_errors_import_nothing_heavy(args, code):
    returned, _, heavy = heavy_imports(*args)
    assert (returned, heavy) == (code, "")


def test_info_reads_a_cache_without_torch(cache):
    returned, stdout, heavy = heavy_imports("info", cache, "--json")
    assert returned == 0 and '"frames": 20' in stdout and heavy == ""


@pytest.mark.parametrize("args", [("presets", "--json"), ("info", "CACHE", "--json")])
def test_a_closed_pipe_ends_quietly(args, cache):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written (`| head` that already quit)
    try:
        process = run_infinipot(*(cache if arg == "CACHE" else arg for arg in args), stdout=write,
                                stderr=subprocess.PIPE)
    finally:
        os.close(write)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in (0, 141) and stderr == b""


def test_ctrl_c_while_importing_is_one_line(short_video):
    process = run_infinipot("ask", short_video, "What?", "--preset", "tiny", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    time.sleep(0.4)  # torch and transformers are still being imported
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and stderr == b"interrupted\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_end_like_ctrl_c_and_leave_no_file(signum, long_video, tmp_path):
    target = tmp_path / "long.ipv"
    process = run_infinipot("compress", long_video, "-o", target, "--preset", "tiny", "--device", "cpu",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in process.stderr:  # wait until frames are streaming
        if b" frames" in line:
            break
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr.decode()[-2000:]
    assert stderr.decode().strip().splitlines()[-1] == "interrupted" and b"Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []
