"""Gate policy: what a model must achieve to ship, applied to metric values.

Pure: gate specs (from params.yaml) and metric values in, one result per rule
out, each with the observed value, the bound, the verdict and a sentence of
reason. Nothing here prints or reads files.

Fail closed. A rule passes only when its observed value is a real, finite
number that satisfies the comparison. A metric that is missing, None
(undefined on the data, e.g. AUC with one class), NaN, +-inf, or of the wrong
type (a string, a bool, a list) fails its rule with a reason; so does a rule
``on: ci_low`` / ``ci_high`` when the estimate has no interval.

Comparisons are exact and inclusive as written: ``>=`` passes at the bound,
``>`` does not; there is no hidden tolerance.

Modes: ``all`` passes when every rule passes; ``any`` when at least one rule
truly passes (a set of rules that are all undefined fails). Baseline rules
("no worse than the previous release") are guards: they must pass in either
mode. For a metric where higher is better the rule is
``delta >= -max_drop``, judged on the delta's point estimate or its ``ci_low``
(``baseline.on``); for LOWER_IS_BETTER metrics (ece, brier, high_corr_frac) it
is ``delta <= +max_drop``, judged on the point or on ``ci_high``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relgate.errors import ParamsError
from relgate.params import GateRule, GatesSpec

OPS = (">=", ">", "<=", "<")
#: The negation of each operator, for the sentence of a failed rule.
_NEGATION = {">=": "<", ">": "<=", "<=": ">", "<": ">="}
_ON = ("point", "ci_low", "ci_high")
_FIELD = {"point": "value", "ci_low": "ci_low", "ci_high": "ci_high"}
#: Metrics where smaller is better, of every task kind (a test keeps this the union of
#: relgate.metrics.LOWER_IS_BETTER and relgate.tasks.multiclass.LOWER_IS_BETTER).
LOWER_IS_BETTER = frozenset({"ece", "brier", "high_corr_frac", "log_loss", "classwise_ece"})


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """The outcome of one rule: what was compared, the verdict, and why."""

    metric: str
    op: str
    bound: float
    on: str
    observed: float | None
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The ``common.schema.json#/$defs/gate_result`` form."""
        return {
            "metric": self.metric, "op": self.op, "bound": float(self.bound), "on": self.on,
            "observed": self.observed, "passed": self.passed, "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        observed = d.get("observed")
        return cls(metric=str(d["metric"]), op=str(d["op"]), bound=float(d["bound"]),
                   on=str(d["on"]), observed=None if observed is None else float(observed),
                   passed=d["passed"] is True, reason=str(d["reason"]))


@dataclass(frozen=True, kw_only=True)
class GateVerdict:
    """All rule results and the overall verdict; ``reasons`` is empty when passed."""

    mode: str
    passed: bool
    results: tuple[GateResult, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The ``common.schema.json#/$defs/gate_verdict`` form."""
        return {
            "mode": self.mode, "passed": self.passed,
            "results": [r.to_dict() for r in self.results], "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateVerdict:
        return cls(mode=str(d["mode"]), passed=d["passed"] is True,
                   results=tuple(GateResult.from_dict(r) for r in d["results"]),
                   reasons=tuple(str(r) for r in d.get("reasons", ())))


# ---------------------------------------------------------------- observing values


def fmt(x: float) -> str:
    """A short, readable number (6 significant digits)."""
    return f"{x:.6g}"


def _pair(observed: float, bound: float) -> tuple[str, str]:
    """Observed and bound as text, with full precision when 6 digits would make them look equal."""
    a, b = fmt(observed), fmt(bound)
    if a == b and observed != bound:
        return repr(float(observed)), repr(float(bound))
    return a, b


def _is_real(x: Any) -> bool:
    """A real number that is not a bool (numpy numbers included, numpy bools excluded)."""
    return (isinstance(x, numbers.Real) and not isinstance(x, bool)
            and type(x).__name__ not in ("bool_", "bool"))


def _observe(entry: Any, on: str, name: str) -> tuple[float | None, str | None]:
    """The finite number a rule compares, or None and why it cannot be had."""
    field = _FIELD[on]
    what = name if on == "point" else f"{name} {on}"
    if entry is None:
        return None, f"{name} has no value (undefined on this data)"
    if _is_real(entry):
        if on != "point":
            return None, f"{name} has no {on} (no bootstrap interval)"
        value: Any = entry
        reason = None
    elif isinstance(entry, Mapping) or hasattr(entry, "value"):
        if isinstance(entry, Mapping) and "value" not in entry:
            return None, f"{name} is malformed (no 'value' key)"

        def get(key: str) -> Any:
            return entry.get(key) if isinstance(entry, Mapping) else getattr(entry, key, None)

        raw_reason = get("reason")
        reason = raw_reason if isinstance(raw_reason, str) and raw_reason else None
        if get("value") is None:
            return None, f"{name} has no value ({reason or 'undefined on this data'})"
        value = get(field)
        if value is None:
            return None, f"{name} has no {on} (no bootstrap interval)"
    else:
        return None, f"{name} is not a number (got {type(entry).__name__} {entry!r:.40})"
    if not _is_real(value):
        return None, f"{what} is not a number (got {type(value).__name__} {value!r:.40})"
    number = float(value)
    if math.isnan(number):
        return None, f"{what} is NaN"
    if math.isinf(number):
        return None, f"{what} is {'+' if number > 0 else '-'}inf"
    return number, None


def _compare(observed: float, op: str, bound: float) -> bool:
    if op == ">=":
        return observed >= bound
    if op == ">":
        return observed > bound
    if op == "<=":
        return observed <= bound
    return observed < bound


def _check_rule(metric: str, op: str, bound: Any, on: str) -> float:
    if op not in OPS:
        raise ParamsError(f"gate on {metric}: unknown operator {op!r}", hint=f"use one of {OPS}")
    if on not in _ON:
        raise ParamsError(f"gate on {metric}: unknown 'on' {on!r}", hint=f"use one of {_ON}")
    if not _is_real(bound) or not math.isfinite(float(bound)):
        raise ParamsError(f"gate on {metric}: bound {bound!r} is not a finite number",
                          hint="write a finite number")
    return float(bound)


def evaluate_rule(rule: GateRule, metrics: Mapping[str, Any]) -> GateResult:
    """One rule against the metrics; never raises for a bad metric value, only for a bad rule."""
    bound = _check_rule(rule.metric, rule.op, rule.value, rule.on)
    need = f"needs {rule.op} {fmt(bound)}"
    label = rule.metric if rule.on == "point" else f"{rule.metric} {rule.on}"
    observed: float | None
    why: str | None
    if rule.metric not in metrics:
        observed, why = None, f"{rule.metric} is missing from the metrics"
    else:
        observed, why = _observe(metrics[rule.metric], rule.on, rule.metric)
    if observed is None:
        return GateResult(metric=rule.metric, op=rule.op, bound=bound, on=rule.on,
                          observed=None, passed=False, reason=f"{why}, {need}")
    passed = _compare(observed, rule.op, bound)
    a, b = _pair(observed, bound)
    reason = (f"{label} {a} {rule.op} {b}" if passed
              else f"{label} {a} {_NEGATION[rule.op]} {b}, {need}")
    return GateResult(metric=rule.metric, op=rule.op, bound=bound, on=rule.on,
                      observed=observed, passed=passed, reason=reason)


def _baseline_rule(name: str, max_drop: float, on: str,
                   deltas: Mapping[str, Any] | None, baseline_problem: str | None) -> GateResult:
    lower = name in LOWER_IS_BETTER
    op, bound = ("<=", max_drop) if lower else (">=", 0.0 - max_drop)
    side = "ci_high" if (lower and on == "ci_low") else on
    metric = f"{name} vs baseline"
    direction = "rise" if lower else "drop"
    need = f"may {direction} at most {fmt(max_drop)}"
    label = "delta" if side == "point" else f"delta {side}"
    observed: float | None
    why: str | None
    if baseline_problem is not None:
        observed, why = None, baseline_problem
    elif deltas is None:
        observed, why = None, "no paired comparison with the previous release"
    elif name not in deltas:
        observed, why = None, f"no delta for {name} in the comparison with the previous release"
    else:
        observed, why = _observe(deltas[name], side, f"{name} delta")
    if observed is None:
        return GateResult(metric=metric, op=op, bound=bound, on=side, observed=None,
                          passed=False, reason=f"{metric}: {why}, {need}")
    passed = _compare(observed, op, bound)
    a, b = _pair(observed, bound)
    reason = (f"{metric}: {label} {a} {op} {b}" if passed
              else f"{metric}: {label} {a} {_NEGATION[op]} {b}, {need}")
    return GateResult(metric=metric, op=op, bound=bound, on=side, observed=observed,
                      passed=passed, reason=reason)


def apply_gates(spec: GatesSpec, metrics: Mapping[str, Any], *,
                deltas: Mapping[str, Any] | None = None,
                baseline_name: str | None = None) -> GateVerdict:
    """Judge ``metrics`` (MetricEstimate, metric mappings, numbers or None by name).

    ``deltas`` are paired-bootstrap deltas (candidate - previous release) by
    metric name; when ``spec.baseline`` is set they are required, else its
    rules fail closed. ``baseline_name`` (the release the deltas were computed
    against) must match ``spec.baseline.release`` when both are given.
    A malformed spec (unknown mode, operator, ``on``, non-finite bound) is a
    ParamsError: bad params are bad input, not a verdict.
    """
    if spec.mode not in ("any", "all"):
        raise ParamsError(f"unknown gate mode {spec.mode!r}", hint="use 'any' or 'all'")
    results = [evaluate_rule(rule, metrics) for rule in spec.rules]
    guards: list[GateResult] = []
    if spec.baseline is not None:
        base = spec.baseline
        if base.on not in ("point", "ci_low"):
            raise ParamsError(f"gates.baseline.on: unknown value {base.on!r}",
                              hint="use 'point' or 'ci_low'")
        problem = None
        if base.release and baseline_name is not None and baseline_name != base.release:
            problem = (f"deltas were computed against {baseline_name!r}, "
                       f"params name the previous release {base.release!r}")
        for name in sorted(base.max_drop):
            drop = float(base.max_drop[name])
            if not math.isfinite(drop) or drop < 0:
                raise ParamsError(f"gates.baseline.max_drop.{name}: {drop!r} is not a finite "
                                  "number >= 0", hint="write the allowed drop as a number >= 0")
            guards.append(_baseline_rule(name, drop, base.on, deltas, problem))
    if not results:
        rules_pass, mode_reason = False, ["no gate rules: nothing can pass"]
    elif spec.mode == "all":
        rules_pass, mode_reason = all(r.passed for r in results), []
    else:
        rules_pass = any(r.passed for r in results)
        mode_reason = [] if rules_pass else [f"mode any: none of the {len(results)} rules passed"]
    passed = rules_pass and all(g.passed for g in guards)
    reasons: list[str] = []
    if not passed:
        if not rules_pass:
            reasons += [r.reason for r in results if not r.passed] + mode_reason
        reasons += [g.reason for g in guards if not g.passed]
    return GateVerdict(mode=spec.mode, passed=passed, results=tuple(results + guards),
                       reasons=tuple(reasons))
