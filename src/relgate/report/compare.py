"""Rendering of ``relgate compare`` records: a text table for terminals and logs, Markdown for PRs."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import IO, Any


def _num(entry: Mapping[str, Any] | None, signed: bool = False) -> str:
    if entry is None or entry.get("value") is None:
        return "-"
    value = float(entry["value"])
    text = f"{value:+.4f}" if signed else f"{value:.4f}"
    if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
        fmt = "{:+.4f}" if signed else "{:.4f}"
        text += f" [{fmt.format(entry['ci_low'])}, {fmt.format(entry['ci_high'])}]"
    return text


def _stability(row: Mapping[str, Any]) -> str:
    s = row.get("stability")
    if not s:
        return "-"
    return (f"{s['mean']:.4f} ± {s['std']:.4f} ({s['min']:.4f}–{s['max']:.4f}, "
            f"n={s['snapshots']})")


def _threshold(row: Mapping[str, Any]) -> str:
    values = sorted({"argmax" if s["threshold_source"] == "argmax" else f"{s['threshold']:.4g}"
                     for s in row["snapshots"]})
    return ",".join(values)


def headers(record: Mapping[str, Any]) -> list[str]:
    by = record["by"]
    return ["rank", "group", "candidate", by, *record["then"], f"Δ{by} vs leader",
            f"{by} across snapshots", "threshold", "model"]


def rows(record: Mapping[str, Any]) -> list[list[str]]:
    names = [record["by"], *record["then"]]
    out = []
    for row in record["candidates"]:
        group = str(row["group"]) + (" (tied with the leader)" if row["tied_with_leader"] else "")
        delta = "leader" if row["name"] == record["leader"] else \
            _num(row["delta_vs_leader"][record["by"]], signed=True)
        out.append([str(row["rank"]), group, row["name"],
                    *(_num(row["metrics"][n]) for n in names), delta, _stability(row),
                    _threshold(row), row["pick"]["model"]])
    return out


def _footer(record: Mapping[str, Any]) -> list[str]:
    boot = record["bootstrap"]
    lower = record["lower_is_better"]
    data = record["data"]
    counts = f"{data['n_pos']} positive" if "n_pos" in data else \
        f"{len(data.get('support', []))} classes"
    return [
        f"winner: {record['winner']} (leader on {record['by']}: {record['leader']}); "
        f"data {data['path']} sha256 {data['sha256'][:12]}… n={data['n']} ({counts})",
        f"{boot['resamples']} paired stratified resamples, seed {boot['seed']}, "
        f"{boot['confidence']:.0%} intervals; a group holds the candidates whose paired "
        f"interval of the delta against its head spans 0; tie-breakers order within a group"
        + (f"; lower is better for {', '.join(lower)}" if lower else ""),
    ]


def compare_text(record: Mapping[str, Any], file: IO[str] | None = None) -> None:
    """An aligned plain-text table (no colour: it is read in logs as often as on terminals)."""
    out = file or sys.stdout
    table = [headers(record), *rows(record)]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    for line in _footer(record):
        out.write(line + "\n")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def compare_markdown(record: Mapping[str, Any], file: IO[str] | None = None) -> None:
    """A GitHub-flavoured Markdown table with the same columns and footer."""
    out = file or sys.stdout
    head = headers(record)
    out.write(f"### relgate compare: {_md_cell(record['winner'])} wins on {record['by']}\n\n")
    out.write("| " + " | ".join(_md_cell(h) for h in head) + " |\n")
    out.write("|" + "|".join("---" for _ in head) + "|\n")
    for r in rows(record):
        out.write("| " + " | ".join(_md_cell(c) for c in r) + " |\n")
    out.write("\n")
    for line in _footer(record):
        out.write(_md_cell(line) + "\n\n")


def pick_line(record: Mapping[str, Any]) -> str:
    """``NAME<TAB>MODEL[<TAB>CALIBRATION]`` of the winner, for scripts."""
    row = next(r for r in record["candidates"] if r["name"] == record["winner"])
    parts = [row["name"], row["pick"]["model"]]
    if row["pick"]["calibration"]:
        parts.append(row["pick"]["calibration"])
    return "\t".join(parts)
