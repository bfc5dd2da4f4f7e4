"""Gate policy: inclusive bounds, fail-closed on every kind of bad value, modes, baseline guards."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relgate.errors import ParamsError
from relgate.gates import GateResult, GateVerdict, apply_gates
from relgate.metrics import MetricEstimate, evaluate_metrics
from relgate.params import GateRule, GatesSpec
from relgate.report.gates import verdict_markdown
from tests.acceptance.test_gate_cli import make_report


def spec(*rules: tuple[str, str, float] | tuple[str, str, float, str], mode: str = "all",
         baseline: dict[str, Any] | None = None) -> GatesSpec:
    doc: dict[str, Any] = {"mode": mode, "rules": [
        {"metric": r[0], "op": r[1], "value": r[2], **({"on": r[3]} if len(r) > 3 else {})}
        for r in rules
    ]}
    if baseline is not None:
        doc["baseline"] = baseline
    return GatesSpec.from_dict(doc)


@pytest.mark.parametrize(
    ("op", "at_bound", "above", "below"),
    [(">=", True, True, False), (">", False, True, False),
     ("<=", True, False, True), ("<", False, False, True)],
)
def test_bounds_are_inclusive_exactly_as_written(op: str, at_bound: bool, above: bool,
                                                 below: bool) -> None:
    s = spec(("auc", op, 0.85))
    assert apply_gates(s, {"auc": 0.85}).passed is at_bound
    assert apply_gates(s, {"auc": math.nextafter(0.85, 1)}).passed is above
    assert apply_gates(s, {"auc": math.nextafter(0.85, 0)}).passed is below


def test_near_equal_values_are_shown_in_full_precision() -> None:
    result = apply_gates(spec(("auc", ">=", 0.85)), {"auc": 0.8499999999}).results[0]
    assert result.reason == "auc 0.8499999999 < 0.85, needs >= 0.85"
    assert result.observed == 0.8499999999 and result.bound == 0.85


def test_seed_style_reasons() -> None:
    v = apply_gates(spec(("auc", ">=", 0.85)), {"auc": 0.160775})
    assert not v.passed
    assert v.reasons == ("auc 0.160775 < 0.85, needs >= 0.85",)
    ok = apply_gates(spec(("auc", ">=", 0.85)), {"auc": 0.91})
    assert ok.passed and ok.reasons == () and ok.results[0].reason == "auc 0.91 >= 0.85"


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (None, "auc has no value (undefined on this data)"),
        (math.nan, "auc is NaN"),
        (math.inf, "auc is +inf"),
        (-math.inf, "auc is -inf"),
        (np.float64("nan"), "auc is NaN"),
        (True, "auc is not a number (got bool True)"),
        (np.bool_(True), "auc is not a number"),
        ("0.99", "auc is not a number (got str '0.99')"),
        ([0.99], "auc is not a number (got list"),
        ({"ci_low": 0.9}, "auc is malformed (no 'value' key)"),
        ({"value": None, "reason": "AUC undefined: labels contain one class"},
         "auc has no value (AUC undefined: labels contain one class)"),
        ({"value": "0.9"}, "auc is not a number (got str '0.9')"),
        ({"value": True}, "auc is not a number (got bool True)"),
        ({"value": math.nan}, "auc is NaN"),
        (MetricEstimate(value=None, reason="AUC undefined: labels contain one class"),
         "auc has no value (AUC undefined: labels contain one class)"),
        (MetricEstimate(value=math.inf), "auc is +inf"),
    ],
)
@pytest.mark.parametrize("op", [">=", ">", "<=", "<"])
def test_bad_values_fail_closed_with_a_reason(entry: Any, why: str, op: str) -> None:
    v = apply_gates(spec(("auc", op, 0.5)), {"auc": entry})
    assert v.passed is False
    (result,) = v.results
    assert result.passed is False and result.observed is None
    assert result.reason.startswith(why), result.reason
    assert result.reason.endswith(f"needs {op} 0.5")
    assert v.reasons == (result.reason,)


def test_missing_metric_fails() -> None:
    v = apply_gates(spec(("auc", ">=", 0.5), ("f1", ">=", 0.5)), {"auc": 0.9})
    assert not v.passed
    assert v.reasons == ("f1 is missing from the metrics, needs >= 0.5",)


def test_numpy_numbers_are_numbers() -> None:
    assert apply_gates(spec(("auc", ">=", 0.5)), {"auc": np.float32(0.75)}).passed
    assert apply_gates(spec(("auc", ">=", 0.5)), {"auc": np.int64(1)}).passed


def test_interval_bounds() -> None:
    s = spec(("auc", ">=", 0.8, "ci_low"), ("ece", "<=", 0.05, "ci_high"))
    good = {"auc": MetricEstimate(value=0.9, ci_low=0.8, ci_high=0.95),
            "ece": {"value": 0.02, "ci_low": 0.01, "ci_high": 0.05}}
    v = apply_gates(s, good)
    assert v.passed, v.reasons
    assert [r.observed for r in v.results] == [0.8, 0.05]
    bad = apply_gates(s, {"auc": {"value": 0.9}, "ece": 0.02})
    assert [r.reason for r in bad.results] == [
        "auc has no ci_low (no bootstrap interval), needs >= 0.8",
        "ece has no ci_high (no bootstrap interval), needs <= 0.05",
    ]
    nan_ci = apply_gates(s, {"auc": {"value": 0.9, "ci_low": math.nan}, "ece": 0.0})
    assert nan_ci.results[0].reason.startswith("auc ci_low is NaN")


def test_mode_any_needs_one_rule_that_truly_passes() -> None:
    rules = (("auc", ">=", 0.85), ("f1", ">=", 0.8))
    undefined = {"auc": MetricEstimate(value=None, reason="one class"), "f1": math.nan}
    v = apply_gates(spec(*rules, mode="any"), undefined)
    assert not v.passed
    assert v.reasons[-1] == "mode any: none of the 2 rules passed"
    assert len(v.reasons) == 3
    assert not apply_gates(spec(*rules, mode="any"), {}).passed
    one = apply_gates(spec(*rules, mode="any"), {"auc": 0.9, "f1": None})
    assert one.passed and one.reasons == ()
    assert not apply_gates(spec(*rules, mode="all"), {"auc": 0.9, "f1": None}).passed


def test_baseline_guard_higher_is_better() -> None:
    s = spec(("auc", ">=", 0.5), baseline={"release": "v0", "max_drop": {"auc": 0.01}})
    at = apply_gates(s, {"auc": 0.9}, deltas={"auc": MetricEstimate(value=-0.01)})
    assert at.passed
    guard = at.results[-1]
    assert (guard.metric, guard.op, guard.bound, guard.on) == ("auc vs baseline", ">=", -0.01,
                                                               "point")
    worse = apply_gates(s, {"auc": 0.9}, deltas={"auc": {"value": -0.02}})
    assert worse.reasons == ("auc vs baseline: delta -0.02 < -0.01, may drop at most 0.01",)
    assert not apply_gates(s, {"auc": 0.9}).passed  # no deltas: fail closed
    assert not apply_gates(s, {"auc": 0.9}, deltas={}).passed
    assert not apply_gates(s, {"auc": 0.9}, deltas={"auc": MetricEstimate(value=None)}).passed
    other = apply_gates(s, {"auc": 0.9}, deltas={"auc": {"value": 0.0}}, baseline_name="v9")
    assert other.reasons == ("auc vs baseline: deltas were computed against 'v9', params name "
                             "the previous release 'v0', may drop at most 0.01",)


def test_baseline_guard_lower_is_better_uses_ci_high() -> None:
    s = spec(("auc", ">=", 0.5), baseline={"max_drop": {"ece": 0.005, "auc": 0.01},
                                           "on": "ci_low"})
    deltas = {"auc": MetricEstimate(value=0.0, ci_low=-0.004, ci_high=0.01),
              "ece": MetricEstimate(value=0.001, ci_low=-0.01, ci_high=0.005)}
    v = apply_gates(s, {"auc": 0.9}, deltas=deltas)
    assert v.passed, v.reasons
    ece_guard = next(r for r in v.results if r.metric == "ece vs baseline")
    assert (ece_guard.op, ece_guard.bound, ece_guard.on, ece_guard.observed) == (
        "<=", 0.005, "ci_high", 0.005)
    worse = {**deltas, "ece": MetricEstimate(value=0.001, ci_low=-0.01, ci_high=0.0051)}
    assert apply_gates(s, {"auc": 0.9}, deltas=worse).reasons == (
        "ece vs baseline: delta ci_high 0.0051 > 0.005, may rise at most 0.005",)


def test_baseline_guards_are_required_even_in_mode_any() -> None:
    s = spec(("auc", ">=", 0.5), ("f1", ">=", 0.5), mode="any",
             baseline={"max_drop": {"auc": 0.01}})
    v = apply_gates(s, {"auc": 0.9}, deltas={"auc": {"value": -0.5}})
    assert not v.passed
    assert v.reasons == ("auc vs baseline: delta -0.5 < -0.01, may drop at most 0.01",)


def test_malformed_specs_are_params_errors() -> None:
    rule = GateRule(metric="auc", op="=>", value=0.5)
    with pytest.raises(ParamsError, match="unknown operator"):
        apply_gates(GatesSpec(mode="all", rules=(rule,)), {"auc": 0.9})
    with pytest.raises(ParamsError, match="unknown gate mode"):
        apply_gates(GatesSpec(mode="most", rules=()), {})
    with pytest.raises(ParamsError, match="not a finite number"):
        apply_gates(GatesSpec(mode="all", rules=(GateRule(metric="auc", op=">=",
                                                          value=math.nan),)), {})
    with pytest.raises(ParamsError, match="unknown 'on'"):
        apply_gates(GatesSpec(mode="all", rules=(GateRule(metric="auc", op=">=", value=0.5,
                                                          on="median"),)), {})
    assert not apply_gates(GatesSpec(mode="all", rules=()), {}).passed


def test_verdict_round_trips_and_validates_in_a_report() -> None:
    s = spec(("auc", ">=", 0.85), ("f1", ">=", 0.8, "ci_low"), baseline={"max_drop": {"auc": 0.01}})
    v = apply_gates(s, {"auc": 0.9, "f1": None}, deltas=None)
    doc = v.to_dict()
    assert GateVerdict.from_dict(doc) == v
    assert GateResult.from_dict(doc["results"][0]) == v.results[0]
    make_report({"auc": {"value": 0.9}}, passed=v.passed, gates=doc)
    md = verdict_markdown(v)
    assert md.startswith("**❌ FAILED (mode all): 1 of 3 rules passed**")
    assert "| `auc >= 0.85` | 0.9 | pass | auc 0.9 >= 0.85 |" in md


def test_single_class_data_end_to_end_fails_with_a_reason() -> None:
    y = np.zeros(20, dtype=int)
    p = np.linspace(0, 1, 20)
    metrics = evaluate_metrics(y, p, 0.5, resamples=50)
    v = apply_gates(spec(("auc", ">=", 0.5), ("recall", ">=", 0.1), mode="any"), metrics)
    assert not v.passed
    assert v.reasons[0].startswith("auc has no value (AUC undefined: labels contain one class")


def test_no_predicted_positives_fails_precision_gate() -> None:
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.45])
    metrics = evaluate_metrics(y, p, 0.5, resamples=0)
    assert metrics["precision"].value == 0.0  # zero_division=0, documented
    v = apply_gates(spec(("precision", ">=", 0.5)), metrics)
    assert v.reasons == ("precision 0 < 0.5, needs >= 0.5",)


# ---------------------------------------------------------------- monotonicity (properties)

finite = st.floats(min_value=-10, max_value=10, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(observed=finite, bounds=st.lists(finite, min_size=2, max_size=8),
       op=st.sampled_from([">=", ">", "<=", "<"]), on=st.sampled_from(["point", "ci_low"]))
def test_verdict_is_monotonic_in_the_threshold(observed: float, bounds: list[float], op: str,
                                               on: str) -> None:
    entry = MetricEstimate(value=observed, ci_low=observed, ci_high=observed)
    verdicts = [apply_gates(spec(("auc", op, b, on)), {"auc": entry}).passed
                for b in sorted(bounds)]
    # ">=" / ">": once the bound is too high, every higher bound fails too; "<=" / "<" mirror it
    ordered = verdicts if op in (">=", ">") else verdicts[::-1]
    assert ordered == sorted(ordered, reverse=True)
    for b, passed in zip(sorted(bounds), verdicts, strict=True):
        assert passed is {">=": observed >= b, ">": observed > b, "<=": observed <= b,
                          "<": observed < b}[op]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(finite, min_size=1, max_size=4), bound=finite, raise_by=st.floats(0, 5),
       mode=st.sampled_from(["any", "all"]))
def test_raising_every_lower_bound_never_turns_fail_into_pass(
    values: list[float], bound: float, raise_by: float, mode: str
) -> None:
    names = ["auc", "f1", "recall", "precision"][: len(values)]
    metrics = dict(zip(names, values, strict=True))
    loose = apply_gates(spec(*((n, ">=", bound) for n in names), mode=mode), metrics)
    tight = apply_gates(spec(*((n, ">=", bound + raise_by) for n in names), mode=mode), metrics)
    assert loose.passed or not tight.passed


@settings(max_examples=100, deadline=None)
@given(bad=st.sampled_from([None, math.nan, math.inf, -math.inf, True, False, "1", b"1", [1]]),
       bound=finite, op=st.sampled_from([">=", ">", "<=", "<"]),
       mode=st.sampled_from(["any", "all"]))
def test_bad_values_never_pass_any_bound(bad: Any, bound: float, op: str, mode: str) -> None:
    assert not apply_gates(spec(("auc", op, bound), mode=mode), {"auc": bad}).passed


def test_lower_is_better_covers_every_task_kind() -> None:
    """A baseline max_drop on a smaller-is-better metric is judged as a rise for every kind:
    the gates' set must hold the binary and the multi-class ones."""
    from relgate import gates, metrics
    from relgate.tasks import multiclass

    assert metrics.LOWER_IS_BETTER | multiclass.LOWER_IS_BETTER <= gates.LOWER_IS_BETTER
    assert gates.LOWER_IS_BETTER <= metrics.LOWER_IS_BETTER | multiclass.LOWER_IS_BETTER
