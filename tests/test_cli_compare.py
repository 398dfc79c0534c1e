"""`infinipot compare`: several policies on one video in one run, through the CLI."""

from __future__ import annotations

import json

from PIL import Image

from helpers import assert_one_line_error, invoke

POLICIES = "infinipot,recent-frames,uniform"


def test_compare_prints_every_policy_and_writes_records_and_a_plot(tmp_path, short_video):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "What color is it?", "options": ["white", "red"], "answer": "A"}\n'
                         '{"question": "Where is it?", "time": 8}\n')
    out, plot = tmp_path / "results.jsonl", tmp_path / "kept.png"
    result = invoke("compare", short_video, "--questions", questions, "--policies", POLICIES, "--preset", "tiny",
                    "--budget", "48", "--max-new-tokens", "3", "-o", out, "--plot", plot, "--json", "-q")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert [policy["policy"] for policy in data["policies"]] == POLICIES.split(",")
    assert all(policy["peak_cached_tokens"] <= 48 for policy in data["policies"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 * 3 and {record["policy"] for record in records} == set(POLICIES.split(","))
    timed = [record for record in records if record["id"] == 2]
    assert {record["asked_at"] for record in timed} == {8.0}  # every policy asked at the same moment
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 400 and image.getextrema() != ((255, 255),) * 3


def test_compare_tables_keep_their_numbers_at_80_columns(short_video):
    result = invoke("compare", short_video, "What happened?", "--policies", POLICIES, "--preset", "tiny",
                    "--budget", "48", "--max-new-tokens", "2", "-q", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    for policy in POLICIES.split(","):
        line = next(line for line in result.output.splitlines() if line.strip().startswith(policy))
        assert "KiB" in line and "%" in line, line


def test_compare_refusals_are_one_line(short_video, tmp_path):
    assert_one_line_error(invoke("compare", short_video, "Q?", "--policy", "tar", "--preset", "tiny"), "--policies")
    assert_one_line_error(invoke("compare", short_video, "Q?", "--policies", "infinipot,bogus", "--preset", "tiny"),
                          "unknown policy 'bogus' in --policies")
    assert_one_line_error(invoke("compare", short_video, "Q?", "--plot", tmp_path / "kept.jpg", "--preset", "tiny"),
                          ".png")
    assert_one_line_error(invoke("compare", short_video, "Q?", "--full-max-memory", "lots", "--preset", "tiny"),
                          "--full-max-memory")
