"""A model that is neither on disk nor reachable fails at once, in one line."""

from __future__ import annotations

import yaml

from helpers import assert_one_line_error, invoke


def test_missing_model_offline_fails_fast(short_video, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preset = tmp_path / "remote.yaml"
    preset.write_text(yaml.safe_dump({"model": "nobody/not-a-model", "family": "qwen2_5_vl"}))
    result = invoke("ask", short_video, "What?", "--preset", preset)
    assert_one_line_error(result, "'nobody/not-a-model' is not on this machine and HF_HUB_OFFLINE is set",
                          "hf download nobody/not-a-model")


def test_model_flag_takes_a_hub_id_with_the_presets_other_settings(short_video, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("ask", short_video, "What?", "--preset", "tiny", "--model", "nobody/not-a-model")
    assert_one_line_error(result, "'nobody/not-a-model' is not on this machine")
