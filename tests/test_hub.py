"""A model that is neither on disk nor reachable fails at once, in one line."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from infinipot_cli import ask  # noqa: F401  registers `ask`
from infinipot_cli.app import app


def test_missing_model_offline_fails_fast(short_video, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preset = tmp_path / "remote.yaml"
    preset.write_text(yaml.safe_dump({"model": "nobody/not-a-model", "family": "qwen2_5_vl"}))
    result = CliRunner().invoke(app, ["ask", str(short_video), "What?", "--preset", str(preset)])
    assert result.exit_code == 1
    assert "'nobody/not-a-model' is not on this machine and HF_HUB_OFFLINE is set" in result.output
    assert "hf download nobody/not-a-model" in result.output
