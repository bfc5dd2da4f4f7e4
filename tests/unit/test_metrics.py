"""Metrics: worked examples, every edge case, and the bootstrap engine against a plain loop."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from relgate import metrics
from relgate.errors import DataError, ParamsError
from relgate.metrics import MetricEstimate
from tests.acceptance.test_gate_cli import make_report

Y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.05, 0.9, 0.6, 0.7])


# ---------------------------------------------------------------- worked examples


def test_small_worked_example() -> None:
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert metrics.roc_auc(y, s) == 0.75
    assert metrics.average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    c = metrics.confusion_at(y, s, 0.35)
    assert (c.tp, c.fp, c.tn, c.fn, c.n) == (2, 1, 1, 0, 4)
    assert metrics.threshold_metrics(y, s, 0.35) == {
        "precision": 2 / 3, "recall": 1.0, "f1": 0.8, "macro_f1": (0.8 + 2 / 3) / 2,
        "accuracy": 0.75, "specificity": 0.5}


def test_threshold_is_inclusive() -> None:
    assert metrics.confusion_at([1], [0.5], 0.5).tp == 1
    assert metrics.confusion_at([1], [0.5], math.nextafter(0.5, 1)).fn == 1


def test_all_scores_tied() -> None:
    y, s = [0, 1, 1, 0, 1], [0.3] * 5
    assert metrics.roc_auc(y, s) == 0.5
    assert metrics.average_precision(y, s) == pytest.approx(0.6, abs=1e-15)
    assert metrics.best_f1_threshold(y, s) == (0.3, pytest.approx(0.75))
    assert metrics.precision_target_threshold(y, s, 0.6) == 0.3
    assert metrics.precision_target_threshold(y, s, 0.61) is None


def test_single_class_labels() -> None:
    s = [0.1, 0.2, 0.3]
    assert math.isnan(metrics.roc_auc([0, 0, 0], s))
    assert math.isnan(metrics.roc_auc([1, 1, 1], s))
    assert math.isnan(metrics.average_precision([0, 0, 0], s))
    assert metrics.average_precision([1, 1, 1], s) == 1.0
    with pytest.raises(DataError, match="no positives"):
        metrics.best_f1_threshold([0, 0, 0], s)
    assert metrics.precision_target_threshold([0, 0, 0], s, 0.5) is None
    est = metrics.evaluate_metrics([0, 0, 0], s, 0.5, resamples=20)
    assert est["auc"].value is None
    assert est["auc"].reason == "AUC undefined: labels contain one class (0 positives, 3 negatives)"
    for name in ("pr_auc", "recall", "f1"):
        assert est[name].value is None and "no positives" in str(est[name].reason)
    assert est["specificity"].value == 1.0 and est["accuracy"].value == 1.0
    pos_only = metrics.evaluate_metrics([1, 1, 1], s, 0.15, resamples=20)
    assert pos_only["specificity"].value is None and pos_only["auc"].value is None
    assert pos_only["recall"].value == pytest.approx(2 / 3)


def test_no_predicted_positives_policy() -> None:
    tm = metrics.threshold_metrics(Y, P, 0.95)
    # macro_f1: class 1's F1 is 0, class 0's is 2TN / (2TN + FN) with TN = FN
    assert tm == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "macro_f1": (0.0 + 2 / 3) / 2,
                  "accuracy": 0.5, "specificity": 1.0}
    assert tm["precision"] == skm.precision_score(Y, P >= 0.95, zero_division=0)
    assert metrics.threshold_metrics([0, 0], [0.1, 0.2], 0.5)["f1"] == 0.0
    assert metrics.threshold_metrics([1, 1], [0.7, 0.8], 0.5)["specificity"] == 0.0


@pytest.mark.parametrize(
    ("y", "s", "message"),
    [
        ([], [], "no samples"),
        ([0, 1], [0.5], "2 labels but 1 scores"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "labels must be 0 or 1; found 1 other value(s): 2"),
        ([0, -1], [0.1, 0.2], "found 1 other value(s): -1"),
        ([0.0, 0.5], [0.1, 0.2], "0.5"),
        ([0.0, math.nan], [0.1, 0.2], "nan"),
        (["0", "1"], [0.1, 0.2], "labels must be numbers 0/1"),
        ([0, 1], [0.1, math.nan], "scores contain 1 NaN and 0 infinite value(s)"),
        ([0, 1, 1], [math.inf, -math.inf, 0.3], "scores contain 0 NaN and 2 infinite value(s)"),
        ([0, 1], ["a", "b"], "scores must be real numbers"),
        ([[0, 1]], [[0.1, 0.2]], "must be 1-D"),
        ([0, 1], [[0.1], [0.2]], "must be 1-D"),
    ],
)
@pytest.mark.parametrize(
    "fn",
    [metrics.roc_auc, metrics.average_precision, metrics.brier,
     lambda y, s: metrics.threshold_metrics(y, s, 0.5), metrics.best_f1_threshold,
     lambda y, s: metrics.evaluate_metrics(y, s, 0.5, resamples=10)],
)
def test_invalid_input_is_a_one_line_data_error(y: Any, s: Any, message: str, fn: Any) -> None:
    with pytest.raises(DataError) as info:
        fn(y, s)
    assert message in info.value.message
    assert info.value.exit_code == 2
    assert "\n" not in info.value.one_line()


def test_probability_metrics_refuse_raw_scores() -> None:
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]"):
        metrics.ece([0, 1], [0.2, 1.5])
    with pytest.raises(DataError, match="probabilities"):
        metrics.evaluate_metrics([0, 1], [-0.1, 0.5], 0.5)
    assert metrics.bootstrap_metric([0, 1], [-3.0, 7.0], "auc", resamples=5).value == 1.0


def test_bad_parameters_are_params_errors() -> None:
    with pytest.raises(ParamsError):
        metrics.evaluate_metrics(Y, P, math.nan)
    with pytest.raises(ParamsError):
        metrics.evaluate_metrics(Y, P, 0.5, confidence=1.0)
    with pytest.raises(ParamsError):
        metrics.evaluate_metrics(Y, P, 0.5, resamples=-1)
    with pytest.raises(ParamsError):
        metrics.ece(Y, P, bins=0)
    with pytest.raises(ParamsError):
        metrics.precision_target_threshold(Y, P, 0.0)
    with pytest.raises(ParamsError, match="unknown metric"):
        metrics.bootstrap_metric(Y, P, "mean_std")


# ---------------------------------------------------------------- thresholds


def test_best_f1_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        y = rng.integers(0, 2, 40)
        y[0] = 1
        s = rng.integers(0, 8, 40) / 7
        thr, f1 = metrics.best_f1_threshold(y, s)
        candidates = {t: skm.f1_score(y, s >= t, zero_division=0) for t in np.unique(s)}
        best = max(candidates.values())
        assert f1 == pytest.approx(best, abs=1e-12)
        assert thr == max(t for t, v in candidates.items() if v == pytest.approx(best, abs=1e-12))


def test_precision_target_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(4)
    for target in (0.5, 0.7, 0.9, 1.0):
        for _ in range(30):
            y = rng.integers(0, 2, 30)
            s = rng.integers(0, 6, 30) / 5
            got = metrics.precision_target_threshold(y, s, target)
            ok = [t for t in np.unique(s)
                  if (s >= t).any() and (y[s >= t] == 1).any()
                  and skm.precision_score(y, s >= t, zero_division=0) >= target]
            assert got == (min(ok) if ok else None)


# ---------------------------------------------------------------- calibration quality


def brute_ece(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i in range(p.size)
                   if (math.floor(p[i] * bins) == b) or (b == bins - 1 and p[i] == 1.0)]
        if members:
            gap = abs(np.mean(y[members]) - np.mean(p[members]))
            total += len(members) / p.size * gap
            assert all(lo <= p[i] <= hi for i in members)
    return total


@pytest.mark.parametrize("bins", [1, 2, 10, 15])
def test_ece_against_brute_force(bins: int) -> None:
    rng = np.random.default_rng(bins)
    y = rng.integers(0, 2, 200)
    p = np.clip(np.round(rng.random(200), 2), 0, 1)
    p[:3] = (0.0, 1.0, 0.6)
    assert metrics.ece(y, p, bins) == pytest.approx(brute_ece(y, p, bins), abs=1e-12)
    est = metrics.bootstrap_metric(y, p, "ece", resamples=0, ece_bins=bins)
    assert est.value == pytest.approx(metrics.ece(y, p, bins), abs=1e-12)


def test_ece_of_perfectly_calibrated_bins_is_zero_and_one_bin_is_the_mean_gap() -> None:
    y = np.array([0, 1, 0, 1])
    assert metrics.ece(y, [0.5, 0.5, 0.5, 0.5], 15) == 0.0
    assert metrics.ece(y, [0.1, 0.2, 0.3, 0.9], 1) == pytest.approx(abs(0.5 - 0.375))


# ---------------------------------------------------------------- health stats


def test_health_stats() -> None:
    rng = np.random.default_rng(0)
    n = 500
    prob = rng.random(n)
    base = rng.normal(size=(n, 4))
    feats = np.column_stack([base, base[:, 0] * 2 + 1, -base[:, 1]])  # 2 of 15 pairs redundant
    h = metrics.health_stats(feats, prob, 0.5)
    assert h["mean_std"] == pytest.approx(float(np.mean(np.std(feats, axis=0))), abs=1e-12)
    assert h["high_corr_frac"] == pytest.approx(2 / 15)
    assert h["frac_sig"] == np.mean(prob >= 0.5)
    collapsed = metrics.health_stats(np.ones((n, 3)), prob, 0.5)
    assert collapsed["mean_std"] == 0.0 and collapsed["high_corr_frac"] == 0.0
    single = metrics.health_stats(prob, prob, 0.5)
    assert single["high_corr_frac"] == 0.0
    assert single["mean_std"] == pytest.approx(float(np.std(prob)))
    assert metrics.health_stats(np.ones((1, 3)), [0.7], 0.5)["high_corr_frac"] is None
    with pytest.raises(DataError, match="features"):
        metrics.health_stats(np.ones((n - 1, 3)), prob, 0.5)
    bad = feats.copy()
    bad[3, 2] = math.nan
    with pytest.raises(DataError, match="features contain 1 NaN"):
        metrics.health_stats(bad, prob, 0.5)


def test_health_stats_in_evaluate_metrics() -> None:
    est = metrics.evaluate_metrics(Y, P, 0.5, resamples=0, features=np.column_stack([P, P]))
    assert est["high_corr_frac"].value == 1.0
    assert est["frac_sig"].value == 0.4
    assert est["mean_std"].ci_low is None
    wide = metrics.evaluate_metrics(Y, P, 0.5, resamples=0,
                                    features=np.zeros((Y.size, metrics.MAX_CORR_DIMS + 1)))
    assert wide["high_corr_frac"].value is None
    assert "exceed" in str(wide["high_corr_frac"].reason)


# ---------------------------------------------------------------- estimates and records


def test_evaluate_metrics_is_complete_reproducible_and_schema_valid() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1)
    a = metrics.evaluate_metrics(y, p, 0.5, resamples=200, seed=1)
    assert set(a) == set(metrics.ALL_METRICS)
    assert a == metrics.evaluate_metrics(y, p, 0.5, resamples=200, seed=1)
    assert a["auc"] != metrics.evaluate_metrics(y, p, 0.5, resamples=200, seed=2)["auc"]
    order = rng.permutation(y.size)  # depends on the (label, score) multiset only
    shuffled = metrics.evaluate_metrics(y[order], p[order], 0.5, resamples=200, seed=1)
    assert {k: a[k] for k in metrics.BOOTSTRAP_METRICS} == {
        k: shuffled[k] for k in metrics.BOOTSTRAP_METRICS}
    for name in metrics.BOOTSTRAP_METRICS:
        e = a[name]
        assert e.value is not None and e.ci_low is not None and e.ci_high is not None
        assert e.ci_low <= e.ci_high
    assert a["auc"].value == metrics.roc_auc(y, p)
    assert a["brier"].value == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    none = metrics.evaluate_metrics(y, p, 0.5, resamples=0)
    assert all(e.ci_low is None for e in none.values())
    make_report({k: v.to_dict() for k, v in a.items()})
    make_report({k: v.to_dict() for k, v in
                 metrics.evaluate_metrics([0, 0], [0.1, 0.2], 0.5).items()})


def test_metric_estimate_records() -> None:
    e = MetricEstimate(value=0.9, ci_low=0.8, ci_high=0.95)
    assert e.to_dict() == {"value": 0.9, "ci_low": 0.8, "ci_high": 0.95}
    assert MetricEstimate.from_dict(e.to_dict()) == e
    u = MetricEstimate(value=None, reason="AUC undefined: labels contain one class")
    assert u.to_dict() == {"value": None, "reason": "AUC undefined: labels contain one class"}
    assert MetricEstimate.from_dict(u.to_dict()) == u
    nan = MetricEstimate(value=math.nan, ci_low=0.1).to_dict()
    assert nan == {"value": None, "reason": "value was nan, not a finite number"}
    make_report({"auc": nan})
    with pytest.raises(DataError):
        MetricEstimate.from_dict({"value": True})


# ---------------------------------------------------------------- bootstrap vs a plain loop


def _oracle_draws(n_pos: int, n_neg: int, resamples: int, seed: int) -> tuple[Any, Any]:
    """The engine's documented draws (one chunk for small n), re-done by hand."""
    pos_seq, neg_seq = np.random.SeedSequence(seed).spawn(2)
    rp = np.random.default_rng(pos_seq).integers(0, n_pos, size=(resamples, n_pos))
    rn = np.random.default_rng(neg_seq).integers(0, n_neg, size=(resamples, n_neg))
    return rp, rn


def _sk(name: str, y: np.ndarray, s: np.ndarray, thr: float, bins: int) -> float:
    pred = s >= thr
    if name == "auc":
        return float(skm.roc_auc_score(y, s))
    if name == "pr_auc":
        return float(skm.average_precision_score(y, s))
    if name == "ece":
        return brute_ece(y, s, bins)
    if name == "brier":
        return float(np.mean((s - y) ** 2))
    if name == "specificity":
        return float(skm.recall_score(1 - y, ~pred, zero_division=0))
    fn = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}
    if name == "accuracy":
        return float(skm.accuracy_score(y, pred))
    if name == "macro_f1":
        return float(skm.f1_score(y, pred, average="macro"))
    return float(fn[name](y, pred, zero_division=0))


def test_bootstrap_intervals_equal_a_loop_over_sklearn() -> None:
    rng = np.random.default_rng(11)
    n, resamples, seed, thr, bins = 60, 40, 9, 0.5, 5
    y = rng.integers(0, 2, n)
    p = np.round(np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1), 1)  # heavy ties
    est = metrics.evaluate_metrics(y, p, thr, resamples=resamples, seed=seed, ece_bins=bins,
                                   confidence=0.9)
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    rp, rn = _oracle_draws(pos.size, neg.size, resamples, seed)
    for name in metrics.BOOTSTRAP_METRICS:
        values = []
        for r in range(resamples):
            s = np.concatenate([pos[rp[r]], neg[rn[r]]])
            yy = np.r_[np.ones(pos.size, int), np.zeros(neg.size, int)]
            values.append(_sk(name, yy, s, thr, bins))
        lo, hi = np.quantile(values, [0.05, 0.95])
        assert est[name].ci_low == pytest.approx(lo, abs=1e-12), name
        assert est[name].ci_high == pytest.approx(hi, abs=1e-12), name
        assert est[name].value == pytest.approx(_sk(name, y, p, thr, bins), abs=1e-12), name


@pytest.mark.parametrize("name", ["auc", "pr_auc", "f1", "brier", "ece", "specificity"])
def test_paired_delta_equals_a_loop_over_the_same_samples(name: str) -> None:
    rng = np.random.default_rng(12)
    n, resamples, seed = 50, 30, 4
    y = rng.integers(0, 2, n)
    pc = np.round(np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1), 1)
    pb = np.round(np.clip(0.2 * y + 0.8 * rng.random(n), 0, 1), 1)
    d = metrics.paired_bootstrap_delta(y, pc, pb, name, 0.5, 0.4, resamples=resamples,
                                       confidence=0.8, seed=seed, ece_bins=4)
    assert d.value == pytest.approx(_sk(name, y, pc, 0.5, 4) - _sk(name, y, pb, 0.4, 4),
                                    abs=1e-12)
    ip, ineg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    oc_pos = ip[np.argsort(pc[ip], kind="stable")]  # draws index the candidate's sorted order
    oc_neg = ineg[np.argsort(pc[ineg], kind="stable")]
    rp, rn = _oracle_draws(ip.size, ineg.size, resamples, seed)
    deltas = []
    for r in range(resamples):
        ids = np.concatenate([oc_pos[rp[r]], oc_neg[rn[r]]])
        deltas.append(_sk(name, y[ids], pc[ids], 0.5, 4) - _sk(name, y[ids], pb[ids], 0.4, 4))
    lo, hi = np.quantile(deltas, [0.1, 0.9])
    assert d.ci_low == pytest.approx(lo, abs=1e-12)
    assert d.ci_high == pytest.approx(hi, abs=1e-12)


def test_paired_delta_of_a_model_with_itself_is_exactly_zero() -> None:
    rng = np.random.default_rng(13)
    y = rng.integers(0, 2, 400)
    p = rng.random(400)
    d = metrics.paired_bootstrap_delta(y, p, p, "auc", 0.5, 0.5, resamples=100,
                                       confidence=0.95, seed=0)
    assert (d.value, d.ci_low, d.ci_high) == (0.0, 0.0, 0.0)
    one = metrics.paired_bootstrap_delta(np.zeros(5), p[:5], p[:5], "auc", 0.5, 0.5,
                                         resamples=10, confidence=0.95, seed=0)
    assert one.value is None and "one class" in str(one.reason)


def test_bootstrap_chunks_do_not_change_the_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(14)
    y = rng.integers(0, 2, 300)
    p = rng.random(300)
    whole = metrics.bootstrap_metric(y, p, "pr_auc", resamples=64, seed=3)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 300 * 7)  # 7 resamples per chunk
    assert metrics.bootstrap_metric(y, p, "pr_auc", resamples=64, seed=3) == whole
