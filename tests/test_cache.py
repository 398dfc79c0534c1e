"""The budgeted cache itself: buffers allocated once, markers kept with their frames."""

from __future__ import annotations

import pytest
import torch

from helpers import frames, session
from infinipot.budget import BudgetPlan
from infinipot.cache import BudgetedCache
from infinipot.layout import ChunkLayout
from infinipot.policies import make_policy


def test_no_per_chunk_reallocation_of_the_cache(models):
    """The KV and layout buffers keep their storage across a stream with many compressions."""
    result = session(models, "qwen2_5_vl", budget=96, chunk_frames=4)
    result.feed(frames(4))
    cache = result.cache

    def pointers():
        kv = [(layer.key_buffer.data_ptr(), layer.value_buffer.data_ptr()) for layer in cache.layers]
        layouts = [store._buffers.frame.data_ptr() for store in cache.stores]
        return kv, layouts

    before = pointers()
    for start in range(0, 120, 8):
        result.feed(frames(8, seed=start))
        result.ask("What happened?", max_new_tokens=4)
    assert result.state.stats.compressions >= 10
    assert pointers() == before


def marked_chunk(frame: int, rows: int, cols: int, markers: int, position: int) -> ChunkLayout:
    """One frame's tokens after `markers` marker tokens (row = col = -1), like a Qwen3-VL timestamp."""
    count = markers + rows * cols
    cell = torch.arange(rows * cols)
    row = torch.cat([torch.full((markers,), -1), cell // cols])
    col = torch.cat([torch.full((markers,), -1), cell % cols])
    marker = torch.cat([torch.ones(markers, dtype=torch.bool), torch.zeros(rows * cols, dtype=torch.bool)])
    return ChunkLayout(torch.full((count,), frame), row, col, (torch.arange(count) + position).unsqueeze(1), marker)


@pytest.mark.parametrize("policy", ["recent", "uniform", "tar", "van", "infinipot"])
def test_markers_stay_exactly_while_their_frame_does(policy):
    layers, heads, dim, rows, cols, markers = 3, 2, 8, 2, 3, 2
    cache = BudgetedCache(layers, heads, 1, capacity=256)
    gen = torch.Generator().manual_seed(0)
    for layer in cache.layers:
        layer.update(torch.randn(1, heads, 4, dim, generator=gen), torch.randn(1, heads, 4, dim, generator=gen))
    cache.mark_prefix()
    plan = BudgetPlan(40, 30, (rows, cols), 1, 1, compress=True)
    memory: dict = {}
    position = 4
    for frame in range(12):
        chunk = marked_chunk(frame, rows, cols, markers, position)
        position += chunk.tokens
        if cache.visual_tokens + chunk.tokens > plan.budget_tokens:
            cache.compress(make_policy(policy), plan.keep_tokens, plan, memory)
            for layer, layout in zip(cache.layers, cache.layouts):
                assert layer.keys.shape[2] - cache.prefix_len == layout.tokens == cache.visual_tokens <= 30
                marker_frames = set(layout.frame[layout.marker].tolist())
                assert len(marker_frames) * markers <= 4  # at most the marker share (1/8) of 30 tokens
                whole = [f for f in set(layout.frame.flatten().tolist())
                         if all(int(((layout.frame[h] == f) & ~layout.marker[h]).sum()) == rows * cols
                                for h in range(heads))]
                newest = int(layout.frame.max())
                assert newest in marker_frames or not whole  # the newest frames keep their time first
                for head in range(heads):  # whole marker groups, in cache order
                    head_markers = layout.frame[head][layout.marker[head]].tolist()
                    assert all(head_markers.count(f) == markers for f in set(head_markers))
                    assert torch.all(layout.position[head, 1:, 0] > layout.position[head, :-1, 0])
            union = set().union(*(set(layout.frame[~layout.marker].tolist()) for layout in cache.layouts))
            assert set(cache.layouts[0].frame[cache.layouts[0].marker].tolist()) <= union
        for layer in cache.layers:
            layer.update(torch.randn(1, heads, chunk.tokens, dim, generator=gen),
                         torch.randn(1, heads, chunk.tokens, dim, generator=gen))
        cache.add_chunk(chunk)
