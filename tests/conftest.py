"""Shared fixtures: tiny random checkpoints built once per session, loaded the way a preset loads them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from infinipot.families import FAMILIES
from infinipot.model import Model
from infinipot.presets import load_preset
from infinipot.synthetic import write_test_video


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory) -> Path:
    """Every test (and every CLI run inside a test) builds tiny checkpoints here, never in ~/.cache."""
    root = tmp_path_factory.mktemp("infinipot-cache")
    previous = os.environ.get("INFINIPOT_CACHE")
    os.environ["INFINIPOT_CACHE"] = str(root)
    torch.set_num_threads(1)  # tiny models: threads cost more than they give, and a loaded machine stays fast
    yield root
    if previous is None:
        os.environ.pop("INFINIPOT_CACHE", None)
    else:
        os.environ["INFINIPOT_CACHE"] = previous


@pytest.fixture(scope="session")
def models(tiny_cache):
    """One loaded tiny Model per family (`models("qwen2_5_vl")`), shared by every session of the test run."""
    loaded: dict[str, Model] = {}

    def get(family: str) -> Model:
        if family not in loaded:
            model = Model(load_preset(FAMILIES[family].tiny_preset), device="cpu")
            model.adapter  # load the weights once
            loaded[family] = model
        return loaded[family]

    return get


@pytest.fixture(scope="session")
def short_video(tmp_path_factory) -> Path:
    """20 s at 4 fps, 112x84: 3x4 merged tokens per 2-frame step for the tiny Qwen models."""
    return write_test_video(tmp_path_factory.mktemp("videos") / "short.mp4", seconds=20, fps=4)


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """10 s at 4 fps: 40 frames of 112x84 (mpeg4, a keyframe every 12 frames), for the video tests."""
    return write_test_video(tmp_path_factory.mktemp("videos") / "clip.mp4", seconds=10, fps=4)


@pytest.fixture(scope="session")
def info(clip):
    """The probed `clip` (a VideoInfo)."""
    from infinipot.video import probe

    return probe(clip)


@pytest.fixture(scope="session")
def long_video(tmp_path_factory) -> Path:
    """10 minutes at 1 fps: 3,600 visual tokens at 1 fps for the tiny models, far over a 600-token budget."""
    return write_test_video(tmp_path_factory.mktemp("videos") / "long.mp4", seconds=600, fps=1)
