"""One settings schema: presets, keyword overrides and cache metadata all go through one typed loader."""

from __future__ import annotations

import os

import pytest
import yaml

from infinipot import InfinipotError, load_preset
from infinipot.presets import all_presets, preset_names
from infinipot.settings import Settings, settings_from_mapping


def write(tmp_path, data, name="mine.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def test_every_shipped_preset_loads_and_names_itself():
    presets = all_presets()
    assert [preset.name for preset in presets] == preset_names()
    assert {"tiny", "qwen2.5-vl-7b", "llava-onevision-7b"} <= set(preset_names())


def test_overrides_are_typed_and_checked_once():
    tiny = load_preset("tiny")
    assert tiny.replace(budget="6k").budget == 6000  # token budgets become ints at once
    assert tiny.replace(budget="2GiB").budget == "2GiB"  # memory waits for the model's KV size
    assert tiny.replace(tar_ratio=0.3).knobs["tar_ratio"] == 0.3  # policy knobs by name
    assert tiny.replace(fps=None).fps == tiny.fps  # None keeps a value
    for changes, message in [
        (dict(keep_ratio=1.5), "`keep_ratio` must be in"),
        (dict(keep_ratio=1.0), r"`keep_ratio` must be in \(0, 1\) so that each compression leaves room"),
        (dict(fps=float("inf")), "`fps` must be a finite number"),
        (dict(fps=0), "`fps` must be a positive"),
        (dict(chunk_frames=0), "`chunk_frames` must be between"),
        (dict(positions="bogus"), "unknown `positions` 'bogus'"),
        (dict(budget="1e24"), "cannot read `budget`"),
        (dict(budget=10**12), "`budget`"),
        (dict(tar_ratio=2), "`tar_ratio` must be in"),
        (dict(pooling="spread"), "unknown `pooling` 'spread'"),
        (dict(cv_thresholds=[0.3, 0.2, 0.1]), "`cv_thresholds` must be three ascending"),
        (dict(cv_thresholds=["a", "b", "c"]), "`cv_thresholds` has the wrong type"),
        (dict(frobnicate=1), "unknown setting `frobnicate`"),
        (dict(dtype="float8"), "unknown `dtype`"),
    ]:
        with pytest.raises(InfinipotError, match=message):
            tiny.replace(**changes)


def test_a_preset_file_can_build_on_a_shipped_one(tmp_path):
    path = write(tmp_path, {"base": "qwen2.5-vl-7b", "model": "/models/Qwen2.5-VL-7B-Instruct", "budget": "8k"})
    mine = load_preset(path)
    shipped = load_preset("qwen2.5-vl-7b")
    assert mine.model == "/models/Qwen2.5-VL-7B-Instruct" and mine.budget == 8000 and mine.name == "mine"
    assert (mine.family, mine.dtype, mine.max_pixels, mine.knobs) == (shipped.family, shipped.dtype,
                                                                      shipped.max_pixels, shipped.knobs)
    loop = write(tmp_path, {"base": "mine", "model": "x", "family": "qwen2_5_vl"}, "mine.yaml")
    with pytest.raises(InfinipotError, match="`base` must name another preset"):
        load_preset(loop)


@pytest.mark.parametrize(("content", "message"), [
    ("model: [unclosed", "is not valid YAML"),
    ("- a\n- b\n", "is not a mapping of settings"),
    ("model: tiny:qwen2_5_vl\n", "missing required key `family`"),
    ("model: tiny:qwen2_5_vl\nfamily: qwen2_5_vl\nbudgett: 5\n", "unknown key(s) budgett"),
    ("model: tiny:qwen2_5_vl\nfamily: qwen2_5_vl\nfps: fast\n", "`fps` has the wrong type"),
    ("model: !!python/object/apply:os.system ['echo hi']\nfamily: qwen2_5_vl\n", "is not valid YAML"),
    ("a: &x [1, 2]\nb: *x\n", "anchors or aliases"),
])
def test_bad_preset_files_are_one_line(tmp_path, content, message):
    with pytest.raises(InfinipotError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_preset(write(tmp_path, content))


def test_preset_files_that_are_not_text_files(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("model: caf\xe9\nfamily: qwen2_5_vl\n".encode("latin-1"))
    with pytest.raises(InfinipotError, match="is not UTF-8 text"):
        load_preset(str(latin))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InfinipotError, match="not a regular file"):
        load_preset(str(fifo))  # refused without opening it (opening a FIFO would hang)
    with pytest.raises(InfinipotError, match="is a directory"):
        load_preset(str(tmp_path))
    with pytest.raises(InfinipotError, match="preset file not found"):
        load_preset(str(tmp_path / "missing.yaml"))
    with pytest.raises(InfinipotError, match="unknown preset 'nope'"):
        load_preset("nope")


def test_mappings_round_trip_through_the_loader():
    tiny = load_preset("tiny").replace(pooling="cv", cv_thresholds=[0.1, 0.2, 0.3], budget="2GiB")
    data = tiny.as_dict()
    knobs = data.pop("knobs")
    again = settings_from_mapping({**data, **knobs}, "a cache's metadata")
    assert again == tiny and isinstance(again, Settings)
    assert again.knobs["cv_thresholds"] == (0.1, 0.2, 0.3)
