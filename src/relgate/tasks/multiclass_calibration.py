"""Multi-class temperature scaling and selective prediction ("no conclusive"), fit on validation.

Pure numpy and deterministic: a fixed bisection budget, no random starts, so
the same logits give the same temperature and threshold bytes.

:func:`calibrate_multiclass_model` is the calibrate stage of a multi-class task
(``relgate calibrate`` through :func:`relgate.tasks.calibration_runner`): the
temperature divides the logits, or for a ``probabilities`` output the log of the
probabilities (softmax(log p / T) is p ** (1/T) renormalised: T = 1 gives the model's
own probabilities back, so one formula serves both; a probability of exactly 0, a
float32 Softmax underflow, is floored at the smallest normal float64 and counted in
the record, never hidden). :func:`calibrated_probabilities` is the one formula that
validate, promote and evaluate apply.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from relgate.calibration import temperature_where_flat
from relgate.errors import DataError, ParamsError, SchemaError
from relgate.tasks.multiclass import (
    FloatArray,
    IntArray,
    _finite_matrix,
    check_labels,
    check_multiclass,
)

if TYPE_CHECKING:
    from relgate.calibration import CalibrationOutcome
    from relgate.params import Params

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


# ---------------------------------------------------------------- the formula, applied


#: a probability of exactly 0 becomes this before its log (log(TINY) is about -708)
TINY = float(np.finfo(np.float64).tiny)


def log_scores(out: Any, output_type: str) -> tuple[FloatArray, int]:
    """What the temperature divides: the logits as they are, or log(probabilities) with
    zeros floored at TINY; returns the matrix and how many zeros were floored."""
    from relgate.tasks import multiclass as mc

    if output_type == "logits":
        return _finite_matrix(out, what="logits", n_classes=None), 0
    p = mc.check_probabilities(out)
    zeros = int(np.count_nonzero(p <= 0.0))
    return np.log(np.maximum(p, TINY)), zeros


def calibrated_probabilities(out: Any, output_type: str,
                             calibration: Mapping[str, Any] | None) -> FloatArray:
    """The probabilities validate, promote and evaluate use: the model's own (softmax of
    logits, checked probabilities) without a calibration or with method none, else
    softmax(z / T) with z from :func:`log_scores`."""
    from relgate.tasks import multiclass as mc

    prob = None if calibration is None else calibration["probability"]
    if prob is None or prob["method"] == "none":
        return mc.softmax(out) if output_type == "logits" else mc.check_probabilities(out)
    z, _ = log_scores(out, output_type)
    return apply_temperature(z, float(prob["temperature"]))


def selective_threshold(calibration: Mapping[str, Any] | None) -> tuple[bool, float | None]:
    """(asked, threshold): whether the calibration carries a selective block, and its
    threshold (None when no threshold met the target)."""
    block = None if calibration is None else calibration.get("selective")
    if block is None:
        return False, None
    t = block.get("threshold")
    return True, None if t is None else float(t)


def check_multiclass_calibration(calibration: Mapping[str, Any], *, n_classes: int,
                                 output_type: str, source: str) -> None:
    """Refuse (exit 2) a calibration of another task kind, width or output type, and a
    temperature that is not a finite number > 0 (schema-valid JSON cannot hold NaN, but
    the check does not rely on the reader)."""
    task = calibration.get("task")
    if task is None or task.get("kind") != "multiclass":
        raise DataError(f"{source}: a binary calibration, but the task is multi-class",
                        hint="re-run relgate calibrate with the multi-class params")
    if int(task["n_classes"]) != n_classes or task["output_type"] != output_type:
        raise DataError(f"{source}: the calibration was fit on a {task['n_classes']}-class "
                        f"{task['output_type']} output, the model's output is {n_classes}-class "
                        f"{output_type}", hint="validate with the output the calibration used")
    prob = calibration["probability"]
    if prob["method"] == "temperature":
        t = prob.get("temperature")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) \
                or t <= 0:
            raise SchemaError(f"{source}: probability.temperature must be a finite number > 0, "
                              f"got {t!r}", hint="re-run relgate calibrate instead of editing "
                                                 "the record")


# ---------------------------------------------------------------- the calibrate stage


def _nll_of(y: IntArray, prob: FloatArray) -> float:
    p = prob[np.arange(y.size), y]
    with np.errstate(divide="ignore"):
        return float(np.mean(-np.log(p)))


def _choose(y: IntArray, prob: FloatArray, spec: Any) -> dict[str, Any] | None:
    if spec is None:
        return None
    target, floor = float(spec.target_accuracy), float(spec.min_coverage)
    base: dict[str, Any] = {"target_accuracy": target, "min_coverage": floor}
    choice = choose_selective_threshold(y, prob, target)
    if choice is None:
        return {**base, "threshold": None, "coverage": None, "selective_accuracy": None,
                "reason": f"no confidence threshold reaches accuracy {target:g} on the fit "
                          "split, at any coverage"}
    if choice.coverage < floor:
        return {**base, "threshold": None, "coverage": None, "selective_accuracy": None,
                "reason": f"accuracy {target:g} is reached at coverage {choice.coverage:.4g} at "
                          f"most, below min_coverage {floor:g}"}
    return {**base, "threshold": choice.threshold, "coverage": choice.coverage,
            "selective_accuracy": choice.selective_accuracy}


def calibrate_multiclass_model(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    params: Params,
    model_label: str | None = None,
    data_label: str | None = None,
    split: str | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    positive_index: int | None = None,
    output_type: str | None = None,
    reducer: str | None = None,
    progress: Callable[..., Any] | bool | None = None,
) -> CalibrationOutcome:
    """Fit the temperature (by NLL) and the selective threshold of a multi-class model on
    *data_path* (the validation split), per ``params.calibrate``; a schema-valid record."""
    from relgate import schemas
    from relgate.calibration import SCHEMA_VERSION, CalibrationOutcome, split_name
    from relgate.hashing import sha256_file
    from relgate.onnxmodel import model_digest
    from relgate.provenance import package_versions
    from relgate.tasks import multiclass as mc
    from relgate.tasks.multiclass_validation import MatrixScorer, resolve_contract

    model_path, data_path = Path(model_path), Path(data_path)
    spec = params.calibrate
    if spec.method not in ("none", "temperature"):
        raise ParamsError(f"{params.source}: calibrate.method {spec.method!r} is binary only; a "
                          "multi-class task uses temperature (or none)",
                          hint="set calibrate.method: temperature")
    notes: list[str] = []
    if (tuple(spec.scales), tuple(spec.offsets)) != ((1.0,), (0.0,)):
        raise ParamsError(f"{params.source}: calibrate.scales/offsets sweep the input of a "
                          "binary model; a multi-class calibration has no input sweep",
                          hint="set scales: [1.0] and offsets: [0.0] (or drop them)")
    contract = resolve_contract(model_path, params=params, input_name=input_name,
                                output_name=output_name, positive_index=positive_index,
                                output_type=output_type, reducer=reducer)
    digest = model_digest(model_path)
    try:
        data_sha = sha256_file(data_path)
    except OSError as exc:
        raise DataError(f"{data_path}: cannot read ({exc.strerror or exc})",
                        hint="check the --data path") from None
    scorer = MatrixScorer(model_path, threads=params.evaluate.threads,
                          batch_size=params.evaluate.batch_size, input_name=input_name,
                          contract=contract, table=params.eval_data)
    out, y = scorer.matrix(data_path, progress=progress if callable(progress) else None)
    k = int(out.shape[1])
    if not np.all(np.isfinite(out)):
        raise DataError(f"{model_path}: the model produced NaN or infinite outputs on the "
                        "calibration split", hint="a calibration needs finite outputs")
    labels = mc.check_labels(y, k)
    kind = str(contract.output_type)
    try:
        z, zeros = log_scores(out, kind)
        before = calibrated_probabilities(out, kind, None)
    except DataError as exc:
        raise DataError(f"{model_path}: output {contract.score_output!r} is declared {kind}, "
                        f"but {exc.message}", hint=exc.hint) from None
    if spec.method == "temperature":
        fitted = fit_temperature(z, labels)
        _check_not_at_bound(fitted, z, data_path)
        temperature: float | None = fitted
        after = apply_temperature(z, fitted)
        if zeros:
            notes.append(f"{zeros} probability value(s) of exactly 0 floored at {TINY:.3g} "
                         "before their log")
    else:
        temperature, after = None, before
    bins = spec.ece_bins
    pb = mc.evaluate(labels, before, n_classes=k, ece_bins=bins, resamples=0,
                     metrics=("ece",)).metrics["ece"].value
    pa = mc.evaluate(labels, after, n_classes=k, ece_bins=bins, resamples=0,
                     metrics=("ece",)).metrics["ece"].value
    selective_block = _choose(labels, after, spec.selective)
    if selective_block is not None and selective_block["threshold"] is None:
        notes.append(f"no conclusive threshold: {selective_block['reason']}")
    task: dict[str, Any] = {"kind": "multiclass", "n_classes": k,
                            "output": str(contract.score_output), "output_type": kind,
                            "fit_on": "logits" if kind == "logits" else "log_probabilities"}
    if kind == "probabilities":
        task["zero_probabilities"] = zeros
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "calibration",
        "task": task,
        "model": {"path": model_label or str(model_path), "sha256": digest.sha256},
        "fit_split": {"name": split or split_name(data_path), "path": data_label or str(data_path),
                      "sha256": data_sha, "n": int(labels.size)},
        "probability": {"method": spec.method,
                        "a": 1.0 if temperature is None else 1.0 / temperature, "b": 0.0,
                        "temperature": temperature,
                        "score_is_probability": kind == "probabilities"},
        "selective": selective_block,
        "nll": {"before": _finite(_nll_of(labels, before)), "after": _finite(_nll_of(labels, after))},
        "ece": {"bins": bins, "before": _finite(pb), "after": _finite(pa)},
        "environment": package_versions(),
    }
    schemas.validate(record, "calibration", source="calibration record")
    return CalibrationOutcome(record=record, notes=tuple(notes))


def _check_not_at_bound(t: float, z: FloatArray, data_path: Path) -> None:
    """Refuse (exit 2) a temperature that ran to an end of its search range: no finite T
    minimises the NLL (a fit split the model separates perfectly: T -> 0; logits ranking
    the wrong way: T -> infinity), so the number would be an artefact of the range."""
    spread = float(np.max(z.max(axis=1) - z.min(axis=1)))
    if spread == 0.0:
        return
    if math.isclose(t, spread * T_RANGE[0], rel_tol=1e-9):
        raise DataError(f"{data_path}: the model separates the fit split perfectly (NLL -> 0 as "
                        "the temperature -> 0): no finite temperature minimises the NLL",
                        hint="calibrate on a larger or harder validation split, or set "
                             "calibrate.method: none")
    if math.isclose(t, spread * T_RANGE[1], rel_tol=1e-9):
        raise DataError(f"{data_path}: the logits rank the classes no better than chance on the "
                        "fit split (the NLL falls as the temperature -> infinity)",
                        hint="check the labels and the declared output")


def _finite(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None
