"""bench/gpu.py is ready for a GPU: its dry run passes on the CPU, and its models have the real shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_gpu_benchmark_dry_run_passes_on_the_cpu(tmp_path, tiny_cache):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--device", "cpu", "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"qwen2.5-vl-7b", "llava-onevision-7b", "qwen3-vl-8b"}
    for model in report["models"].values():
        assert len(model["runs"]) == 3 and "compression_share_max" in model["targets"]
        longest = model["runs"][max(model["runs"], key=float)]
        assert longest["compressions"] > 0 and longest["peak_cached_tokens"] <= report["budget"]
        assert {"decode", "encode", "prefill", "compress"} <= set(longest["ms_per_frame"])


@pytest.mark.parametrize(("name", "billions", "kv"), [
    ("qwen2.5-vl-7b", 8.29, (28, 4, 128)), ("llava-onevision-7b", 8.03, (28, 4, 128)), ("qwen3-vl-8b", 8.77, (36, 8, 128)),
])
def test_the_benchmark_models_have_the_published_sizes(name, billions, kv, tiny_cache):
    """Built on the meta device (no memory): parameter counts as published, bf16, the real KV geometry."""
    sys.path.insert(0, str(BENCH))
    try:
        from gpu import build
    finally:
        sys.path.remove(str(BENCH))
    model, weights = build(name, "meta", dry_run=False)
    adapter = model.adapter
    params = sum(p.numel() for p in adapter.model.parameters())
    assert abs(params / 1e9 - billions) < 0.01
    assert weights == 2 * params  # bf16
    assert (adapter.num_layers, adapter.kv_heads, adapter.head_dim) == kv
