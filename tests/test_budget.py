"""Budgets users can state, and impossible settings refused before any weights load."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from infinipot.budget import CompressionSettings, parse_budget, plan_stream
from infinipot.errors import InfinipotError
from infinipot.tiny import ensure_tiny_checkpoint
from infinipot_cli import ask  # noqa: F401  registers `ask`
from infinipot_cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(("text", "tokens"), [
    ("6000", 6000), ("6k", 6000), ("6K", 6000), ("1.5k", 1500), ("2m", 2_000_000), (" 6_000 ", 6000),
])
def test_token_budgets(text, tokens):
    assert parse_budget(text) == tokens


@pytest.mark.parametrize(("text", "per_token", "tokens"), [
    ("2GiB", 2**20, 2048), ("512MB", 10**6, 512), ("1.5GiB", 2**20, 1536), ("300KiB", 512, 600), ("1gb", 10**9, 1),
])
def test_memory_budgets_use_the_model_kv_size(text, per_token, tokens):
    assert parse_budget(text, per_token) == tokens


@pytest.mark.parametrize("text", ["abc", "6 tokens", "5 parsecs", "1e3", ""])
def test_unreadable_budgets(text):
    with pytest.raises(InfinipotError, match="budget"):
        parse_budget(text, 512)


def test_memory_budget_without_model_size():
    with pytest.raises(InfinipotError, match="needs the model's KV size"):
        parse_budget("2GiB")


@pytest.mark.parametrize(("field", "value", "flag"), [
    ("keep_ratio", 0.0, "--keep-ratio"), ("keep_ratio", 1.5, "--keep-ratio"),
    ("recent_ratio", -0.1, "--recent"), ("tar_ratio", 2.0, "--tar-ratio"),
])
def test_ratios_outside_the_unit_interval(field, value, flag):
    with pytest.raises(InfinipotError, match=flag):
        CompressionSettings(**{field: value}).validate()


def test_tar_share_smaller_than_the_recent_frames():
    # 36 tokens a frame, M=2880 -> 80 frames, r=10 frames = 360 tokens; alpha*C = 0.1*2160 = 216 < 360
    settings = CompressionSettings(budget_tokens=2880, tar_ratio=0.1)
    with pytest.raises(InfinipotError, match="360 tokens but TaR keeps only 216.*--tar-ratio"):
        plan_stream(settings, tokens_per_frame=36, frame_multiple=2)


def test_budget_smaller_than_one_chunk():
    with pytest.raises(InfinipotError, match="raise --budget to at least 144"):
        plan_stream(CompressionSettings(budget_tokens=100), tokens_per_frame=36, frame_multiple=2)


def test_chunks_shrink_to_fit_the_room_after_a_compression():
    plan = plan_stream(CompressionSettings(budget_tokens=400, chunk_frames=16), tokens_per_frame=36, frame_multiple=2)
    assert plan.chunk_steps * 36 <= 400 - 300 and plan.chunk_steps == 2
    assert plan.recent_frames == 1


def test_full_policy_ignores_the_budget():
    plan = plan_stream(CompressionSettings(policy="full", budget_tokens=1), tokens_per_frame=36, frame_multiple=2)
    assert not plan.compress


@pytest.fixture()
def weightless_preset(tmp_path):
    """A preset whose model directory has config and processor but no weights: loading them fails."""
    source = ensure_tiny_checkpoint("qwen2_5_vl")
    target = tmp_path / "no-weights"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors"))
    preset = tmp_path / "no-weights.yaml"
    preset.write_text(yaml.safe_dump({"model": str(target), "family": "qwen2_5_vl", "dtype": "float32",
                                      "budget": 600}))
    return preset


def test_impossible_budget_fails_before_weights_load(short_video, weightless_preset):
    result = runner.invoke(app, ["ask", str(short_video), "What?", "--preset", str(weightless_preset),
                                 "--budget", "20"])
    assert result.exit_code == 1
    assert "one frame holds 12" in result.output and "could not load" not in result.output


def test_the_same_preset_does_fail_when_weights_are_needed(short_video, weightless_preset):
    result = runner.invoke(app, ["ask", str(short_video), "What?", "--preset", str(weightless_preset)])
    assert result.exit_code == 1
    assert "could not load model" in result.output


def test_memory_budget_on_the_command_line(short_video):
    # tiny: 2 layers x 2 KV heads x 16 dims x 2 (K and V) x 4 bytes = 512 bytes a token
    result = runner.invoke(app, ["ask", str(short_video), "What?", "--preset", "tiny", "--budget", "48KiB",
                                 "--json", "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)["stats"]
    assert stats["budget_tokens"] == 96 and stats["kv_bytes_per_token"] == 512
    assert stats["peak_cached_tokens"] <= 96
