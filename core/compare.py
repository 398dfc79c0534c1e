"""`compare`: several policies at one budget, on one video, in one run, from one loaded model.

    from infinipot.compare import compare
    result = compare("movie.mp4", ["What happened?"], ["infinipot", "hermes", "recent-frames"],
                     preset="qwen2.5-vl-7b", budget="6k")
    for policy in result.policies: print(policy.policy, policy.accuracy["overall"], policy.peak_kv_bytes)

The video is decoded once and every chunk is vision-encoded once; each policy has its own cache
(a Session on the shared Model) and prefills the shared encoding into it, so N policies cost
one decode and one vision pass plus N prefills and compressions, not N whole runs. Questions
with a `time` are answered at that moment by every policy, the others at the end, exactly as
one `Session.stream(until=...)` run per policy would (tested: same caches, same answers).

Every policy streams with the same chunk size (the smallest any of them plans), since when a
compression happens depends on it. A chunk's encoding is reused by a stream whose position
state equals the one it was made at: always with `original` positions; with `compact` ones the
streams renumber differently after compressing, and such a stream re-encodes its chunk (counted
in `vision_runs`; docs/design.md, "Compare").
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from infinipot.adapters.base import Adapter, EncodedChunk, PositionState
from infinipot.comparison import Comparison, PolicyResult, Retention, accuracy_of, agreement, compression_share
from infinipot.errors import InfinipotError
from infinipot.model import Model, resolve_device
from infinipot.policies import policy_class
from infinipot.questions import QuestionEntry, score
from infinipot.reader import SourceReader, frames_until, seconds_at
from infinipot.session import Loading, Session
from infinipot.settings import Settings
from infinipot.stream_setup import plan_stream, start_stream

FULL_MEMORY_SHARE = 0.5  # `full` may take at most this share of the memory free when the run starts


class SharedEncoder:
    """Encodes each chunk once for several streams (an `Encoder` for `Streamer.add`)."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.runs = 0  # times the vision tower ran
        self.encode_s = 0.0  # time spent encoding (shared and own)
        self.own: dict[int, float] = {}  # per stream, time spent re-encoding a chunk of its own
        self._frames: np.ndarray | None = None
        self._chunk: EncodedChunk | None = None
        self._before: PositionState | None = None
        self._after: PositionState | None = None

    def for_stream(self, index: int) -> Callable[[np.ndarray, PositionState], EncodedChunk]:
        return lambda frames, state: self.encode(frames, state, index)

    def encode(self, frames: np.ndarray, state: PositionState, index: int) -> EncodedChunk:
        if frames is not self._frames:  # a new chunk: encode it at this stream's positions
            self._frames, self._before = frames, copy.deepcopy(state)
            self._chunk = self._timed(frames, state)
            self._after = copy.deepcopy(state)
            return self._chunk
        if state == self._before:  # the same positions: the same encoding, the same state after
            for name in (f.name for f in dataclasses.fields(state)):
                setattr(state, name, copy.deepcopy(getattr(self._after, name)))
            return self._chunk
        start = time.perf_counter()
        chunk = self._timed(frames, state)
        self.own[index] = self.own.get(index, 0.0) + time.perf_counter() - start
        return chunk

    def _timed(self, frames: np.ndarray, state: PositionState) -> EncodedChunk:
        start = time.perf_counter()
        chunk = self.adapter.encode(frames, state)
        self.encode_s += time.perf_counter() - start
        self.runs += 1
        return chunk


@dataclass
class _Run:
    name: str
    session: Session
    records: list[dict] = field(default_factory=list)
    saved: object = None  # the checkpoint of a tentative chunk
    answer_s: float = 0.0


class _Lockstep:
    """All policies' streams advanced together over one reader, chunk by chunk.

    It follows `Session.stream`'s own rules (a moment inside a chunk: its frames up to the moment
    tentatively, taken back before going on) and looks like a session to `infinipot.moments.stops`
    (`stream(until=...)`, `moment()`), so timed questions stop where `infinipot ask` stops.
    """

    def __init__(self, runs: list[_Run], reader: SourceReader, encoder: SharedEncoder, on_event) -> None:
        self.runs, self.reader, self.encoder, self.on_event = runs, reader, encoder, on_event
        self.chunks = 0
        self.tentative = False

    def stream(self, until: float | None = None, on_event=None) -> None:
        """Stream every policy up to video time `until`, or to the end of the source."""
        self._settle()
        plan, first = self.runs[0].session.setup.plan, self.runs[0].session
        stopped = None
        while (chunk := self.reader.next()) is not None:
            if until is not None and float(chunk.timestamps[-1]) > until + 1e-9:
                self.reader.put_back(chunk)
                self._tentative(chunk, until, plan.frame_multiple)
                stopped = until
                break
            for index, run in enumerate(self.runs):
                run.session._streamer.add(chunk.frames, chunk.end_seconds, self.encoder.for_stream(index),
                                          chunk.timestamps)
            self.chunks += 1
            if self.on_event is not None:
                self.on_event(first.progress())
        if until is not None and stopped is None and first.state.asked_at > until:
            stopped = until  # the source ended inside the moment's last frame: still asked at `until`
        self._stopped(stopped)

    def _tentative(self, chunk, until: float, frame_multiple: int) -> None:
        count = frames_until(chunk, until, frame_multiple)
        if not count:
            return
        part, times = chunk.frames[:count], chunk.timestamps[:count]
        end = min(seconds_at(chunk, count, self.runs[0].session.state.sample_fps), until)
        for index, run in enumerate(self.runs):
            run.saved = run.session._streamer.add_tentative(part, end, self.encoder.for_stream(index), times)
            run.session._tentative = run.saved
        self.tentative = True

    def _settle(self) -> None:
        if self.tentative:
            for run in self.runs:
                run.session._streamer.roll_back(run.saved)
                run.session._tentative = run.saved = None
            self.tentative = False

    def _stopped(self, until: float | None) -> None:
        source = self.reader.source
        for run in self.runs:
            run.session._stopped_at = until
            timings = run.session.state.stats.timings
            timings["decode_wait_s"] = self.reader.decode_s
            timings["decode_s"] = float(getattr(source, "decode_s", self.reader.decode_s))

    def moment(self) -> dict:
        return self.runs[0].session.moment()

    def ask(self, entries: Sequence[QuestionEntry], extra: dict, options: dict) -> None:
        for entry in entries:
            for run in self.runs:
                moment = {**run.session.moment(), **extra}
                start = time.perf_counter()
                try:
                    answer = run.session.ask(entry.prompt, **options)
                except InfinipotError as error:  # a question the model cannot take: recorded, the rest go on
                    run.records.append({"id": entry.id, "question": entry.question, "policy": run.name,
                                        "answer": "", "error": str(error), **moment})
                    continue
                finally:
                    run.answer_s += time.perf_counter() - start
                record = {**score(entry, answer, moment).record(), "policy": run.name}
                if answer.evidence is not None:
                    record["evidence"] = answer.evidence.as_dict()
                run.records.append(record)


def compare(video, questions: Sequence[QuestionEntry | str], policies: Sequence[str], *,
            preset: str | Settings = "qwen2.5-vl-7b", model: Model | None = None, device: str = "auto",
            max_new_tokens: int = 64, temperature: float = 0.0, seed: int | None = None,
            start: float | None = None, end: float | None = None, max_frames: int | None = None,
            full_max_bytes: int | None = None, evidence: bool = False, on_event=None, **overrides) -> Comparison:
    """Stream `video` once into one cache per policy and answer `questions` from each; see the module docstring.

    `overrides` are settings shared by every policy (`budget`, `fps`, knobs by name ...); each
    policy takes the knobs it declares. `full` is refused when its cache would not fit in
    `full_max_bytes` (default: half the memory free on the device). `evidence` adds each answer's
    moments (infinipot.evidence) to its record.
    """
    from infinipot.generation import check_sampling
    from infinipot.presets import load_preset
    from infinipot.sources import Prefetched, open_source

    entries = _entries(questions)
    names = _policy_names(policies)
    check_sampling(max_new_tokens, temperature)
    base = (load_preset(preset) if isinstance(preset, str) else preset).replace(**overrides)
    model = model or Model(base, device)
    multiple = model.family.adapter_class().frame_multiple(model.config, model.processor)
    source = open_source(video, fps=base.fps, start=start, end=end, max_frames=max_frames, frame_multiple=multiple)
    reader = None
    try:
        runs, chunk_frames = _plan(names, base, model, source.info)
        _check_full(runs, source.info, model, full_max_bytes)
        adapter = _load(model, on_event)
        for run in runs:
            session = run.session
            session.state, session.cache, session._streamer = start_stream(session.setup, adapter, session.policy)
        began = time.perf_counter()
        # Decoded ahead in a worker thread, as a Session does.
        reader = SourceReader(Prefetched(source, depth=2), chunk_frames)
        lockstep = _Lockstep(runs, reader, SharedEncoder(adapter), on_event)
        _answer_over_stream(lockstep, entries, {"max_new_tokens": max_new_tokens, "temperature": temperature,
                                                "seed": seed, "evidence": evidence})
        wall = time.perf_counter() - began
    finally:
        (reader or source).close()
    settings = {key: value for key, value in base.replace(chunk_frames=chunk_frames).as_dict().items()
                if key != "policy"}
    result = _result(str(video), settings, runs, lockstep, wall, len(entries))
    result.warnings.extend(getattr(source, "warnings", None) or [])
    own = [p.policy for p in result.policies if not p.shared_encoding]
    if own:
        result.warnings.append(f"{', '.join(own)} renumbered positions (`positions` compact) and re-encoded chunks "
                               "the shared encoding could not serve")
    return result


def _entries(questions: Sequence[QuestionEntry | str]) -> list[QuestionEntry]:
    entries = [item if isinstance(item, QuestionEntry) else QuestionEntry(id=index + 1, question=str(item))
               for index, item in enumerate(questions)]
    if not entries:
        raise InfinipotError("no questions to compare the policies on: give at least one")
    return entries


def _policy_names(policies: Sequence[str]) -> list[str]:
    names = [name.strip() for name in policies if name.strip()]
    if not names:
        raise InfinipotError("no `policies` to compare: name at least one, e.g. infinipot,hermes,recent-frames")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InfinipotError(f"`policies` names {', '.join(repeated)} more than once: name each policy once")
    for name in names:
        policy_class(name)
    return names


def _plan(names: list[str], base: Settings, model: Model, info) -> tuple[list[_Run], int]:
    """One session per policy, planned (no weights) with the chunk size they all can take."""
    runs = [_Run(name, Session(base.replace(policy=name), model=model)) for name in names]
    for run in runs:
        run.session.setup = plan_stream(run.session.settings, run.session.policy, model, info, model.geometry)
    chunk_frames = min(run.session.setup.plan.chunk_frames for run in runs)
    if any(run.session.setup.plan.chunk_frames != chunk_frames for run in runs):
        for run in runs:
            run.session.settings = run.session.settings.replace(chunk_frames=chunk_frames)
            run.session.setup = plan_stream(run.session.settings, run.session.policy, model, info, model.geometry)
    return runs, chunk_frames


def _check_full(runs: list[_Run], info, model: Model, limit: int | None) -> None:
    """Refuse `full` when its cache, which keeps every token, would not fit."""
    full = [run for run in runs if not run.session.setup.plan.compress]
    if not full:
        return
    if info.frames_total is None:
        raise InfinipotError("`full` keeps every token, so it needs a video of known length: leave it out of "
                             "`policies` for a live source")
    setup = full[0].session.setup
    tokens = info.frames_total // setup.plan.frame_multiple * setup.plan.tokens_per_step
    needed = tokens * setup.geometry.kv_bytes_per_token
    allowed = limit if limit is not None else int(FULL_MEMORY_SHARE * _free_memory(model.device_name))
    if needed > allowed:
        raise InfinipotError(f"`full` would cache {tokens:,} tokens ({needed / 2**30:.2f} GiB of keys and values) "
                             f"for this video, more than the {allowed / 2**30:.2f} GiB allowed: leave it out of "
                             "`policies`, or compare on a shorter window (`end`)")


def _free_memory(device: str) -> int:
    import torch

    target = resolve_device(device)
    if target.type == "cuda":
        return int(torch.cuda.mem_get_info(target)[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown: do not refuse


def _load(model: Model, on_event) -> Adapter:
    if not model.loaded and on_event is not None:
        on_event(Loading(model.model_id, done=False))
        adapter = model.adapter
        on_event(Loading(model.model_id, done=True))
        return adapter
    return model.adapter


def _answer_over_stream(lockstep: _Lockstep, entries: list[QuestionEntry], options: dict) -> None:
    """Every policy answers each stop's entries (infinipot.moments: the schedule `infinipot ask` keeps)."""
    from infinipot.moments import stops

    for stop in stops(lockstep, entries):
        lockstep.ask(stop.entries, stop.flags, options)


def retention(session: Session) -> Retention:
    """What `session`'s cache holds of each temporal step, mean over layers and KV heads (infinipot.retention)."""
    from infinipot.retention import retention_of

    held = retention_of(session)
    return Retention(held.timeline.step_seconds, [round(start, 4) for start in held.timeline.starts],
                     [round(kept, 4) for kept in held.kept_per_step()], round(held.merged_mean(), 4))


def _result(video: str, settings: dict, runs: list[_Run], lockstep: _Lockstep, wall: float,
            questions: int) -> Comparison:
    encoder, reader = lockstep.encoder, lockstep.reader
    full = next((run.records for run in runs if run.name == "full"), None)
    shared_encode = encoder.encode_s - sum(encoder.own.values())
    results, own_work = [], 0.0
    for index, run in enumerate(runs):
        stats, geometry = run.session.state.stats, run.session.setup.geometry
        timings = {"prefill_s": stats.timings["prefill_s"], "compress_s": stats.timings["compress_s"],
                   "guidance_s": stats.timings["guidance_s"], "answer_s": run.answer_s,
                   "encode_s": encoder.own.get(index, 0.0)}
        own_work += sum(timings.values())
        results.append(PolicyResult(
            run.name, run.session.policy.describe(), run.records, accuracy_of(run.records),
            agreement(run.records, full) if run.name != "full" else None, stats.peak_cached_tokens,
            stats.peak_cached_tokens * geometry.kv_bytes_per_token, stats.compressions,
            {key: round(value, 4) for key, value in timings.items()}, compression_share(timings, shared_encode),
            index not in encoder.own, retention(run.session)))
    waited = reader.decode_s  # decoding runs ahead in a worker: the model only waits for it
    shared = waited + shared_encode
    separate = len(runs) * shared + own_work
    return Comparison(video, settings, results, questions, lockstep.chunks, encoder.runs,
                      {"decode_s": round(float(getattr(reader.source, "decode_s", waited)), 4),
                       "decode_wait_s": round(waited, 4), "encode_s": round(shared_encode, 4),
                       "wall_s": round(wall, 4), "separate_estimate_s": round(separate, 4)})
