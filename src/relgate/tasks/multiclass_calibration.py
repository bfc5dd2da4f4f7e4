"""Multi-class temperature scaling and selective prediction ("no conclusive"), fit on validation.

Pure numpy and deterministic: a fixed bisection budget, no random starts, so
the same logits give the same temperature and threshold bytes. Not yet called
by the calibrate stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from relgate.calibration import temperature_where_flat
from relgate.errors import DataError, ParamsError
from relgate.tasks.multiclass import (
    FloatArray,
    IntArray,
    _finite_matrix,
    check_labels,
    check_multiclass,
)

#: The temperature is searched in this range times 1 / (the logits' largest row spread).
T_RANGE = (1e-6, 1e6)


def _checked_logits(logits: Any, y: Any) -> tuple[FloatArray, IntArray]:
    z = _finite_matrix(logits, what="logits", n_classes=None)
    labels = check_labels(y, z.shape[1])
    if labels.size != z.shape[0]:
        raise DataError(f"{labels.size} labels but {z.shape[0]} rows of logits",
                        hint="score every labelled sample exactly once")
    return z - z.max(axis=1, keepdims=True), labels


def multiclass_nll(logits: Any, y: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T), computed stably (no clipping)."""
    z, labels = _checked_logits(logits, y)
    a = 1.0 / _check_temperature(temperature)
    za = a * z
    lse = np.log(np.exp(za).sum(axis=1))  # za <= 0 with a 0 in every row: no overflow
    return float(np.mean(lse - za[np.arange(labels.size), labels]))


def _check_temperature(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise ParamsError(f"temperature must be a finite number > 0, got {t!r}",
                          hint="use the temperature fit on the validation split")
    return float(t)


def fit_temperature(logits: Any, y: Any) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T) against y.

    With a = 1 / T the NLL is convex in a, so its derivative
    ``mean(sum_k softmax(a z)_k z_k - z_y)`` increases with a: bisection on its
    sign in log a (200 halvings at most) finds the minimum deterministically.
    An optimum outside T_RANGE (separable data: T -> 0; logits ranking the
    wrong way: a <= 0) returns the nearest bound; logits constant in every row
    carry no information and return 1.0.
    """
    z, labels = _checked_logits(logits, y)
    spread = float(np.max(-z.min(axis=1)))
    if spread == 0.0:
        return 1.0
    zy = z[np.arange(labels.size), labels]

    def grad(log_a: float) -> float:
        za = math.exp(log_a) * z
        e = np.exp(za)
        expected = np.einsum("ij,ij->i", e, z) / e.sum(axis=1)
        return float(np.mean(expected - zy))

    lo = math.log(1.0 / (spread * T_RANGE[1]))
    hi = math.log(1.0 / (spread * T_RANGE[0]))
    return temperature_where_flat(grad, lo, hi)


def apply_temperature(logits: Any, temperature: float) -> FloatArray:
    """softmax(logits / T), row-shifted so it never overflows."""
    z = _finite_matrix(logits, what="logits", n_classes=None)
    za = (z - z.max(axis=1, keepdims=True)) / _check_temperature(temperature)
    e: FloatArray = np.exp(za)
    e /= e.sum(axis=1, keepdims=True)
    return e


@dataclass(frozen=True, kw_only=True)
class SelectiveChoice:
    """A confidence threshold and what it achieved on the data it was chosen on."""

    threshold: float
    coverage: float
    selective_accuracy: float
    target: float

    def to_dict(self) -> dict[str, float]:
        return {"threshold": self.threshold, "coverage": self.coverage,
                "selective_accuracy": self.selective_accuracy, "target": self.target}


def _confidence(y: Any, prob: Any) -> tuple[FloatArray, np.ndarray]:
    labels, p = check_multiclass(y, prob)
    pred = np.argmax(p, axis=1)
    return p[np.arange(labels.size), pred], pred == labels


def selective(y: Any, prob: Any, threshold: float) -> tuple[float, float | None]:
    """(coverage, selective_accuracy) when rows with ``max p >= threshold`` are answered;
    selective_accuracy is None when no row is covered."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not math.isfinite(threshold):
        raise ParamsError(f"threshold must be a finite number, got {threshold!r}",
                          hint="use the threshold chosen on the validation split")
    conf, correct = _confidence(y, prob)
    covered = conf >= threshold
    m = int(np.count_nonzero(covered))
    acc = int(np.count_nonzero(covered & correct)) / m if m else None
    return m / conf.size, acc


def choose_selective_threshold(y: Any, prob: Any, target: float) -> SelectiveChoice | None:
    """The confidence threshold with the largest coverage whose selective accuracy
    (accuracy of the top-1 prediction among covered rows) is >= ``target``.

    Candidates are the distinct confidences (a threshold equal to a confidence
    covers it); the lowest qualifying one covers the most rows. None when no
    threshold reaches the target.
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) \
            or not 0.0 < target <= 1.0:
        raise ParamsError(f"target accuracy must be in (0, 1], got {target!r}",
                          hint="set e.g. 0.95")
    conf, correct = _confidence(y, prob)
    order = np.argsort(-conf, kind="stable")
    c_desc = conf[order]
    last = np.r_[np.flatnonzero(np.diff(c_desc)), c_desc.size - 1]  # end of each tie run
    hits = np.cumsum(correct[order].astype(np.int64))[last]
    covered = last + 1
    ok = np.flatnonzero(hits / covered >= target)
    if ok.size == 0:
        return None
    best = int(ok[-1])
    return SelectiveChoice(threshold=float(c_desc[last[best]]),
                           coverage=int(covered[best]) / conf.size,
                           selective_accuracy=int(hits[best]) / int(covered[best]),
                           target=float(target))
