"""The binary task kind (issue 14): its room behind the task interface, and the numbers it adds.

* ``macro_f1`` (F1 of class 1 and of class 0, averaged) equals scikit-learn's
  ``f1_score(average="macro")`` within 1e-12 on tie-heavy data, point and bootstrap, computed
  in the same vectorised pass as ``f1`` (weighted counts: the engine's resamples);
* ``coverage`` and ``selective_precision`` with a "no conclusive" band ``[low, high)`` equal
  brute-force counts, point, intervals and paired deltas; without a band they are undefined;
* architecture: ``relgate.validation`` calls no binary metric; ``validation_runner`` gives
  ``tasks/binary.py``'s and ``tasks/multiclass_validation.py``'s runners.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from relgate import metrics

TOL = 1e-12
EXAMPLES = settings(max_examples=60, deadline=None)
SRC = Path(__file__).resolve().parents[2] / "src" / "relgate"


@st.composite
def tied(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Both classes, probabilities mostly from a pool of at most 5 values (heavy ties)."""
    n = draw(st.integers(2, 60))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    if y.min() == y.max():
        y[draw(st.integers(0, n - 1))] = 1 - y[0]
    pool = draw(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0]),
                         min_size=1, max_size=5))
    p = np.array([draw(st.sampled_from(pool)) for _ in range(n)], dtype=np.float64)
    return y, p


def brute_selective(y: np.ndarray, p: np.ndarray, thr: float, low: float, high: float,
                    w: np.ndarray | None = None) -> tuple[float, float]:
    """coverage and selective_precision by counting (weights: resample counts)."""
    w = np.ones(y.size) if w is None else w
    conclusive = ~((p >= low) & (p < high))
    flagged = conclusive & (p >= thr)
    tp = float(w[flagged & (y == 1)].sum())
    fp = float(w[flagged & (y == 0)].sum())
    coverage = float(w[conclusive].sum()) / float(w.sum())
    return coverage, (tp / (tp + fp) if tp + fp else 0.0)


# ---------------------------------------------------------------- macro_f1


@EXAMPLES
@given(tied(), st.sampled_from([0.0, 0.1, 0.4, 0.5, 0.6, 1.0, 0.33]))
def test_macro_f1_equals_sklearn_on_ties(data: tuple[np.ndarray, np.ndarray], thr: float) -> None:
    y, p = data
    pred = (p >= thr).astype(int)
    want = skm.f1_score(y, pred, average="macro")
    est = metrics.evaluate_metrics(y, p, thr, resamples=0)
    assert est["macro_f1"].value is not None and abs(est["macro_f1"].value - want) <= TOL
    assert abs(metrics.threshold_metrics(y, p, thr)["macro_f1"] - want) <= TOL
    assert abs(metrics.bootstrap_metric(y, p, "macro_f1", threshold=thr,
                                        resamples=0).value - want) <= TOL


@EXAMPLES
@given(tied(), st.integers(0, 2**32 - 1))
def test_the_vectorised_pass_equals_sklearn_on_weighted_resamples(
        data: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    """The engine's bootstrap kernel on k count rows at once: each row equals sklearn with
    those counts as sample weights (macro_f1, f1) and brute-force counts (selective)."""
    y, p = data
    thr, band = 0.5, (0.25, 0.6)
    r = metrics._ranked(y.astype(np.int8), p)  # the kernel itself is under test
    rng = np.random.default_rng(seed)
    # stratified resamples: each row keeps the class totals (the kernel's contract)
    cpos = rng.multinomial(r.pos.size, np.full(r.pos.size, 1 / r.pos.size), size=4)
    cneg = rng.multinomial(r.neg.size, np.full(r.neg.size, 1 / r.neg.size), size=4)
    names = ("f1", "macro_f1", "coverage", "selective_precision")
    out = metrics._batch(r, cpos, cneg, names, thr, 10, band)
    ys = np.r_[np.ones(r.pos.size, int), np.zeros(r.neg.size, int)]
    ps = np.r_[r.pos, r.neg]
    for k in range(4):
        w = np.r_[cpos[k], cneg[k]].astype(np.float64)
        pred = (ps >= thr).astype(int)
        assert abs(out["macro_f1"][k] - skm.f1_score(ys, pred, average="macro",
                                                      sample_weight=w)) <= TOL
        assert abs(out["f1"][k] - skm.f1_score(ys, pred, sample_weight=w)) <= TOL
        coverage, sel = brute_selective(ys, ps, thr, *band, w=w)
        assert abs(out["coverage"][k] - coverage) <= TOL
        assert abs(out["selective_precision"][k] - sel) <= TOL


def test_macro_f1_is_undefined_with_one_class() -> None:
    est = metrics.evaluate_metrics([1, 1, 1], [0.2, 0.7, 0.9], 0.5, resamples=10)
    assert est["macro_f1"].value is None
    assert "one class" in str(est["macro_f1"].reason)
    assert metrics.evaluate_metrics([0, 0], [0.2, 0.7], 0.5, resamples=0)["macro_f1"].value is None


def _draws(n_pos: int, n_neg: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The engine's documented stratified draws (one chunk for small n), re-done by hand."""
    pos_seq, neg_seq = np.random.SeedSequence(seed).spawn(2)
    rp = np.random.default_rng(pos_seq).integers(0, n_pos, size=(resamples, n_pos))
    rn = np.random.default_rng(neg_seq).integers(0, n_neg, size=(resamples, n_neg))
    return rp, rn


def test_intervals_equal_a_loop_over_sklearn_and_brute_force() -> None:
    rng = np.random.default_rng(4)
    n, resamples, seed, thr, band = 80, 60, 5, 0.5, (0.35, 0.65)
    y = rng.integers(0, 2, n)
    p = np.round(np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1), 1)  # heavy ties
    est = metrics.evaluate_metrics(y, p, thr, resamples=resamples, seed=seed, confidence=0.9,
                                   band={"low": band[0], "high": band[1], "share": None})
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    rp, rn = _draws(pos.size, neg.size, resamples, seed)
    yy = np.r_[np.ones(pos.size, int), np.zeros(neg.size, int)]
    values: dict[str, list[float]] = {"macro_f1": [], "coverage": [], "selective_precision": []}
    for r in range(resamples):
        s = np.concatenate([pos[rp[r]], neg[rn[r]]])
        values["macro_f1"].append(skm.f1_score(yy, s >= thr, average="macro"))
        coverage, sel = brute_selective(yy, s, thr, *band)
        values["coverage"].append(coverage)
        values["selective_precision"].append(sel)
    point = {"macro_f1": skm.f1_score(y, p >= thr, average="macro"),
             **dict(zip(("coverage", "selective_precision"), brute_selective(y, p, thr, *band),
                        strict=True))}
    for name, vals in values.items():
        lo, hi = np.quantile(vals, [0.05, 0.95])
        assert est[name].value == pytest.approx(point[name], abs=TOL), name
        assert est[name].ci_low == pytest.approx(lo, abs=TOL), name
        assert est[name].ci_high == pytest.approx(hi, abs=TOL), name


# ---------------------------------------------------------------- selective metrics


@EXAMPLES
@given(tied(), st.sampled_from([0.1, 0.4, 0.5, 0.6]),
       st.sampled_from([(0.4, 0.6), (0.0, 0.5), (0.5, 1.0), (0.25, 0.25), (0.6, 0.75)]))
def test_selective_metrics_equal_brute_force_counts(data: tuple[np.ndarray, np.ndarray],
                                                    thr: float,
                                                    band: tuple[float, float]) -> None:
    y, p = data
    est = metrics.evaluate_metrics(y, p, thr, resamples=0, band=band)
    coverage, sel = brute_selective(y, p, thr, *band)
    assert abs(est["coverage"].value - coverage) <= TOL
    assert abs(est["selective_precision"].value - sel) <= TOL


def test_without_a_band_the_selective_metrics_are_not_reported_and_undefined_when_asked() -> None:
    y, p = [0, 1, 0, 1], [0.2, 0.8, 0.5, 0.45]
    assert not set(metrics.SELECTIVE_METRICS) & set(metrics.evaluate_metrics(y, p, 0.5,
                                                                             resamples=0))
    for name in metrics.SELECTIVE_METRICS:
        est = metrics.bootstrap_metric(y, p, name, resamples=10)
        assert est.value is None and "no inconclusive band" in str(est.reason)
        delta = metrics.paired_bootstrap_delta(y, p, p, name, 0.5, 0.5, resamples=10,
                                               confidence=0.9, seed=0, band_candidate=(0.4, 0.6))
        assert delta.value is None and "(baseline)" in str(delta.reason)


def test_a_reversed_band_is_refused() -> None:
    from relgate.errors import ParamsError

    with pytest.raises(ParamsError, match="low <= high"):
        metrics.evaluate_metrics([0, 1], [0.2, 0.8], 0.5, resamples=0, band=(0.7, 0.3))


def test_paired_deltas_equal_a_paired_loop() -> None:
    rng = np.random.default_rng(8)
    n, resamples, seed = 70, 50, 2
    y = rng.integers(0, 2, n)
    pc = np.round(np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1), 1)
    pb = np.round(np.clip(0.2 * y + 0.8 * rng.random(n), 0, 1), 1)
    bc, bb = (0.4, 0.6), (0.3, 0.5)
    for name in ("macro_f1", "coverage", "selective_precision"):
        est = metrics.paired_bootstrap_delta(y, pc, pb, name, 0.5, 0.45, resamples=resamples,
                                             confidence=0.9, seed=seed, band_candidate=bc,
                                             band_baseline=bb)

        def value(yy: np.ndarray, p: np.ndarray, thr: float, band: tuple[float, float],
                  name: str = name) -> float:
            if name == "macro_f1":
                return float(skm.f1_score(yy, p >= thr, average="macro"))
            return brute_selective(yy, p, thr, *band)[name == "selective_precision"]

        assert est.value == pytest.approx(value(y, pc, 0.5, bc) - value(y, pb, 0.45, bb),
                                          abs=TOL)
        # the engine draws in the candidate's sorted order (stable), per class
        idx_pos, idx_neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        op = idx_pos[np.argsort(pc[idx_pos], kind="stable")]
        on = idx_neg[np.argsort(pc[idx_neg], kind="stable")]
        rp, rn = _draws(op.size, on.size, resamples, seed)
        deltas = []
        for r in range(resamples):
            rows = np.r_[op[rp[r]], on[rn[r]]]
            deltas.append(value(y[rows], pc[rows], 0.5, bc) - value(y[rows], pb[rows], 0.45, bb))
        lo, hi = np.quantile(deltas, [0.05, 0.95])
        assert est.ci_low == pytest.approx(lo, abs=TOL) and est.ci_high == pytest.approx(hi,
                                                                                           abs=TOL)


# ---------------------------------------------------------------- the room and its interface


def _called_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute)
                      else "")
        if isinstance(node, ast.ImportFrom) and node.module == "relgate.metrics":
            names.update(a.name for a in node.names)
    return names


def test_validation_calls_no_binary_metric_and_dispatches_to_the_rooms() -> None:
    from relgate import calibration, tasks
    from relgate.tasks import binary, multiclass_validation

    shared = _called_names(SRC / "validation.py")
    binary_only = {"evaluate_metrics", "threshold_metrics", "health_stats", "confusion_at",
                   "paired_bootstrap_delta", "bootstrap_metric", "apply_gates",
                   "score_dataset", "resolve_contract"}
    assert not shared & binary_only, shared & binary_only
    assert binary_only - {"threshold_metrics", "bootstrap_metric"} <= _called_names(
        SRC / "tasks" / "binary.py")
    assert (SRC / "tasks" / "binary.py").is_file()
    assert (SRC / "tasks" / "multiclass_validation.py").is_file()
    assert tasks.validation_runner("binary") is binary.run_binary_validation
    assert tasks.validation_runner("multiclass") is multiclass_validation.run_multiclass_validation
    assert tasks.calibration_runner("binary") is calibration.calibrate_model
    source = (SRC / "validation.py").read_text()
    assert "runner is not None" not in source and "if binary" not in source


def test_an_unknown_kind_is_bad_input() -> None:
    from relgate import tasks
    from relgate.errors import ParamsError

    with pytest.raises(ParamsError, match="unknown task kind"):
        tasks.validation_runner("regression")


def test_every_name_other_modules_import_stays_importable_from_validation() -> None:
    from relgate import validation
    from relgate.tasks import binary

    for name in ("ValidationOutcome", "Baseline", "baseline_from_bundle", "baseline_for_params",
                 "pinned_root_digest", "batch_sample", "batch_check", "check_calibration_applies",
                 "check_calibration_model", "_sha256_data", "_file_entry", "flat_metrics",
                 "write_plots", "sweep_csv", "roc_points", "pr_points", "reliability_bins",
                 "csv_bytes", "run_validation", "validate_model", "BATCH_ATOL", "BATCH_RTOL",
                 "BATCH_CHECK_ROWS", "MAX_CURVE_POINTS", "SCHEMA_VERSION", "DEFAULT_THRESHOLD",
                 "STAT_NAMES"):
        assert hasattr(validation, name), name
    assert validation.compare_with_baseline is binary.compare_with_baseline
    assert validation.model_checks is binary.model_checks
    with pytest.raises(AttributeError):
        _ = validation.no_such_name  # type: ignore[attr-defined]


def test_binary_confusion_is_sklearns_layout() -> None:
    from relgate.tasks.binary import confusion_matrix

    y = np.array([0, 0, 1, 1, 1, 0, 1])
    p = np.array([0.1, 0.6, 0.6, 0.4, 0.9, 0.5, 0.5])
    got = confusion_matrix(y, p, 0.5)
    assert got == skm.confusion_matrix(y, p >= 0.5, labels=[0, 1]).tolist()
    assert got == [[1, 2], [1, 3]]
    assert all(isinstance(v, int) for row in got for v in row)
    assert math.isclose(sum(map(sum, got)), y.size)
