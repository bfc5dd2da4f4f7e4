"""Rendering of a gate verdict: a rich table for terminals, Markdown for PRs, JSON for machines.

The verdict comes first, then one row per rule with the observed value, the
bound and the reason, so a release manager sees at a glance what failed and by
how much.
"""

from __future__ import annotations

from typing import Any

from relgate.gates import GateResult, GateVerdict


def _rule_text(r: GateResult) -> str:
    where = "" if r.on == "point" else f" ({r.on})"
    return f"{r.metric}{where} {r.op} {r.bound:g}"


def _observed(r: GateResult) -> str:
    return "-" if r.observed is None else f"{r.observed:.6g}"


def _headline(verdict: GateVerdict) -> str:
    passed = sum(r.passed for r in verdict.results)
    word = "PASSED" if verdict.passed else "FAILED"
    return f"{word} (mode {verdict.mode}): {passed} of {len(verdict.results)} rules passed"


def render_verdict(verdict: GateVerdict, console: Any, *, title: str | None = None,
                   note: str | None = None) -> None:
    """The verdict line, one table row per rule, then the reasons of a failure."""
    from rich.markup import escape
    from rich.table import Table

    colour = "green" if verdict.passed else "red"
    console.print(f"[{colour}]{escape(_headline(verdict))}[/{colour}]"
                  + (f"  {escape(title)}" if title else ""))
    table = Table(title=f"gates (mode {verdict.mode})", title_justify="left")
    for col in ("gate", "observed", "result", "reason"):
        table.add_column(col)
    for r in verdict.results:
        mark = "[green]pass[/green]" if r.passed else "[red]fail[/red]"
        table.add_row(escape(_rule_text(r)), _observed(r), mark, escape(r.reason))
    console.print(table)
    for reason in verdict.reasons:
        console.print(f"[red]reason:[/red] {escape(reason)}")
    if note:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def verdict_markdown(verdict: GateVerdict) -> str:
    """A Markdown summary for a pull-request comment or the GitHub step summary."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    icon = "✅" if verdict.passed else "❌"
    lines = [f"**{icon} {cell(_headline(verdict))}**", "",
             "| gate | observed | result | reason |", "| --- | --- | --- | --- |"]
    for r in verdict.results:
        lines.append(f"| `{cell(_rule_text(r))}` | {_observed(r)} | "
                     f"{'pass' if r.passed else '**fail**'} | {cell(r.reason)} |")
    return "\n".join(lines) + "\n"


def verdict_json(verdict: GateVerdict) -> dict[str, Any]:
    """The machine form (``common.schema.json#/$defs/gate_verdict``)."""
    return verdict.to_dict()
