"""Validation helpers: calibration refusals, plot data against scikit-learn, flat metrics, CSV."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_curve

from relgate import metrics, validation
from relgate.errors import DataError

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64


def _calibration(*, model: str = SHA_A, fit: str = SHA_B) -> dict:
    return {"model": {"path": "m.onnx", "sha256": model},
            "fit_split": {"name": "val", "path": "data/val.npz", "sha256": fit, "n": 10}}


def test_calibration_fit_on_the_data_being_validated_is_refused() -> None:
    with pytest.raises(DataError, match="calibration was fit on the test split") as info:
        validation.check_calibration_applies(_calibration(), model_sha256=SHA_A, data_sha256=SHA_B)
    assert info.value.exit_code == 2 and "validation split" in (info.value.hint or "")


def test_calibration_of_another_model_is_refused() -> None:
    with pytest.raises(DataError, match="another model"):
        validation.check_calibration_applies(_calibration(), model_sha256=SHA_C, data_sha256=SHA_C)


def test_matching_calibration_is_accepted() -> None:
    validation.check_calibration_applies(_calibration(), model_sha256=SHA_A, data_sha256=SHA_C)


def _data(n: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int8)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    if ties:
        p = np.round(p * 20) / 20
    return y, p


@pytest.mark.parametrize("ties", [False, True])
def test_roc_points_match_sklearn(ties: bool) -> None:
    y, p = _data(600, seed=1, ties=ties)
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    rows = validation.roc_points(y, p)
    assert rows[0] == (0.0, 0.0, None)
    np.testing.assert_allclose([r[0] for r in rows], fpr, atol=1e-15)
    np.testing.assert_allclose([r[1] for r in rows], tpr, atol=1e-15)
    np.testing.assert_allclose([r[2] for r in rows[1:]], thr[1:], atol=0)
    # the trapezoid area under the points is the AUC (ties count half)
    assert np.trapezoid([r[1] for r in rows], [r[0] for r in rows]) == pytest.approx(
        metrics.roc_auc(y, p), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_pr_points_match_sklearn(ties: bool) -> None:
    y, p = _data(500, seed=2, ties=ties)
    precision, recall, thr = precision_recall_curve(y, p, drop_intermediate=False)
    rows = validation.pr_points(y, p)
    # sklearn lists thresholds ascending and appends (precision 1, recall 0)
    want = sorted(zip(recall[:-1], precision[:-1], thr, strict=True), key=lambda r: -r[2])
    assert len(rows) == len(want)
    np.testing.assert_allclose(np.array(rows), np.array(want), atol=1e-12)


def test_curves_are_thinned_keeping_both_ends() -> None:
    y, p = _data(5000, seed=3, ties=False)
    rows = validation.roc_points(y, p)
    assert len(rows) <= validation.MAX_CURVE_POINTS + 1
    assert rows[1][2] == p.max() and rows[-1][:2] == (1.0, 1.0)
    assert validation.roc_points(np.zeros(4), np.arange(4.0)) == []
    assert validation.pr_points(np.zeros(4), np.arange(4.0)) == []


def test_reliability_bins_agree_with_ece() -> None:
    y, p = _data(700, seed=4, ties=False)
    p[:3] = [0.0, 1.0, 0.5]
    rows = validation.reliability_bins(y, p, 10)
    assert [r[0] for r in rows] == list(range(10))
    assert sum(r[3] for r in rows) == y.size
    gap = sum(r[3] * abs(r[5] - r[4]) for r in rows if r[3])
    assert gap / y.size == pytest.approx(metrics.ece(y, p, 10), abs=1e-12)
    for _, lo, hi, count, mean_p, _ in rows:
        if count:
            assert lo <= mean_p <= hi


def test_csv_bytes_are_deterministic_and_plain() -> None:
    data = validation.csv_bytes(("a", "b", "c"), [(0.1, None, 3), (-0.0, float("nan"), "x")])
    assert data == b"a,b,c\n0.1,,3\n0.0,,x\n"


def test_sweep_csv_long_format() -> None:
    record = {"sweep": {"scales": [0.5, 1.0], "offsets": [0.0, 1.0],
                        "auc": [[0.7, None], [0.8, 0.9]]}}
    assert validation.sweep_csv(record) == (
        b"scale,offset,auc\n0.5,0.0,0.7\n0.5,1.0,\n1.0,0.0,0.8\n1.0,1.0,0.9\n")
    assert validation.sweep_csv({}) == b"scale,offset,auc\n"


def test_flat_metrics_flattens_intervals_and_skips_undefined() -> None:
    report = {
        "metrics": {"auc": {"value": 0.9, "ci_low": 0.85, "ci_high": 0.95},
                    "recall": {"value": None, "reason": "no positives"},
                    "mean_std": {"value": 0.3}},
        "threshold": 0.4, "passed": False, "data": {"n": 12},
    }
    assert validation.flat_metrics(report) == {
        "auc": 0.9, "auc_ci_low": 0.85, "auc_ci_high": 0.95, "mean_std": 0.3,
        "threshold": 0.4, "gates_passed": False, "n": 12,
    }


# ---------------------------------------------------------------- model checks


def test_batch_sample_is_seeded_sorted_distinct_and_capped() -> None:
    a = validation.batch_sample(10_000, seed=3)
    assert np.array_equal(a, validation.batch_sample(10_000, seed=3))
    assert not np.array_equal(a, validation.batch_sample(10_000, seed=4))
    assert a.size == validation.BATCH_CHECK_ROWS == 32
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 10_000
    assert np.array_equal(validation.batch_sample(5, seed=0), np.arange(5))


def test_batch_check_tolerates_rounding_and_refuses_dependence() -> None:
    batched = np.array([0.0, 1.0, -200.0, 3e4])
    tol = validation.BATCH_ATOL + validation.BATCH_RTOL * np.abs(batched)
    ok = validation.batch_check(batched, batched + 0.999 * tol, batch_size=256, seed=1)
    assert ok["passed"] and ok["mismatched"] == 0 and ok["rows"] == 4
    assert ok["max_abs_diff"] == pytest.approx(float((0.999 * tol).max()))
    off = validation.batch_check(batched, batched + np.array([0, 0, 1.01, 0]) * tol,
                                 batch_size=256, seed=1)
    assert not off["passed"] and off["mismatched"] == 1
    nan = validation.batch_check(batched, np.array([0.0, np.nan, -200.0, 3e4]), batch_size=8,
                                 seed=1)
    assert not nan["passed"] and nan["mismatched"] == 1 and nan["max_abs_diff"] is None
    assert validation.batch_check(np.zeros(0), np.zeros(0), batch_size=1, seed=0)["passed"]
