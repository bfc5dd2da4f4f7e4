"""The model card: a human-readable README.md for a core bundle, from its release record.

The card says what the model outputs (the task the release record carries: kind, output,
classes, threshold) and, for a multi-class model, one row per class. A record published
before relgate recorded the task renders as it always did, so its card keeps its bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

#: a per-class metric name: class_{k}_{precision|recall|f1}
PER_CLASS = re.compile(r"class_([0-9]+)_(precision|recall|f1)")
PER_CLASS_METRICS = ("precision", "recall", "f1")


@dataclass(frozen=True)
class ClassRow:
    """One class of a multi-class record: its index, its label (the declared name, else the
    index), its support when known, and its precision / recall / F1 estimates."""

    index: int
    label: str
    support: int | None
    estimates: Mapping[str, Mapping[str, Any]]

    def value(self, metric: str) -> float | None:
        v = (self.estimates.get(metric) or {}).get("value")
        return None if v is None or isinstance(v, bool) else float(v)


def class_rows(metrics: Mapping[str, Any], *, n_classes: int | None = None,
               classes: Sequence[str] | None = None,
               support: Sequence[int] | None = None) -> list[ClassRow]:
    """The per-class rows in class order (the order of the confusion matrix and of the
    ``class_{k}_*`` names, stable from one release to the next so two cards compare row by
    row); K is *n_classes*, else the most the metrics, names or supports imply."""
    found = [int(m.group(1)) for m in map(PER_CLASS.fullmatch, metrics) if m]
    k = n_classes if n_classes is not None else max(
        [i + 1 for i in found] + [len(classes or ()), len(support or ())] + [0])
    rows = []
    for i in range(k):
        label = str(classes[i]) if classes is not None and i < len(classes) else str(i)
        count = int(support[i]) if support is not None and i < len(support) else None
        rows.append(ClassRow(index=i, label=label, support=count,
                             estimates={m: metrics.get(f"class_{i}_{m}") or {}
                                        for m in PER_CLASS_METRICS}))
    return rows


def lowest_recall(rows: Sequence[ClassRow]) -> list[ClassRow]:
    """The class(es) with the lowest defined recall (what a per-class recall gate looks at)."""
    defined = [r for r in rows if r.value("recall") is not None]
    if not defined:
        return []
    low = min(r.value("recall") or 0.0 for r in defined)
    return [r for r in defined if r.value("recall") == low]


def _fmt(value: Any) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _shape(shape: Any) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _ci(m: Mapping[str, Any]) -> str:
    return "" if m.get("ci_low") is None else f"[{_fmt(m.get('ci_low'))}, {_fmt(m.get('ci_high'))}]"


def _cell(text: Any) -> str:
    """Record text in a table cell: one line, no column break, no HTML."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def threshold_text(record: Mapping[str, Any]) -> str:
    """How the model decides: argmax (with its "no conclusive" threshold) or a probability."""
    task = record.get("task") or {}
    selective = record.get("selective_threshold")
    if task.get("kind") == "multiclass":
        text = "argmax (the class with the largest probability)"
        if selective is not None:
            text += (f"; no conclusive answer when the largest calibrated probability is below "
                     f"{selective:.6g} (selective threshold)")
        return text
    if task.get("kind") == "none":
        return "none (task kind none: no classifier score, nothing is decided)"
    thr = record.get("threshold")
    if thr is None:
        return "not recorded"
    return f"{thr:.6g} on the calibrated probability of the positive class"


def _task_lines(record: Mapping[str, Any]) -> list[str]:
    task = record.get("task")
    lines = ["## Task", "", "| | |", "| --- | --- |"]
    if not isinstance(task, Mapping):
        lines.append("| kind | not recorded (published before relgate recorded the task) |")
    else:
        kind = str(task["kind"])
        if task.get("n_classes") is not None:
            kind += f" ({task['n_classes']} classes)"
        lines.append(f"| kind | {_cell(kind)} |")
        lines.append(f"| output | `{_cell(task['output'])}` ({_cell(task['output_type'])}"
                     + (f", reducer {_cell(task['reducer'])}" if task.get("reducer") else "")
                     + ") |")
        if task.get("positive") is not None:
            lines.append(f"| positive class | column {task['positive']} |")
        if task.get("kind") == "multiclass":
            names = task.get("classes")
            shown = ("labels 0.." + str(int(task["n_classes"]) - 1) + ", no names declared"
                     if not names else ", ".join(f"{i} {_cell(n)}" for i, n in enumerate(names)))
            lines.append(f"| classes | {shown} |")
        if task.get("top_k"):
            lines.append("| top-k | " + ", ".join(str(t) for t in task["top_k"]) + " |")
    lines.append(f"| threshold | {_cell(threshold_text(record))} |")
    return lines


def calibration_lines(record: Mapping[str, Any]) -> list[str]:
    """The recommended calibration of the release record (none: no lines, as before)."""
    cal = record.get("calibration")
    if not isinstance(cal, Mapping):
        return []
    method = str(cal["method"])
    if cal.get("temperature") is not None:
        method += f" (temperature {cal['temperature']:.6g})"
    if cal.get("a") is not None and cal.get("b") is not None and cal["method"] == "platt":
        method += f" (a {cal['a']:.6g}, b {cal['b']:.6g})"
    lines = ["## Calibration (recommended)", "", "| | |", "| --- | --- |",
             f"| method | {_cell(method)} |"]
    if isinstance(cal.get("input"), Mapping):
        lines.append(f"| input | scale {cal['input']['scale']:.6g}, offset "
                     f"{cal['input']['offset']:.6g} (x * scale + offset before the model) |")
    if cal.get("threshold") is not None:
        lines.append(f"| threshold | {cal['threshold']:.6g} |")
    band = cal.get("inconclusive")
    if isinstance(band, Mapping):
        lines.append(f"| inconclusive band | {band['low']:.6g} <= probability < {band['high']:.6g} |")
    if cal.get("selective_threshold") is not None:
        lines.append(f"| selective threshold | {cal['selective_threshold']:.6g} |")
    lines.append(f"| sha256 | `{cal['sha256'][:16]}…` (calibration.json) |")
    return lines


def _class_lines(metrics: Mapping[str, Any], task: Mapping[str, Any]) -> list[str]:
    rows = class_rows(metrics, n_classes=task.get("n_classes"), classes=task.get("classes"))
    lines = ["## Per class (class order)", "",
             "| # | class | precision | recall | F1 |", "| ---: | --- | --- | --- | --- |"]
    for r in rows:
        cells = [f"{_fmt(r.value(m))} {_ci(r.estimates[m])}".rstrip() for m in PER_CLASS_METRICS]
        lines.append(f"| {r.index} | {_cell(r.label)} | " + " | ".join(cells) + " |")
    low = lowest_recall(rows)
    if low:
        lines += ["", "Lowest recall: " + ", ".join(f"{_cell(r.label)} ({_fmt(r.value('recall'))})"
                                                    for r in low) + "."]
    return lines


def variant_lines(variants: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per variant: judged on its own evidence (its gates' verdict, the gated metrics
    and its threshold), or shipped unjudged. A record written before variants had evidence
    has no such section (its card is rebuilt byte for byte)."""
    lines = ["## Variants", "",
             "| variant | path | evaluated | gates | gated metrics | threshold |",
             "| --- | --- | --- | --- | --- | --- |"]
    for art in variants:
        name = _cell(art.get("name", PurePosixPath(art["path"]).stem))
        ev = art.get("evaluation")
        if isinstance(ev, Mapping):
            gates = ev["gates"]
            verdict = f"{gates['mode']}: {'passed' if gates['passed'] else 'failed'}"
            seen: dict[str, str] = {}
            for g in gates["results"]:
                seen.setdefault(g["metric"], f"{g['metric']} {_fmt(g['observed'])}")
            where = (f"on `{_cell(ev['data']['path'])}` (sha256 `{ev['data']['sha256'][:12]}…`), "
                     f"report `variants/{name}/validation_report.json`")
            lines.append(f"| {name} | `{_cell(art['path'])}` | yes, {where} | {verdict} | "
                         f"{_cell(', '.join(seen.values()))} | {_cell(threshold_text(ev))} |")
        else:
            lines.append(f"| {name} | `{_cell(art['path'])}` | **no**: declared `evaluated: false`; "
                         "shipped hashed with its contract, never judged | - | - | - |")
    return lines


def resource_lines(resources: Mapping[str, Any]) -> list[str]:
    """The resource budgets and what the validation report measured, on which machine."""
    reported = resources.get("reported") or {}
    measured, machine = reported.get("measured") or {}, reported.get("machine") or {}
    lines = ["## Resources (as measured for the validation report)", "",
             "| measure | value |", "| --- | ---: |"]
    for key in ("peak_rss_mb", "model_bytes", "load_seconds", "latency_ms"):
        if measured.get(key) is not None:
            lines.append(f"| {key} | {_fmt(measured[key])} |")
    batch = reported.get("batch") or {}
    if batch.get("chosen") is not None:
        lines.append(f"| batch size | {batch['chosen']} |")
    lines += ["", f"Measured on {_cell(machine.get('cpu', 'unknown'))} ({machine.get('cores', '?')} "
              f"cores, onnxruntime {_cell(machine.get('onnxruntime', '?'))}, "
              f"{machine.get('threads', '?')} threads); the budgets are gates above."]
    return lines


def slice_lines(slices: Mapping[str, Any]) -> list[str]:
    """The gates per slice: each rule, its verdict, the slices it judged and those too small
    to gate (reported, never silently dropped), and the correction for many slices."""
    verdict = "passed" if slices.get("passed") else "failed"
    lines = [f"## Gates per slice ({verdict})", "",
             "| rule | result | slices judged | too small to gate | reason |",
             "| --- | --- | --- | --- | --- |"]
    for r in slices.get("rules") or []:
        lines.append(f"| {_cell(r.get('rule'))} | {'✅' if r.get('passed') else '❌'} | "
                     f"{_cell(', '.join(r.get('slices') or [])) or '-'} | "
                     f"{_cell(', '.join(r.get('too_small') or [])) or '-'} | {_cell(r.get('reason'))} |")
    lines += ["", f"Slices with fewer than {slices.get('min_support')} rows are never gated on a "
              f"point value. Intervals over every slice are simultaneous: {slices.get('correction')}."]
    return lines


def model_card(record: Mapping[str, Any]) -> str:
    """Markdown: what the model is, its contract, metrics with intervals, gates, how to verify."""
    name = record["name"]
    promoted = next(a for a in record["artifacts"] if a["role"] == "promoted")
    lines = [
        f"# Release {name}",
        "",
        f"Core bundle of release `{name}` (git tag `{record.get('tag', name)}`), published by relgate. "
        "Every file in this folder is listed in `manifest.json` with its size and sha256; nothing "
        "here may change. When and from which commit it was published is recorded outside the "
        f"bundle, in the registry's `analysis/release_{name}.json`.",
        "",
        "## Artifacts",
        "",
        "| path | role | sha256 | size (bytes) | description |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for art in record["artifacts"]:
        lines.append(f"| `{art['path']}` | {art['role']} | `{art['sha256'][:16]}…` | "
                     f"{art.get('size', '')} | {art.get('description', '')} |")
    variants = [a for a in record["artifacts"] if a["role"] == "variant"]
    if any("evaluated" in a for a in variants):  # a record of before variant evidence: as it was
        lines += ["", *variant_lines(variants)]
    if any(a["role"] == "file" for a in record["artifacts"]):
        lines += ["", "Files with role `file` are sidecars (`release.files`): shipped and hashed "
                  "as they are, never loaded or evaluated by relgate."]
    parity = (record.get("evidence") or {}).get("parity")
    if parity is not None:
        lines += ["", f"`parity.json` (sha256 `{str(parity['sha256'])[:16]}…`): `relgate parity` "
                  "ran the deploy model and the promoted ONNX model on the same rows, and "
                  "promote re-ran it; its bounds held."]
    contract = promoted.get("contract") or {}
    lines += ["", "## Contract of the promoted model", "",
              "| direction | name | dtype | shape |", "| --- | --- | --- | --- |"]
    for direction in ("inputs", "outputs"):
        for t in contract.get(direction, []):
            lines.append(f"| {direction[:-1]} | `{t['name']}` | {t['dtype']} | {_shape(t['shape'])} |")
    if contract.get("score_output"):
        lines.append(f"\nScore output: `{contract['score_output']}` ({contract.get('score_kind', 'score')}).")
    task = record.get("task")
    multiclass = isinstance(task, Mapping) and task.get("kind") == "multiclass"
    if task is not None or record.get("threshold") is not None:
        lines += ["", *_task_lines(record)]
    if record.get("calibration") is not None:
        lines += ["", *calibration_lines(record)]
    lines += ["", "## Metrics (test split, calibrated)", "",
              "| metric | value | interval |", "| --- | ---: | --- |"]
    for key in sorted(record["metrics"]):
        if multiclass and PER_CLASS.fullmatch(key):
            continue  # in the per-class table
        m = record["metrics"][key]
        lines.append(f"| {key} | {_fmt(m.get('value'))} | {_ci(m)} |")
    if multiclass:
        assert isinstance(task, Mapping)
        lines += ["", *_class_lines(record["metrics"], task)]
    gates = record["gates"]
    lines += ["", f"## Gates (mode `{gates['mode']}`: {'passed' if gates['passed'] else 'failed'})", "",
              "| gate | observed | result | reason |", "| --- | ---: | --- | --- |"]
    for g in gates["results"]:
        where = "" if g["on"] == "point" else f" ({g['on']})"
        lines.append(f"| {g['metric']}{where} {g['op']} {g['bound']:g} | {_fmt(g['observed'])} | "
                     f"{'✅' if g['passed'] else '❌'} | {g['reason']} |")
    if isinstance(record.get("resources"), Mapping):
        lines += ["", *resource_lines(record["resources"])]
    if isinstance(record.get("slices"), Mapping):
        lines += ["", *slice_lines(record["slices"])]
    prov = record["provenance"]
    lines += ["", "## Provenance", "",
              f"- seed: {prov.get('seed')}",
              f"- platform: {prov.get('platform')}",
              "- packages: " + ", ".join(f"{k} {v}" for k, v in sorted(prov.get("packages", {}).items())),
              "", "## How to verify", "",
              "```bash",
              f"relgate verify models/core/{name}",
              "```",
              "",
              "Exit code 0 means every file matches `manifest.json` byte for byte and no other file is "
              "present. To detect a consistent rewrite of files and manifest, pin the root digest "
              f"recorded outside the bundle (`analysis/release_{name}.json`, field `bundle.root_digest`):",
              "",
              "```bash",
              f"relgate verify models/core/{name} --root-digest <root_digest>",
              "```", ""]
    return "\n".join(lines)
