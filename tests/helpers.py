"""Small assertions and helpers shared by several test files."""

from __future__ import annotations


def assert_one_line_error(result, *fragments: str) -> None:
    """A CLI failure as users must see it: non-zero exit, one `error:` line, no traceback."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def until_eos(token_ids: list[int], eos: set[int]) -> list[int]:
    """The generated ids before the first stop token."""
    return token_ids[: next((i for i, token in enumerate(token_ids) if token in eos), len(token_ids))]
