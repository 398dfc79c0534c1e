"""The fault table of issue 10: every fault class tried on the CLI, the command, the exit code and the line printed.

    python bench/fault_table.py [--out docs/fault-table.md]

Each fault runs `python -m infinipot_cli ...` in a scratch folder with the tiny preset (no
network, no GPU) and is judged on what a user sees: the exit code expected, no traceback, at
most one `error:` line and nothing else on stderr but `warning:` lines, every input of the run
unchanged, and no temporary or half-written file left behind. The cases are in
bench/fault_cases.py; the full-disk case needs root (a 64 KiB tmpfs) and says so when it is
skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_cases import CASES, Fault, make_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    fault: Fault
    code: int | None
    stderr: str
    problems: list[str] = field(default_factory=list)

    @property
    def shown(self) -> str:
        """The line the user reads: the error or, for a clean success, the last warning or stdout line."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:") or line == "interrupted"]
        return (errors or lines or ["(nothing)"])[-1][:160]


def digests(folder: Path) -> dict[str, str]:
    """Content of every regular file in the scratch folder (the run's inputs), by name."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_fault(fault: Fault, folder: Path, env: dict) -> Outcome:
    command = [sys.executable, "-m", "infinipot_cli", *fault.args]
    before = digests(folder)
    process = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.PIPE if fault.stdin else subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    early, shown = b"", b""
    if fault.stdin_after is not None:  # a conversation: the first line now, the rest after the signal
        process.stdin.write(fault.stdin.encode())
        process.stdin.flush()
    if fault.signal is not None:
        if fault.on_progress:  # plain progress lines (stderr is no terminal): streaming has begun
            while (line := process.stderr.readline()) and b"frames" not in line:
                early += line
            early += line
        elif fault.on_output is not None:
            shown = wait_for_output(process, fault.on_output, fault.timeout)
        else:
            time.sleep(fault.signal_after)
        process.send_signal(fault.signal)
    if fault.stdin_after is not None:
        time.sleep(0.5)  # the answer stops and the prompt returns before the next line
        process.stdin.write(fault.stdin_after.encode())
        process.stdin.close()
        process.stdin = None  # communicate() below must not flush it again
    try:
        if fault.read_one_line:  # `| head -1`: the reader leaves after one line
            process.stdout.readline()
            process.stdout.close()
            stdout, stderr = b"", process.stderr.read()
            process.wait(fault.timeout)
        else:
            given = fault.stdin.encode() if fault.stdin and fault.stdin_after is None else None
            stdout, stderr = process.communicate(given, timeout=fault.timeout)
            stdout = shown + stdout
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        code = None
    outcome = Outcome(fault, code, (early + stderr).decode(errors="replace"))
    judge(outcome, before, digests(folder), stdout.decode(errors="replace"), folder)
    return outcome


def wait_for_output(process: subprocess.Popen, marker: bytes, timeout: float) -> bytes:
    """Read stdout as it comes (an answer is written without a newline) until `marker` shows."""
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 0.1)[0]:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    return seen


def judge(outcome: Outcome, before: dict, after: dict, stdout: str, folder: Path) -> None:
    fault, problems = outcome.fault, outcome.problems
    if outcome.code is None:
        problems.append(f"still running after {fault.timeout} s")
    elif outcome.code not in fault.codes:
        problems.append(f"exit {outcome.code}, expected {'/'.join(map(str, fault.codes))}")
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    if "Traceback" in outcome.stderr:
        problems.append("traceback")
    if sum(line.startswith("error:") for line in lines) > 1:
        problems.append("more than one error line")
    stray = [line for line in lines if not line.startswith(("error:", "warning:", "interrupted", "answered", "skipped"))]
    if stray and fault.quiet_stderr:
        problems.append(f"{len(stray)} other stderr lines, e.g. {stray[0][:60]!r}")
    changed = [name for name, digest in before.items() if after.get(name, digest) != digest and name not in fault.may_change]
    if changed:
        problems.append(f"input changed: {', '.join(changed)}")
    leftovers = [name for name in after if name not in before and (".tmp" in name or name in fault.must_not_exist)]
    if leftovers:
        problems.append(f"left on disk: {', '.join(leftovers)}")
    for fragment in fault.expect:
        if fragment not in outcome.stderr + stdout:
            problems.append(f"does not say {fragment!r}")
    for extra in after.keys() - before.keys():  # outputs a case creates are removed so the next case starts clean
        (folder / extra).unlink(missing_ok=True)


def table(outcomes: list[Outcome]) -> str:
    rows = ["| # | fault class | command | exit | line printed | verdict |", "|---|---|---|---|---|---|"]
    for number, outcome in enumerate(outcomes, 1):
        command = "infinipot " + " ".join(outcome.fault.shown_args)
        verdict = "clean" if not outcome.problems else "FAIL: " + "; ".join(outcome.problems)
        cells = [str(number), outcome.fault.name, f"`{command}`", str(outcome.code), f"`{outcome.shown}`", verdict]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def wanted(fault: Fault, only: str | None) -> bool:
    if only and only not in fault.name:
        return False
    if fault.needs_root and os.geteuid() != 0:
        print(f"skipped (needs root): {fault.name}", file=sys.stderr)
        return False
    return True


def run_and_say(fault: Fault, folder: Path, env: dict) -> Outcome:
    outcome = run_fault(fault, folder, env)
    print(f"{'ok  ' if not outcome.problems else 'FAIL'} {outcome.code!s:>4} {fault.name}: {outcome.shown}",
          file=sys.stderr, flush=True)
    return outcome


def document(text: str, count: int, failed: int) -> str:
    """The table as docs/fault-table.md: how it was made, what "clean" means, then the rows."""
    from datetime import date

    return (
        "# Fault table\n\n"
        f"Made by `python bench/fault_table.py --out docs/fault-table.md` on {date.today().isoformat()}: "
        f"{count} fault classes, {count - failed} clean, {failed} failed. Each row ran "
        "`python -m infinipot_cli` (shown as `infinipot`) with the tiny preset in a scratch folder; clean means "
        "the expected exit code, no traceback, at most one `error:` line and otherwise only `warning:` lines on "
        "stderr, every input unchanged, and no temporary or half-written file left. The line shown is the "
        "error (or, for a run that succeeds, its last stderr line), cut at 160 characters.\n\n" + text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Also write the table (markdown) here.")
    parser.add_argument("--only", help="Run only the faults whose name contains this.")
    options = parser.parse_args()
    if shutil.which("ffmpeg") is None:  # it makes the audio-only and odd-sized inputs and serves nothing live
        parser.exit(1, "the fault table needs the ffmpeg binary: apt-get install ffmpeg\n")
    with tempfile.TemporaryDirectory(prefix="infinipot-faults-") as scratch:
        folder = Path(scratch) / "run"
        env = {**os.environ, "INFINIPOT_CACHE": str(Path(scratch) / "models"), "HF_HUB_OFFLINE": "1",
               "COLUMNS": "80", "PYTHONPATH": str(ROOT)}
        try:
            make_inputs(folder, env)
            outcomes = [run_and_say(fault, folder, env) for fault in CASES if wanted(fault, options.only)]
        finally:  # the full-disk tmpfs must go, or the scratch folder cannot be removed
            if (folder / "full").is_mount():
                subprocess.run(["umount", str(folder / "full")], check=False)
    text = table(outcomes)
    print(text)
    failed = sum(bool(outcome.problems) for outcome in outcomes)
    print(f"{len(outcomes)} fault classes: {len(outcomes) - failed} clean, {failed} failed")
    if options.out:
        options.out.write_text(document(text, len(outcomes), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
