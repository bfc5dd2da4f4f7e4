"""Terminal summaries of a multi-class calibration record and of a multi-class evaluate run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{float(value):.{digits}g}"


def render_multiclass_calibration(record: Mapping[str, Any], console: Any, *,
                                  out: str | None = None) -> None:
    """One table: fit split, temperature, NLL and ECE before -> after, the selective threshold."""
    from rich.markup import escape
    from rich.table import Table

    task, prob, split = record["task"], record["probability"], record["fit_split"]
    table = Table(title="calibration (multi-class)", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value")
    table.add_row("fit on", escape(f"{split['name']} ({split['path']}, n={split['n']})"))
    table.add_row("output", escape(f"{task['output']} ({task['output_type']}, "
                                   f"{task['n_classes']} classes)"))
    if prob["method"] == "temperature":
        z = "z" if task["output_type"] == "logits" else "log p"
        table.add_row("probability", f"temperature: p = softmax({z} / T), "
                                     f"T = {prob['temperature']:.6g}")
    else:
        table.add_row("probability", "none: the model's own probabilities")
    nll, ece = record["nll"], record["ece"]
    table.add_row("NLL", f"{_num(nll['before'])} -> {_num(nll['after'])}")
    table.add_row(f"ECE ({ece['bins']} bins)", f"{_num(ece['before'])} -> {_num(ece['after'])}")
    sel = record.get("selective")
    if sel is not None:
        want = f"accuracy >= {sel['target_accuracy']:g} at coverage >= {sel['min_coverage']:g}"
        if sel["threshold"] is None:
            table.add_row("no conclusive", "[red]no threshold[/red] "
                          + escape(f"({want}): {sel.get('reason', '')}"))
        else:
            table.add_row("no conclusive",
                          f"answer when max p >= {sel['threshold']:.6g} ({want}): coverage "
                          f"{_num(sel['coverage'])}, accuracy {_num(sel['selective_accuracy'])}")
    console.print(table)
    if out:
        console.print(escape(f"wrote {out}"))


def render_multiclass_evaluated(summary: Mapping[str, Any], counts: Sequence[tuple[str, int, int]],
                                console: Any) -> None:
    """What ``relgate evaluate`` scored: one line, then labels and predictions per class."""
    from rich.table import Table

    line = (f"scored {summary['n']} samples ({summary['n_classes']} classes) with "
            f"{summary['model']} [{summary['score_output']}, {summary['output_type']}"
            f"{', calibrated' if summary['calibrated'] else ''}] in {summary['seconds']:.2f} s"
            f" -> {summary['out']}")
    console.print(line, highlight=False, markup=False)
    if summary.get("inconclusive") is not None:
        console.print(f"no conclusive: {summary['inconclusive']} of {summary['n']} samples "
                      f"(max p < {summary['threshold']:.6g})", highlight=False, markup=False)
    table = Table(title="per class", title_justify="left")
    for col in ("class", "labels", "predicted"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, labelled, predicted in counts:
        table.add_row(name, str(labelled), str(predicted))
    console.print(table)
