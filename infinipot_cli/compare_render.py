"""Rendering a comparison: one table of the policies, one of the answers side by side."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from infinipot_cli.render import format_bytes

ANSWER_WIDTH = 40  # characters of each policy's answer shown in the side-by-side table


def comparison_tables(result) -> list:
    return [policies_table(result), f"[dim]{LEGEND}[/dim]", answers_table(result)]


def _categories(result) -> list[tuple[str, str]]:
    """(axis, value) of every category any policy was scored in, in a stable order."""
    found = set()
    for policy in result.policies:
        for axis, values in policy.accuracy.get("by_category", {}).items():
            found.update((axis, value) for value in values)
    return sorted(found)


def policies_table(result) -> Table:
    table = Table(title=f"policies at one budget on {escape(result.video)}", title_justify="left", box=box.SIMPLE,
                  pad_edge=False)
    categories = _categories(result)
    scored = any(policy.accuracy["overall"]["total"] for policy in result.policies)
    with_full = any(policy.agreement_with_full is not None for policy in result.policies)
    table.add_column("policy", no_wrap=True)
    if scored:
        table.add_column("right", justify="right", no_wrap=True)
        for axis, value in categories:
            table.add_column(f"{escape(value)}" if axis == "category" else f"{escape(axis)}={escape(value)}",
                             justify="right", no_wrap=True)
    if with_full:
        table.add_column("=full", justify="right", no_wrap=True)
    for name in ("peak", "KV", "comp.", "cost"):
        table.add_column(name, justify="right", no_wrap=True)
    for policy in result.policies:
        table.add_row(*_policy_row(policy, scored, categories, with_full))
    return table


def _policy_row(policy, scored: bool, categories: list[tuple[str, str]], with_full: bool) -> list[str]:
    row = [policy.policy]
    if scored:
        row.append(_share(policy.accuracy["overall"]))
        by = policy.accuracy.get("by_category", {})
        row += [_share(by.get(axis, {}).get(value)) for axis, value in categories]
    if with_full:
        row.append("—" if policy.agreement_with_full is None else f"{policy.agreement_with_full:.0%}")
    cost = f"{policy.compression_share:.1%}" + ("" if policy.shared_encoding else " re-enc.")
    row += [f"{policy.peak_cached_tokens:,}", format_bytes(policy.peak_kv_bytes), str(policy.compressions), cost]
    return row


def _share(tally: dict | None) -> str:
    if not tally or not tally.get("total"):
        return "—"
    return f"{tally['correct']}/{tally['total']}"


LEGEND = ("right: correct answers; =full: answers the same as full; peak: visual tokens per layer and head; KV: "
          "their keys and values; comp.: compressions; cost: compression (and guidance prompts) as a share of "
          "encode + prefill")


def answers_table(result) -> Table:
    table = Table(title="answers side by side", title_justify="left", box=box.SIMPLE, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("question", overflow="fold", max_width=36)
    rows = result.answers_side_by_side()
    expected = any(row.get("expected") is not None for row in rows)
    if expected:
        table.add_column("expected", overflow="fold")
    for policy in result.policies:
        table.add_column(escape(policy.policy), overflow="fold", max_width=ANSWER_WIDTH)
    for row in rows:
        cells = [escape(str(row["id"])), escape(row["question"])]
        if expected:
            cells.append(escape(str(row.get("expected") or "")))
        cells += [escape(_short(row["answers"][policy.policy])) for policy in result.policies]
        table.add_row(*cells)
    return table


def _short(text: str) -> str:
    return text if len(text) <= ANSWER_WIDTH * 3 else text[: ANSWER_WIDTH * 3 - 1] + "…"
