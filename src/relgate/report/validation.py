"""Terminal summaries of a calibration record and of a validation report.

Short on purpose: the verdict first, then the numbers a reviewer looks at
(metrics with their intervals, one line per gate). The full record is the
JSON file; ``--json`` prints it instead of this summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}f}"


def render_calibration(record: Mapping[str, Any], console: Any, *, out: str | None = None) -> None:
    """One table: the chosen input transform, the probability map, the threshold, ECE and Brier."""
    from rich.markup import escape
    from rich.table import Table

    prob = record["probability"]
    thr = record["threshold"]
    table = Table(title="calibration", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value")
    split = record["fit_split"]
    table.add_row("fit on", escape(f"{split['name']} ({split['path']}, n={split['n']})"))
    table.add_row("input", f"x * {record['input']['scale']:g} + {record['input']['offset']:g}")
    if record.get("sweep"):
        sw = record["sweep"]
        table.add_row("sweep", f"{len(sw['scales'])} scales x {len(sw['offsets'])} offsets")
    mapping = f"{prob['method']}: p = sigmoid({prob['a']:.6g} * s + {prob['b']:.6g})"
    if prob.get("temperature") is not None:
        mapping += f", T = {prob['temperature']:.6g}"
    if prob["score_is_probability"]:
        mapping += " (s = logit of the probability output)"
    table.add_row("probability", mapping)
    detail = f"{thr['value']:.6g} ({thr['strategy']}"
    if thr.get("precision_target") is not None:
        detail += f", precision target {thr['precision_target']:g}"
    detail += f"): precision {_num(thr.get('precision'))}, recall {_num(thr.get('recall'))}, " \
              f"f1 {_num(thr.get('f1'))}"
    table.add_row("threshold", detail)
    band = record.get("inconclusive")
    if band:
        table.add_row("no conclusive", escape(f"[{band['low']:.4g}, {band['high']:.4g}) "
                                              f"share {_num(band.get('share'))}"))
    ece = record["ece"]
    table.add_row(f"ECE ({ece['bins']} bins)", f"{_num(ece['before'])} -> {_num(ece['after'])}")
    if record.get("brier"):
        brier = record["brier"]
        table.add_row("Brier", f"{_num(brier['before'])} -> {_num(brier['after'])}")
    console.print(table)
    if out:
        console.print(escape(f"wrote {out}"))


def _checks_line(checks: Mapping[str, Any]) -> str:
    """One line for the model checks: finite outputs, batch independence."""
    def mark(ok: bool) -> str:
        return "[green]ok[/green]" if ok else "[red]FAILED[/red]"

    fin = checks["finite"]
    parts = [f"finite outputs {mark(fin['passed'])}"
             + ("" if fin["passed"] else f" ({fin['nan']} NaN, {fin['inf']} inf)")]
    batch = checks.get("batch")
    if batch is None:
        parts.append("batch independence not checked")
    else:
        diff = batch["max_abs_diff"]
        shown = "non-finite" if diff is None else f"{diff:.3g}"
        parts.append(f"batch independence {mark(batch['passed'])} ({batch['rows']} rows alone vs "
                     f"batch {batch['batch_size']}, max diff {shown})")
    return "checks: " + ", ".join(parts)


#: the largest K whose confusion matrix is printed (a larger one is in the JSON report)
MAX_CONFUSION_CLASSES = 20


def _ci_text(entry: Mapping[str, Any]) -> str:
    lo, hi = entry.get("ci_low"), entry.get("ci_high")
    return "" if lo is None or hi is None else f" [{_num(lo)}, {_num(hi)}]"


def _class_table(report: Mapping[str, Any]) -> Any:
    """One row per class of a multi-class report, in class order (the confusion matrix's
    order): #, class (declared name, else the index), support, precision, recall, F1 with
    their intervals; the lowest recall is marked."""
    from rich.markup import escape
    from rich.table import Table

    from relgate.card import PER_CLASS_METRICS, class_rows, lowest_recall

    task = report.get("task") or {}
    rows = class_rows(report["metrics"], n_classes=task.get("n_classes"),
                      classes=task.get("classes"), support=report["data"].get("support"))
    low = {r.index for r in lowest_recall(rows)}
    table = Table(title="per class", title_justify="left")
    for col in ("#", "class", "support", "precision", "recall", "f1", ""):
        table.add_column(col)
    for r in rows:
        cells = [_num(r.value(m)) + _ci_text(r.estimates[m]) for m in PER_CLASS_METRICS]
        table.add_row(str(r.index), escape(r.label), _num(r.support),
                      *(escape(c) for c in cells), "lowest recall" if r.index in low else "")
    return table


def _confusion(report: Mapping[str, Any], console: Any) -> None:
    """The confusion matrix of a multi-class report (rows true, columns predicted) up to
    MAX_CONFUSION_CLASSES classes; TP/FP/TN/FN of a binary report that has them."""
    from rich.markup import escape
    from rich.table import Table

    matrix = report.get("confusion")
    if not matrix:
        return
    task = report.get("task") or {}
    if task.get("kind") != "multiclass":
        (tn, fp), (fn, tp) = matrix
        console.print(f"confusion at threshold {report['threshold']:.6g}: "
                      f"TP {tp}, FP {fp}, TN {tn}, FN {fn}")
        return
    if len(matrix) > MAX_CONFUSION_CLASSES:
        console.print(f"confusion matrix: {len(matrix)} classes, in the JSON report (confusion)")
        return
    names = task.get("classes") or []
    table = Table(title="confusion (rows true, columns predicted)", title_justify="left")
    table.add_column("true / predicted")
    for j in range(len(matrix)):
        table.add_column(str(j), justify="right")
    for i, row in enumerate(matrix):
        label = f"{i} {names[i]}" if i < len(names) else str(i)
        table.add_row(escape(label), *(str(c) for c in row))
    console.print(table)


def render_validation(report: Mapping[str, Any], console: Any, *, out: str | None = None) -> None:
    """The verdict, metrics with intervals, and one row per gate."""
    from rich.markup import escape
    from rich.table import Table

    data = report["data"]
    task = report.get("task") or {}
    multiclass = task.get("kind") == "multiclass"
    verdict = "[green]PASSED[/green]" if report["passed"] else "[red]FAILED[/red]"
    selective = (report.get("calibration") or {}).get("selective") or {}
    argmax = "predicted by argmax" + (
        "" if selective.get("threshold") is None
        else f", no conclusive below {selective['threshold']:.6g}")
    counts = (f"{task.get('n_classes', len(data.get('support', [])))} classes, {argmax}"
              if multiclass else f"pos={data['n_pos']}, neg={data['n_neg']}), "
                                 f"threshold {report['threshold']:.6g}")
    if task.get("kind") == "none":  # no labels, no score: judged on its health and budgets
        counts = "no labels), task kind none"
    console.print(
        f"{verdict}  "
        + escape(f"{report['model']['path']} on {data.get('split', '')} "
                 f"({data['path']}, n={data['n']}, " + counts
                 + (")" if multiclass else ""))
    )
    boot = report.get("bootstrap") or {}
    conf = f"{boot.get('confidence', 0) * 100:g}% CI" if boot.get("resamples") else "CI"
    metrics = Table(title="metrics", title_justify="left")
    for col in ("metric", "value", conf, "note"):
        metrics.add_column(col)
    from relgate.metrics import ALL_METRICS

    rank = {name: i for i, name in enumerate(ALL_METRICS)}
    ordered = sorted(report["metrics"].items(), key=lambda kv: (rank.get(kv[0], 99), kv[0]))
    if multiclass:  # per-class numbers go to their own table
        from relgate.card import PER_CLASS

        ordered = [(k, v) for k, v in ordered if not PER_CLASS.fullmatch(k)]
    for name, entry in ordered:
        lo, hi = entry.get("ci_low"), entry.get("ci_high")
        ci = "-" if lo is None or hi is None else escape(f"[{_num(lo)}, {_num(hi)}]")
        metrics.add_row(name, _num(entry.get("value")), ci, escape(entry.get("reason", "")))
    console.print(metrics)
    if multiclass:
        console.print(_class_table(report))
    _confusion(report, console)
    gates = Table(title=f"gates (mode {report['gates']['mode']})", title_justify="left")
    for col in ("gate", "observed", "result", "reason"):
        gates.add_column(col)
    for r in report["gates"]["results"]:
        where = "" if r["on"] == "point" else f" ({r['on']})"
        mark = "[green]pass[/green]" if r["passed"] else "[red]fail[/red]"
        gates.add_row(escape(f"{r['metric']}{where} {r['op']} {r['bound']:g}"),
                      _num(r["observed"]), mark, escape(r["reason"]))
    console.print(gates)
    if report.get("slices") is not None:  # issue 19
        from relgate.report.slices import render_slices

        render_slices(report["slices"], console)
    checks = report.get("checks")
    if checks:
        console.print(_checks_line(checks))
    for reason in report["reasons"]:
        console.print(f"[red]reason:[/red] {escape(reason)}")
    if out:
        console.print(escape(f"wrote {out}"))
