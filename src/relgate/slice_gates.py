"""Gates per slice and across slices (issue 19), and the report's ``slices`` section.

Pure: the typed ``slices:`` spec and the per-slice tables of :mod:`relgate.slices` in, one
result per rule out, each with the slices it judged, the worst observed value, the verdict
and a sentence of reason. Fail closed as :mod:`relgate.gates` does: an undefined value, a
metric with no per-slice value or a slice without an interval fails its rule.

* ``slice: "region=EU_SW"`` judges one slice on its point or its own interval; a slice with
  fewer than ``min_support`` rows is never judged on its point (the rule fails, saying so).
* ``slice: "region=*"`` judges every slice with at least ``min_support`` rows; on ``ci_low``
  or ``ci_high`` it uses simultaneous intervals (:func:`relgate.slices.simultaneous`), so the
  family holds together with the bootstrap confidence. Smaller slices are listed as too small.
* ``{max_gap, across}`` bounds the best slice minus the worst (by point), judged on the
  paired-bootstrap interval of that difference (``ci_high`` by default).
* ``max_drop`` is the baseline guard per slice: every gated slice's paired delta
  (candidate - previous release), on ``gates.baseline.on``, with simultaneous intervals.
A rule naming a slice value that the eval set does not hold is bad input (ParamsError).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from relgate.errors import ParamsError
from relgate.gates import LOWER_IS_BETTER, fmt
from relgate.slice_params import SliceRule, SlicesSpec, SliceTarget
from relgate.slices import (
    CORRECTION,
    NOT_PER_SLICE,
    SliceTable,
    finite,
    marginal,
    simultaneous,
)

_NEG = {">=": "<", ">": "<=", "<=": ">", "<": ">="}


@dataclass(frozen=True, kw_only=True)
class SliceVerdict:
    passed: bool
    results: tuple[dict[str, Any], ...]
    reasons: tuple[str, ...]


def _compare(x: float, op: str, bound: float) -> bool:
    return {">=": x >= bound, ">": x > bound, "<=": x <= bound, "<": x < bound}[op]


def _members(table: SliceTable, target: SliceTarget) -> list[int]:
    """Slices matching *target*; a named value the partition lacks is bad input."""
    part = table.partition
    for j, (feat, want) in enumerate(zip(target.features, target.values, strict=True)):
        if want == "*":
            continue
        have = sorted({v[j] for v in part.values})
        if want not in have:
            shown = ", ".join(have[:20]) + (" ..." if len(have) > 20 else "")
            raise ParamsError(f"slices: rule slice {target.text!r}: {feat} has no value "
                              f"{want!r} in the eval set (values: {shown})",
                              hint="name a value the eval set holds, or use " f"{feat}=*")
    return [s for s, v in enumerate(part.values) if target.matches(v)]


def _value(table: SliceTable, model: int, metric: str, s: int) -> float | None:
    reason = table.reasons[metric][s]
    return None if reason is not None else finite(table.models[model].point[metric][s])


def _no_metric(table: SliceTable, metric: str) -> str | None:
    if metric in NOT_PER_SLICE:
        return f"{metric} is not computed per slice"
    if metric not in table.names:
        return f"{metric} is not a per-slice metric of this task"
    return None


def _rule_result(rule: SliceRule, passed: bool, reason: str, *, observed: float | None,
                 judged: Sequence[str] = (), failing: Sequence[str] = (),
                 too_small: Sequence[str] = (), critical: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": rule.describe(), "metric": rule.metric, "on": rule.on,
                           "op": rule.op, "bound": rule.value, "observed": observed,
                           "passed": passed, "reason": reason, "slices": list(judged),
                           "failing": list(failing), "too_small": list(too_small)}
    if rule.is_gap:
        out["across"] = rule.across
    else:
        assert rule.target is not None
        out["slice"] = rule.target.text
    if critical is not None:
        out["critical"] = critical
    return out


def _bounds(table: SliceTable, model_points: np.ndarray, boot: np.ndarray | None,
            members: list[int], on: str, confidence: float, family: bool
            ) -> tuple[dict[int, float | None], float | None]:
    if on == "point":
        return {s: finite(model_points[s]) for s in members}, None
    if family:
        sim = simultaneous(model_points, boot, members, confidence)
        return (sim.low if on == "ci_low" else sim.high), sim.critical
    got = {}
    for s in members:
        lo, hi = marginal(boot, confidence, s)
        got[s] = lo if on == "ci_low" else hi
    return got, None


def _threshold_rule(rule: SliceRule, table: SliceTable, spec: SlicesSpec,
                    confidence: float) -> dict[str, Any]:
    assert rule.target is not None
    target = rule.target
    matched = _members(table, target)
    need = f"needs {rule.op} {fmt(rule.value)}"
    label = f"{rule.metric} [{target.text}]" + ("" if rule.on == "point" else f" {rule.on}")
    missing = _no_metric(table, rule.metric)
    if missing is not None:
        return _rule_result(rule, False, f"{label}: {missing}, {need}", observed=None)
    keys = {s: table.partition.key(s) for s in matched}
    small = [s for s in matched if table.n[s] < spec.min_support]
    if target.is_single:
        members = matched
        if rule.on == "point" and small:
            s = small[0]
            return _rule_result(rule, False, f"{label}: slice too small to gate on a point "
                                f"value ({int(table.n[s])} rows < min_support "
                                f"{spec.min_support}), {need}", observed=None,
                                too_small=[keys[s]])
    else:
        members = [s for s in matched if s not in small]
    small_keys = [keys[s] for s in small if s not in members]
    if not members:
        return _rule_result(rule, False, f"{label}: no slice has at least min_support "
                            f"{spec.min_support} rows, {need}", observed=None,
                            too_small=small_keys)
    stats = table.models[0]
    point = np.array([np.nan if table.reasons[rule.metric][s] else v
                      for s, v in enumerate(stats.point[rule.metric])])
    bounds, critical = _bounds(table, point, stats.boot.get(rule.metric), members, rule.on,
                               confidence, family=not target.is_single)
    failing: list[tuple[float, str, str]] = []
    observed: list[float] = []
    for s in members:
        x = bounds[s]
        if x is None:
            why = table.reasons[rule.metric][s] or ("undefined" if rule.on == "point"
                                                    else "no bootstrap interval")
            failing.append((-np.inf, keys[s], f"{keys[s]} {why}"))
            continue
        observed.append(x)
        if not _compare(x, rule.op, rule.value):
            failing.append((x if rule.op in (">=", ">") else -x, keys[s],
                            f"{keys[s]} {fmt(x)} {_NEG[rule.op]} {fmt(rule.value)}"))
    failing.sort()
    how = "" if rule.on == "point" or target.is_single else " (simultaneous)"
    worst = (min(observed) if rule.op in (">=", ">") else max(observed)) if observed else None
    if failing:
        reason = f"{label}{how}: " + "; ".join(f[2] for f in failing) + f", {need}"
    else:
        reason = f"{label}{how}: {len(members)} slice(s) {rule.op} {fmt(rule.value)}" + (
            f" (worst {fmt(worst)})" if worst is not None else "")
    return _rule_result(rule, not failing, reason, observed=worst,
                        judged=[keys[s] for s in members], failing=[f[1] for f in failing],
                        too_small=small_keys, critical=critical)


def _gap_rule(rule: SliceRule, table: SliceTable, spec: SlicesSpec,
              confidence: float) -> dict[str, Any]:
    from relgate.metrics import interval

    label = f"{rule.metric} gap across {rule.across}" + ("" if rule.on == "point"
                                                           else f" {rule.on}")
    need = f"needs <= {fmt(rule.value)}"
    missing = _no_metric(table, rule.metric)
    if missing is not None:
        return _rule_result(rule, False, f"{label}: {missing}, {need}", observed=None)
    keys = [table.partition.key(s) for s in range(len(table.partition.values))]
    small = [keys[s] for s in range(len(keys)) if table.n[s] < spec.min_support]
    members = [s for s in range(len(keys)) if table.n[s] >= spec.min_support]
    defined = [s for s in members if _value(table, 0, rule.metric, s) is not None]
    if len(defined) < 2 or len(defined) < len(members):
        why = ("fewer than two slices with at least min_support rows" if len(members) < 2
               else "the metric is undefined on a slice")
        return _rule_result(rule, False, f"{label}: {why}, {need}", observed=None,
                            judged=[keys[s] for s in members], too_small=small)
    stats = table.models[0]
    pts = stats.point[rule.metric]
    hi = max(defined, key=lambda s: pts[s])
    lo = min(defined, key=lambda s: pts[s])
    gap = float(pts[hi] - pts[lo])
    boot = stats.boot.get(rule.metric)
    ci = (None, None) if boot is None else interval(boot[:, hi] - boot[:, lo], confidence)
    observed = gap if rule.on == "point" else ci[0 if rule.on == "ci_low" else 1]
    pair = f"{keys[hi]} {fmt(float(pts[hi]))} - {keys[lo]} {fmt(float(pts[lo]))}"
    if observed is None:
        return _rule_result(rule, False, f"{label}: {pair}, no bootstrap interval, {need}",
                            observed=None, judged=[keys[s] for s in members], too_small=small)
    passed = observed <= rule.value
    verdict = f"{fmt(observed)} <= {fmt(rule.value)}" if passed else \
        f"{fmt(observed)} > {fmt(rule.value)}, {need}"
    out = _rule_result(rule, passed, f"{label}: {verdict} ({pair})", observed=observed,
                       judged=[keys[s] for s in members],
                       failing=[] if passed else [keys[lo]], too_small=small)
    out["gap"] = {"value": gap, "ci_low": ci[0], "ci_high": ci[1], "best": keys[hi],
                  "worst": keys[lo]}
    return out


def _drop_rules(spec: SlicesSpec, tables: Mapping[str, SliceTable], confidence: float,
                baseline_on: str, baseline_problem: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for metric in sorted(spec.max_drop):
        drop = float(spec.max_drop[metric])
        lower = metric in LOWER_IS_BETTER
        op, bound = ("<=", drop) if lower else (">=", -drop)
        side = "point" if baseline_on == "point" else ("ci_high" if lower else "ci_low")
        for name, table in tables.items():
            rule = SliceRule(metric=f"{metric} vs baseline", on=side, op=op, value=bound,
                             target=SliceTarget(text=f"{name.replace(',', '=*,')}=*",
                                                features=table.partition.features,
                                                values=("*",) * len(table.partition.features)))
            label = f"{metric} vs baseline [{rule.target.text if rule.target else name}]"
            need = f"may {'rise' if lower else 'drop'} at most {fmt(drop)}"
            missing = _no_metric(table, metric)
            if baseline_problem is not None or len(table.models) < 2 or missing:
                why = missing or baseline_problem or "no paired comparison with the previous release"
                out.append(_rule_result(rule, False, f"{label}: {why}, {need}", observed=None))
                continue
            members = [s for s in range(len(table.partition.values))
                       if table.n[s] >= spec.min_support]
            keys = {s: table.partition.key(s) for s in range(len(table.partition.values))}
            cand, base = table.models
            delta = cand.point[metric] - base.point[metric]
            delta = np.where([r is None for r in table.reasons[metric]], delta, np.nan)
            boot = None if metric not in cand.boot else cand.boot[metric] - base.boot[metric]
            bounds, critical = _bounds(table, delta, boot, members, side, confidence, True)
            got = {s: bounds[s] for s in members}
            failing = [keys[s] for s, b in got.items() if b is None or not _compare(b, op, bound)]
            seen = [b for b in got.values() if b is not None]
            worst = (max(seen) if lower else min(seen)) if seen else None
            shown = "; ".join(f"{keys[s]} delta {'undefined' if b is None else fmt(b)}"
                              for s, b in got.items() if keys[s] in failing)
            reason = (f"{label}: {shown}, {need}" if failing or not members else
                      f"{label}: {len(members)} slice(s) within {fmt(drop)}")
            if not members:
                reason = f"{label}: no slice has at least min_support {spec.min_support} rows, {need}"
            out.append(_rule_result(rule, bool(members) and not failing, reason, observed=worst,
                                    judged=[keys[s] for s in members], failing=failing,
                                    critical=critical))
    return out


def apply_slice_gates(spec: SlicesSpec, tables: Mapping[str, SliceTable] | None, *,
                      confidence: float, baseline_on: str = "point",
                      baseline_problem: str | None = None,
                      not_computed: str | None = None) -> SliceVerdict:
    """Judge every slice rule (module docstring). *tables* by partition name; None (with
    *not_computed*, why) when the model failed its checks: then every rule fails closed."""
    results: list[dict[str, Any]] = []
    if tables is None:
        why = not_computed or "slice metrics were not computed"
        for rule in spec.rules:
            results.append(_rule_result(rule, False, f"{rule.describe()}: {why}", observed=None))
        for metric in sorted(spec.max_drop):
            rule = SliceRule(metric=f"{metric} vs baseline", on="point", value=0.0,
                             target=None, across="*")
            results.append(_rule_result(rule, False, f"{metric} vs baseline per slice: {why}",
                                        observed=None))
    else:
        for rule in spec.rules:
            if rule.is_gap:
                assert rule.across is not None
                results.append(_gap_rule(rule, tables[rule.across], spec, confidence))
            else:
                assert rule.target is not None
                results.append(_threshold_rule(rule, tables[rule.target.partition], spec,
                                               confidence))
        results += _drop_rules(spec, tables, confidence, baseline_on, baseline_problem)
    reasons = tuple(r["reason"] for r in results if not r["passed"])
    return SliceVerdict(passed=not reasons, results=tuple(results), reasons=reasons)


def _order_metric(spec: SlicesSpec, table: SliceTable) -> str:
    for rule in spec.rules:
        part = rule.across if rule.is_gap else (rule.target.partition if rule.target else None)
        if part == table.partition.name and rule.metric in table.names:
            return rule.metric
    return "accuracy"


def slices_report(spec: SlicesSpec, tables: Mapping[str, SliceTable] | None,
                  verdict: SliceVerdict, *, confidence: float) -> dict[str, Any]:
    """The report's ``slices`` section: per partition, its slices worst first (by the first
    metric a rule gates on it, else accuracy), each with support, point, its own interval
    and (gated slices) the simultaneous one; ``gated`` false marks a slice too small."""
    partitions: list[dict[str, Any]] = []
    for name, table in (tables or {}).items():
        part = table.partition
        stats = table.models[0]
        gated = [s for s in range(len(part.values)) if table.n[s] >= spec.min_support]
        sims = {nm: simultaneous(np.where([r is None for r in table.reasons[nm]],
                                          stats.point[nm], np.nan),
                                 stats.boot.get(nm), gated, confidence) for nm in table.names}
        by = _order_metric(spec, table)
        sign = 1.0 if by in LOWER_IS_BETTER else -1.0

        def worst_key(s: int, by: str = by, sign: float = sign, table: SliceTable = table
                      ) -> tuple[float, str]:
            v = _value(table, 0, by, s)
            return (-np.inf if v is None else -sign * v, table.partition.key(s))

        rows = []
        for s in sorted(range(len(part.values)), key=worst_key):
            metrics: dict[str, Any] = {}
            for nm in table.names:
                reason = table.reasons[nm][s]
                value = _value(table, 0, nm, s)
                if value is None:
                    metrics[nm] = {"value": None,
                                   "reason": reason or f"{nm} undefined on this slice"}
                    continue
                lo, hi = marginal(stats.boot.get(nm), confidence, s)
                entry: dict[str, Any] = {"value": value, "ci_low": lo, "ci_high": hi}
                if s in sims[nm].low:
                    entry["sim_low"], entry["sim_high"] = sims[nm].low[s], sims[nm].high[s]
                metrics[nm] = entry
            row: dict[str, Any] = {"key": part.key(s), "values": list(part.values[s]),
                                   "n": int(table.n[s]),
                                   "support": [int(v) for v in table.support[s]],
                                   "gated": s in gated, "metrics": metrics}
            if len(table.models) > 1:
                base = table.models[1]
                row["deltas"] = {nm: finite(stats.point[nm][s] - base.point[nm][s])
                                 for nm in spec.max_drop if nm in table.names
                                 and table.reasons[nm][s] is None}
            rows.append(row)
        partitions.append({"name": name, "features": list(part.features), "order_by": by,
                           "critical": {nm: sims[nm].critical for nm in table.names},
                           "slices": rows})
    return {"correction": CORRECTION, "confidence": confidence,
            "min_support": spec.min_support, "features": list(spec.features),
            "crossed": [list(c) for c in spec.crossed], "partitions": partitions,
            "passed": verdict.passed, "results": list(verdict.results),
            "reasons": list(verdict.reasons)}


def check_targets(spec: SlicesSpec, partitions: Mapping[str, Any]) -> None:
    """Refuse (ParamsError) a rule naming a slice value the eval set does not hold, before
    anything is judged (also when the model fails its checks)."""
    for rule in spec.rules:
        if rule.target is not None:
            part = partitions[rule.target.partition]
            _members(SliceTable(partition=part, n=np.zeros(0, dtype=np.int64),
                                support=np.zeros((0, 0), dtype=np.int64), names=(),
                                models=()), rule.target)


def judge_slices(spec: SlicesSpec, partitions: Mapping[str, Any], *, y: Any,
                 probs: Sequence[Any] | None, thresholds: Sequence[float | None],
                 top_k: Sequence[int], ece_bins: int, resamples: int, confidence: float,
                 seed: int, baseline_on: str = "point", baseline_problem: str | None = None,
                 not_computed: str | None = None) -> tuple[dict[str, Any], SliceVerdict]:
    """Per-slice metrics of the candidate (and the previous release, second in *probs*),
    the slice rules judged, and the report section. *probs* None: the model failed its
    checks (*not_computed* says why) and every slice rule fails closed."""
    from relgate.slices import slice_metrics

    check_targets(spec, partitions)
    tables: dict[str, SliceTable] | None = None
    if probs is not None:
        tables = {name: slice_metrics(y, probs, part, top_k=top_k, ece_bins=ece_bins,
                                      resamples=resamples, seed=seed, thresholds=thresholds)
                  for name, part in partitions.items()}
    if tables is not None and len(probs or ()) < 2 and spec.max_drop and baseline_problem is None:
        baseline_problem = "no previous release to compare with (gates.baseline)"
    verdict = apply_slice_gates(spec, tables, confidence=confidence, baseline_on=baseline_on,
                                baseline_problem=baseline_problem, not_computed=not_computed)
    return slices_report(spec, tables, verdict, confidence=confidence), verdict


def read_partitions(spec: SlicesSpec, data_path: Any, n: int, *,
                    identity: Any = None) -> dict[str, Any]:
    """Read the slice columns of the eval set and group its rows by each declared partition."""
    from relgate.slices import build_partition, read_slice_columns

    columns = read_slice_columns(data_path, spec.columns, n, identity=identity)
    return {",".join(feats): build_partition(columns, feats, source=str(data_path))
            for feats in spec.partitions}


# ---------------------------------------------------------------- re-judging a report


def _recorded_rules(block: Mapping[str, Any]) -> list[SliceRule]:
    """The rules a report's slices section was judged with, rebuilt from its results."""
    rules: list[SliceRule] = []
    for r in block.get("results", ()):
        if "across" in r:
            rules.append(SliceRule(metric=r["metric"], on=r["on"], value=float(r["bound"]),
                                   across=r["across"]))
        elif "slice" in r and not r["metric"].endswith(" vs baseline"):
            text = r["slice"]
            feats = tuple(p.partition("=")[0] for p in text.split(","))
            vals = tuple(p.partition("=")[2] for p in text.split(","))
            rules.append(SliceRule(metric=r["metric"], on=r["on"], op=r["op"],
                                   value=float(r["bound"]),
                                   target=SliceTarget(text=text, features=feats, values=vals)))
        else:  # a per-slice baseline guard: its recorded worst delta bound is judged again
            rules.append(SliceRule(metric=r["metric"], on=r["on"], op=r["op"],
                                   value=float(r["bound"]), across="*baseline*"))
    return rules


def rejudge_report(block: Mapping[str, Any] | None, spec: SlicesSpec | None = None, *,
                   spec_baseline_on: str = "point") -> SliceVerdict | None:
    """Judge slice rules again on the numbers a report recorded (``relgate gate``, the PR
    summary): *spec*'s rules (params of another branch), else the rules the report names.
    A one-slice rule reads the slice's point or interval, a ``feature=*`` rule the recorded
    simultaneous bounds of the gated slices. What needs resamples (a gap, a partial
    wildcard, a per-slice baseline guard on an interval) fails closed with a reason: run
    ``relgate validate`` with these params instead. None: nothing to judge."""
    if spec is None and block is None:
        return None
    rules = list(spec.rules) if spec is not None else _recorded_rules(block or {})
    drops = dict(spec.max_drop) if spec is not None else {}
    if not rules and not drops:
        return None
    results: list[dict[str, Any]] = []
    parts: dict[str, Any] = {p["name"]: p for p in (block or {}).get("partitions", ())}
    parts["*recorded*"] = list((block or {}).get("results", ()))
    min_support = (block or {}).get("min_support")
    for rule in rules:
        results.append(_rejudge(rule, parts, min_support, spec))
    base_on = "point" if spec is None else spec_baseline_on
    for metric in sorted(drops):
        lower = metric in LOWER_IS_BETTER
        side = "point" if base_on == "point" else ("ci_high" if lower else "ci_low")
        op, bound = ("<=", drops[metric]) if lower else (">=", -drops[metric])
        rule = SliceRule(metric=f"{metric} vs baseline", on=side, op=op, value=bound,
                         across="*baseline*")
        results.append(_rejudge(rule, parts, min_support, spec))
    reasons = tuple(r["reason"] for r in results if not r["passed"])
    return SliceVerdict(passed=not reasons, results=tuple(results), reasons=reasons)


def _rejudge(rule: SliceRule, parts: Mapping[str, Any], min_support: Any,
             spec: SlicesSpec | None) -> dict[str, Any]:
    fresh = "re-run relgate validate with these params"
    if spec is not None and min_support != spec.min_support:
        return _rule_result(rule, False, f"{rule.describe()}: the report gated slices of at "
                            f"least {min_support} rows, params say {spec.min_support}; {fresh}",
                            observed=None)
    recorded = parts["*recorded*"]
    if rule.across == "*baseline*":  # the recorded worst delta bound (same metric and side)
        same = [r for r in recorded if r["metric"] == rule.metric and r["on"] == rule.on
                and isinstance(r.get("observed"), int | float) and r["slices"]]
        if not same:
            return _rule_result(rule, False, f"{rule.metric} per slice: no recorded paired "
                                f"deltas on {rule.on}; {fresh}", observed=None)
        x = float(same[0]["observed"])
        ok = _compare(x, rule.op, rule.value)
        word = rule.op if ok else _NEG[rule.op]
        return _rule_result(rule, ok, f"{rule.metric} per slice (worst {rule.on}): "
                            f"{fmt(x)} {word} {fmt(rule.value)}", observed=x,
                            judged=same[0]["slices"])
    if rule.is_gap:  # the recorded interval of best - worst (it does not depend on the bound)
        gaps = [r["gap"] for r in recorded if "gap" in r and r["metric"] == rule.metric
                and r.get("across") == rule.across]
        field = {"point": "value", "ci_low": "ci_low", "ci_high": "ci_high"}[rule.on]
        g = gaps[0].get(field) if gaps else None
        if not isinstance(g, int | float):
            return _rule_result(rule, False, f"{rule.describe()}: no recorded interval of the "
                                f"difference; {fresh}", observed=None)
        ok = float(g) <= rule.value
        return _rule_result(rule, ok, f"{rule.describe()}: {fmt(float(g))} "
                            f"{'<=' if ok else '>'} {fmt(rule.value)} ({gaps[0]['best']} - "
                            f"{gaps[0]['worst']})", observed=float(g),
                            failing=[] if ok else [gaps[0]["worst"]])
    assert rule.target is not None
    part = parts.get(rule.target.partition)
    if part is None:
        return _rule_result(rule, False, f"{rule.describe()}: the report has no slices by "
                            f"{rule.target.partition}; {fresh}", observed=None)
    partial = not rule.target.is_single and any(v != "*" for v in rule.target.values)
    if partial and rule.on != "point":
        return _rule_result(rule, False, f"{rule.describe()}: simultaneous intervals of a "
                            f"partial family are not in the report; {fresh}", observed=None)
    rows = [r for r in part["slices"] if rule.target.matches(tuple(r["values"]))]
    if rule.target.is_single and not rows:
        return _rule_result(rule, False, f"{rule.describe()}: no such slice in the report",
                            observed=None)
    members = rows if rule.target.is_single else [r for r in rows if r["gated"]]
    small = [r["key"] for r in rows if not r["gated"]]
    if not members or (rule.target.is_single and rule.on == "point" and small):
        return _rule_result(rule, False, f"{rule.describe()}: no slice with at least "
                            "min_support rows to gate on", observed=None, too_small=small)
    field = {"point": "value", "ci_low": "ci_low", "ci_high": "ci_high"}[rule.on]
    if not rule.target.is_single and rule.on != "point":
        field = "sim_low" if rule.on == "ci_low" else "sim_high"
    failing, seen = [], []
    for r in members:
        got = (r["metrics"].get(rule.metric) or {}).get(field)
        if not isinstance(got, int | float) or isinstance(got, bool) or not np.isfinite(got):
            failing.append(f"{r['key']} has no {field}")
            continue
        seen.append(float(got))
        if not _compare(float(got), rule.op, rule.value):
            failing.append(f"{r['key']} {fmt(float(got))} {_NEG[rule.op]} {fmt(rule.value)}")
    worst = (min(seen) if rule.op in (">=", ">") else max(seen)) if seen else None
    reason = (f"{rule.describe()}: " + "; ".join(failing) if failing
              else f"{rule.describe()}: {len(members)} slice(s) {rule.op} {fmt(rule.value)}")
    return _rule_result(rule, not failing, reason, observed=worst,
                        judged=[r["key"] for r in members],
                        failing=[f.split(" ")[0] for f in failing], too_small=small)


def merged_verdict(verdict: Any, slices: SliceVerdict | None) -> Any:
    """A GateVerdict with the slice rules folded in (for ``relgate gate`` and the summaries):
    it passes only when both pass."""
    if slices is None:
        return verdict
    from relgate.gates import GateResult, GateVerdict

    extra = tuple(GateResult(metric=r["rule"], op=r["op"], bound=float(r["bound"]), on=r["on"],
                             observed=r["observed"], passed=bool(r["passed"]),
                             reason=r["reason"]) for r in slices.results)
    return GateVerdict(mode=verdict.mode, passed=bool(verdict.passed and slices.passed),
                       results=tuple(verdict.results) + extra,
                       reasons=tuple(verdict.reasons) + slices.reasons)
