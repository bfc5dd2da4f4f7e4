"""The ``relgate report`` summary: one record, rendered for a pull request, a terminal or a script.

``summarize`` turns a validation report, a published bundle (its validation report plus
its release record) or a release record into a ``ReportSummary``: the gate verdict (the
gates recorded in the report, or re-judged with the gates of a params file, e.g. the base
branch's), the model and data digests, the model contract, and optionally the deltas of
each metric against a baseline. Deltas are *paired* when the report carries the
paired-bootstrap comparison ``relgate validate --baseline`` computed against that same
baseline model (then each delta has an interval); otherwise they are plain differences of
two reports and are labelled unpaired.

``summary_markdown`` is what a workflow writes to ``$GITHUB_STEP_SUMMARY`` or a PR comment
(byte-for-byte deterministic, checked by golden files); ``render_summary`` prints rich
tables; ``summary_json`` is the machine form. Text that comes from the records (paths,
reasons, tensor names) is escaped, so a report cannot inject HTML or break a table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relgate.gates import LOWER_IS_BETTER, GateResult, GateVerdict, apply_gates
from relgate.params import BaselineSpec, GateRule, GatesSpec
from relgate.report.gates import _headline, _rule_text, render_verdict, verdict_json

#: Output health stats with no "better" direction.
NEUTRAL_METRICS = frozenset({"mean_std", "frac_sig"})
#: Display order of metrics (relgate.metrics.ALL_METRICS, kept here to stay numpy-free).
METRIC_ORDER = ("auc", "pr_auc", "f1", "macro_f1", "precision", "recall", "accuracy",
                "specificity", "ece", "brier", "mean_std", "high_corr_frac", "frac_sig",
                "coverage", "selective_precision", "selective_accuracy")
SHORT_SHA = 12
BASELINE_SUFFIX = " vs baseline"


# ---------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class Reference:
    """What the deltas are measured against: a previous report, bundle or release record."""

    label: str
    name: str | None
    model_sha256: str | None
    data_sha256: str | None
    metrics: Mapping[str, Mapping[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "model_sha256": self.model_sha256,
                "data_sha256": self.data_sha256, "metrics": _plain(self.metrics)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reference:
        return cls(label=str(d["label"]), name=d.get("name"), model_sha256=d.get("model_sha256"),
                   data_sha256=d.get("data_sha256"), metrics=dict(d.get("metrics") or {}))


@dataclass(frozen=True, kw_only=True)
class DeltaRow:
    """One metric: this model's value, the baseline's, and their difference (candidate - baseline).

    ``ci_low`` / ``ci_high`` bound the difference when it is paired (same samples, same
    bootstrap resamples for both models); an unpaired difference has no interval.
    """

    metric: str
    value: float | None
    baseline: float | None
    delta: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    paired: bool = False

    @property
    def change(self) -> str:
        """better / worse / no change / inconclusive (paired interval spans 0) / undefined / ''."""
        if self.delta is None:
            return "undefined"
        if self.metric in NEUTRAL_METRICS:
            return ""
        sign = -1.0 if self.metric in LOWER_IS_BETTER else 1.0
        if self.paired and self.ci_low is not None and self.ci_high is not None:
            lo, hi = sorted((sign * self.ci_low, sign * self.ci_high))
            if lo > 0:
                return "better"
            if hi < 0:
                return "worse"
            return "inconclusive"
        if self.delta == 0:
            return "no change"
        return "better" if sign * self.delta > 0 else "worse"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "baseline": self.baseline,
                "delta": self.delta, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "paired": self.paired, "change": self.change}


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """The deltas of every metric against one baseline, with notes on how to read them."""

    against: str
    rows: tuple[DeltaRow, ...]
    notes: tuple[str, ...]

    @property
    def paired(self) -> bool:
        return bool(self.rows) and all(r.paired for r in self.rows)

    @property
    def kind(self) -> str:
        if self.paired:
            return "paired"
        return "partly paired" if any(r.paired for r in self.rows) else "unpaired"

    def to_dict(self) -> dict[str, Any]:
        return {"against": self.against, "kind": self.kind,
                "rows": [r.to_dict() for r in self.rows], "notes": list(self.notes)}


@dataclass(frozen=True, kw_only=True)
class ReportSummary:
    """Everything ``relgate report`` shows, in one place for the three renderers."""

    source: str
    release: str | None
    tag: str | None
    model_path: str
    model_sha256: str
    contract: Mapping[str, Any]
    data_path: str
    data_sha256: str
    split: str | None
    n: int | None
    n_pos: int | None
    n_neg: int | None
    calibration: str | None
    threshold: float | None
    confidence: float | None
    metrics: Mapping[str, Mapping[str, Any]]
    verdict: GateVerdict
    gates_from: str | None
    recorded_passed: bool
    deltas: Mapping[str, Mapping[str, Any]]
    comparison: Comparison | None
    #: the report's (or release record's) task block; None before relgate recorded tasks
    task: Mapping[str, Any] | None = None
    #: multi-class: rows true x columns predicted; binary: [[TN, FP], [FN, TP]]
    confusion: Sequence[Sequence[int]] | None = None
    #: multi-class: samples per class
    support: Sequence[int] | None = None
    #: multi-class: the "no conclusive" threshold of the calibration applied
    selective_threshold: float | None = None
    #: the report's ``slices`` section (issue 19), None without slices
    slices: Mapping[str, Any] | None = None

    @property
    def multiclass(self) -> bool:
        return self.task is not None and self.task.get("kind") == "multiclass"

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def gates_note(self) -> str | None:
        """Said when re-judging changed the verdict the report recorded."""
        if self.recorded_passed == self.verdict.passed:
            return None
        if self.gates_from is None:
            return (f"the {self.what()} recorded {'passed' if self.recorded_passed else 'failed'}, "
                    f"but its own gates re-judged on its numbers "
                    f"{'pass' if self.verdict.passed else 'fail'}: the record is inconsistent")
        return (f"the {self.what()} recorded {'passed' if self.recorded_passed else 'failed'} "
                f"with its own gates; with the gates from {self.gates_from} it "
                f"{'passes' if self.verdict.passed else 'fails'}")

    def what(self) -> str:
        """What was judged: a release (bundle or release record) or a report."""
        return "release" if self.release is not None else "report"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``relgate report --format json``)."""
        return {
            "kind": "relgate-report",
            "source": self.source,
            "release": None if self.release is None else {"name": self.release, "tag": self.tag},
            "passed": self.passed,
            "gates_from": self.gates_from,
            "recorded_passed": self.recorded_passed,
            "verdict": verdict_json(self.verdict),
            "model": {"path": self.model_path, "sha256": self.model_sha256,
                      "contract": _plain(self.contract)},
            "data": {"path": self.data_path, "sha256": self.data_sha256, "split": self.split,
                     "n": self.n, "n_pos": self.n_pos, "n_neg": self.n_neg},
            "calibration": self.calibration,
            "threshold": self.threshold,
            "confidence": self.confidence,
            "metrics": _plain(self.metrics),
            "comparison": None if self.comparison is None else self.comparison.to_dict(),
        }


# ---------------------------------------------------------------- building


def promoted_artifact(release: Mapping[str, Any]) -> Mapping[str, Any]:
    """The release's one promoted artifact (schema-valid records have exactly one)."""
    from relgate.errors import InputError

    found = [a for a in release["artifacts"] if a.get("role") == "promoted"]
    if len(found) != 1:
        raise InputError(f"release {release.get('name')!r} has {len(found)} promoted artifacts",
                         hint="a release record names exactly one promoted artifact")
    art: Mapping[str, Any] = found[0]
    return art


def reference_from_records(label: str, *, report: Mapping[str, Any] | None = None,
                           release: Mapping[str, Any] | None = None) -> Reference:
    """A baseline from a previous validation report, a bundle (both) or a release record."""
    if report is None and release is None:
        raise ValueError("reference_from_records needs a report or a release record")
    if release is not None:
        art = promoted_artifact(release)
        return Reference(label=label, name=str(release["name"]), model_sha256=art["sha256"],
                         data_sha256=release["evidence"]["data"]["sha256"],
                         metrics=release["metrics"])
    assert report is not None
    return Reference(label=label, name=None, model_sha256=report["model"]["sha256"],
                     data_sha256=report["data"]["sha256"], metrics=report["metrics"])


def recorded_gates(recorded: GateVerdict) -> GatesSpec:
    """The gate spec a recorded verdict was made with, rebuilt from its results.

    Baseline rules (``<metric> vs baseline``) become ``baseline.max_drop`` again, so the
    rebuilt spec judges the same rules on the record's own numbers.
    """
    rules, drops, on = [], {}, "point"
    for r in recorded.results:
        if r.metric.startswith("resources."):
            continue  # a budget is judged on the record's resources (relgate.resources.rejudge)
        if r.metric.endswith(" vs baseline"):
            drops[r.metric.removesuffix(" vs baseline")] = abs(float(r.bound))
            on = "ci_low" if r.on in ("ci_low", "ci_high") else "point"
        else:
            rules.append(GateRule(metric=r.metric, op=r.op, value=float(r.bound), on=r.on))
    baseline = BaselineSpec(release=None, max_drop=drops, on=on) if drops else None
    return GatesSpec(mode=recorded.mode, rules=tuple(rules), baseline=baseline)


def summarize(source: str, *, report: Mapping[str, Any] | None = None,
              release: Mapping[str, Any] | None = None, gates: GatesSpec | None = None,
              gates_from: str | None = None, baseline: Reference | None = None) -> ReportSummary:
    """Build the summary of a report, a bundle (report + release) or a release record.

    With *gates* the metrics are re-judged with them (and *gates_from* names where they
    came from); without, the verdict recorded in the release (else the report) is shown.
    Records must already be schema-valid.
    """
    if report is None and release is None:
        raise ValueError("summarize needs a report or a release record")
    metrics: Mapping[str, Mapping[str, Any]] = (release or report or {})["metrics"]
    recorded = GateVerdict.from_dict((release or report or {})["gates"])
    block = None if report is None else report.get("baseline")
    deltas: Mapping[str, Mapping[str, Any]] = {} if block is None else block["deltas"]
    if gates is None:  # the recorded rules, re-judged on the numbers: a verdict is never trusted
        gates, gates_from = recorded_gates(recorded), None
    verdict = apply_gates(gates, metrics, deltas=None if block is None else deltas,
                          baseline_name=None if block is None else block["name"])
    if gates_from is None:  # the recorded budgets, re-judged on the recorded measurement
        from relgate.resources import rejudge

        usage = (report or {}).get("resources") if release is None else \
            (release.get("resources") or {}).get("reported")
        verdict = rejudge(verdict, recorded.results, usage)
    if report is not None and report.get("slices") is not None:  # slice rules, re-judged too
        from relgate.slice_gates import merged_verdict, rejudge_report

        verdict = merged_verdict(verdict, rejudge_report(report["slices"]))
    if report is not None:
        model, data = report["model"], report["data"]
        model_path, model_sha, contract = model["path"], model["sha256"], model["contract"]
        data_path, data_sha = data["path"], data["sha256"]
        split, n, n_pos, n_neg = data.get("split"), data["n"], data["n_pos"], data["n_neg"]
        cal = report.get("calibration")
        calibration = None if cal is None else str(cal["path"])
        threshold: float | None = float(report["threshold"])
        boot = report.get("bootstrap") or {}
        confidence = float(boot["confidence"]) if boot.get("resamples") else None
        recorded_passed = bool(report["passed"]) if release is None else recorded.passed
        task, confusion, support = report.get("task"), report.get("confusion"), data.get("support")
        sel = (cal or {}).get("selective") or {}
        selective = _number(sel.get("threshold"))
    else:
        assert release is not None
        art = promoted_artifact(release)
        model_path, model_sha, contract = art["path"], art["sha256"], art.get("contract") or {}
        evidence = release["evidence"]
        data_path, data_sha = evidence["data"]["path"], evidence["data"]["sha256"]
        split = n = n_pos = n_neg = None
        cal = evidence.get("calibration")
        calibration = None if cal is None else str(cal["path"])
        threshold = _number(release.get("threshold"))
        confidence = None
        recorded_passed = recorded.passed
        task, confusion, support = release.get("task"), None, None
        selective = _number(release.get("selective_threshold"))
    comparison = None
    if baseline is not None or block is not None:
        comparison = compare(metrics, block=block, reference=baseline, model_sha256=model_sha,
                             data_sha256=data_sha, confidence=confidence)
    return ReportSummary(
        source=source, release=None if release is None else str(release["name"]),
        tag=None if release is None else release.get("tag"),
        model_path=str(model_path), model_sha256=str(model_sha), contract=contract,
        data_path=str(data_path), data_sha256=str(data_sha), split=split, n=n, n_pos=n_pos,
        n_neg=n_neg, calibration=calibration, threshold=threshold, confidence=confidence,
        metrics=metrics, verdict=verdict, gates_from=gates_from, recorded_passed=recorded_passed,
        deltas=deltas, comparison=comparison, task=task, confusion=confusion, support=support,
        selective_threshold=selective,
        slices=None if report is None else report.get("slices"),
    )


def compare(metrics: Mapping[str, Mapping[str, Any]], *, block: Mapping[str, Any] | None,
            reference: Reference | None, model_sha256: str, data_sha256: str,
            confidence: float | None) -> Comparison:
    """Deltas of each metric: paired from the report's block when it is against *reference*.

    The report's paired deltas are used when there is no *reference*, or when the
    reference is the very model they were computed against (same model sha256);
    otherwise every delta is a plain difference of the two records' values.
    """
    notes: list[str] = []
    paired: Mapping[str, Mapping[str, Any]] = {}
    if block is not None:
        if reference is None or reference.model_sha256 == block["model_sha256"]:
            paired = block["deltas"]
        else:
            notes.append(
                f"The report's paired deltas are against release {block['name']} (model "
                f"{block['model_sha256'][:SHORT_SHA]}), not this baseline (model "
                f"{(reference.model_sha256 or '?')[:SHORT_SHA]}): they are not shown.")
    if reference is not None:
        against = reference.label if reference.name is None else (
            f"release {reference.name} ({reference.label})")
        base_metrics: Mapping[str, Mapping[str, Any]] = reference.metrics
    else:
        assert block is not None
        against = f"release {block['name']} (model {block['model_sha256'][:SHORT_SHA]})"
        base_metrics = {}
    names = [m for m in _ordered({*metrics, *base_metrics, *paired})
             if m in metrics and (m in paired or m in base_metrics)]
    rows = []
    for name in names:
        value = _value(metrics.get(name))
        if name in paired:
            d = paired[name]
            delta = _value(d)
            base = _value(base_metrics.get(name)) if name in base_metrics else (
                None if value is None or delta is None else value - delta)
            rows.append(DeltaRow(metric=name, value=value, baseline=base, delta=delta,
                                 ci_low=_number(d.get("ci_low")),
                                 ci_high=_number(d.get("ci_high")), paired=True))
        else:
            base = _value(base_metrics.get(name))
            delta = None if value is None or base is None else value - base
            rows.append(DeltaRow(metric=name, value=value, baseline=base, delta=delta))
    if any(r.paired for r in rows):
        level = "" if confidence is None else f" {_pct(confidence)}"
        notes.append(f"Paired: both models scored on the same samples, the same bootstrap "
                     f"resamples for both; the{level} interval of a difference that excludes 0 "
                     "is a real change, one that spans 0 is inconclusive.")
    if rows and not any(r.paired for r in rows):
        notes.append("Unpaired: plain differences of two records' point values, with no "
                     "interval; validate with relgate validate --baseline <previous bundle> "
                     "for paired bootstrap intervals.")
    elif any(not r.paired for r in rows):
        notes.append("Rows marked (unpaired) are plain differences of the two records' point "
                     "values, with no interval.")
    if reference is not None:
        if reference.model_sha256 == model_sha256:
            notes.append("The baseline is this very model (same sha256).")
        if reference.data_sha256 is not None and reference.data_sha256 != data_sha256:
            notes.append(f"The baseline was measured on other data (sha256 "
                         f"{reference.data_sha256[:SHORT_SHA]}, this report "
                         f"{data_sha256[:SHORT_SHA]}): the differences mix model and data changes.")
    if not rows:
        notes.append("No metric is in both records: nothing to compare.")
    return Comparison(against=against, rows=tuple(rows), notes=tuple(notes))


def _ordered(names: Any) -> list[str]:
    rank = {name: i for i, name in enumerate(METRIC_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(float(x)) else None


def _value(entry: Any) -> float | None:
    if isinstance(entry, Mapping):
        return _number(entry.get("value"))
    return _number(entry)


def _plain(obj: Any) -> Any:
    """Mappings (including read-only proxies) and sequences as plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------- formatting


def _num(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:.4g}"


def _signed(x: float | None) -> str:
    if x is None:
        return "n/a"
    text = f"{x:+.4f}" if abs(x) < 1000 else f"{x:+.4g}"
    return "+0.0000" if text == "-0.0000" else text


def _interval(lo: float | None, hi: float | None, *, signed: bool = False) -> str:
    if lo is None or hi is None:
        return ""
    f = _signed if signed else _num
    return f"[{f(lo)}, {f(hi)}]"


def _delta_text(row: DeltaRow, *, mixed: bool) -> str:
    """The delta, its paired interval ('(point)' for a paired point difference), or '(unpaired)'."""
    text = _signed(row.delta)
    if row.paired:
        return f"{text} {_interval(row.ci_low, row.ci_high, signed=True) or '(point)'}"
    return f"{text} (unpaired)" if mixed else text


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _shape(shape: Any) -> str:
    if shape is None:
        return "(unknown rank)"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _estimate_for(summary: ReportSummary, r: GateResult) -> Mapping[str, Any] | None:
    """The estimate a gate looked at: a metric, or a paired delta for a baseline guard."""
    if r.metric.endswith(BASELINE_SUFFIX):
        entry = summary.deltas.get(r.metric[: -len(BASELINE_SUFFIX)])
    else:
        entry = summary.metrics.get(r.metric)
    return entry if isinstance(entry, Mapping) else None


def _gates_source(summary: ReportSummary) -> str:
    if summary.gates_from is None:
        return f"gates recorded in the {summary.what()}, re-judged on its numbers"
    return f"gates from {summary.gates_from} (not the ones recorded in the {summary.what()})"


# ---------------------------------------------------------------- Markdown


def md_text(text: str) -> str:
    """Plain text for a Markdown table cell: one line, no HTML, no links, no broken columns."""
    out = " ".join(str(text).split())
    for char, repl in (("\\", "\\\\"), ("&", "&amp;"), ("<", "&lt;"), ("|", "\\|"),
                       ("`", "\\`"), ("*", "\\*"), ("[", "\\["), ("]", "\\]")):
        out = out.replace(char, repl)
    return out


def md_code(text: str) -> str:
    """An inline code span that holds any text (backticks included) inside a table cell."""
    body = " ".join(str(text).split()).replace("|", "\\|")
    run = longest = 0
    for ch in body:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if body.startswith("`") or body.endswith("`") or not body.strip() else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def summary_markdown(summary: ReportSummary) -> str:
    """The pull-request / step-summary Markdown: verdict, gates, deltas, digests, contract."""
    v = summary.verdict
    icon = "✅" if v.passed else "❌"
    what = f"release {md_code(summary.release)}" if summary.release else md_code(summary.source)
    lines = [f"### {icon} relgate: {what} {'passes' if v.passed else 'fails'} its gates", ""]
    lines += [f"**{icon} {md_text(_headline(v))}** · {_gates_md(summary)}", ""]
    lines += _gates_table_md(summary)
    note = summary.gates_note()
    if note:
        lines += ["", f"> ⚠️ {md_text(note[0].upper() + note[1:])}."]
    for reason in v.reasons:
        if not any(reason == r.reason for r in v.results):
            lines += ["", f"> ❌ {md_text(reason)}"]
    lines += ["", *_metrics_md(summary)]
    if summary.multiclass:
        lines += ["", *_classes_md(summary)]
        lines += ["", *_confusion_md(summary)]
    elif summary.confusion:
        lines += ["", *_binary_confusion_md(summary)]
    if summary.slices is not None:
        from relgate.report.slices import slices_markdown

        lines += ["", *slices_markdown(summary.slices)]
    lines += ["", *_provenance_md(summary)]
    lines += ["", *_contract_md(summary.contract)]
    return "\n".join(lines) + "\n"


def _gates_md(summary: ReportSummary) -> str:
    if summary.gates_from is None:
        return f"gates recorded in the {summary.what()}, re-judged on its numbers"
    return (f"gates from {md_code(summary.gates_from)}, not the ones recorded in the "
            f"{summary.what()}")


def _gates_table_md(summary: ReportSummary) -> list[str]:
    conf = "interval" if summary.confidence is None else f"{_pct(summary.confidence)} interval"
    lines = [f"| | gate | observed | {conf} | reason |", "| :-: | --- | ---: | --- | --- |"]
    if not summary.verdict.results:
        lines.append("| ❌ | (no rules) | | | no gate rules: nothing can pass |")
    for r in summary.verdict.results:
        est = _estimate_for(summary, r)
        ci = "" if est is None else _interval(_number(est.get("ci_low")),
                                              _number(est.get("ci_high")),
                                              signed=r.metric.endswith(BASELINE_SUFFIX))
        observed = "n/a" if r.observed is None else (
            _signed(r.observed) if r.metric.endswith(BASELINE_SUFFIX) else _num(r.observed))
        lines.append(f"| {'✅' if r.passed else '❌'} | {md_code(_rule_text(r))} | {observed} | "
                     f"{ci} | {md_text(r.reason)} |")
    return lines


def _metrics_md(summary: ReportSummary) -> list[str]:
    comp = summary.comparison
    conf = "" if summary.confidence is None else f" ({_pct(summary.confidence)} interval)"
    if comp is None:
        lines = ["#### Metrics", "", f"| metric | value{conf} | note |", "| --- | ---: | --- |"]
        for name in _shown_metrics(summary):
            e = summary.metrics[name]
            value = _num(_value(e))
            ci = _interval(_number(e.get("ci_low")), _number(e.get("ci_high")))
            lines.append(f"| {md_text(name)} | {value}{' ' + ci if ci else ''} | "
                         f"{md_text(str(e.get('reason', '')))} |")
        return lines
    lines = [f"#### Metrics vs {md_text(comp.against)}: {comp.kind}", "",
             f"| metric | this model{conf} | baseline | delta | change |",
             "| --- | ---: | ---: | ---: | --- |"]
    compared = {r.metric: r for r in comp.rows}
    for name in _shown_metrics(summary):
        e = summary.metrics[name]
        ci = _interval(_number(e.get("ci_low")), _number(e.get("ci_high")))
        value = _num(_value(e)) + (f" {ci}" if ci else "")
        row = compared.get(name)
        if row is None:
            lines.append(f"| {md_text(name)} | {value} | | | |")
            continue
        delta = _delta_text(row, mixed=comp.kind == "partly paired")
        change = {"better": "better", "worse": "**worse**"}.get(row.change, row.change)
        lines.append(f"| {md_text(name)} | {value} | {_num(row.baseline)} | {delta} | {change} |")
    for note in comp.notes:
        lines += ["", md_text(note)]
    return lines


def _shown_metrics(summary: ReportSummary) -> list[str]:
    """The metrics of the metrics table: a multi-class report's per-class ones have their own."""
    from relgate.card import PER_CLASS

    names = _ordered(summary.metrics)
    return [n for n in names if not PER_CLASS.fullmatch(n)] if summary.multiclass else names


#: the largest K whose confusion matrix is shown (a larger one is in the JSON report)
MAX_CONFUSION_CLASSES = 20


def _class_rows(summary: ReportSummary) -> list[Any]:
    from relgate.card import class_rows

    task = summary.task or {}
    n = task.get("n_classes")
    return class_rows(summary.metrics, n_classes=n if isinstance(n, int) else None,
                      classes=task.get("classes"), support=summary.support)


def _classes_md(summary: ReportSummary) -> list[str]:
    """One row per class, in class order (the confusion matrix's rows, and stable between
    two reports so they compare line by line); the lowest recall is marked."""
    from relgate.card import PER_CLASS_METRICS, lowest_recall

    conf = "" if summary.confidence is None else f" ({_pct(summary.confidence)} interval)"
    rows = _class_rows(summary)
    low = {r.index for r in lowest_recall(rows)}
    lines = [f"#### Per class{conf}", "",
             "| # | class | support | precision | recall | F1 |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        cells = []
        for m in PER_CLASS_METRICS:
            e = r.estimates[m]
            ci = _interval(_number(e.get("ci_low")), _number(e.get("ci_high")))
            text = _num(r.value(m)) + (f" {ci}" if ci else "")
            cells.append(f"**{text}**" if m == "recall" and r.index in low else text)
        support = "" if r.support is None else str(r.support)
        lines.append(f"| {r.index} | {md_text(r.label)} | {support} | " + " | ".join(cells) + " |")
    if low:
        lines += ["", "Lowest recall in bold: " + ", ".join(
            md_text(r.label) for r in rows if r.index in low) + "."]
    return lines


def _confusion_md(summary: ReportSummary) -> list[str]:
    matrix = summary.confusion
    if not matrix:
        return ["#### Confusion matrix", "", "Not in this record."]
    k = len(matrix)
    if k > MAX_CONFUSION_CLASSES:
        return ["#### Confusion matrix", "",
                f"{k} classes: the matrix is in the JSON report (`confusion`, rows true, "
                "columns predicted)."]
    rows = _class_rows(summary)
    lines = ["#### Confusion matrix (rows true, columns predicted)", "",
             "| true / predicted | " + " | ".join(str(j) for j in range(k)) + " |",
             "| --- | " + " | ".join("---:" for _ in range(k)) + " |"]
    for i, row in enumerate(matrix):
        label = f"{i} {rows[i].label}" if i < len(rows) and rows[i].label != str(i) else str(i)
        lines.append(f"| {md_text(label)} | " + " | ".join(
            f"**{c}**" if i == j else str(c) for j, c in enumerate(row)) + " |")
    return lines


def _binary_confusion_md(summary: ReportSummary) -> list[str]:
    """TP / FP / TN / FN of a binary report ([[TN, FP], [FN, TP]])."""
    assert summary.confusion is not None
    (tn, fp), (fn, tp) = summary.confusion
    at = "" if summary.threshold is None else f" at threshold {summary.threshold:.4g}"
    return [f"#### Confusion{at}", "", "| | predicted positive | predicted negative |",
            "| --- | ---: | ---: |", f"| actual positive | TP {tp} | FN {fn} |",
            f"| actual negative | FP {fp} | TN {tn} |"]


def _task_md(summary: ReportSummary) -> str | None:
    task = summary.task
    if not task:
        return None
    text = md_text(str(task.get("kind")))
    if task.get("n_classes") is not None:
        text += f", {task['n_classes']} classes"
    text += f", output {md_code(str(task.get('output')))} ({md_text(str(task.get('output_type')))})"
    if summary.multiclass:
        text += ", predicted by argmax"
        if summary.selective_threshold is not None:
            text += f", no conclusive below {summary.selective_threshold:.4g}"
    return text


def _provenance_md(summary: ReportSummary) -> list[str]:
    lines = ["#### Model and data", "", "| | path | sha256 |", "| --- | --- | --- |"]
    lines.append(f"| model | {md_code(summary.model_path)} | "
                 f"{md_code(summary.model_sha256[:SHORT_SHA])} |")
    data = md_code(summary.data_path)
    if summary.n is not None:
        split = f"split {md_text(summary.split)}, " if summary.split else ""
        data += f" ({split}n={summary.n}{_class_counts(summary)})"
    lines.append(f"| data | {data} | {md_code(summary.data_sha256[:SHORT_SHA])} |")
    task = _task_md(summary)
    if task is not None:
        lines.append(f"| task | {task} | |")
    if summary.multiclass:  # no probability threshold: argmax, said on the task row
        if summary.calibration is not None:
            lines.append(f"| calibration | {md_code(summary.calibration)} | |")
    elif summary.calibration is not None:
        thr = "" if summary.threshold is None else f", threshold {summary.threshold:.4g}"
        lines.append(f"| calibration | {md_code(summary.calibration)}{thr} | |")
    elif summary.threshold is not None:
        lines.append(f"| calibration | none (raw scores), threshold {summary.threshold:.4g} | |")
    if summary.release is not None:
        tag = f" (tag {md_code(summary.tag)})" if summary.tag else ""
        lines.append(f"| release | {md_code(summary.release)}{tag} | |")
    return lines


def _contract_md(contract: Mapping[str, Any]) -> list[str]:
    lines = ["#### Model contract", "", "| | name | dtype | shape |", "| --- | --- | --- | --- |"]
    for side in ("inputs", "outputs"):
        for t in contract.get(side) or ():
            lines.append(f"| {side[:-1]} | {md_code(str(t.get('name')))} | "
                         f"{md_text(str(t.get('dtype')))} | {md_code(_shape(t.get('shape')))} |")
    extra = []
    if contract.get("score_output"):
        kind = contract.get("score_kind")
        extra.append(f"score output {md_code(str(contract['score_output']))}"
                     + (f" ({md_text(str(kind))})" if kind else ""))
    opsets = contract.get("opsets")
    if isinstance(opsets, Mapping) and opsets:
        extra.append("opsets " + ", ".join(f"{md_text(d or 'ai.onnx')} {opsets[d]}"
                                           for d in sorted(opsets)))
    if extra:
        lines += ["", _cap("; ".join(extra)) + "."]
    return lines


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------- terminal and JSON


def render_summary(summary: ReportSummary, console: Any) -> None:
    """Rich tables: the verdict (as ``relgate gate`` prints it), metrics, deltas, digests."""
    from rich.markup import escape
    from rich.table import Table

    title = summary.source if summary.release is None else (
        f"release {summary.release} ({summary.source})")
    render_verdict(summary.verdict, console, title=title, note=summary.gates_note())
    console.print(escape(_gates_source(summary)))
    comp = summary.comparison
    conf = "interval" if summary.confidence is None else f"{_pct(summary.confidence)} interval"
    table = Table(title="metrics" if comp is None else f"metrics vs {comp.against}: {comp.kind}",
                  title_justify="left")
    cols = ["metric", "value", conf] + ([] if comp is None else ["baseline", "delta", "change"])
    for col in cols:
        table.add_column(escape(col))
    compared = {} if comp is None else {r.metric: r for r in comp.rows}
    for name in _shown_metrics(summary):
        e = summary.metrics[name]
        cells = [name, _num(_value(e)), _interval(_number(e.get("ci_low")),
                                                  _number(e.get("ci_high")))]
        if comp is not None:
            row = compared.get(name)
            if row is None:
                cells += ["", "", ""]
            else:
                delta = _delta_text(row, mixed=comp.kind == "partly paired")
                cells += [_num(row.baseline), delta, row.change]
        table.add_row(*(escape(c) for c in cells))
    console.print(table)
    for note in () if comp is None else comp.notes:
        console.print(escape(note))
    if summary.multiclass or summary.confusion:
        from relgate.report.validation import _class_table, _confusion

        record = {"task": summary.task, "metrics": summary.metrics,
                  "data": {"support": summary.support}, "confusion": summary.confusion,
                  "threshold": summary.threshold}
        if summary.multiclass:
            console.print(_class_table(record))
        _confusion(record, console)
    if summary.slices is not None:
        from relgate.report.slices import render_slices

        render_slices(summary.slices, console, rules=False)  # the verdict above judges
    data = f"{summary.data_path} sha256 {summary.data_sha256[:SHORT_SHA]}"
    if summary.n is not None:
        data += f" (n={summary.n}{_class_counts(summary)})"
    console.print(escape(f"model {summary.model_path} sha256 {summary.model_sha256[:SHORT_SHA]}"))
    console.print(escape(f"data  {data}"))
    tensors = Table(title="model contract", title_justify="left")
    for col in ("", "name", "dtype", "shape"):
        tensors.add_column(col)
    for side in ("inputs", "outputs"):
        for t in summary.contract.get(side) or ():
            tensors.add_row(side[:-1], escape(str(t.get("name"))), escape(str(t.get("dtype"))),
                            escape(_shape(t.get("shape"))))
    console.print(tensors)


def summary_json(summary: ReportSummary) -> dict[str, Any]:
    """The machine form: verdict (a gate_verdict record), digests, metrics, comparison."""
    return summary.to_dict()


__all__: Sequence[str] = [
    "Comparison", "DeltaRow", "Reference", "ReportSummary", "compare", "md_code", "md_text",
    "reference_from_records", "render_summary", "summarize", "summary_json", "summary_markdown",
]


def _class_counts(summary: Any) -> str:
    """": 971 positive, 1029 negative" for a binary report; nothing for a multi-class one
    (its per-class supports are in their own table)."""
    if summary.n_pos is None or summary.n_neg is None:
        return ""
    return f": {summary.n_pos} positive, {summary.n_neg} negative"
