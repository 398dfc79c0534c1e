"""Retention maps (issue 17): the counts behind them, their time bins, the PNG, `info` and `--map`.

The counts are checked against a plain loop over every layout entry, for every family (Qwen3-VL's
markers are not visual tokens), live and read back from a cache file without a model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ALL_FAMILIES, TINY_CLI, assert_one_line_error, frames, invoke, invoke_json, session
from infinipot.cache_header import read_header
from infinipot.errors import InfinipotError
from infinipot.drawing import clock, time_ticks, viridis
from infinipot.plots import BOX, draw_retention_map, map_size
from infinipot.retention import RetentionMap, nice_bin, retention_of, retention_of_file
from infinipot.timeline import Timeline


def streamed_with_gap(models, family: str, **settings):
    """40 frames at 1 fps from 100 s with 7 s missing after the 8th; compressed several times."""
    times = 100.0 + np.arange(40, dtype=np.float64)
    times[8:] += 7.0
    stream = session(models, family, policy="infinipot", budget=96, chunk_frames=8, **settings)
    stream.feed(frames(40, seed=7), timestamps=times)
    stream.finish()
    return stream


def plain_counts(layouts, steps: int) -> list[list[int]]:
    """Visual tokens per layer and step, one layout entry at a time."""
    counts = [[0] * steps for _ in layouts]
    for layer, layout in enumerate(layouts):
        for head in range(layout.heads):
            for slot in range(layout.tokens):
                if not layout.marker[head, slot] and not layout.merged[head, slot]:
                    counts[layer][int(layout.frame[head, slot])] += 1
    return counts


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_the_maps_counts_equal_the_layouts_live_and_from_the_file(models, family, tmp_path):
    stream = streamed_with_gap(models, family)
    assert stream.state.stats.compressions >= 2
    retention = retention_of(stream)
    steps = stream.state.positions.steps
    assert retention.counts.tolist() == plain_counts(stream.cache.layouts, steps)
    assert retention.counts.sum(axis=1).tolist() == [  # every visual token counted once
        int((~layout.marker & ~layout.merged).sum()) for layout in stream.cache.layouts]
    stream.save(tmp_path / "gap.ipv")
    read = retention_of_file(read_header(tmp_path / "gap.ipv"))
    assert np.array_equal(read.counts, retention.counts) and read.merged == retention.merged
    assert list(read.timeline.starts) == list(retention.timeline.starts) and read.timeline.until == 147.0
    assert (read.kv_heads, read.tokens_per_step, read.budget_tokens) == (retention.kv_heads,
                                                                         retention.tokens_per_step, 96)


def test_time_bins_share_and_skipped_video(models):
    stream = streamed_with_gap(models, "llava_onevision")  # one frame a step: steps at 100..107, 115..146
    retention = retention_of(stream)
    edges, share = retention.bins(5.0)
    assert edges[0] == (100.0, 105.0) and edges[-1] == (145.0, 147.0)
    per_step = retention.counts / (retention.kv_heads * retention.tokens_per_step)
    starts = list(retention.timeline.starts)
    for index, (low, high) in enumerate(edges):
        inside = [step for step, start in enumerate(starts) if low <= start < high or (index == len(edges) - 1
                                                                                        and start >= low)]
        if not inside:  # 108 .. 114 were never streamed
            assert np.isnan(share[:, index]).all() and low >= 105.0 and high <= 115.0
            continue
        assert np.allclose(share[:, index], per_step[:, inside].mean(axis=1))
    overall = retention.overall(5.0)
    assert overall[2].kept is None and overall[-1].kept == pytest.approx(float(share[:, -1].mean()))
    assert retention.span() == (100.0, 147.0)  # the recent frames are kept whole; the first is held somewhere
    assert nice_bin(3600.0, 60) == 60.0 and nice_bin(20.0, 10, at_least=2.0) == 2.0


def test_the_png_opens_with_the_right_size_and_is_not_empty(models, tmp_path):
    from PIL import Image

    retention = retention_of(streamed_with_gap(models, "qwen2_5_vl"))
    path = draw_retention_map(retention, tmp_path / "map.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == map_size() == (1000, 500)
        pixels = np.asarray(image.convert("RGB"))
    colours = {tuple(pixel) for pixel in pixels.reshape(-1, 3)[::7]}
    assert len(colours) > 50  # a heat map, axes and text, not a blank page
    assert (pixels == 208).all(axis=-1).any()  # the skipped seconds drawn grey (#d0d0d0)


def test_a_long_stream_is_drawn_in_bins(tmp_path):
    steps = 3000  # 100 minutes at 2 s a step: more steps than columns
    timeline = Timeline(2.0, 2)
    timeline.record(0, [2.0 * step for step in range(steps)], until=6000.0)
    counts = np.random.RandomState(0).randint(0, 13, (4, steps))
    retention = RetentionMap(counts, [0] * 4, 2, 6, timeline, 6000, "infinipot", "long.mp4")
    width = nice_bin(retention.duration(), 400, 2.0)
    edges, share = retention.bins(width)
    assert width == 15.0 and len(edges) == 400
    in_bin = np.array([sum(1 for step in range(steps) if int(2.0 * step // width) == k) for k in range(400)])
    assert in_bin.tolist()[:4] == [8, 7, 8, 7]  # steps at 0, 2, ..., 14 | 16, ..., 28 | ...
    tokens = share * in_bin * 2 * 6  # back to counts: share x steps x heads x tokens a step
    assert np.allclose(tokens.sum(axis=1), counts.sum(axis=1))
    draw_retention_map(retention, tmp_path / "long.png")


def test_the_maps_pixels_are_the_shares_colours_drawn_without_matplotlib(models, monkeypatch, tmp_path):
    from PIL import Image

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # one drawing path, on Pillow
    retention = retention_of(streamed_with_gap(models, "llava_onevision"))  # one frame a step, 1 s bins
    with Image.open(draw_retention_map(retention, tmp_path / "map.png")) as image:
        pixels = np.asarray(image.convert("RGB"))
    edges, share = retention.bins(retention.timeline.step_seconds)
    left, top, right, bottom = BOX
    origin, end = edges[0][0], edges[-1][1]
    for layer in range(retention.layers):  # layer 0 at the bottom
        y = bottom - 1 - int((layer + 0.5) * (bottom - top) / retention.layers)
        for index, (start, stop) in enumerate(edges):  # each bin over its own stretch of time
            x = left + int(((start + stop) / 2 - origin) / (end - origin) * (right - left))
            assert tuple(pixels[y, x]) == tuple(viridis(share[layer:layer + 1, index])[0]), (layer, start)
    assert viridis(np.array([0.0, 1.0, np.nan])).tolist() == [[68, 1, 84], [253, 231, 37], [208, 208, 208]]


def test_an_empty_cache_has_no_map_to_draw(tmp_path):
    retention = RetentionMap(np.zeros((2, 0), dtype=np.int64), [0, 0], 2, 6, Timeline(1.0, 1), 600, "infinipot")
    with pytest.raises(InfinipotError, match="stream a video first"):
        draw_retention_map(retention, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_time_ticks_fall_on_round_clock_times():
    assert time_ticks(0.0, 600.0) == [60.0 * minute for minute in range(11)]
    assert time_ticks(100.0, 47.0) == [100.0 + 5 * k for k in range(10)]  # 1:40, 1:45, ..., 2:25
    assert [clock(tick) for tick in time_ticks(3500.0, 400.0)] == ["59:00", "1:00:00", "1:01:00", "1:02:00",
                                                                  "1:03:00", "1:04:00", "1:05:00"]


def test_each_answer_carries_the_span_and_the_kept_share(models):
    stream = streamed_with_gap(models, "qwen2_5_vl")
    moment = stream.moment()
    assert moment["cache_span"] == [100.0, 147.0]
    bins = moment["kept_share"]
    assert len(bins) <= 10 and bins[0]["start"] == 100.0 and bins[-1]["end"] == 147.0
    assert any(part["kept"] is None for part in bins)  # the missing seconds
    assert bins[-1]["kept"] == 1.0  # the newest frames are kept whole


# ----------------------------------------------------------------------------- the CLI


def test_info_map_and_text_from_a_cache(short_video, tmp_path):
    from PIL import Image

    cache = tmp_path / "short.ipv"
    assert invoke("compress", short_video, "-o", cache, *TINY_CLI, "-q", "--map", tmp_path / "c.png").exit_code == 0
    result = invoke("info", cache, "--map", tmp_path / "i.png")
    assert result.exit_code == 0, result.output
    assert "kept per 2 s" in result.output and "time held" in result.output and "0:00–0:20" in result.output
    with Image.open(tmp_path / "i.png") as image:
        assert image.size == map_size()
    assert (tmp_path / "i.png").read_bytes() == (tmp_path / "c.png").read_bytes()  # the same cache, the same map
    data = invoke_json("info", cache)
    assert data["retention"]["cache_span"] == [0.0, 20.0] and len(data["retention"]["kept_share"]) == 10
    assert "timeline" not in data["state"]


def test_ask_map_is_the_streams_map(short_video, tmp_path):
    from PIL import Image

    result = invoke("ask", short_video, "What?", *TINY_CLI, "--max-new-tokens", "2", "--map", tmp_path / "a.png",
                    "--save-cache", tmp_path / "a.ipv", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["answers"][0]
    assert record["cache_span"] == [0.0, 20.0]
    with Image.open(tmp_path / "a.png") as image:
        assert image.size == map_size()
    assert invoke("info", tmp_path / "a.ipv", "--map", tmp_path / "b.png").exit_code == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_a_map_over_an_input_is_refused_before_any_work(short_video, tmp_path):
    cache = tmp_path / "short.ipv"
    result = invoke("compress", short_video, "-o", cache, *TINY_CLI, "--map", cache)
    assert_one_line_error(result, "--map", "choose another file name")
    result = invoke("ask", short_video, "What?", *TINY_CLI, "--map", short_video)
    assert_one_line_error(result, "--map", "choose another file name")


def test_info_shows_the_kept_share_without_importing_torch(short_video, tmp_path):
    cache = tmp_path / "short.ipv"
    assert invoke("compress", short_video, "-o", cache, *TINY_CLI, "-q").exit_code == 0
    code = ("import sys; from infinipot_cli.app import main; sys.argv = ['infinipot', 'info', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(cache)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert "kept per 2 s" in done.stdout and done.stdout.strip().endswith("False"), done.stdout + done.stderr
