"""How long the `infinipot` command takes to answer when it needs no model (issue 11's 0.5 s target).

Runs the installed entry point in fresh processes, several times each, and prints the median and
the spread (min-max) of the wall time for `infinipot --help` and a usage error, against the target,
with the machine's load average (other processes slow a 2-core machine down). `--more` also times
commands that need the library's heavy parts today, for comparison.

    python bench/cli_startup.py [--runs 9] [--more]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

TARGET_S = 0.5
CASES = {
    "infinipot --help": ["--help"],
    "usage error (ask --fps abc)": ["ask", "movie.mp4", "What?", "--fps", "abc"],
}
MORE = {
    "infinipot ask --help": ["ask", "--help"],
    "infinipot presets --json": ["presets", "--json"],
}


def command() -> list[str]:
    """The installed entry point, or the module when it is not installed as a script."""
    found = shutil.which("infinipot")
    return [found] if found else [sys.executable, "-m", "infinipot_cli.app"]


def timed(args: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*command(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--more", action="store_true", help="also time commands that import torch today")
    options = parser.parse_args()
    cases = {**CASES, **(MORE if options.more else {})}
    timed(["--help"], 1)  # warm the file cache: the first run reads every .pyc from disk
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"{options.runs} runs each, {os.cpu_count()} CPUs, load average {load}; target {TARGET_S} s")
    print(f"{'command':32} {'median s':>9} {'min s':>7} {'max s':>7} {'median/target':>14}")
    for name, args in cases.items():
        times = timed(args, options.runs)
        median = statistics.median(times)
        print(f"{name:32} {median:9.3f} {min(times):7.3f} {max(times):7.3f} {median / TARGET_S:14.2f}")


if __name__ == "__main__":
    main()
