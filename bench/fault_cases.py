"""The fault classes bench/fault_table.py runs, and the inputs they need (made in a scratch folder).

Names are relative to that folder, which is also the command's working directory, so the table
shows commands a reader can type. Every case uses the tiny preset; none needs the network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TINY = ("--preset", "tiny", "--device", "cpu")


@dataclass(frozen=True)
class Fault:
    name: str
    args: tuple[str, ...]
    codes: tuple[int, ...] = (1,)
    expect: tuple[str, ...] = ()  # fragments the output must contain
    stdin: str | None = None
    signal: int | None = None
    signal_after: float = 0.0
    on_progress: bool = False  # send the signal at the first progress line (streaming has begun)
    on_output: bytes | None = None  # ...or once stdout shows this (an answer being written)
    stdin_after: str | None = None  # written to stdin after the signal, then stdin is closed
    read_one_line: bool = False  # close stdout after one line (`| head -1`)
    timeout: float = 180
    may_change: tuple[str, ...] = ()  # inputs the case is meant to change (a resumed results file)
    must_not_exist: tuple[str, ...] = ()  # outputs a refused run must not leave
    quiet_stderr: bool = True  # stderr holds only error:/warning: lines (the runs use -q where there is one)
    needs_root: bool = False

    @property
    def shown_args(self) -> tuple[str, ...]:
        return tuple(arg for arg in self.args if arg not in ("--device", "cpu")) + (
            ("| head -1",) if self.read_one_line else ())


def ask(*args: str, **fields) -> Fault:
    name = fields.pop("name")
    return Fault(name, ("ask", *args, *TINY, "-q"), **fields)


def video_faults() -> list[Fault]:
    q = "What happened?"
    return [
        ask("missing.mp4", q, name="missing video", expect=("not found",)),
        ask("empty.mp4", q, name="empty video (0 bytes)", expect=("empty",)),
        ask("trunc.mp4", q, name="truncated video"),
        ask("text.mp4", q, name="text file named .mp4"),
        ask("audio.m4a", q, name="audio-only file", expect=("no video stream",)),
        ask("odd.mp4", q, name="odd-sized video (33x17) answers", codes=(0,)),
        ask("vfr.mp4", q, "--json", name="variable-frame-rate video answers (sampled by time)", codes=(0,),
            expect=('"frames": 8',)),
        ask("folder.mp4", q, name="directory as video", expect=("directory",)),
        ask("fifo.mp4", q, name="FIFO as video", expect=("FIFO",), timeout=60),
        ask("https://example.com/v.mp4", q, name="URL as video", expect=("https://example.com/v.mp4",)),
        ask("damaged.mp4", q, name="video damaged in the middle answers from the rest", codes=(0,),
            expect=("skipped",)),
        ask("short.mp4", q, "--fps", "30", name="--fps above the video's rate warns", codes=(0,),
            expect=("warning:",)),
        ask("short.mp4", q, "--end", "99:00", name="window past the end of the video"),
    ]


def flag_faults() -> list[Fault]:
    q, v = "What happened?", "short.mp4"
    return [
        ask(v, q, "--keep-ratio", "1", name="--keep-ratio 1 (no room left for new frames)", codes=(1, 2),
            expect=("(0, 1)",)),
        ask(v, q, "--keep-ratio", "0", name="--keep-ratio 0", codes=(1, 2)),
        ask(v, q, "--budget", "10", name="budget below the true minimum", expect=("at least",)),
        ask(v, q, "--budget", "1e24", name="--budget 1e24"),
        ask(v, q, "--fps", "abc", name="--fps abc (usage error)", codes=(2,)),
        ask(v, q, "--fps", "inf", name="--fps inf", codes=(1, 2)),
        ask(v, q, "--fps", "0", name="--fps 0", codes=(1, 2)),
        ask(v, q, "--temperature", "-1", name="--temperature -1", codes=(1, 2)),
        ask(v, q, "--temperature", "nan", name="--temperature nan", codes=(1, 2)),
        ask(v, q, "--max-frames", "0", name="--max-frames 0", codes=(1, 2), expect=("--max-frames",)),
        ask(v, q, "--max-new-tokens", "1000000000", name="--max-new-tokens beyond the window",
            codes=(1, 2)),
        ask(v, q, "--positions", "bogus", name="--positions bogus names the flag", codes=(1, 2),
            expect=("--positions",)),
        ask(v, q, "--policy", "bogus", name="unknown policy", codes=(1, 2)),
        ask(v, q, "--set", "cv_thresholds=[a,b,c]", name="--set with a malformed value"),
        ask(v, q, "--set", "nonsense=1", name="--set an unknown setting", expect=("unknown setting",)),
        ask(v, q, "--bogus", name="unknown option", codes=(2,)),
        Fault("unknown command", ("frobnicate",), codes=(2,)),
        Fault("ask with no question", ("ask", v, *TINY, "-q"), codes=(1, 2)),
    ]


def preset_faults() -> list[Fault]:
    q, v = "What happened?", "short.mp4"
    return [
        Fault("unknown preset", ("ask", v, q, "--preset", "nonesuch", "-q"), expect=("nonesuch",)),
        Fault("preset YAML syntax error", ("ask", v, q, "--preset", "broken.yaml", "-q")),
        Fault("preset with a !!python tag", ("ask", v, q, "--preset", "python.yaml", "-q")),
        Fault("preset with YAML anchors (billion laughs)", ("ask", v, q, "--preset", "laughs.yaml", "-q")),
        Fault("preset in latin-1", ("ask", v, q, "--preset", "latin1.yaml", "-q")),
        Fault("preset setting of the wrong type", ("ask", v, q, "--preset", "wrongtype.yaml", "-q")),
        Fault("preset building on a shipped one (base: tiny) runs", ("ask", v, q, "--preset", "based.yaml", "-q"),
              codes=(0,)),
        Fault("--model folder that does not exist", ("ask", v, q, "--model", "/nonexistent/dir", "-q"),
              expect=("not found",)),
        Fault("hub preset with no network", ("ask", v, q, "--preset", "qwen2.5-vl-7b", "-q")),
        Fault("directory as preset", ("ask", v, q, "--preset", "folder.yaml", "-q"), expect=("directory",)),
        Fault("FIFO as preset", ("ask", v, q, "--preset", "fifo.yaml", "-q"), timeout=60,
              expect=("not a regular file",)),
    ]


def question_faults() -> list[Fault]:
    v = "short.mp4"
    return [
        ask(v, "--questions", "nofile.txt", name="question file missing", expect=("not found",)),
        ask(v, "--questions", "empty.txt", name="question file empty"),
        ask(v, "--questions", "badline.jsonl", name="bad JSON line skipped, rest answered", codes=(0,),
            expect=("warning:",)),
        ask(v, "--questions", "utf16.txt", name="UTF-16 question file", codes=(0, 1)),
        ask(v, "--questions", "deep.jsonl", name="200,000-deep JSON line skipped", codes=(0,),
            expect=("warning:",)),
        ask(v, "--questions", "laughs.yaml", name="question file with YAML anchors"),
        ask(v, "--questions", "huge.txt", "-o", "huge.jsonl", name="100 KB question refused by id, rest answered",
            codes=(1,), expect=("not answered",)),
        ask(v, "--questions", "fifo.txt", name="FIFO as question file", timeout=60,
            expect=("not a regular file",)),
        ask(v, "--questions", "folder.txt", name="directory as question file", expect=("directory",)),
    ]


def output_faults() -> list[Fault]:
    q, v = "What happened?", "short.mp4"
    return [
        ask(v, q, "-o", "short.mp4", name="ask -o onto the input video", expect=("JSON lines",)),
        ask(v, "--questions", "questions.jsonl", "-o", "questions.jsonl", name="ask -o onto the question file",
            expect=("inputs",)),
        Fault("compress -o onto the input video", ("compress", v, "-o", v, *TINY, "-q")),
        ask(v, "--questions", "questions.txt", "--save-cache", "questions.txt",
            name="--save-cache onto the question file"),
        Fault("-o onto the preset YAML", ("ask", v, q, "--preset", "based.yaml", "-o", "based.yaml", "-q")),
        Fault("chat /save onto the source video", ("chat", v, *TINY, "-q"), stdin="/save short.mp4\n/exit\n",
              codes=(0,), expect=("input",), quiet_stderr=False),
        ask(v, q, "-o", "nofolder/out.jsonl", name="-o into a missing folder"),
        ask(v, q, "-o", "/sys/out.jsonl", name="-o onto a read-only file system"),
        ask(v, q, "-o", "out.csv", name="-o with another format's extension", expect=(".csv",)),
        Fault("compress -o /dev/full", ("compress", v, "-o", "/dev/full", *TINY, "-q"),
              expect=("not a regular file",)),
        Fault("compress -o a FIFO", ("compress", v, "-o", "fifo.ipv", *TINY, "-q"), expect=("not a regular file",)),
        ask(v, q, "-o", "n" * 245 + ".jsonl", name="-o with a 251-byte name runs", codes=(0,)),
        ask(v, "--questions", "questions.txt", "-o", "done.jsonl", name="-o onto earlier results resumes",
            codes=(0,), may_change=("done.jsonl",), expect=("already holds 1 of these 3",), quiet_stderr=False),
        Fault("compress onto an existing cache replaces it", ("compress", v, "-o", "old.ipv", *TINY, "-q"),
              codes=(0,), may_change=("old.ipv",)),
        ask(v, q, "--map", "map.txt", name="--map with a non-PNG name", expect=("PNG",)),
    ]


def cache_faults() -> list[Fault]:
    q = "What happened?"
    return [
        ask("trunc.ipv", q, name="truncated cache", expect=("damaged",)),
        Fault("cache with one flipped tensor byte (info --verify)", ("info", "flipped.ipv", "--verify"),
              expect=("checksum",)),
        ask("flipped.ipv", q, name="cache with one flipped tensor byte (ask)", expect=("checksum",)),
        Fault("dtype edited in the header (F32 -> I32)", ("info", "dtype.ipv", "--verify")),
        Fault("crafted layer count, checksum recomputed", ("info", "layers.ipv", "--verify"), timeout=60),
        ask("types.ipv", q, name="crafted metadata of the wrong types, checksum recomputed", expect=("damaged",)),
        ask("v1.ipv", q, name="cache from infinipot 0.1 (format 1)", expect=("compress the video again",)),
        ask("v3.ipv", q, name="cache from a newer infinipot", expect=("upgrade",)),
        ask("notcache.ipv", q, name="text file named .ipv"),
        Fault("FIFO named .ipv (info)", ("info", "fifo.ipv"), timeout=60, expect=("not a regular file",)),
        Fault("cache of another model family", ("ask", "cache.ipv", q, "--preset", "tiny-qwen2-vl", "-q")),
    ]


def process_faults() -> list[Fault]:
    q = "What happened?"
    return [
        Fault("Ctrl-C while streaming", ("ask", "long.mp4", q, *TINY), codes=(130,), signal=signal.SIGINT,
              on_progress=True, expect=("interrupted",), quiet_stderr=False),
        Fault("SIGTERM during compress", ("compress", "long.mp4", "-o", "term.ipv", *TINY), codes=(143,),
              signal=signal.SIGTERM, on_progress=True, must_not_exist=("term.ipv",), expect=("interrupted",),
              quiet_stderr=False),
        Fault("SIGHUP during compress", ("compress", "long.mp4", "-o", "hup.ipv", *TINY), codes=(129,),
              signal=signal.SIGHUP, on_progress=True, must_not_exist=("hup.ipv",), expect=("interrupted",),
              quiet_stderr=False),
        Fault("Ctrl-C during a chat answer drops it and goes on", ("chat", "short.mp4", *TINY, "-q",
              "--max-new-tokens", "4000"), codes=(0,), stdin="What happened?\n", signal=signal.SIGINT,
              on_output=b"A: ", stdin_after="/exit\n", expect=("this answer was dropped",), quiet_stderr=False),
        ask("short.mp4", q, name="Ctrl-C during the imports", codes=(130,), signal=signal.SIGINT,
            signal_after=0.3, expect=("interrupted",)),
        Fault("presets --json | head -1 (closed pipe)", ("presets", "--json"), codes=(0, 141), read_one_line=True),
        Fault("info --json | head -1 (closed pipe)", ("info", "cache.ipv", "--json"), codes=(0, 141),
              read_one_line=True),
        ask("short.mp4", "--questions", "many.txt", "-o", "full/answers.jsonl", name="full disk during a batch",
            expect=("kept",), needs_root=True),
    ]


def other_faults() -> list[Fault]:
    return [
        Fault("eval with a missing benchmark file", ("eval", "nofile.json", "--videos", ".", "-o", "e.jsonl", *TINY, "-q"),
              expect=("not found",)),
        Fault("eval with an unknown --format", ("eval", "questions.jsonl", "--videos", ".", "--format", "bogus", "-o", "e.jsonl",
                                                 *TINY, "-q"),
              codes=(1, 2)),
        Fault("watch a source that sends nothing", ("watch", "udp://127.0.0.1:23999", "What?", *TINY, "-q",
              "--stall-timeout", "5"), timeout=120),
        Fault("watch --every 0", ("watch", "short.mp4", "What?", "--every", "0", *TINY, "-q"), codes=(1, 2)),
        Fault("compare an unknown policy", ("compare", "short.mp4", "What?", "--policies", "infinipot,bogus", *TINY, "-q"), codes=(1, 2)),
    ]


CASES = [*video_faults(), *flag_faults(), *preset_faults(), *question_faults(), *output_faults(),
         *cache_faults(), *process_faults(), *other_faults()]


def make_inputs(folder: Path, env: dict) -> None:
    """Videos, caches (good, damaged, crafted), question files, presets, FIFOs and folders for the cases."""
    from infinipot.synthetic import damage_video, write_test_video, write_vfr_test_video

    folder.mkdir(parents=True)
    write_test_video(folder / "short.mp4", seconds=20, fps=4)
    write_test_video(folder / "long.mp4", seconds=600, fps=1)
    damage_video(folder / "short.mp4", folder / "damaged.mp4", at=0.5, length=0.1)
    ffmpeg = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi"]
    subprocess.run([*ffmpeg, "-i", "sine=duration=3", str(folder / "audio.m4a")], check=True)
    subprocess.run([*ffmpeg, "-i", "testsrc=size=33x17:rate=4:duration=5", "-c:v", "libx264", "-pix_fmt",
                    "yuv444p", str(folder / "odd.mp4")], check=True)
    subprocess.run([sys.executable, "-m", "infinipot_cli", "compress", "short.mp4", "-o", "cache.ipv", *TINY, "-q"],
                   cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
    write_files(folder)
    write_caches(folder)
    for name in ("fifo.mp4", "fifo.ipv", "fifo.txt", "fifo.yaml"):
        os.mkfifo(folder / name)
    (folder / "folder.mp4").mkdir()
    (folder / "folder.txt").mkdir()
    (folder / "folder.yaml").mkdir()
    # 8 frames over 8 s, bunched at the end: sampled by time at 1 fps, not by frame index
    write_vfr_test_video(folder / "vfr.mp4", [0.0, 4.0, 6.0, 7.0, 7.2, 7.4, 7.6, 7.8])
    (folder / "old.ipv").write_bytes((folder / "cache.ipv").read_bytes())
    subprocess.run([sys.executable, "-m", "infinipot_cli", "ask", "short.mp4", "--questions", "questions.txt", "-o",
                    "done.jsonl", *TINY, "-q", "--max-new-tokens", "2"], cwd=folder, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    first = (folder / "done.jsonl").read_text().splitlines()[0]
    (folder / "done.jsonl").write_text(first + "\n")  # an interrupted earlier run: one of three answered
    if os.geteuid() == 0:
        (folder / "full").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder / "full")], check=True)


def write_files(folder: Path) -> None:
    data = (folder / "short.mp4").read_bytes()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "trunc.mp4").write_bytes(data[:3000])
    (folder / "text.mp4").write_text("not a video\n")
    (folder / "questions.txt").write_text("What happened?\nWhat color is the square?\nWhere does it go?\n")
    (folder / "questions.jsonl").write_text('{"id": "a", "question": "What?"}\n')
    (folder / "many.txt").write_text("".join(f"Question {n}: what happened?\n" for n in range(400)))
    (folder / "empty.txt").write_text("")
    (folder / "badline.jsonl").write_text('{"id": "a", "question": "What?"}\n{"id": "b", "question": \n'
                                          '{"id": "c", "question": "Where?"}\n')
    (folder / "utf16.txt").write_bytes("What happened?\n".encode("utf-16"))
    (folder / "deep.jsonl").write_text('{"id": "a", "question": "What?"}\n' + "[" * 200_000 + "]" * 200_000 + "\n")
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + n)}: &{chr(98 + n)} [*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}]\n"
        for n in range(8))
    (folder / "laughs.yaml").write_text(laughs)
    (folder / "huge.txt").write_text("What " * 20_000 + "?\nWhat happened?\n")
    (folder / "broken.yaml").write_text("model: [unclosed\n")
    (folder / "python.yaml").write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    (folder / "latin1.yaml").write_bytes("base: tiny\ndescription: caf\xe9\n".encode("latin-1"))
    (folder / "wrongtype.yaml").write_text("base: tiny\nbudget: [1, 2]\n")
    (folder / "based.yaml").write_text("base: tiny\nbudget: 300\n")
    (folder / "notcache.ipv").write_text("not a cache\n")


def write_caches(folder: Path) -> None:
    """Damaged and crafted copies of cache.ipv (checksums recomputed where the case says crafted)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from infinipot.fingerprints import sha256_hex

    data = (folder / "cache.ipv").read_bytes()
    (folder / "trunc.ipv").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[-3] ^= 0x10
    (folder / "flipped.ipv").write_bytes(bytes(flipped))
    end = 8 + int.from_bytes(data[:8], "little")
    header = data[8:end].decode().replace('"dtype":"F32"', '"dtype":"I32"', 1)
    (folder / "dtype.ipv").write_bytes(data[:8] + header.encode() + data[end:])

    def rewritten(name: str, change=None, **outer_changes) -> None:
        with safe_open(str(folder / "cache.ipv"), framework="pt") as handle:
            outer = {**handle.metadata(), **outer_changes}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        if change is not None:
            meta = json.loads(outer["infinipot"])
            change(meta)
            outer["infinipot"] = json.dumps(meta)
            outer["infinipot_sha256"] = sha256_hex(outer["infinipot"].encode())
        save_file(tensors, str(folder / name), metadata=outer)

    rewritten("layers.ipv", lambda meta: meta["layout"].update(layers=100_000_000))
    rewritten("types.ipv", lambda meta: meta["layout"].update(kv_heads="2"))
    rewritten("v1.ipv", format_version="1")
    rewritten("v3.ipv", format_version="3")
