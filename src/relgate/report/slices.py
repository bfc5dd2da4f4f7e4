"""The per-slice tables of a validation report (issue 19): per partition its slices worst
first, with support, the value of the metric they are ordered by, the slice's own interval
and the simultaneous one, slices too small to gate marked; then one line per slice rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: rows shown per partition (the JSON report holds them all)
MAX_ROWS = 25


def _num(x: Any) -> str:
    return "-" if x is None else f"{float(x):.4f}"


def _ci(lo: Any, hi: Any) -> str:
    return "-" if lo is None or hi is None else f"[{_num(lo)}, {_num(hi)}]"


def _rows(part: Mapping[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    by = part["order_by"]
    out = []
    for row in part["slices"][:MAX_ROWS]:
        m = row["metrics"].get(by) or {}
        out.append((row["key"], str(row["n"]), "yes" if row["gated"] else "too small",
                    _num(m.get("value")), _ci(m.get("ci_low"), m.get("ci_high")),
                    _ci(m.get("sim_low"), m.get("sim_high"))))
    return out


def render_slices(block: Mapping[str, Any], console: Any, *, rules: bool = True) -> None:
    """The terminal tables (rich); *rules* False leaves out the recorded rule results (a
    summary that re-judges shows its own verdict instead)."""
    from rich.markup import escape
    from rich.table import Table

    pct = f"{block['confidence'] * 100:g}%"
    for part in block["partitions"]:
        table = Table(title=f"slices by {part['name']} (worst first by {part['order_by']}; "
                            f"gated: n >= {block['min_support']})", title_justify="left")
        for col in ("slice", "n", "gated", part["order_by"], f"{pct} CI",
                    f"{pct} simultaneous"):
            table.add_column(escape(col))
        for r in _rows(part):
            table.add_row(*(escape(c) for c in r))
        console.print(table)
        more = len(part["slices"]) - MAX_ROWS
        if more > 0:
            console.print(f"... {more} more slices in the JSON report")
    console.print(escape(f"every-slice rules use {block['correction']}"))
    if not rules:
        return
    table = Table(title="slice gates", title_justify="left")
    for col in ("rule", "observed", "result", "reason"):
        table.add_column(col)
    for r in block["results"]:
        mark = "[green]pass[/green]" if r["passed"] else "[red]fail[/red]"
        table.add_row(escape(r["rule"]), _num(r["observed"]), mark, escape(r["reason"]))
    console.print(table)


def slices_markdown(block: Mapping[str, Any]) -> list[str]:
    """The Markdown tables (PR summary)."""
    from relgate.report.markdown import md_text

    pct = f"{block['confidence'] * 100:g}%"
    lines: list[str] = []
    for part in block["partitions"]:
        lines += [f"**Slices by {md_text(part['name'])}** (worst first by "
                  f"{md_text(part['order_by'])}; gated: n ≥ {block['min_support']})", "",
                  f"| slice | n | gated | {md_text(part['order_by'])} | {pct} CI | "
                  f"{pct} simultaneous |", "|---|---:|---|---:|---|---|"]
        lines += ["| " + " | ".join(md_text(c) for c in r) + " |" for r in _rows(part)]
        more = len(part["slices"]) - MAX_ROWS
        if more > 0:
            lines.append(f"| … {more} more in the JSON report | | | | | |")
        lines.append("")
    lines.append(f"Every-slice rules use {md_text(block['correction'])}.")
    worse = worse_slices_markdown(block)
    return lines + (["", *worse] if worse else [])


def worse_slices_markdown(block: Mapping[str, Any]) -> list[str]:
    """The slices whose paired delta against the previous release went the wrong way."""
    from relgate.gates import LOWER_IS_BETTER
    from relgate.report.markdown import md_text

    worse = []
    for part in block["partitions"]:
        for row in part["slices"]:
            for name, d in sorted((row.get("deltas") or {}).items()):
                if d is not None and (d > 0 if name in LOWER_IS_BETTER else d < 0):
                    worse.append((row["key"], name, d))
    if not worse:
        return []
    lines = ["**Slices that got worse** than the previous release", "",
             "| slice | metric | delta |", "|---|---|---:|"]
    lines += [f"| {md_text(k)} | {md_text(m)} | {d:+.4f} |" for k, m, d in worse]
    return lines
