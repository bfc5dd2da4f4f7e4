"""Rendering of a parity record for terminals: the verdict, one row per number, the reasons."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: record metric -> (bound key, how the bound reads)
_ROWS = (("max_abs_diff", "max_abs_diff", "<="), ("correlation", "min_correlation", ">="),
         ("agreement", "min_agreement", ">="), ("spearman", None, ">="))


def _num(x: Any) -> str:
    return "undefined" if x is None else f"{x:.6g}"


def render_parity(record: Mapping[str, Any], console: Any, *, written: str | None = None) -> None:
    """The verdict line, what was compared, one table row per number, then the reasons."""
    from rich.markup import escape
    from rich.table import Table

    ok = bool(record["passed"])
    colour = "green" if ok else "red"
    ref, model, data = record["reference"], record["model"], record["data"]
    console.print(f"[{colour}]parity {'PASSED' if ok else 'FAILED'}[/{colour}]  "
                  f"{escape(ref['path'])} ({ref['format']}) vs {escape(model['path'])} on "
                  f"{record['samples']['n']} samples of {escape(data['path'])}")
    out, decision = record["output"], record["decision"]
    rule = decision["rule"]
    if decision["threshold"] is not None:
        rule += f" (threshold {decision['threshold']:.6g})"
    console.print(f"output {escape(out['name'])} {out['shape']}, decisions: {escape(rule)}")
    table = Table(title_justify="left")
    for col in ("number", "observed", "gate"):
        table.add_column(col)
    for name, bound_key, op in _ROWS:
        bound = None if bound_key is None else record["bounds"].get(bound_key)
        gate = "-" if bound is None else f"{op} {bound:g}"
        table.add_row(name, _num(record["metrics"][name]), gate)
    console.print(table)
    for reason in record["reasons"]:
        console.print(f"[red]reason:[/red] {escape(reason)}")
    if written:
        console.print(f"record: {escape(written)}")
