"""Property tests: multi-class metrics equal scikit-learn's within 1e-12 on tie-heavy data
(probabilities quantised to few values, classes with 0, 1 or few members, K from 2 to 12),
OvR AUC equals the brute-force pair count, and bootstrap resamples equal scikit-learn on the
materialised resampled rows."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from relgate import metrics
from relgate.tasks import multiclass as mc

TOL = 1e-12
EXAMPLES = settings(max_examples=60, deadline=None)


@st.composite
def tied(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Labels over K classes (some absent or single) and probabilities from few levels."""
    k = draw(st.integers(2, 12))
    n = draw(st.integers(1, 60))
    pool = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k))  # classes in use
    levels = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = rng.choice(np.array(pool, dtype=np.int64), size=n)
    if draw(st.booleans()):  # every class present (AUC defined), some with one member
        y = rng.permutation(np.r_[np.arange(k), y])
        n = y.size
    w = rng.integers(0, levels + 1, size=(n, k)).astype(np.float64)
    w[w.sum(axis=1) == 0, 0] = 1.0
    return y, w / w.sum(axis=1, keepdims=True)


def sk_reference(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The same metrics computed by scikit-learn, or a direct numpy oracle where it has none."""
    n, k = p.shape
    labels = list(range(k))
    pred = p.argmax(axis=1)
    ref: dict[str, float] = {"accuracy": skm.accuracy_score(y, pred)}
    for avg in ("macro", "micro", "weighted"):
        for name, fn in (("f1", skm.f1_score), ("precision", skm.precision_score),
                         ("recall", skm.recall_score)):
            ref[f"{avg}_{name}"] = fn(y, pred, average=avg, labels=labels, zero_division=0)
    pr, rc, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for c in range(k):
        ref[mc.class_name(c, "precision")] = pr[c]
        if (y == c).any():
            ref[mc.class_name(c, "recall")] = rc[c]
            ref[mc.class_name(c, "f1")] = f1[c]
    if np.bincount(y, minlength=k).min() > 0:
        ref["min_class_recall"] = rc.min()
        ref["min_class_f1"] = f1.min()
        if k > 2:
            for avg in ("macro", "weighted"):
                ref[f"{avg}_auc"] = skm.roc_auc_score(y, p, multi_class="ovr", labels=labels,
                                                      average=avg)
        else:
            ref["macro_auc"] = ref["weighted_auc"] = skm.roc_auc_score(y, p[:, 1])
    ref["log_loss"] = skm.log_loss(y, y_proba=p, labels=labels)
    onehot = np.eye(k)[y]
    ref["brier"] = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    ref["ece"] = metrics.ece((pred == y).astype(int), p[np.arange(n), pred])
    ref["classwise_ece"] = float(np.mean([metrics.ece((y == c).astype(int), p[:, c])
                                          for c in range(k)]))
    for kk in range(1, k):
        if k > 2:
            ref[mc.topk_name(kk)] = skm.top_k_accuracy_score(y, p, k=kk, labels=labels)
    return ref


def brute_top_k(y: np.ndarray, p: np.ndarray, kk: int) -> float:
    """scikit-learn's tie rule spelled out: stable ascending sort, reversed, first kk."""
    hits = 0
    for row, t in zip(p, y, strict=True):
        ranked = sorted(range(row.size), key=lambda j: (row[j], j), reverse=True)
        hits += t in ranked[:kk]
    return hits / y.size


def brute_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    greater = int((pos[:, None] > neg[None, :]).sum())
    equal = int((pos[:, None] == neg[None, :]).sum())
    return (2 * greater + equal) / (2 * pos.size * neg.size)


@EXAMPLES
@given(tied())
def test_point_metrics_equal_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = data
    k = p.shape[1]
    ev = mc.evaluate(y, p, top_k=tuple(range(1, k + 2)), resamples=0)
    ref = sk_reference(y, p)
    for name, value in ref.items():
        got = ev.metrics[name].value
        assert got is not None, (name, ev.metrics[name])
        assert abs(got - value) <= TOL, (name, got, value)
    for name, est in ev.metrics.items():
        if name not in ref and not name.startswith("top"):
            assert est.value is None and est.reason, name  # undefined only where sklearn is
    for kk in range(1, k + 2):
        assert ev.metrics[mc.topk_name(kk)].value == brute_top_k(y, p, kk)
    cm = skm.confusion_matrix(y, p.argmax(axis=1), labels=list(range(k)))
    assert np.array_equal(np.array(ev.confusion), cm)
    assert np.array_equal(mc.confusion_matrix(y, p), cm)
    assert ev.support == tuple(np.bincount(y, minlength=k))


@EXAMPLES
@given(tied())
def test_ovr_auc_equals_the_pairwise_count(data: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = data
    n, k = p.shape
    support = np.bincount(y, minlength=k)
    ev = mc.evaluate(y, p, resamples=0, metrics=("macro_auc", "weighted_auc"))
    if support.min() == 0:
        assert ev.metrics["macro_auc"].value is None
        assert "no samples" in (ev.metrics["macro_auc"].reason or "")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if k > 2:  # scikit-learn agrees: undefined
                assert math.isnan(skm.roc_auc_score(y, p, multi_class="ovr",
                                                    labels=list(range(k))))
        return
    classes = [1] if k == 2 else range(k)
    aucs = [brute_auc(p[y == c, c], p[y != c, c]) for c in classes]
    assert ev.metrics["macro_auc"].value == pytest.approx(np.mean(aucs), abs=TOL)
    weights = support[list(classes)] / n if k > 2 else np.array([1.0])
    assert ev.metrics["weighted_auc"].value == pytest.approx(float(np.dot(aucs, weights)),
                                                             abs=TOL)


@settings(max_examples=40, deadline=None)
@given(tied(), st.integers(0, 2**32 - 1))
def test_a_resample_equals_sklearn_on_the_resampled_rows(
        data: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    """The counts engine: weighted sums over rows equal every metric on the repeated rows."""
    y, p = data
    n, k = p.shape
    order = np.argsort(y, kind="stable")
    ys, ps = y[order], p[order]
    support = np.bincount(y, minlength=k)
    rng = np.random.default_rng(seed)
    counts = np.zeros((3, n), dtype=np.int32)
    starts = np.r_[0, np.cumsum(support)]
    for c in range(k):  # stratified: each class keeps its size
        a, z = starts[c], starts[c + 1]
        for r in range(3):
            counts[r, a:z] = np.bincount(rng.integers(0, z - a, z - a), minlength=z - a) \
                if z > a else 0
    t = float(rng.choice(ps.max(axis=1)))
    model = mc._model(y, p, order, support, (1, 2), 15, t, per_class=True)
    names = frozenset(mc.metric_names(k, (1, 2), selective=True))
    batch = mc._batch(model, counts, names)
    for r in range(3):
        yr, pr = np.repeat(ys, counts[r]), np.repeat(ps, counts[r], axis=0)
        ref = sk_reference(yr, pr)
        ref.update({nm: v for nm, v in zip(
            ("coverage", "selective_accuracy"), _selective_ref(yr, pr, t), strict=True)})
        for name, value in ref.items():
            if name.startswith("top") and name not in batch:
                continue
            got = batch[name][r]
            assert (math.isnan(got) and math.isnan(value)) or abs(got - value) <= TOL, \
                (name, got, value)
        for kk in (1, 2):
            assert batch[mc.topk_name(kk)][r] == brute_top_k(yr, pr, kk)


def _selective_ref(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float]:
    covered = p.max(axis=1) >= t
    acc = skm.accuracy_score(y[covered], p[covered].argmax(axis=1)) if covered.any() else math.nan
    return covered.mean(), acc


@settings(max_examples=10, deadline=None)
@given(tied(), st.integers(0, 1000))
def test_intervals_equal_percentiles_of_sklearn_over_the_same_stratified_draws(
        data: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    """The documented draw (one generator per class from SeedSequence(seed).spawn(K), each
    drawing resamples x n_c row indices at once) replayed as explicit indices and scored by
    scikit-learn gives the same percentile interval."""
    y, p = data
    k = p.shape[1]
    resamples = 40
    ev = mc.evaluate(y, p, resamples=resamples, seed=seed,
                     metrics=("accuracy", "macro_f1", "weighted_recall", "log_loss"))
    order = np.argsort(y, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(y, minlength=k))[:-1])
    gens = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(k)]
    draws = [g.integers(0, max(len(m), 1), size=(resamples, len(m))) for g, m in
             zip(gens, members, strict=True)]
    values: dict[str, list[float]] = {nm: [] for nm in ev.metrics}
    labels = list(range(k))
    for r in range(resamples):
        idx = np.concatenate([m[d[r]] for m, d in zip(members, draws, strict=True)])
        yr, pr = y[idx], p[idx]
        pred = pr.argmax(axis=1)
        values["accuracy"].append(skm.accuracy_score(yr, pred))
        values["macro_f1"].append(skm.f1_score(yr, pred, average="macro", labels=labels,
                                               zero_division=0))
        values["weighted_recall"].append(skm.recall_score(yr, pred, average="weighted",
                                                          labels=labels, zero_division=0))
        values["log_loss"].append(skm.log_loss(yr, y_proba=pr, labels=labels))
    for name, vs in values.items():
        lo, hi = np.quantile(vs, [0.025, 0.975])
        est = ev.metrics[name]
        assert est.ci_low is not None and est.ci_high is not None
        assert abs(est.ci_low - lo) <= TOL and abs(est.ci_high - hi) <= TOL, name


@settings(max_examples=25, deadline=None)
@given(tied(), st.integers(0, 1000))
def test_paired_delta_is_the_difference_on_shared_resamples(
        data: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    y, p = data
    q = np.roll(p, 1, axis=1)  # a different model on the same rows
    names = ("accuracy", "macro_f1", "brier", "classwise_ece", "macro_auc")
    d = mc.paired_deltas(y, p, q, resamples=30, seed=seed, metrics=names)
    a = mc.evaluate(y, p, resamples=0, metrics=names).metrics
    b = mc.evaluate(y, q, resamples=0, metrics=names).metrics
    for name in names:
        if a[name].value is None:
            assert d[name].value is None
            continue
        assert b[name].value is not None and d[name].value is not None
        assert abs(d[name].value - (a[name].value - b[name].value)) <= TOL
        assert d[name].ci_low is not None and d[name].ci_high is not None
        assert d[name].ci_low <= d[name].ci_high
    same = mc.paired_deltas(y, p, p, resamples=30, seed=seed, metrics=names)
    for name in names:
        if same[name].value is not None:
            assert (same[name].value, same[name].ci_low, same[name].ci_high) == (0.0, 0.0, 0.0)
