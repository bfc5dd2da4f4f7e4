"""Property tests: our metrics equal scikit-learn's within 1e-12 on data with heavy ties,
and AUC equals the brute-force pairwise count exactly."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from relgate import metrics

TOL = 1e-12
EXAMPLES = settings(max_examples=150, deadline=None)


@st.composite
def labelled(draw: st.DrawFn, *, both: bool = True,
             unit: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Labels (both classes unless told) and scores; most draws come from a tiny pool (ties)."""
    n = draw(st.integers(min_value=2, max_value=80))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    if both and y.min() == y.max():
        y[draw(st.integers(0, n - 1))] = 1 - y[0]
    hi = 1.0 if unit else 1e6
    lo = 0.0 if unit else -1e6
    pool = draw(st.lists(st.floats(lo, hi, allow_nan=False), min_size=1, max_size=6))
    tied = draw(st.booleans())
    if tied:
        scores = [draw(st.sampled_from(pool)) for _ in range(n)]
    else:
        scores = draw(st.lists(st.floats(lo, hi, allow_nan=False), min_size=n, max_size=n))
    return y, np.array(scores, dtype=np.float64)


def brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    greater = int((pos[:, None] > neg[None, :]).sum())
    equal = int((pos[:, None] == neg[None, :]).sum())
    return (2 * greater + equal) / (2 * pos.size * neg.size)


@EXAMPLES
@given(labelled(unit=False))
def test_auc_equals_sklearn_and_the_pairwise_count(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = data
    auc = metrics.roc_auc(y, s)
    assert auc == brute_auc(y, s)  # exact: both are the correctly rounded pair ratio
    assert abs(auc - skm.roc_auc_score(y, s)) <= TOL
    assert metrics.bootstrap_metric(y, s, "auc", resamples=0).value == auc


@EXAMPLES
@given(labelled(unit=False))
def test_average_precision_equals_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = data
    ap = metrics.average_precision(y, s)
    assert abs(ap - skm.average_precision_score(y, s)) <= TOL
    assert abs(metrics.bootstrap_metric(y, s, "pr_auc", resamples=0).value - ap) <= TOL


@EXAMPLES
@given(labelled(both=False), st.floats(0, 1))
def test_threshold_metrics_equal_sklearn(data: tuple[np.ndarray, np.ndarray], t: float) -> None:
    y, s = data
    thr = float(s[0]) if t < 0.3 else t  # often exactly at a score, to exercise ">="
    pred = (s >= thr).astype(int)
    ours = metrics.threshold_metrics(y, s, thr)
    expected = {
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "macro_f1": skm.f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0),
        "accuracy": skm.accuracy_score(y, pred),
        "specificity": skm.recall_score(1 - y, 1 - pred, zero_division=0),
    }
    for name, value in expected.items():
        assert abs(ours[name] - value) <= TOL, name
        boot = metrics.bootstrap_metric(y, s, name, threshold=thr, resamples=0)
        if boot.value is not None:  # recall/f1 (macro_f1) have no value without positives
            # (without one class)
            assert abs(boot.value - value) <= TOL, name
    c = metrics.confusion_at(y, s, thr)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (c.tp, c.fp, c.tn, c.fn) == (tp, fp, tn, fn)


@EXAMPLES
@given(labelled())
def test_brier_equals_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = data
    b = metrics.brier(y, p)
    assert abs(b - skm.brier_score_loss(y, p)) <= TOL
    assert abs(metrics.bootstrap_metric(y, p, "brier", resamples=0).value - b) <= TOL


@EXAMPLES
@given(labelled(), st.integers(1, 20))
def test_ece_engine_equals_the_direct_formula(data: tuple[np.ndarray, np.ndarray],
                                              bins: int) -> None:
    y, p = data
    idx = np.minimum(np.floor(p * bins).astype(int), bins - 1)
    expected = sum(abs(np.sum(y[idx == b] - p[idx == b])) for b in range(bins)) / y.size
    assert abs(metrics.ece(y, p, bins) - expected) <= TOL
    boot = metrics.bootstrap_metric(y, p, "ece", resamples=0, ece_bins=bins).value
    assert boot is not None and abs(boot - expected) <= TOL


@settings(max_examples=60, deadline=None)
@given(labelled(), st.integers(0, 2**32 - 1))
def test_intervals_bracket_resampled_values(data: tuple[np.ndarray, np.ndarray],
                                            seed: int) -> None:
    y, p = data
    est = metrics.evaluate_metrics(y, p, 0.5, resamples=25, seed=seed)
    for name in metrics.BOOTSTRAP_METRICS:
        e = est[name]
        assert e.value is not None and math.isfinite(e.value)
        assert e.ci_low is not None and e.ci_high is not None and e.ci_low <= e.ci_high
        if name not in ("ece", "brier"):
            assert e.ci_low >= 0.0 and e.ci_high <= 1.0


@settings(max_examples=60, deadline=None)
@given(labelled())
def test_best_f1_threshold_is_optimal(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, s = data
    thr, f1 = metrics.best_f1_threshold(y, s)
    assert thr in set(s.tolist())
    assert abs(f1 - skm.f1_score(y, s >= thr, zero_division=0)) <= TOL
    pred = s[None, :] >= np.unique(s)[:, None]  # every candidate threshold at once
    tp = (pred & (y == 1)).sum(axis=1)
    f1_all = 2 * tp / (pred.sum(axis=1) + (y == 1).sum())
    assert f1_all.max() <= f1 + TOL
