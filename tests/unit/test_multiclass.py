"""Multi-class task kernels: input refusals, undefined metrics, the stratified bootstrap,
temperature scaling and selective prediction (scikit-learn equality lives in
test_multiclass_properties.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from relgate.errors import DataError, ParamsError
from relgate.tasks import multiclass as mc
from relgate.tasks import multiclass_calibration as cal


def _probs(n: int = 300, k: int = 4, seed: int = 0, strength: float = 1.5
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += strength
    return y, z, mc.softmax(z)


# ---------------------------------------------------------------- input checks


@pytest.mark.parametrize("labels, match", [
    ([0, 1, 3], "found 1 other value"),
    ([0, -1, 2], "found 1 other value"),
    ([0.0, 1.5, 2.0], "found 1 other value"),
    ([0, 1, float("nan")], "found 1 other value"),
    (["a", "b", "c"], "dtype"),
    ([[0], [1], [2]], "1-D"),
])
def test_bad_labels_are_refused(labels: list[object], match: str) -> None:
    p = np.full((3, 3), 1 / 3)
    with pytest.raises(DataError, match=match):
        mc.evaluate(labels, p, resamples=0)


def test_float_integral_labels_are_accepted() -> None:
    assert mc.check_labels(np.array([0.0, 2.0]), 3).tolist() == [0, 2]


def test_rows_that_do_not_sum_to_one_are_refused_with_their_count() -> None:
    p = np.full((10, 4), 0.25)
    p[[2, 5, 7], 0] += 2e-4  # outside the 1e-4 tolerance
    p[8, 0] += 5e-5  # inside it
    with pytest.raises(DataError, match=r"3 of 10 row\(s\) do not"):
        mc.check_probabilities(p)
    p[[2, 5, 7], 0] -= 2e-4
    assert mc.check_probabilities(p) is not None


def test_logits_passed_as_probabilities_are_refused_not_clipped() -> None:
    _, z, _ = _probs(50)
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]; \d+ value"):
        mc.evaluate(np.zeros(50, dtype=int), z, resamples=0)


@pytest.mark.parametrize("bad, match", [(math.nan, "1 NaN and 0 infinite"),
                                        (math.inf, "0 NaN and 1 infinite")])
def test_non_finite_outputs_are_refused(bad: float, match: str) -> None:
    p = np.full((4, 2), 0.5)
    p[1, 1] = bad
    with pytest.raises(DataError, match=match):
        mc.check_probabilities(p)
    with pytest.raises(DataError, match=match):
        mc.softmax(p)


@pytest.mark.parametrize("shape", [(5,), (5, 1), (0, 3), (2, 2, 2)])
def test_wrong_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(DataError):
        mc.check_probabilities(np.ones(shape) / (shape[-1] if len(shape) > 1 else 1))


def test_declared_class_count_must_match_and_label_count_must_match() -> None:
    p = np.full((3, 3), 1 / 3)
    with pytest.raises(DataError, match="3 columns but 4 classes"):
        mc.evaluate([0, 1, 2], p, n_classes=4, resamples=0)
    with pytest.raises(DataError, match="2 labels but 3 rows"):
        mc.evaluate([0, 1], p, resamples=0)


def test_softmax_is_stable_and_exact_on_huge_logits() -> None:
    z = np.array([[1000.0, 0.0, -1000.0], [1e300, 1e300, -1e300]])
    p = mc.softmax(z)
    assert np.all(np.isfinite(p))
    assert p[0].tolist() == [1.0, 0.0, 0.0]
    assert p[1].tolist() == [0.5, 0.5, 0.0]


@pytest.mark.parametrize("top_k", [(0,), (True,), (1.5,)])
def test_bad_top_k_is_refused(top_k: tuple[object, ...]) -> None:
    y, _, p = _probs(20)
    with pytest.raises(ParamsError):
        mc.evaluate(y, p, top_k=top_k, resamples=0)  # type: ignore[arg-type]


def test_unknown_metric_names_are_refused() -> None:
    y, _, p = _probs(20)
    with pytest.raises(ParamsError, match="'top3_accuracy'"):
        mc.evaluate(y, p, metrics=("accuracy", "top3_accuracy"), resamples=0)


# ---------------------------------------------------------------- definitions


def test_a_class_absent_from_the_labels_leaves_what_it_cannot_define_undefined() -> None:
    y, _, p = _probs(200, k=4)
    y[y == 2] = 0
    ev = mc.evaluate(y, p, resamples=50).metrics
    for name in ("macro_auc", "weighted_auc", "min_class_recall", "min_class_f1",
                 "class_2_recall", "class_2_f1"):
        assert ev[name].value is None and "2" in (ev[name].reason or ""), name
        assert ev[name].ci_low is None
    # precision of a class that is predicted but never true is 0, as zero_division=0
    assert ev["class_2_precision"].value == 0.0
    pred = p.argmax(axis=1)
    assert ev["macro_recall"].value == pytest.approx(
        skm.recall_score(y, pred, average="macro", labels=[0, 1, 2, 3], zero_division=0),
        abs=1e-12)
    assert ev["class_1_recall"].value is not None and ev["class_1_recall"].ci_low is not None


def test_argmax_ties_go_to_the_lowest_class_and_top1_follows_sklearn() -> None:
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4], [0.1, 0.2, 0.7]])
    y = np.array([0, 1, 2])
    ev = mc.evaluate(y, p, top_k=(1, 2), resamples=0).metrics
    assert ev["accuracy"].value == 1.0  # argmax picks 0 and 1 on the tied rows
    assert ev["top1_accuracy"].value == pytest.approx(1 / 3)  # sklearn prefers the higher index
    assert ev["top1_accuracy"].value == skm.top_k_accuracy_score(y, p, k=1, labels=[0, 1, 2])
    assert ev["top2_accuracy"].value == 1.0


def test_top_k_at_or_above_k_is_one() -> None:
    y, _, p = _probs(30, k=3)
    assert mc.evaluate(y, p, top_k=(3, 7), resamples=0).metrics["top7_accuracy"].value == 1.0


def test_evaluation_serialises_in_the_binary_report_shape() -> None:
    y, _, p = _probs(60, k=3)
    d = mc.evaluate(y, p, resamples=20).to_dict()
    assert set(d) == {"metrics", "support", "confusion"}
    assert set(d["metrics"]["accuracy"]) == {"value", "ci_low", "ci_high"}
    assert sum(d["support"]) == 60 and sum(map(sum, d["confusion"])) == 60


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_is_stratified_class_supports_never_change() -> None:
    """A model right on every class-0 row and wrong on every other row: with supports fixed
    each resample's accuracy is exactly n0 / n; an unstratified bootstrap would vary it."""
    y = np.array([0] * 30 + [1] * 50 + [2] * 1)
    p = np.tile([0.8, 0.1, 0.1], (y.size, 1))
    ev = mc.evaluate(y, p, resamples=200, seed=3).metrics
    assert ev["accuracy"].ci_low == ev["accuracy"].ci_high == 30 / 81
    assert (ev["class_0_recall"].ci_low, ev["class_0_recall"].ci_high) == (1.0, 1.0)
    assert (ev["class_2_recall"].ci_low, ev["class_2_recall"].ci_high) == (0.0, 0.0)
    assert ev["min_class_recall"].value == 0.0  # defined: a class of one member is present


def test_bootstrap_is_deterministic_and_the_seed_matters() -> None:
    y, _, p = _probs(150, k=5)
    a = mc.evaluate(y, p, resamples=60, seed=1).to_dict()
    assert a == mc.evaluate(y, p, resamples=60, seed=1).to_dict()
    b = mc.evaluate(y, p, resamples=60, seed=2).to_dict()
    assert a["metrics"]["macro_auc"] != b["metrics"]["macro_auc"]
    for est in a["metrics"].values():
        assert est["ci_low"] <= est["ci_high"]


def test_intervals_cover_the_point_value_for_a_reasonable_model() -> None:
    y, _, p = _probs(2000, k=4)
    ev = mc.evaluate(y, p, resamples=300, top_k=(2,)).metrics
    for name in ("accuracy", "top2_accuracy", "macro_f1", "weighted_f1", "macro_auc",
                 "log_loss", "brier", "min_class_recall"):
        est = ev[name]
        assert est.ci_low is not None and est.ci_high is not None and est.value is not None
        assert est.ci_low <= est.value <= est.ci_high, name
        assert est.ci_high - est.ci_low < 0.1, name


def test_paired_delta_of_a_better_model_is_positive_with_a_positive_interval() -> None:
    y, z, p = _probs(1500, k=4)
    worse = mc.softmax(z + np.random.default_rng(9).normal(scale=2.0, size=z.shape))
    d = mc.paired_deltas(y, p, worse, resamples=200,
                         metrics=("accuracy", "macro_auc", "log_loss"))
    assert d["accuracy"].ci_low is not None and d["accuracy"].ci_low > 0
    assert d["macro_auc"].ci_low is not None and d["macro_auc"].ci_low > 0
    assert d["log_loss"].ci_high is not None and d["log_loss"].ci_high < 0  # lower is better
    assert "log_loss" in mc.LOWER_IS_BETTER


def test_paired_deltas_refuse_a_baseline_of_another_shape() -> None:
    y, _, p = _probs(40, k=3)
    with pytest.raises(DataError, match="3 classes"):
        mc.paired_deltas(y, p, np.full((40, 4), 0.25), resamples=0)


# ---------------------------------------------------------------- temperature scaling


def test_temperature_minimises_the_multiclass_nll() -> None:
    y, z, _ = _probs(800, k=5)
    t = cal.fit_temperature(3.0 * z, y)
    assert t == pytest.approx(3.0 * cal.fit_temperature(z, y), rel=1e-9)  # scale equivariant
    nll = cal.multiclass_nll(3.0 * z, y, t)
    for factor in (0.98, 1.02, 0.5, 2.0):
        assert nll <= cal.multiclass_nll(3.0 * z, y, t * factor)
    grid = np.exp(np.linspace(np.log(t / 1.5), np.log(t * 1.5), 301))
    assert nll <= min(cal.multiclass_nll(3.0 * z, y, float(g)) for g in grid) + 1e-12
    assert cal.fit_temperature(3.0 * z, y) == t  # deterministic


def test_nll_equals_sklearn_log_loss_of_the_scaled_softmax() -> None:
    y, z, _ = _probs(300, k=6)
    p = cal.apply_temperature(z, 1.7)
    assert cal.multiclass_nll(z, y, 1.7) == pytest.approx(
        skm.log_loss(y, y_proba=p, labels=list(range(6))), abs=1e-12)
    assert np.allclose(p, mc.softmax(z / 1.7), atol=1e-15)


def test_temperature_edge_cases() -> None:
    y = np.array([0, 1, 2, 1])
    assert cal.fit_temperature(np.zeros((4, 3)), y) == 1.0  # no information
    sep = np.eye(3)[y] * 5.0  # perfectly separable: T goes to the lower bound
    assert cal.fit_temperature(sep, y) == pytest.approx(cal.T_RANGE[0] * 5.0, rel=1e-9)
    with pytest.raises(ParamsError):
        cal.apply_temperature(sep, 0.0)
    with pytest.raises(DataError):
        cal.fit_temperature(sep, [0, 1, 5, 1])


# ---------------------------------------------------------------- selective prediction


def _brute_choice(y: np.ndarray, p: np.ndarray, target: float) -> tuple[float, float] | None:
    conf, correct = p.max(axis=1), p.argmax(axis=1) == y
    best = None
    for t in np.unique(conf):
        covered = conf >= t
        if correct[covered].mean() >= target and (best is None or covered.mean() > best[1]):
            best = (float(t), float(covered.mean()))
    return best


@pytest.mark.parametrize("seed, target", list(itertools.product(range(4), (0.6, 0.8, 0.95))))
def test_selective_threshold_has_the_largest_coverage_meeting_the_target(
        seed: int, target: float) -> None:
    y, _, p = _probs(300, k=4, seed=seed)
    p = np.round(p, 2)  # ties in confidence
    p /= p.sum(axis=1, keepdims=True)
    choice = cal.choose_selective_threshold(y, p, target)
    brute = _brute_choice(y, p, target)
    if brute is None:
        assert choice is None
        return
    assert choice is not None
    assert (choice.threshold, choice.coverage) == brute
    assert choice.selective_accuracy >= target
    assert cal.selective(y, p, choice.threshold) == (choice.coverage, choice.selective_accuracy)
    ev = mc.evaluate(y, p, resamples=50, selective_threshold=choice.threshold).metrics
    assert ev["coverage"].value == choice.coverage
    assert ev["selective_accuracy"].value == choice.selective_accuracy
    assert ev["coverage"].ci_low is not None


def test_unreachable_target_gives_no_threshold_and_empty_coverage_is_undefined() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])  # always wrong
    assert cal.choose_selective_threshold(y, p, 0.5) is None
    assert cal.selective(y, p, 0.95) == (0.0, None)
    est = mc.evaluate(y, p, resamples=10, selective_threshold=0.95).metrics
    assert est["coverage"].value == 0.0
    assert est["selective_accuracy"].value is None and est["selective_accuracy"].reason
    with pytest.raises(ParamsError):
        cal.choose_selective_threshold(y, p, 0.0)


def test_a_selective_accuracy_equal_to_the_target_meets_it() -> None:
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    p = np.stack([conf, 1.0 - conf], axis=1)
    y = np.array([0, 1, 0, 1])  # right, wrong, right, wrong in decreasing confidence
    choice = cal.choose_selective_threshold(y, p, 0.5)
    assert choice is not None
    assert (choice.threshold, choice.coverage, choice.selective_accuracy) == (0.6, 1.0, 0.5)
    choice = cal.choose_selective_threshold(y, p, 0.6)
    assert choice is not None and (choice.threshold, choice.coverage) == (0.7, 0.75)


def test_confusion_rows_for_dvc_count_to_the_confusion_matrix() -> None:
    y, _, p = _probs(120, k=3)
    rows = mc.confusion_rows(y, p, classes=["cat", "dog", "eel"])
    assert len(rows) == 120 and set(rows[0]) == {"actual", "predicted"}
    names = ["cat", "dog", "eel"]
    cm = skm.confusion_matrix(y, p.argmax(axis=1), labels=[0, 1, 2])
    for i, j in itertools.product(range(3), range(3)):
        assert sum(r == {"actual": names[i], "predicted": names[j]} for r in rows) == cm[i, j]
    with pytest.raises(ParamsError, match="2 class names for 3"):
        mc.confusion_rows(y, p, classes=["cat", "dog"])
