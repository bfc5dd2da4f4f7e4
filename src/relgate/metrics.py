"""Binary-classification metrics, bootstrap intervals and output health stats.

Pure numpy (no scikit-learn at run time) and no printing: validate, calibrate
and promote all import this one module, so a metric is defined exactly once.

Definitions and policies (the contract the tests hold us to):

* Labels are 0/1 (bool, integer or float 0.0/1.0); scores are finite. Anything
  else is a :class:`~relgate.errors.DataError` (exit 2), see :func:`check_binary`.
* A sample is predicted positive when ``score >= threshold``.
* ``auc`` is ROC AUC by ranks, ties counting one half: the share of
  (positive, negative) pairs ordered correctly. Undefined (NaN from
  :func:`roc_auc`, ``None`` in :func:`evaluate_metrics`) with one class.
* ``pr_auc`` is average precision as scikit-learn defines it: the step-wise sum
  ``sum_k (R_k - R_{k-1}) * P_k`` over distinct score thresholds, no
  interpolation. Undefined without positives.
* Zero-division policy (as scikit-learn's ``zero_division=0``): precision with
  no predicted positives is 0.0, recall with no positives is 0.0, specificity
  with no negatives is 0.0, F1 is ``2TP / (2TP + FP + FN)`` and 0.0 when that
  denominator is 0. A model that flags nothing therefore *fails* a
  ``precision >=`` gate instead of passing it. :func:`evaluate_metrics` goes one
  step further: a metric whose denominator is a class that is absent from the
  labels (recall and F1 without positives, specificity without negatives) has
  no value, because the data cannot say anything about it.
* ``ece``: expected calibration error over ``bins`` equal-width bins on [0, 1]
  (default 15); bin ``b`` holds ``b/bins <= p < (b+1)/bins`` (the last bin
  includes 1.0); bins are weighted by their sample count:
  ``sum_b |sum_{i in b} (y_i - p_i)| / n``.
* ``brier``: mean of ``(p_i - y_i)**2``.

Bootstrap intervals are percentile intervals over a *stratified* bootstrap:
each resample draws ``n_pos`` positives and ``n_neg`` negatives with
replacement (as pROC does by default), so a resample never loses a class and
AUC is defined in every resample. All metrics of one call share the same
resamples. Resamples are counts over the samples sorted by score, so each one
costs O(n) (no re-sorting) and the integer parts are exact; results depend
only on the multiset of (label, score) pairs, ``seed`` and ``resamples``.
The decision threshold is held fixed across resamples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.errors import DataError, ParamsError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Metrics that get bootstrap intervals, in report order.
BOOTSTRAP_METRICS = (
    "auc", "pr_auc", "f1", "macro_f1", "precision", "recall", "accuracy", "specificity", "ece",
    "brier",
)
#: Selective-prediction metrics: defined only with a "no conclusive" band [low, high) on the
#: probability (a calibration's ``inconclusive``); bootstrap intervals like the rest.
SELECTIVE_METRICS = ("coverage", "selective_precision")
#: Output health stats (point values only).
HEALTH_METRICS = ("mean_std", "high_corr_frac", "frac_sig")
ALL_METRICS = BOOTSTRAP_METRICS + HEALTH_METRICS
#: Metrics where smaller is better ("no worse than" means "no larger than").
LOWER_IS_BETTER = frozenset({"ece", "brier", "high_corr_frac"})
#: Absolute Pearson correlation above which two feature dimensions count as redundant.
HIGH_CORR = 0.95
#: Above this many feature dimensions high_corr_frac is not computed (d*d pairs).
MAX_CORR_DIMS = 4096
_THRESHOLD_METRICS = ("f1", "macro_f1", "precision", "recall", "accuracy", "specificity")
# Elements per bootstrap chunk (resamples x samples); a function of n only, so
# chunking, and therefore every random draw, is the same on every machine.
_CHUNK_ELEMENTS = 1 << 21


# ---------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class MetricEstimate:
    """A metric's value and bootstrap interval; ``value`` is None when undefined."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``common.schema.json#/$defs/metric`` form; None interval/reason keys are omitted.

        A non-finite value (a bug upstream) is written as null with a reason
        rather than as invalid JSON, so a report can never carry NaN as a pass.
        """
        out: dict[str, Any] = {}
        value = _finite_or_none(self.value)
        reason = self.reason
        if value is None and self.value is not None:
            reason = reason or f"value was {self.value!r}, not a finite number"
        out["value"] = value
        for key in ("ci_low", "ci_high"):
            bound = _finite_or_none(getattr(self, key))
            if bound is not None and value is not None:
                out[key] = bound
        if reason is not None:
            out["reason"] = reason
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricEstimate:
        """Build from a schema-valid metric mapping (numbers stay numbers, null stays None)."""

        def num(key: str) -> float | None:
            v = d.get(key)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise DataError(
                    f"metric {key} must be a number or null, got {type(v).__name__}",
                    hint="fix the report (see the 'validation-report' schema)",
                )
            return float(v)

        reason = d.get("reason")
        return cls(value=num("value"), ci_low=num("ci_low"), ci_high=num("ci_high"),
                   reason=reason if isinstance(reason, str) else None)


@dataclass(frozen=True, kw_only=True)
class Confusion:
    """Confusion counts at one threshold (positive when score >= threshold)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    value = float(x)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- input checks


def check_binary(y: Any, scores: Any) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """Validate labels and scores; return ``(y as int8 0/1, scores as float64)``.

    Refuses (DataError, exit 2): non-1-D arrays, a length mismatch, no samples,
    labels other than 0/1, non-numeric or non-finite scores.
    """
    y_arr = np.asarray(y)
    s_arr = np.asarray(scores)
    if y_arr.ndim != 1 or s_arr.ndim != 1:
        raise DataError(
            f"labels and scores must be 1-D, got shapes {y_arr.shape} and {s_arr.shape}",
            hint="flatten them (e.g. scores.reshape(-1) for an [N, 1] output)",
        )
    if y_arr.shape[0] != s_arr.shape[0]:
        raise DataError(
            f"{y_arr.shape[0]} labels but {s_arr.shape[0]} scores",
            hint="score every labelled sample exactly once",
        )
    if y_arr.shape[0] == 0:
        raise DataError("no samples: labels and scores are empty", hint="check the data split")
    labels = _binary_labels(y_arr)
    return labels, _finite_scores(s_arr, what="scores")


def _binary_labels(y: np.ndarray) -> npt.NDArray[np.int8]:
    if y.dtype == np.bool_:
        return y.astype(np.int8)
    if y.dtype.kind not in "iuf":
        raise DataError(
            f"labels must be numbers 0/1, got dtype {y.dtype}", hint="encode labels as 0 and 1"
        )
    ok = (y == 0) | (y == 1)
    if not bool(ok.all()):
        bad = y[~ok]
        shown = ", ".join(repr(v.item()) for v in np.unique(bad)[:5])
        raise DataError(
            f"labels must be 0 or 1; found {bad.size} other value(s): {shown}",
            hint="encode the positive (anomaly) class as 1 and the rest as 0",
        )
    return y.astype(np.int8)


def _finite_scores(s: np.ndarray, *, what: str) -> FloatArray:
    if s.dtype.kind not in "biuf":
        raise DataError(f"{what} must be real numbers, got dtype {s.dtype}",
                        hint="pass the model's numeric output")
    out = s.astype(np.float64, copy=False)
    finite = np.isfinite(out)
    if not bool(finite.all()):
        n_nan = int(np.isnan(out).sum())
        n_inf = int(out.size - finite.sum()) - n_nan
        raise DataError(
            f"{what} contain {n_nan} NaN and {n_inf} infinite value(s)",
            hint="the model produced non-finite outputs; check its inputs and scaling",
        )
    return out


def _check_prob(p: FloatArray, *, what: str = "probabilities") -> None:
    lo, hi = float(p.min()), float(p.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            f"{what} must lie in [0, 1], found values in [{lo:.6g}, {hi:.6g}]",
            hint="pass calibrated probabilities, not raw scores",
        )


def _check_threshold(threshold: float) -> float:
    numeric = (int, float, np.floating, np.integer)
    if isinstance(threshold, bool) or not isinstance(threshold, numeric):
        raise ParamsError(f"threshold must be a number, got {threshold!r}",
                          hint="set a numeric decision threshold")
    t = float(threshold)
    if not math.isfinite(t):
        raise ParamsError(f"threshold must be finite, got {t!r}", hint="set a finite threshold")
    return t


def _check_bootstrap(resamples: int, confidence: float, bins: int) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 0:
        raise ParamsError(f"resamples must be an integer >= 0, got {resamples!r}",
                          hint="use e.g. 1000, or 0 for no intervals")
    if not (isinstance(confidence, (int, float)) and 0.0 < float(confidence) < 1.0):
        raise ParamsError(f"confidence must be strictly between 0 and 1, got {confidence!r}",
                          hint="use e.g. 0.95")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ParamsError(f"ece bins must be an integer >= 1, got {bins!r}", hint="use e.g. 15")


# ---------------------------------------------------------------- ranking metrics


def _split_sorted(y: npt.NDArray[np.int8], s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Scores of the positives and of the negatives, each sorted ascending."""
    mask = y.astype(np.bool_)
    return np.sort(s[mask]), np.sort(s[~mask])


def _negatives_below(pos: FloatArray, neg: FloatArray) -> tuple[IntArray, IntArray]:
    """For each sorted positive: how many negatives score lower, and lower-or-equal.

    Merging two sorted runs with a stable sort is linear-ish (runs are
    detected) and cheaper than two binary searches per positive. In the stable
    order of ``[neg, pos]`` equal negatives come first, so a positive's
    position minus its rank among positives counts negatives ``<=`` it; in
    ``[pos, neg]`` equal negatives come after, which counts negatives ``<`` it.
    """
    n_pos, n_neg = pos.size, neg.size
    rank = np.arange(n_pos, dtype=np.int64)
    order_hi = np.argsort(np.concatenate((neg, pos)), kind="stable")
    hi = np.flatnonzero(order_hi >= n_neg).astype(np.int64) - rank
    order_lo = np.argsort(np.concatenate((pos, neg)), kind="stable")
    lo = np.flatnonzero(order_lo < n_pos).astype(np.int64) - rank
    return lo, hi


def roc_auc(y: Any, scores: Any) -> float:
    """ROC AUC by ranks with ties counted one half; NaN when only one class is present.

    O(n log n): one sort per class and a merge; the pair count is an exact integer.
    """
    labels, s = check_binary(y, scores)
    pos, neg = _split_sorted(labels, s)
    if pos.size == 0 or neg.size == 0:
        return math.nan
    lo, hi = _negatives_below(pos, neg)
    twice_correct = int(lo.sum()) + int(hi.sum())
    return twice_correct / (2 * pos.size * neg.size)


def _lower_in_run(sorted_values: FloatArray) -> IntArray:
    """For each element of a sorted array: how many elements are strictly smaller."""
    idx = np.arange(sorted_values.size, dtype=np.int64)
    if sorted_values.size == 0:
        return idx
    start = np.empty(sorted_values.size, dtype=np.bool_)
    start[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=start[1:])
    return np.maximum.accumulate(np.where(start, idx, 0))


def average_precision(y: Any, scores: Any) -> float:
    """Average precision (scikit-learn's step-wise definition); NaN without positives."""
    labels, s = check_binary(y, scores)
    pos, neg = _split_sorted(labels, s)
    if pos.size == 0:
        return math.nan
    lo, _ = _negatives_below(pos, neg)
    tp_ge = pos.size - _lower_in_run(pos)  # positives scoring >= this positive
    fp_ge = neg.size - lo  # negatives scoring >= this positive
    return float(np.sum(tp_ge / (tp_ge + fp_ge)) / pos.size)


# ---------------------------------------------------------------- threshold metrics


def confusion_at(y: Any, scores: Any, threshold: float) -> Confusion:
    """Confusion counts with ``score >= threshold`` predicted positive."""
    labels, s = check_binary(y, scores)
    t = _check_threshold(threshold)
    pred = s >= t
    truth = labels.astype(np.bool_)
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    return Confusion(tp=tp, fp=fp, tn=labels.size - tp - fp - fn, fn=fn)


def _ratio(num: Any, den: Any) -> Any:
    """num / den elementwise, 0.0 where den == 0 (the zero_division=0 policy)."""
    num_f = np.asarray(num, dtype=np.float64)
    den_f = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num_f, den_f).shape, dtype=np.float64)
    np.divide(num_f, den_f, out=out, where=den_f != 0)
    return out


def _from_counts(tp: Any, fp: Any, tn: Any, fn: Any) -> dict[str, Any]:
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": f1,
        # the F1 of class 1 and of class 0 (2TN / (2TN + FN + FP)), averaged
        "macro_f1": (f1 + _ratio(2 * tn, 2 * tn + fn + fp)) / 2.0,
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def threshold_metrics(y: Any, scores: Any, threshold: float) -> dict[str, float]:
    """precision, recall, f1, macro_f1, accuracy, specificity at ``score >= threshold``.

    Zero division gives 0.0 (scikit-learn ``zero_division=0``): precision with no
    predicted positives, recall with no positives, specificity with no negatives,
    F1 when ``2TP + FP + FN == 0``; ``macro_f1`` is the mean of the F1 of class 1
    and the F1 of class 0 (``2TN / (2TN + FN + FP)``).
    """
    c = confusion_at(y, scores, threshold)
    counts = _from_counts(np.array(c.tp), np.array(c.fp), np.array(c.tn), np.array(c.fn))
    return {k: float(v) for k, v in counts.items()}


def _counts_per_threshold(
    labels: npt.NDArray[np.int8], s: FloatArray
) -> tuple[FloatArray, IntArray, IntArray]:
    """Distinct scores (descending) with TP and FP counts at ``score >= t`` for each."""
    order = np.argsort(-s, kind="stable")
    s_desc = s[order]
    y_desc = labels[order].astype(np.int64)
    last = np.r_[np.flatnonzero(np.diff(s_desc)), s_desc.size - 1]
    tps = np.cumsum(y_desc)[last]
    fps = (last + 1) - tps
    return s_desc[last], tps, fps


def best_f1_threshold(y: Any, scores: Any) -> tuple[float, float]:
    """The score threshold that maximises F1, and that F1.

    Candidates are the distinct scores (a threshold equal to a score flags that
    score). Among equal F1 the highest threshold wins (fewer false alarms).
    Refused (DataError) without positives, where F1 is 0 everywhere.
    """
    labels, s = check_binary(y, scores)
    n_pos = int(labels.sum())
    if n_pos == 0:
        raise DataError("cannot choose an F1 threshold: the labels contain no positives",
                        hint="use a split with both classes")
    thresholds, tps, fps = _counts_per_threshold(labels, s)
    f1 = 2 * tps / (tps + fps + n_pos)  # 2TP / (2TP + FP + FN), FN = P - TP
    best = int(np.argmax(f1))  # thresholds descend: the first maximum is the highest
    return float(thresholds[best]), float(f1[best])


def precision_target_threshold(y: Any, scores: Any, target: float) -> float | None:
    """The lowest score threshold whose precision is >= ``target``; None if none reaches it.

    The lowest qualifying threshold keeps the most recall ("fewer missed
    defects") while holding the precision floor ("fewer false alarms").
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 < target <= 1.0:
        raise ParamsError(f"precision target must be in (0, 1], got {target!r}",
                          hint="set calibrate.threshold.precision_target")
    labels, s = check_binary(y, scores)
    thresholds, tps, fps = _counts_per_threshold(labels, s)
    precision = tps / (tps + fps)  # tps + fps >= 1 at every distinct score
    ok = np.flatnonzero((precision >= target) & (tps > 0))
    if ok.size == 0:
        return None
    return float(thresholds[ok[-1]])  # descending thresholds: the last one is the lowest


# ---------------------------------------------------------------- calibration quality


def _bin_index(p: FloatArray, bins: int) -> IntArray:
    return np.minimum((p * bins).astype(np.int64), bins - 1)


def ece(y: Any, prob: Any, bins: int = 15) -> float:
    """Expected calibration error over equal-width bins on [0, 1], weighted by bin count."""
    labels, p = check_binary(y, prob)
    _check_prob(p)
    _check_bootstrap(0, 0.5, bins)
    gap = np.bincount(_bin_index(p, bins), weights=labels - p, minlength=bins)
    return float(np.abs(gap).sum() / p.size)


def brier(y: Any, prob: Any) -> float:
    """Brier score: the mean squared difference between probability and label."""
    labels, p = check_binary(y, prob)
    _check_prob(p)
    return float(np.mean((p - labels) ** 2))


# ---------------------------------------------------------------- health stats


def _health(
    features: Any, prob: FloatArray, threshold: float
) -> dict[str, tuple[float | None, str | None]]:
    feats = np.asarray(features)
    if feats.ndim == 1:
        feats = feats[:, None]
    if feats.ndim != 2 or feats.shape[0] != prob.shape[0]:
        raise DataError(
            f"features must be [N] or [N, D] with N={prob.shape[0]}, got shape {feats.shape}",
            hint="pass one feature row per scored sample",
        )
    n, d = int(feats.shape[0]), int(feats.shape[1])
    x = _finite_scores(feats.reshape(-1), what="features").reshape(n, d)
    std = x.std(axis=0)
    out: dict[str, tuple[float | None, str | None]] = {
        "mean_std": (float(std.mean()), None),
        "frac_sig": (float(np.count_nonzero(prob >= threshold) / prob.size), None),
    }
    if d < 2:
        out["high_corr_frac"] = (0.0, None)
    elif n < 2:
        out["high_corr_frac"] = (None, "high_corr_frac undefined: fewer than 2 samples")
    elif d > MAX_CORR_DIMS:
        out["high_corr_frac"] = (
            None, f"high_corr_frac not computed: {d} feature dimensions exceed {MAX_CORR_DIMS}"
        )
    else:
        live = std > 0
        z = np.zeros_like(x)
        z[:, live] = (x[:, live] - x[:, live].mean(axis=0)) / std[live]
        corr = (z.T @ z) / n
        upper = np.triu_indices(d, k=1)
        high = int(np.count_nonzero(np.abs(corr[upper]) > HIGH_CORR))
        out["high_corr_frac"] = (high / (d * (d - 1) // 2), None)
    return out


def health_stats(features: Any, prob: Any, threshold: float) -> dict[str, float | None]:
    """Output health: is the model alive, redundant, and how much does it flag?

    * ``mean_std``: mean over output dimensions of the population standard
      deviation (ddof=0) across samples of ``features`` ([N] or [N, D]); near 0
      means the outputs collapsed to a constant.
    * ``high_corr_frac``: share of the D*(D-1)/2 pairs of feature dimensions
      whose absolute Pearson correlation across samples exceeds 0.95
      (redundant features). 0.0 for a single dimension; a pair involving a
      constant dimension has no correlation and does not count as high (a
      collapse shows up in ``mean_std``). None with fewer than 2 samples or
      more than MAX_CORR_DIMS dimensions.
    * ``frac_sig``: share of samples flagged positive, ``prob >= threshold``.
    """
    p = _finite_scores(np.asarray(prob).reshape(-1), what="probabilities")
    if p.size == 0:
        raise DataError("no samples: probabilities are empty", hint="check the data split")
    t = _check_threshold(threshold)
    return {k: v for k, (v, _) in _health(features, p, t).items()}


# ---------------------------------------------------------------- bootstrap engine


@dataclass(frozen=True)
class _Ranked:
    """One model's scores per class, sorted, with the rank bookkeeping every metric needs."""

    pos: FloatArray  # positives' scores, ascending
    neg: FloatArray  # negatives' scores, ascending
    lo: IntArray  # per positive: negatives scoring lower
    hi: IntArray  # per positive: negatives scoring lower or equal
    ties: bool  # some positive ties some negative
    pos_lower: IntArray  # per positive: positives scoring lower

    @classmethod
    def build(cls, pos: FloatArray, neg: FloatArray) -> _Ranked:
        lo, hi = _negatives_below(pos, neg)
        return cls(pos=pos, neg=neg, lo=lo, hi=hi, ties=bool(np.any(lo != hi)),
                   pos_lower=_lower_in_run(pos))


def _prefix(counts: IntArray) -> IntArray:
    """Row-wise cumulative sums with a leading 0 column: out[:, j] = sum(counts[:, :j])."""
    out = np.zeros((counts.shape[0], counts.shape[1] + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, out=out[:, 1:])
    return out


def _batch(r: _Ranked, cpos: IntArray, cneg: IntArray, names: tuple[str, ...],
           threshold: float, bins: int, band: tuple[float, float] | None = None
           ) -> dict[str, FloatArray]:
    """Metrics for k weighted resamples at once; counts are [k, n_pos] and [k, n_neg]
    in ``r``'s sorted order. Every resample keeps the class totals of ``r``. The
    SELECTIVE_METRICS need *band* ([low, high), inconclusive); NaN without one."""
    n_pos, n_neg = r.pos.size, r.neg.size
    n = n_pos + n_neg
    k = cpos.shape[0]
    out: dict[str, FloatArray] = {}
    want_sel = any(m in names for m in SELECTIVE_METRICS)
    want_thr = want_sel or any(m in names for m in _THRESHOLD_METRICS)
    cn = _prefix(cneg) if ("auc" in names or "pr_auc" in names or want_thr) else None
    cp = _prefix(cpos) if ("pr_auc" in names or want_thr) else None
    if "auc" in names:
        if n_pos and n_neg and cn is not None:
            below = np.take(cn, r.lo, axis=1)
            if r.ties:
                below += np.take(cn, r.hi, axis=1)
            else:
                below *= 2
            out["auc"] = np.einsum("ij,ij->i", cpos, below) / (2.0 * n_pos * n_neg)
        else:
            out["auc"] = np.full(k, np.nan)
    if "pr_auc" in names:
        if n_pos and cn is not None and cp is not None:
            tp_ge = n_pos - np.take(cp, r.pos_lower, axis=1)
            den = n_neg - np.take(cn, r.lo, axis=1)
            den += tp_ge
            np.maximum(den, 1, out=den)  # 0 only where this positive has count 0
            out["pr_auc"] = np.einsum("ij,ij->i", cpos, tp_ge / den) / n_pos
        else:
            out["pr_auc"] = np.full(k, np.nan)
    if want_thr and cn is not None and cp is not None:
        a_pos = int(np.searchsorted(r.pos, threshold, side="left"))
        a_neg = int(np.searchsorted(r.neg, threshold, side="left"))
        fn = cp[:, a_pos]
        tp = n_pos - fn
        tn = cn[:, a_neg]
        fp = n_neg - tn
        out.update({m: v for m, v in _from_counts(tp, fp, tn, fn).items() if m in names})
        if want_sel:
            out.update(_selective(r, cp, cn, tp, fp, threshold, band, k))
    if "ece" in names or "brier" in names:
        sq = np.zeros(k)
        gap = np.zeros((k, bins))
        # einsum rather than BLAS: single-threaded and summed in a fixed order
        for counts, scores, label in ((cpos, r.pos, 1.0), (cneg, r.neg, 0.0)):
            if scores.size == 0:
                continue
            w = counts.astype(np.float64)
            sq += np.einsum("ij,j->i", w, (scores - label) ** 2)
            # bins are contiguous runs of the sorted scores
            edges = np.searchsorted(_bin_index(scores, bins), np.arange(bins + 1), side="left")
            resid = label - scores
            for b in np.flatnonzero(edges[1:] > edges[:-1]):
                a, z = edges[b], edges[b + 1]
                gap[:, b] += np.einsum("ij,j->i", w[:, a:z], resid[a:z])
        out["brier"] = sq / n
        out["ece"] = np.abs(gap).sum(axis=1) / n
    return {m: out[m] for m in names}


def _selective(r: _Ranked, cp: IntArray, cn: IntArray, tp: IntArray, fp: IntArray,
               threshold: float, band: tuple[float, float] | None, k: int
               ) -> dict[str, FloatArray]:
    """coverage and selective_precision from prefix counts: a sample is inconclusive when
    ``low <= p < high``; a conclusive positive is ``p >= threshold`` outside the band."""
    if band is None:
        nan = np.full(k, np.nan)
        return {"coverage": nan, "selective_precision": nan}
    low, high = band
    cut = max(threshold, low)  # predicted positives inside the band: [max(thr, low), high)

    def between(prefix: IntArray, sorted_scores: FloatArray, a: float, b: float) -> IntArray:
        if a >= b:
            return np.zeros(k, dtype=np.int64)
        i, j = np.searchsorted(sorted_scores, (a, b), side="left")
        return prefix[:, j] - prefix[:, i]

    held = between(cp, r.pos, low, high) + between(cn, r.neg, low, high)
    tp_c = tp - between(cp, r.pos, cut, high)
    fp_c = fp - between(cn, r.neg, cut, high)
    n = r.pos.size + r.neg.size
    return {"coverage": _ratio(n - held, n), "selective_precision": _ratio(tp_c, tp_c + fp_c)}


def _chunks(resamples: int, n: int) -> Iterator[int]:
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < resamples:
        step = min(rows, resamples - done)
        yield step
        done += step


def _draw_counts(rng: np.random.Generator, rows: int, size: int) -> IntArray:
    """[rows, size] bootstrap counts: each row is ``size`` draws with replacement."""
    if size == 0:
        return np.zeros((rows, 0), dtype=np.int64)
    idx = rng.integers(0, size, size=(rows, size), dtype=np.int64)
    idx += (np.arange(rows, dtype=np.int64) * size)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * size).reshape(rows, size)


def _resampled(rankeds: tuple[_Ranked, ...], perms: tuple[tuple[IntArray, IntArray] | None, ...],
               names: tuple[str, ...], thresholds: tuple[float, ...], *, resamples: int,
               seed: int, bins: int,
               bands: tuple[tuple[float, float] | None, ...] | None = None
               ) -> list[dict[str, FloatArray]]:
    """Per model, each metric over the same ``resamples`` stratified resamples.

    Counts are drawn in the first model's sorted order; ``perms[m]`` maps them
    into model m's sorted order (None for the first model), so a paired
    comparison sees the very same samples in both models.
    """
    first = rankeds[0]
    pos_seq, neg_seq = np.random.SeedSequence(seed).spawn(2)
    rng_pos, rng_neg = np.random.default_rng(pos_seq), np.random.default_rng(neg_seq)
    parts: list[dict[str, list[FloatArray]]] = [{m: [] for m in names} for _ in rankeds]
    per_model = bands if bands is not None else (None,) * len(rankeds)
    for rows in _chunks(resamples, first.pos.size + first.neg.size):
        cpos = _draw_counts(rng_pos, rows, first.pos.size)
        cneg = _draw_counts(rng_neg, rows, first.neg.size)
        for m, (r, perm, t, band) in enumerate(zip(rankeds, perms, thresholds, per_model,
                                                   strict=True)):
            cp, cn = (cpos, cneg) if perm is None else (cpos[:, perm[0]], cneg[:, perm[1]])
            for name, values in _batch(r, cp, cn, names, t, bins, band).items():
                parts[m][name].append(values)
    return [{m: np.concatenate(v) if v else np.empty(0) for m, v in p.items()} for p in parts]


def _interval(values: FloatArray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval (linear interpolation); None when any resample is undefined."""
    if values.size == 0 or not bool(np.isfinite(values).all()):
        return None, None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _undefined_reason(name: str, n_pos: int, n_neg: int) -> str | None:
    counts = f"{n_pos} positives, {n_neg} negatives"
    if name == "auc" and (n_pos == 0 or n_neg == 0):
        return f"AUC undefined: labels contain one class ({counts})"
    if name in ("pr_auc", "recall", "f1") and n_pos == 0:
        return f"{name} undefined: labels contain no positives ({counts})"
    if name == "macro_f1" and (n_pos == 0 or n_neg == 0):
        return f"macro_f1 undefined: labels contain one class ({counts})"
    if name == "specificity" and n_neg == 0:
        return f"specificity undefined: labels contain no negatives ({counts})"
    return None


def _point(r: _Ranked, names: tuple[str, ...], threshold: float, bins: int,
           band: tuple[float, float] | None = None) -> dict[str, float]:
    ones_p = np.ones((1, r.pos.size), dtype=np.int64)
    ones_n = np.ones((1, r.neg.size), dtype=np.int64)
    batch = _batch(r, ones_p, ones_n, names, threshold, bins, band)
    return {k: float(v[0]) for k, v in batch.items()}


def _estimates(r: _Ranked, names: tuple[str, ...], threshold: float, *, resamples: int,
               confidence: float, seed: int, bins: int,
               band: tuple[float, float] | None = None) -> dict[str, MetricEstimate]:
    point = _point(r, names, threshold, bins, band)
    boot = (_resampled((r,), (None,), names, (threshold,), resamples=resamples, seed=seed,
                       bins=bins, bands=(band,))[0] if resamples else {})
    out: dict[str, MetricEstimate] = {}
    for name in names:
        reason = _undefined_reason(name, r.pos.size, r.neg.size)
        if reason is not None or not math.isfinite(point[name]):
            reason = reason or f"{name} undefined on this data"
            out[name] = MetricEstimate(value=None, reason=reason)
            continue
        lo, hi = _interval(boot[name], confidence) if resamples else (None, None)
        out[name] = MetricEstimate(value=point[name], ci_low=lo, ci_high=hi)
    return out


def _ranked(labels: npt.NDArray[np.int8], s: FloatArray) -> _Ranked:
    pos, neg = _split_sorted(labels, s)
    return _Ranked.build(pos, neg)


def _check_band(band: Any) -> tuple[float, float] | None:
    """A "no conclusive" band as ``(low, high)`` with finite ``low <= high`` (None: no band)."""
    if band is None:
        return None
    low, high = (float(band[0]), float(band[1])) if not isinstance(band, Mapping) else (
        float(band["low"]), float(band["high"]))
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ParamsError(f"inconclusive band must be finite with low <= high, got {band!r}",
                          hint="the band is [low, high) on the probability")
    return low, high


def _selective_undefined(name: str, band: tuple[float, float] | None) -> MetricEstimate | None:
    if name in SELECTIVE_METRICS and band is None:
        return MetricEstimate(value=None, reason=f"{name} undefined: the calibration has no "
                              "inconclusive band (calibrate.inconclusive_band)")
    return None


def bootstrap_metric(y: Any, scores: Any, metric: str, *, threshold: float = 0.5,
                     resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                     ece_bins: int = 15, band: Any = None) -> MetricEstimate:
    """One metric with its stratified-bootstrap percentile interval.

    ``scores`` may be any finite scores for ranking metrics; ``ece`` and
    ``brier`` need probabilities in [0, 1]; the SELECTIVE_METRICS a *band*
    (``(low, high)`` or a calibration's ``inconclusive`` mapping).
    """
    if metric not in BOOTSTRAP_METRICS + SELECTIVE_METRICS:
        raise ParamsError(f"unknown metric {metric!r}",
                          hint=f"use one of: {', '.join(BOOTSTRAP_METRICS + SELECTIVE_METRICS)}")
    labels, s = check_binary(y, scores)
    if metric in ("ece", "brier"):
        _check_prob(s)
    _check_bootstrap(resamples, confidence, ece_bins)
    t = _check_threshold(threshold)
    cut = _check_band(band)
    undefined = _selective_undefined(metric, cut)
    if undefined is not None:
        return undefined
    return _estimates(_ranked(labels, s), (metric,), t, resamples=resamples,
                      confidence=float(confidence), seed=seed, bins=ece_bins, band=cut)[metric]


def evaluate_metrics(y: Any, prob: Any, threshold: float, *, resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0, ece_bins: int = 15,
                     features: Any = None, band: Any = None) -> dict[str, MetricEstimate]:
    """Every reported metric: the BOOTSTRAP_METRICS with intervals, the health stats as points.

    ``prob`` are calibrated probabilities in [0, 1]; ``features`` ([N] or [N, D])
    feed the health stats and default to ``prob``. ``resamples=0`` gives no
    intervals. Undefined metrics have ``value=None`` and a reason. With a "no
    conclusive" *band* (``(low, high)`` or a calibration's ``inconclusive``), the
    SELECTIVE_METRICS too, on the same resamples.
    """
    labels, p = check_binary(y, prob)
    _check_prob(p)
    _check_bootstrap(resamples, confidence, ece_bins)
    t = _check_threshold(threshold)
    cut = _check_band(band)
    names = BOOTSTRAP_METRICS if cut is None else BOOTSTRAP_METRICS + SELECTIVE_METRICS
    out = _estimates(_ranked(labels, p), names, t, resamples=resamples,
                     confidence=float(confidence), seed=seed, bins=ece_bins, band=cut)
    health = _health(p if features is None else features, p, t)
    for name in HEALTH_METRICS:
        value, reason = health[name]
        out[name] = MetricEstimate(value=value, reason=reason)
    return out


def paired_bootstrap_delta(y: Any, prob_candidate: Any, prob_baseline: Any, metric: str,
                           threshold_candidate: float, threshold_baseline: float, *,
                           resamples: int, confidence: float, seed: int,
                           ece_bins: int = 15, band_candidate: Any = None,
                           band_baseline: Any = None) -> MetricEstimate:
    """``metric(candidate) - metric(baseline)`` on the same samples, with a paired interval.

    Both models are evaluated on the very same resampled samples, so the
    interval reflects the difference between the models rather than the noise
    of the data set. For LOWER_IS_BETTER metrics a positive delta is a regression.
    A SELECTIVE_METRICS delta needs both models' bands (undefined otherwise).
    """
    if metric not in BOOTSTRAP_METRICS + SELECTIVE_METRICS:
        raise ParamsError(f"unknown metric {metric!r} for a paired comparison",
                          hint=f"use one of: {', '.join(BOOTSTRAP_METRICS + SELECTIVE_METRICS)}")
    band_c, band_b = _check_band(band_candidate), _check_band(band_baseline)
    for band, who in ((band_c, "candidate"), (band_b, "baseline")):
        undefined = _selective_undefined(metric, band)
        if undefined is not None:
            return MetricEstimate(value=None, reason=f"{undefined.reason} ({who})")
    labels, pc = check_binary(y, prob_candidate)
    _, pb = check_binary(y, prob_baseline)
    if metric in ("ece", "brier"):
        _check_prob(pc, what="candidate probabilities")
        _check_prob(pb, what="baseline probabilities")
    _check_bootstrap(resamples, confidence, ece_bins)
    tc, tb = _check_threshold(threshold_candidate), _check_threshold(threshold_baseline)
    mask = labels.astype(np.bool_)
    idx_pos, idx_neg = np.flatnonzero(mask), np.flatnonzero(~mask)
    # each class's samples in the candidate's and in the baseline's sorted order
    oc_pos = idx_pos[np.argsort(pc[idx_pos], kind="stable")]
    oc_neg = idx_neg[np.argsort(pc[idx_neg], kind="stable")]
    ob_pos = idx_pos[np.argsort(pb[idx_pos], kind="stable")]
    ob_neg = idx_neg[np.argsort(pb[idx_neg], kind="stable")]
    rank = np.empty(labels.size, dtype=np.int64)
    rank[oc_pos] = np.arange(oc_pos.size)
    rank[oc_neg] = np.arange(oc_neg.size)
    cand = _Ranked.build(pc[oc_pos], pc[oc_neg])
    base = _Ranked.build(pb[ob_pos], pb[ob_neg])
    reason = _undefined_reason(metric, oc_pos.size, oc_neg.size)
    if reason is not None:
        return MetricEstimate(value=None, reason=reason)
    names = (metric,)
    delta = (_point(cand, names, tc, ece_bins, band_c)[metric]
             - _point(base, names, tb, ece_bins, band_b)[metric])
    if not resamples:
        return MetricEstimate(value=delta)
    vc, vb = _resampled((cand, base), (None, (rank[ob_pos], rank[ob_neg])), names, (tc, tb),
                        resamples=resamples, seed=seed, bins=ece_bins, bands=(band_c, band_b))
    lo, hi = _interval(vc[metric] - vb[metric], float(confidence))
    return MetricEstimate(value=delta, ci_low=lo, ci_high=hi)


# ---------------------------------------------------------------- kernels the task kinds share

#: public names of the bootstrap and binning kernels for the task kinds (relgate.tasks);
#: the underscore names stay for existing callers
check_bootstrap = _check_bootstrap
ratio = _ratio
bin_index = _bin_index
chunks = _chunks
draw_counts = _draw_counts
interval = _interval
