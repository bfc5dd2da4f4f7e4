"""Rendering of ``relgate reproduce`` results: a table as text, Markdown, or JSON."""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING

from relgate.report.verify import emit

if TYPE_CHECKING:
    from relgate.reproduce import OutputCheck, ReproduceResult

HEADERS = ("stage", "output", "verdict", "largest difference", "where")


def _row(c: OutputCheck) -> tuple[str, str, str, str, str]:
    largest = "-" if c.largest is None else f"{c.largest:.3g}"
    where = c.where or c.detail or "-"
    if c.where and c.detail:
        where = f"{c.where} ({c.detail})"
    return (c.stage, c.path, c.verdict, largest, where)


def _headline(result: ReproduceResult) -> str:
    where = f"{result.registry} at {result.rev} (commit {result.commit[:12]})"
    n = len(result.checks)
    if result.ok:
        return f"reproduced: {where}: all {n} outputs reproduce as declared"
    bad = len(result.problems())
    return f"NOT reproduced: {where}: {bad} problem{'s' if bad != 1 else ''} in {n} outputs"


def reproduce_text(result: ReproduceResult, file: IO[str] | None = None) -> None:
    """A rich table on a terminal; tab-separated lines otherwise."""
    stream = file or sys.stdout
    rows = [_row(c) for c in result.checks]
    if not stream.isatty():
        lines = [("", _headline(result)), ("", "\t".join(HEADERS))]
        lines += [("", "\t".join(r)) for r in rows]
        lines += [("", f"problem: {p}") for p in result.problems()]
        emit(lines, stream)
        return
    from rich.table import Table

    from relgate.report import console

    out = console(stream)
    table = Table(title=_headline(result), title_justify="left")
    for h in HEADERS:
        table.add_column(h, justify="right" if h == "largest difference" else "left")
    for c, r in zip(result.checks, rows, strict=True):
        table.add_row(*r, style=None if c.ok else "red")
    out.print(table)
    for p in result.problems():
        out.print(f"problem: {p}", style="red", markup=False, highlight=False)


def _md(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def reproduce_markdown(result: ReproduceResult) -> str:
    """Markdown for a pull request comment or a GitHub step summary."""
    mark = "✅" if result.ok else "❌"
    lines = [f"### {mark} relgate reproduce", "", _headline(result), "",
             "| " + " | ".join(HEADERS) + " |", "|" + " --- |" * len(HEADERS)]
    lines += ["| " + " | ".join(_md(x) for x in _row(c)) + " |" for c in result.checks]
    if result.problems():
        lines += ["", *(f"- {_md(p)}" for p in result.problems())]
    tol = result.tolerances
    by_key = ", ".join(f"{k} {v:g}" for k, v in sorted(tol.by_key.items())) or "none"
    lines += ["", f"Tolerances (absolute): {by_key}; every other number: {tol.default:g}."]
    return "\n".join(lines) + "\n"
