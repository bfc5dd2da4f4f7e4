"""Multi-class classification metrics with stratified-bootstrap intervals and paired deltas.

Pure numpy, no printing; the report shape is :mod:`relgate.metrics`'
:class:`~relgate.metrics.MetricEstimate`, so binary and multi-class metrics
serialise the same way. Not yet called by validate, calibrate or promote.

Definitions (the contract the tests hold us to; labels are 0..K-1, K the
width of the probability matrix or a declared class count):

* Inputs are refused (DataError, exit 2), never clipped: labels that are not
  integers in 0..K-1; probabilities that are not a finite [N, K] matrix in
  [0, 1] whose rows sum to 1 within ``SUM_TOLERANCE`` (the message counts the
  bad rows); non-finite logits. :func:`softmax` turns logits into probabilities.
* The prediction is ``argmax`` of the row, the first (lowest) class winning a
  tie (numpy's rule); ``accuracy`` is scikit-learn's ``accuracy_score`` of that
  prediction, and the confusion matrix (rows true, columns predicted) is
  ``confusion_matrix(y, pred, labels=range(K))``.
* ``top{k}_accuracy`` follows ``top_k_accuracy_score(labels=range(K))``: a row
  is a hit when fewer than k classes rank above the true class, where class j
  ranks above class t when ``p_j > p_t``, or ``p_j == p_t`` and ``j > t``
  (scikit-learn sorts stably and reverses, so the *higher* index wins a tie).
  ``top1_accuracy`` can therefore differ from ``accuracy`` on tied rows. For
  K = 2 scikit-learn switches to a 0.5 threshold on column 1; we keep the rank
  rule for every K.
* Per-class precision, recall and F1 count TP/FP/FN of the argmax prediction;
  zero division gives 0.0 exactly as ``zero_division=0`` (a class never
  predicted has precision 0). ``macro_*`` average all K classes (as scikit-learn
  with ``labels=range(K)``: a class absent from y counts 0), ``weighted_*``
  weight by support, ``micro_*`` all equal accuracy. A class absent from y has
  no recall or F1 (value None with a reason), and then ``min_class_recall`` and
  ``min_class_f1`` are undefined too: the data says nothing about that class.
* ``macro_auc``/``weighted_auc``: one-vs-rest ROC AUC per class with ties
  counting one half, averaged plainly or by support, equal to
  ``roc_auc_score(multi_class='ovr', labels=range(K))``; for K = 2 both are the
  AUC of column 1 (what scikit-learn computes). Undefined when a class is
  absent from y.
* ``log_loss``: mean of ``-log(clip(p_true, eps, 1 - eps))`` with eps the float64
  machine epsilon (scikit-learn's convention; rows are not renormalised).
* ``brier``: mean over rows of ``sum_k (p_k - onehot_k)**2`` (range [0, 2]; for
  K = 2 twice the binary Brier score).
* ``ece``: top-label ECE, the binary ECE of (correct, max probability), and
  ``classwise_ece``: the mean over classes of the binary ECE of
  (y == k, p_k); both with :mod:`relgate.metrics`' equal-width bins
  (bin ``min(floor(p * bins), bins - 1)``) weighted by count.
* ``coverage``/``selective_accuracy`` at a confidence threshold t: the share of
  rows with ``max p >= t``, and the accuracy among them (undefined when none).

Bootstrap: percentile intervals over a stratified bootstrap that resamples
each class's rows with replacement keeping its size (so class supports, and
which metrics are defined, never change). Resamples are per-row counts, so
every metric is a weighted sum over rows; AUC and classwise ECE gather the
counts in each class's score order. Rows are taken in class order and, within
a class, in input order; results depend on the rows, ``seed`` and
``resamples`` only. Paired deltas use the very same counts for both models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.errors import DataError, ParamsError
from relgate.metrics import (
    MetricEstimate,
    bin_index,
    check_bootstrap,
    chunks,
    draw_counts,
    interval,
    ratio,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Rows of a probability matrix must sum to 1 within this.
SUM_TOLERANCE = 1e-4
#: Scalar metrics in report order (top-k, per-class and selective names are added per call).
SCALAR_METRICS = (
    "accuracy", "macro_f1", "micro_f1", "weighted_f1",
    "macro_precision", "micro_precision", "weighted_precision",
    "macro_recall", "micro_recall", "weighted_recall",
    "min_class_recall", "min_class_f1", "macro_auc", "weighted_auc",
    "log_loss", "brier", "ece", "classwise_ece",
)
SELECTIVE_METRICS = ("coverage", "selective_accuracy")
#: Metrics where smaller is better.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece", "classwise_ece"})
_PER_CLASS = ("precision", "recall", "f1")
_EPS = float(np.finfo(np.float64).eps)
_BLOCK_ELEMENTS = 1 << 22  # rows x classes per block for row-wise passes


# ---------------------------------------------------------------- names


def topk_name(k: int) -> str:
    return f"top{k}_accuracy"


def class_name(k: int, metric: str) -> str:
    """Flat name of a per-class metric, e.g. ``class_3_recall``."""
    return f"class_{k}_{metric}"


def metric_names(n_classes: int, top_k: Sequence[int] = (), *,
                 selective: bool = False) -> tuple[str, ...]:
    """Every metric a call reports, in report order."""
    names = list(SCALAR_METRICS[:1]) + [topk_name(k) for k in _check_top_k(top_k)]
    names += SCALAR_METRICS[1:]
    if selective:
        names += SELECTIVE_METRICS
    names += [class_name(k, m) for k in range(n_classes) for m in _PER_CLASS]
    return tuple(names)


# ---------------------------------------------------------------- input checks


def _check_top_k(top_k: Iterable[int]) -> tuple[int, ...]:
    out: list[int] = []
    for k in top_k:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ParamsError(f"top_k values must be integers >= 1, got {k!r}",
                              hint="declare e.g. top_k: [3, 5]")
        if int(k) not in out:
            out.append(int(k))
    return tuple(out)


def _check_n_classes(n_classes: Any) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) \
            or n_classes < 2:
        raise ParamsError(f"the class count must be an integer >= 2, got {n_classes!r}",
                          hint="declare at least two classes")
    return int(n_classes)


def check_labels(y: Any, n_classes: int) -> IntArray:
    """Labels as int64 0..K-1; refuses other values, non-1-D and empty arrays (DataError)."""
    k = _check_n_classes(n_classes)
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {arr.shape}", hint="one label per row")
    if arr.size == 0:
        raise DataError("no samples: labels are empty", hint="check the data split")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"labels must be integers 0..{k - 1}, got dtype {arr.dtype}",
                        hint="encode classes as 0..K-1")
    with np.errstate(invalid="ignore"):
        ok = (arr >= 0) & (arr <= k - 1)
        if arr.dtype.kind == "f":
            ok &= np.floor(arr) == arr
    if not bool(ok.all()):
        bad = arr[~ok]
        shown = ", ".join(repr(v.item()) for v in np.unique(bad)[:5])
        raise DataError(f"labels must be integers 0..{k - 1}; found {bad.size} other value(s): "
                        f"{shown}", hint="encode classes as 0..K-1 in the model's output order")
    return arr.astype(np.int64)


def _finite_matrix(x: Any, *, what: str, n_classes: int | None) -> FloatArray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise DataError(f"{what} must be an [N, K] matrix with K >= 2, got shape {arr.shape}",
                        hint="pass one row per sample and one column per class")
    if n_classes is not None and arr.shape[1] != _check_n_classes(n_classes):
        raise DataError(f"{what} have {arr.shape[1]} columns but {n_classes} classes are declared",
                        hint="declare the model's classes in its output order")
    if arr.shape[0] == 0:
        raise DataError(f"no samples: {what} are empty", hint="check the data split")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} must be real numbers, got dtype {arr.dtype}",
                        hint="pass the model's numeric output")
    out = np.ascontiguousarray(arr, dtype=np.float64)
    finite = np.isfinite(out)
    if not bool(finite.all()):
        n_nan = int(np.isnan(out).sum())
        raise DataError(f"{what} contain {n_nan} NaN and {int(out.size - finite.sum()) - n_nan} "
                        "infinite value(s)",
                        hint="the model produced non-finite outputs; check its inputs")
    return out


def check_probabilities(prob: Any, *, n_classes: int | None = None,
                        what: str = "probabilities") -> FloatArray:
    """A finite [N, K] float64 matrix in [0, 1] with rows summing to 1 within SUM_TOLERANCE."""
    p = _finite_matrix(prob, what=what, n_classes=n_classes)
    outside = int(np.count_nonzero((p < 0.0) | (p > 1.0)))
    if outside:
        raise DataError(f"{what} must lie in [0, 1]; {outside} value(s) do not",
                        hint="declare the output as logits if it is not a probability")
    bad_rows = int(np.count_nonzero(np.abs(p.sum(axis=1) - 1.0) > SUM_TOLERANCE))
    if bad_rows:
        raise DataError(f"{what} rows must sum to 1 within {SUM_TOLERANCE:g}; {bad_rows} of "
                        f"{p.shape[0]} row(s) do not",
                        hint="declare the output as logits, or pass normalised probabilities")
    return p


def softmax(logits: Any, *, n_classes: int | None = None) -> FloatArray:
    """Row-wise softmax of finite [N, K] logits, shifted by the row maximum (no overflow)."""
    z = _finite_matrix(logits, what="logits", n_classes=n_classes)
    e: FloatArray = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def check_multiclass(y: Any, prob: Any, *, n_classes: int | None = None,
                     what: str = "probabilities") -> tuple[IntArray, FloatArray]:
    """Checked ``(labels, probabilities)`` of equal length."""
    p = check_probabilities(prob, n_classes=n_classes, what=what)
    labels = check_labels(y, p.shape[1])
    if labels.size != p.shape[0]:
        raise DataError(f"{labels.size} labels but {p.shape[0]} rows of {what}",
                        hint="score every labelled sample exactly once")
    return labels, p


# ---------------------------------------------------------------- point metrics


def _blocks(n: int, k: int) -> Iterable[slice]:
    step = max(1, _BLOCK_ELEMENTS // k)
    for a in range(0, n, step):
        yield slice(a, min(n, a + step))


@dataclass(frozen=True)
class _Rows:
    """Per-row quantities every metric is a weighted sum of (rows in input order)."""

    pred: IntArray
    correct: BoolArray
    true_rank: IntArray  # classes ranked above the true class (scikit-learn's top-k rule)
    loss: FloatArray
    brier: FloatArray
    conf: FloatArray


def _rows(y: IntArray, p: FloatArray) -> _Rows:
    n, k = p.shape
    pred = np.argmax(p, axis=1).astype(np.int64)
    rank = np.empty(n, dtype=np.int64)
    loss = np.empty(n)
    sq = np.empty(n)
    cols = np.arange(k, dtype=np.int64)
    for s in _blocks(n, k):
        block, yb = p[s], y[s]
        ar = np.arange(block.shape[0])
        pt = block[ar, yb][:, None]
        rank[s] = np.count_nonzero(block > pt, axis=1) + np.count_nonzero(
            (block == pt) & (cols[None, :] > yb[:, None]), axis=1)
        loss[s] = -np.log(np.clip(pt[:, 0], _EPS, 1.0 - _EPS))
        d = block.copy()
        d[ar, yb] -= 1.0
        sq[s] = np.einsum("ij,ij->i", d, d)
    conf = p[np.arange(n), pred]
    return _Rows(pred=pred, correct=pred == y, true_rank=rank, loss=loss, brier=sq, conf=conf)


def _binned_gap(p: FloatArray, target: FloatArray, bins: int) -> float:
    gap = np.bincount(bin_index(p, bins), weights=target - p, minlength=bins)
    return float(np.abs(gap).sum())


def _auc_counts(col: FloatArray, mask: BoolArray) -> int:
    """Twice the number of (positive, negative) pairs ordered right, ties counting one.

    Uses sum over positives of (rows below + rows at or below) minus n_pos**2,
    which equals the same sum over negatives only (Mann-Whitney).
    """
    s = np.sort(col)
    pos = col[mask]
    below = np.searchsorted(s, pos, side="left").sum() + np.searchsorted(s, pos, "right").sum()
    return int(below) - pos.size * pos.size


def _point(y: IntArray, p: FloatArray, top_k: tuple[int, ...], bins: int,
           selective_threshold: float | None, want_per_class_auc: bool = True
           ) -> tuple[dict[str, float], IntArray, IntArray]:
    """Point values of every metric (undefined ones as NaN), the support and the confusion."""
    n, k = p.shape
    r = _rows(y, p)
    support = np.bincount(y, minlength=k).astype(np.int64)
    confusion = np.bincount(y * k + r.pred, minlength=k * k).reshape(k, k).astype(np.int64)
    tp = np.diagonal(confusion).astype(np.int64)
    predicted = confusion.sum(axis=0)
    out = _from_counts(tp[None, :], predicted[None, :], support, n)
    values = {name: float(v[0]) for name, v in out.items()}
    for kk in top_k:
        values[topk_name(kk)] = int(np.count_nonzero(r.true_rank < kk)) / n
    values["log_loss"] = float(np.mean(r.loss))
    values["brier"] = float(np.mean(r.brier))
    values["ece"] = _binned_gap(r.conf, r.correct.astype(np.float64), bins) / n
    cw = 0.0
    aucs = np.full(k, np.nan)
    for c in range(k):
        col = np.ascontiguousarray(p[:, c])
        mask = y == c
        cw += _binned_gap(col, mask.astype(np.float64), bins) / n
        if want_per_class_auc and 0 < support[c] < n and (k > 2 or c == 1):
            aucs[c] = _auc_counts(col, mask) / (2.0 * support[c] * (n - support[c]))
    values["classwise_ece"] = cw / k
    values.update({nm: float(v[0]) for nm, v in _auc_average(aucs[None, :], support, n).items()})
    if selective_threshold is not None:
        covered = r.conf >= selective_threshold
        m = int(np.count_nonzero(covered))
        values["coverage"] = m / n
        values["selective_accuracy"] = (int(np.count_nonzero(covered & r.correct)) / m
                                        if m else math.nan)
    return values, support, confusion


def _from_counts(tp: IntArray, predicted: IntArray, support: IntArray,
                 n: int) -> dict[str, FloatArray]:
    """Count metrics for [r, K] true positives and predicted counts (support fixed)."""
    k = support.size
    precision = ratio(tp, predicted)
    recall = ratio(tp, support[None, :])
    f1 = ratio(2 * tp, predicted + support[None, :])
    weights = support.astype(np.float64) / n
    micro = tp.sum(axis=1) / n
    out: dict[str, FloatArray] = {"accuracy": micro}
    for name, v in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"macro_{name}"] = v.mean(axis=1)
        out[f"micro_{name}"] = micro
        out[f"weighted_{name}"] = np.einsum("ij,j->i", v, weights)  # fixed order, no BLAS
        for c in range(k):
            out[class_name(c, name)] = v[:, c]
    out["min_class_recall"] = recall.min(axis=1)
    out["min_class_f1"] = f1.min(axis=1)
    return out


def _auc_average(aucs: FloatArray, support: IntArray, n: int) -> dict[str, FloatArray]:
    """macro and weighted AUC from [r, K] per-class AUCs (NaN where undefined)."""
    if aucs.shape[1] == 2:
        return {"macro_auc": aucs[:, 1], "weighted_auc": aucs[:, 1]}
    return {"macro_auc": aucs.mean(axis=1),
            "weighted_auc": np.einsum("ij,j->i", aucs, support / n)}


def _reason(name: str, support: IntArray) -> str | None:
    absent = [str(c) for c in np.flatnonzero(support == 0)]
    if not absent:
        return None
    listed = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
    if name in ("macro_auc", "weighted_auc"):
        return f"{name} undefined: class(es) {listed} have no samples (one-vs-rest needs both)"
    if name in ("min_class_recall", "min_class_f1"):
        return f"{name} undefined: class(es) {listed} have no samples"
    for c in absent:
        if name in (class_name(int(c), "recall"), class_name(int(c), "f1")):
            return f"{name} undefined: class {c} has no samples"
    return None


def confusion_matrix(y: Any, prob: Any, *, n_classes: int | None = None) -> IntArray:
    """[K, K] counts, rows the true class and columns the argmax prediction."""
    labels, p = check_multiclass(y, prob, n_classes=n_classes)
    k = p.shape[1]
    pred = np.argmax(p, axis=1)
    return np.bincount(labels * k + pred, minlength=k * k).reshape(k, k).astype(np.int64)


def confusion_rows(y: Any, prob: Any, *, classes: Sequence[str] | None = None
                   ) -> list[dict[str, str]]:
    """Plot data: one ``{"actual", "predicted"}`` record per row, the shape DVC's
    ``confusion`` template reads (x: actual, y: predicted); class names when given."""
    labels, p = check_multiclass(y, prob)
    k = p.shape[1]
    names = [str(c) for c in range(k)] if classes is None else [str(c) for c in classes]
    if len(names) != k:
        raise ParamsError(f"{len(names)} class names for {k} output columns",
                          hint="list one name per output column, in order")
    pred = np.argmax(p, axis=1)
    return [{"actual": names[a], "predicted": names[b]}
            for a, b in zip(labels.tolist(), pred.tolist(), strict=True)]


def point_metrics(y: Any, prob: Any, *, n_classes: int | None = None,
                  top_k: Sequence[int] = (), ece_bins: int = 15,
                  selective_threshold: float | None = None) -> dict[str, float | None]:
    """Every metric's point value (None where undefined); no resampling."""
    ev = evaluate(y, prob, n_classes=n_classes, top_k=top_k, ece_bins=ece_bins,
                  selective_threshold=selective_threshold, resamples=0)
    return {name: est.value for name, est in ev.metrics.items()}


# ---------------------------------------------------------------- bootstrap engine


@dataclass(frozen=True)
class _Model:
    """One model's per-row quantities in class order, with the orders the batch needs."""

    n: int
    k: int
    support: IntArray
    starts: IntArray  # class c occupies columns starts[c]:starts[c + 1]
    hits: dict[int, IntArray]  # top-k hit (0/1) per row
    correct: IntArray
    loss: FloatArray
    brier: FloatArray
    group_order: IntArray  # rows sorted by (correct, predicted class)
    group_starts: IntArray
    group_ids: IntArray
    bin_order: IntArray  # rows sorted by top-label bin
    bin_starts: IntArray
    bin_resid: FloatArray  # correct - confidence, in bin order
    covered: IntArray | None
    covered_correct: IntArray | None
    class_orders: IntArray | None  # [K, N] rows sorted by p_k (int32)
    auc_lo: list[IntArray] | None  # per class: rows below each member (strictly / at or below)
    auc_hi: list[IntArray] | None
    cw_starts: list[IntArray] | None
    cw_resid: FloatArray | None  # [K, N] (y == k) - p_k in class k's score order


def _runs(sorted_keys: IntArray) -> tuple[IntArray, IntArray]:
    """Start index and key of each run of equal keys."""
    start = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return start.astype(np.int64), sorted_keys[start]


def _model(y: IntArray, p: FloatArray, order: IntArray, support: IntArray,
           top_k: tuple[int, ...], bins: int, selective_threshold: float | None,
           per_class: bool) -> _Model:
    """Row j of the model is input row ``order[j]`` (class order); ``p`` is not copied."""
    n, k = p.shape
    full = _rows(y, p)
    r = _Rows(pred=full.pred[order], correct=full.correct[order],
              true_rank=full.true_rank[order], loss=full.loss[order],
              brier=full.brier[order], conf=full.conf[order])
    del full
    y_sorted = y[order]
    key = r.pred + k * r.correct
    g_order = np.argsort(key, kind="stable")
    g_starts, g_ids = _runs(key[g_order])
    conf_bin = bin_index(r.conf, bins)
    b_order = np.argsort(conf_bin, kind="stable")
    b_starts, _ = _runs(conf_bin[b_order])
    covered = covered_correct = None
    if selective_threshold is not None:
        cov = r.conf >= selective_threshold
        covered = cov.astype(np.int64)
        covered_correct = (cov & r.correct).astype(np.int64)
    orders = lo_list = hi_list = cw_starts = cw_resid = None
    if per_class:
        orders = np.empty((k, n), dtype=np.int32 if n < 2**31 else np.int64)
        cw_resid = np.empty((k, n))
        lo_list, hi_list, cw_starts = [], [], []
        starts = np.r_[0, np.cumsum(support)]
        for c in range(k):
            col = p[order, c]
            by_score = np.argsort(col, kind="stable")
            orders[c] = by_score
            s = col[by_score]
            own = col[starts[c]:starts[c + 1]]
            lo_list.append(np.searchsorted(s, own, side="left").astype(np.int64))
            hi_list.append(np.searchsorted(s, own, side="right").astype(np.int64))
            cw_resid[c] = (y_sorted[by_score] == c) - s
            cw_starts.append(_runs(bin_index(s, bins))[0])
    return _Model(
        n=n, k=k, support=support, starts=np.r_[0, np.cumsum(support)].astype(np.int64),
        hits={kk: (r.true_rank < kk).astype(np.int64) for kk in top_k},
        correct=r.correct.astype(np.int64), loss=r.loss, brier=r.brier,
        group_order=g_order, group_starts=g_starts, group_ids=g_ids,
        bin_order=b_order, bin_starts=b_starts, bin_resid=(r.correct - r.conf)[b_order],
        covered=covered, covered_correct=covered_correct, class_orders=orders,
        auc_lo=lo_list, auc_hi=hi_list, cw_starts=cw_starts, cw_resid=cw_resid)


def _batch(m: _Model, counts: npt.NDArray[np.int32], names: frozenset[str]) -> dict[str, FloatArray]:
    """Every metric in ``names`` for r resamples given as [r, N] row counts in class order."""
    n, k = m.n, m.k
    r = counts.shape[0]
    out: dict[str, FloatArray] = {}
    grouped = np.add.reduceat(np.take(counts, m.group_order, axis=1), m.group_starts, axis=1, dtype=np.int64)
    by_key = np.zeros((r, 2 * k), dtype=np.int64)
    by_key[:, m.group_ids] = grouped
    tp = by_key[:, k:]
    out.update(_from_counts(tp, by_key[:, :k] + tp, m.support, n))
    for kk, hit in m.hits.items():
        out[topk_name(kk)] = (counts @ hit) / n
    if "log_loss" in names:
        out["log_loss"] = np.einsum("ij,j->i", counts, m.loss) / n
    if "brier" in names:
        out["brier"] = np.einsum("ij,j->i", counts, m.brier) / n
    if "ece" in names:
        gaps = np.add.reduceat(np.take(counts, m.bin_order, axis=1) * m.bin_resid, m.bin_starts, axis=1)
        out["ece"] = np.abs(gaps).sum(axis=1) / n
    if m.covered is not None and m.covered_correct is not None:
        cov = counts @ m.covered
        out["coverage"] = cov / n
        with np.errstate(invalid="ignore", divide="ignore"):
            out["selective_accuracy"] = np.where(cov > 0, (counts @ m.covered_correct) / cov,
                                                 np.nan)
    want_auc = bool(names & {"macro_auc", "weighted_auc"})
    want_cw = "classwise_ece" in names
    if want_auc or want_cw:
        _per_class_batch(m, counts, want_auc, want_cw, out)
    return {name: out[name] for name in names}


def _per_class_batch(m: _Model, counts: npt.NDArray[np.int32], want_auc: bool, want_cw: bool,
                     out: dict[str, FloatArray]) -> None:
    assert m.class_orders is not None and m.auc_lo is not None and m.auc_hi is not None
    assert m.cw_starts is not None and m.cw_resid is not None
    n, k = m.n, m.k
    r = counts.shape[0]
    aucs = np.full((r, k), np.nan)
    cw = np.zeros(r)
    # running counts are <= n, and two of them < 2**31 unless n is huge
    cum = np.zeros((r, n + 1), dtype=np.int32 if n < 2**30 else np.int64)
    for c in range(k):
        ordered = np.take(counts, m.class_orders[c], axis=1)
        n_c = int(m.support[c])
        if want_auc and 0 < n_c < n and (k > 2 or c == 1):
            np.cumsum(ordered, axis=1, dtype=cum.dtype, out=cum[:, 1:])
            below = np.take(cum, m.auc_lo[c], axis=1)
            below += np.take(cum, m.auc_hi[c], axis=1)
            below = below.astype(np.int64)
            own = counts[:, m.starts[c]:m.starts[c + 1]].astype(np.int64)
            twice = np.einsum("ij,ij->i", own, below) - n_c * n_c
            aucs[:, c] = twice / (2.0 * n_c * (n - n_c))
        if want_cw:
            gaps = np.add.reduceat(ordered * m.cw_resid[c], m.cw_starts[c], axis=1)
            cw += np.abs(gaps).sum(axis=1) / n
    if want_auc:
        out.update(_auc_average(aucs, m.support, n))
    if want_cw:
        out["classwise_ece"] = cw / k


def _resampled(models: Sequence[_Model], names: frozenset[str], *, resamples: int,
               seed: int) -> list[dict[str, FloatArray]]:
    """Each model's metrics over the same stratified resamples (one generator per class)."""
    first = models[0]
    gens = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(first.k)]
    parts: list[dict[str, list[FloatArray]]] = [{nm: [] for nm in names} for _ in models]
    for rows in chunks(resamples, first.n):
        counts = np.empty((rows, first.n), dtype=np.int32)
        for c, g in enumerate(gens):
            a, z = int(first.starts[c]), int(first.starts[c + 1])
            counts[:, a:z] = draw_counts(g, rows, z - a)
        for m, part in zip(models, parts, strict=True):
            for nm, v in _batch(m, counts, names).items():
                part[nm].append(v)
    return [{nm: np.concatenate(v) for nm, v in part.items()} for part in parts]


# ---------------------------------------------------------------- public entry points


@dataclass(frozen=True)
class MulticlassEvaluation:
    """Every metric as a MetricEstimate (flat names), the class supports and the confusion."""

    metrics: dict[str, MetricEstimate]
    support: tuple[int, ...]
    confusion: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": {k: v.to_dict() for k, v in self.metrics.items()},
                "support": list(self.support), "confusion": [list(r) for r in self.confusion]}


def _prepare(y: Any, prob: Any, n_classes: int | None, top_k: Sequence[int], ece_bins: int,
             resamples: int, confidence: float, selective_threshold: float | None,
             metrics: Sequence[str] | None) -> tuple[IntArray, FloatArray, tuple[int, ...],
                                                     tuple[str, ...]]:
    labels, p = check_multiclass(y, prob, n_classes=n_classes)
    check_bootstrap(resamples, confidence, ece_bins)
    ks = _check_top_k(top_k)
    if selective_threshold is not None:
        t = selective_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise ParamsError(f"selective threshold must be in [0, 1], got {t!r}",
                              hint="use the threshold chosen on the validation split")
    every = metric_names(p.shape[1], ks, selective=selective_threshold is not None)
    if metrics is None:
        names = every
    else:
        unknown = [nm for nm in metrics if nm not in every]
        if unknown:
            raise ParamsError(f"unknown multi-class metric(s): {', '.join(map(repr, unknown))}",
                              hint=f"use names like {', '.join(every[:4])}, ...")
        names = tuple(nm for nm in every if nm in set(metrics))
    return labels, p, ks, names


def _class_order(labels: IntArray) -> IntArray:
    return np.argsort(labels, kind="stable")


def evaluate(y: Any, prob: Any, *, n_classes: int | None = None, top_k: Sequence[int] = (),
             ece_bins: int = 15, resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
             selective_threshold: float | None = None,
             metrics: Sequence[str] | None = None) -> MulticlassEvaluation:
    """Point values and stratified-bootstrap intervals (``resamples=0``: none) for ``metrics``
    (default: all of :func:`metric_names`)."""
    labels, p, ks, names = _prepare(y, prob, n_classes, top_k, ece_bins, resamples, confidence,
                                    selective_threshold, metrics)
    point, support, confusion = _point(labels, p, ks, ece_bins, selective_threshold,
                                       want_per_class_auc=bool({"macro_auc", "weighted_auc"}
                                                               & set(names)))
    defined = [nm for nm in names if _reason(nm, support) is None]
    boot: dict[str, FloatArray] = {}
    if resamples and defined:
        order = _class_order(labels)
        model = _model(labels, p, order, support, ks, ece_bins, selective_threshold,
                       per_class=bool({"macro_auc", "weighted_auc", "classwise_ece"}
                                      & set(defined)))
        boot = _resampled([model], frozenset(defined), resamples=resamples, seed=seed)[0]
    out: dict[str, MetricEstimate] = {}
    for nm in names:
        out[nm] = _estimate(nm, point[nm], boot.get(nm), support, float(confidence))
    return MulticlassEvaluation(metrics=out, support=tuple(int(s) for s in support),
                                confusion=tuple(tuple(int(v) for v in row) for row in confusion))


def _estimate(name: str, value: float, boot: FloatArray | None, support: IntArray,
              confidence: float) -> MetricEstimate:
    reason = _reason(name, support)
    if reason is None and not math.isfinite(value):
        reason = f"{name} undefined on this data"
    if reason is not None:
        return MetricEstimate(value=None, reason=reason)
    lo, hi = interval(boot, confidence) if boot is not None else (None, None)
    return MetricEstimate(value=float(value), ci_low=lo, ci_high=hi)


def paired_deltas(y: Any, prob_candidate: Any, prob_baseline: Any, *,
                  n_classes: int | None = None, top_k: Sequence[int] = (), ece_bins: int = 15,
                  resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                  selective_thresholds: tuple[float, float] | None = None,
                  metrics: Sequence[str] | None = None) -> dict[str, MetricEstimate]:
    """``metric(candidate) - metric(baseline)`` with a paired interval: both models see the
    very same resampled rows. For LOWER_IS_BETTER metrics a positive delta is a regression.
    ``selective_thresholds`` are (candidate, baseline) confidence thresholds."""
    tc, tb = selective_thresholds if selective_thresholds is not None else (None, None)
    labels, pc, ks, names = _prepare(y, prob_candidate, n_classes, top_k, ece_bins, resamples,
                                     confidence, tc, metrics)
    _, pb, _, _ = _prepare(labels, prob_baseline, pc.shape[1], top_k, ece_bins, resamples,
                           confidence, tb, metrics)
    want_auc = bool({"macro_auc", "weighted_auc"} & set(names))
    vc, support, _ = _point(labels, pc, ks, ece_bins, tc, want_auc)
    vb, _, _ = _point(labels, pb, ks, ece_bins, tb, want_auc)
    defined = [nm for nm in names if _reason(nm, support) is None]
    boot: list[dict[str, FloatArray]] = [{}, {}]
    if resamples and defined:
        order = _class_order(labels)
        per_class = bool({"macro_auc", "weighted_auc", "classwise_ece"} & set(defined))
        models = [_model(labels, q, order, support, ks, ece_bins, t, per_class)
                  for q, t in ((pc, tc), (pb, tb))]
        boot = _resampled(models, frozenset(defined), resamples=resamples, seed=seed)
    out: dict[str, MetricEstimate] = {}
    for nm in names:
        diff = None if nm not in boot[0] else boot[0][nm] - boot[1][nm]
        out[nm] = _estimate(nm, vc[nm] - vb[nm], diff, support, float(confidence))
    return out
