"""Before a stream starts: its plan, decided from the settings, the source and the model's geometry.

`plan_stream` needs only the model's config and processor (no weights), so everything that can
make a stream impossible (a budget smaller than a frame, a TaR share smaller than the recent
frames, a window the positions will pass) is said before the weights load. `start_stream` then
makes the stream's state, cache and streamer once the weights are there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from infinipot.budget import BudgetPlan, parse_budget, plan_budget
from infinipot.model import Geometry, Model
from infinipot.policies import Policy
from infinipot.positions import largest_foreseen, warn_if_past_window
from infinipot.settings import Settings
from infinipot.sources.base import SourceInfo

TEXT_ROOM = 1024  # cache slots kept free for a question and its answer (more are made if needed)


@dataclass(frozen=True)
class StreamSetup:
    """Everything decided before the weights load."""

    settings: Settings
    plan: BudgetPlan
    geometry: Geometry
    position_mode: str
    source: SourceInfo | None  # None when frames are fed directly
    sample_fps: float


def plan_stream(settings: Settings, policy: Policy, model: Model, source: SourceInfo | None,
                geometry_of: Callable[[int, int], Geometry], frame_size: tuple[int, int] | None = None
                ) -> StreamSetup:
    """Check the settings against this source's frames and the model's token grid; no weights needed."""
    height, width = frame_size if source is None else (source.height, source.width)
    geometry = geometry_of(height, width)
    budget = parse_budget(settings.budget, geometry.kv_bytes_per_token)
    plan = plan_budget(policy, budget, settings.keep_ratio, settings.chunk_frames, geometry.grid,
                       geometry.frame_multiple, geometry.marker_tokens_per_step)
    mode = settings.positions or geometry.default_positions
    sample_fps = source.sample_fps if source is not None else settings.fps
    setup = StreamSetup(settings, plan, geometry, mode, source, sample_fps)
    _warn_about_window(setup, model)
    return setup


def _warn_about_window(setup: StreamSetup, model: Model) -> None:
    """Positions past the trained window degrade answers: say so before the stream, not after.

    The prompt prefix (tens of tokens) is left out of the estimate: the warning is about thousands.
    """
    geometry, plan, source = setup.geometry, setup.plan, setup.source
    frames = source.frames_total if source is not None else None
    full_end = None
    if frames is not None:
        cls = model.family.adapter_class()
        full_end = cls.video_span(model.config, model.processor, frames, geometry.grid, setup.sample_fps)
    largest = largest_foreseen(setup.position_mode, plan.compress, geometry.position_axes, 0, full_end,
                               plan.budget_tokens)
    warn_if_past_window(largest, geometry.window, setup.position_mode, plan.compress, model.model_id)


def start_stream(setup: StreamSetup, adapter, policy: Policy):
    """The state, cache and streamer of a new stream, its prompt prefix prefilled."""
    from infinipot.cache import BudgetedCache
    from infinipot.stream_state import StreamState, StreamStats
    from infinipot.streamer import Streamer

    positions, prefix = adapter.begin(setup.sample_fps)
    plan = setup.plan
    stats = StreamStats(budget_tokens=plan.budget_tokens if plan.compress else 0, keep_tokens=plan.keep_tokens)
    source = setup.source
    state = StreamState(
        prefix_ids=prefix.ids[0].tolist(), plan=plan, positions=positions, position_mode=setup.position_mode,
        sample_fps=setup.sample_fps, start_seconds=source.start if source else 0.0, stats=stats,
        source=dict(source.description) if source else {},
    )
    text_config = adapter.text_config
    capacity = prefix.ids.shape[1] + plan.budget_tokens + TEXT_ROOM
    if not plan.compress and source is not None and source.frames_total:
        capacity = prefix.ids.shape[1] + source.frames_total // plan.frame_multiple * plan.cached_per_step + TEXT_ROOM
    cache = BudgetedCache(text_config.num_hidden_layers, text_config.num_key_value_heads, adapter.position_axes,
                          capacity)
    streamer = Streamer(adapter, cache, state, policy)
    streamer.prefill_prefix(prefix)
    return state, cache, streamer
