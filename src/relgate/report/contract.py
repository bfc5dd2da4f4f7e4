"""Rendering of a model's contract (``relgate inspect``) and of scoring progress.

Works from the same plain dict that ``relgate inspect --json`` prints, so the table and
the JSON never disagree.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from relgate.report import progress_enabled


def _shape(shape: Any) -> str:
    if shape is None:
        return "(unknown rank)"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def render_inspect(info: Mapping[str, Any], console: Any) -> None:
    """Print the contract, files and digest of a model as rich tables."""
    from rich.table import Table
    from rich.text import Text

    def row(table: Any, *cells: str) -> None:
        table.add_row(*(Text(c) for c in cells))  # names and shapes are not markup

    contract = info["contract"]
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    row(head, "model", str(info["path"]))
    row(head, "sha256", info["sha256"])
    row(head, "size", _size(int(info["size"])))
    row(head, "producer", contract.get("producer") or "(none)")
    row(head, "ir version", str(contract.get("ir_version")))
    row(head, "opsets", ", ".join(f"{d} {v}" for d, v in sorted(contract["opsets"].items())))
    row(head, "input kind", contract["input_kind"])
    score = f"{contract['score_output']} ({contract['score_kind']}"
    if contract.get("positive_index") is not None:
        score += f", positive index {contract['positive_index']}"
    row(head, "score output", score + ")")
    if info.get("features_output"):
        row(head, "features output", info["features_output"])
    task = info.get("task")
    if task:
        kind = task.get("output_type")
        row(head, "task", f"{task['output']}: {task.get('reason', '')}" if kind else
            f"{task['output']}: {task.get('reason', '')}; declare task.output_type "
            "(logit | probability | features) before validate/calibrate")
    console.print(head)

    tensors = Table(title="inputs and outputs", title_justify="left")
    for col in ("", "name", "dtype", "shape"):
        tensors.add_column(col)
    for side in ("inputs", "outputs"):
        for t in contract[side]:
            row(tensors, side[:-1], t["name"], t["dtype"], _shape(t["shape"]))
    console.print(tensors)

    files = Table(title="files", title_justify="left")
    for col in ("path", "size", "sha256"):
        files.add_column(col)
    for f in info["files"]:
        row(files, f["path"], _size(int(f["size"])), f["sha256"])
    console.print(files)


def render_evaluated(summary: Mapping[str, Any], console: Any) -> None:
    """One line on what ``relgate evaluate`` scored and wrote."""
    console.print(
        f"scored {summary['n']} samples ({summary['n_pos']} positive, {summary['n_neg']} negative)"
        f" with {summary['model']} [{summary['score_output']}, {summary['score_kind']}]"
        f" in {summary['seconds']:.2f} s -> {summary['out']}",
        highlight=False, markup=False,
    )


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr when :func:`progress_enabled`, else a no-op callback."""
    if not progress_enabled():
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(file=sys.stderr),
                  transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
