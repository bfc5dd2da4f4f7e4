"""From raw model outputs to calibrated probabilities and decisions, fit on the validation split.

A calibration has four parts, each recorded in ``analysis/calibration.json``
(schema ``calibration``): an input ``scale``/``offset`` chosen by AUC over a
grid (the seed's sweep), a monotone map from score to probability
(temperature or Platt scaling), a decision threshold on that probability, and
an optional "no conclusive" band around the threshold. Everything here is fit
on the validation split only; validation refuses a calibration whose fit split
is the data it evaluates. The formula that turns scores into probabilities
lives in :func:`apply_calibration` and nowhere else, so validate and promote
compute the same numbers.

The fitting code is pure numpy and deterministic (bisection and Newton with a
fixed iteration budget, no random starts): the same scores give the same bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from relgate.errors import DataError, ParamsError, SchemaError

if TYPE_CHECKING:
    from relgate.onnxmodel import ModelContract
    from relgate.params import Params

SCHEMA_VERSION = 1
# Probabilities are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before logit, so a
# probability output of exactly 0 or 1 maps to a finite score (about +-27.6).
LOGIT_EPS = 1e-12
# Temperature is searched in [T_RANGE[0], T_RANGE[1]] times the scores' spread.
T_RANGE = (1e-6, 1e6)
# Sweep AUCs closer than this count as ties (then the point nearest (1, 0) wins).
AUC_TIE = 1e-12

FloatArray = npt.NDArray[np.float64]


# ---------------------------------------------------------------- the formula


def sigmoid(z: npt.ArrayLike) -> FloatArray:
    """Numerically stable logistic function, float64."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def logit(p: npt.ArrayLike) -> FloatArray:
    """log(p / (1 - p)) with p clipped to [LOGIT_EPS, 1 - LOGIT_EPS]."""
    q = np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.asarray(np.log(q) - np.log1p(-q), dtype=np.float64)


def to_logits(scores: npt.ArrayLike, *, score_is_probability: bool) -> FloatArray:
    """The score on the logit scale: logit(p) for a probability output, else the score itself."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    return logit(s) if score_is_probability else s


def apply_calibration(scores: npt.ArrayLike, calibration: Mapping[str, Any]) -> FloatArray:
    """Calibrated probabilities for *scores* (the model's outputs on scaled/offset inputs).

    p = sigmoid(a * s + b), with s = logit(score) when the score is a probability.
    This is the one place the formula lives (see the calibration schema's description).
    """
    prob = calibration["probability"]
    s = to_logits(scores, score_is_probability=bool(prob["score_is_probability"]))
    with np.errstate(over="ignore", invalid="ignore"):  # extreme a/b saturate, not warn
        return sigmoid(float(prob["a"]) * s + float(prob["b"]))


def uncalibrated_probability(scores: npt.ArrayLike, *, score_is_probability: bool) -> FloatArray:
    """What the raw output means as a probability: itself, or sigmoid(score) for a logit."""
    if score_is_probability:
        return np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    return sigmoid(np.asarray(scores, dtype=np.float64).ravel())


def decide(prob: npt.ArrayLike, calibration: Mapping[str, Any]) -> npt.NDArray[np.int8]:
    """1 positive, 0 negative, -1 inconclusive (inside [low, high) of the band, if any)."""
    p = np.asarray(prob, dtype=np.float64)
    out = (p >= float(calibration["threshold"]["value"])).astype(np.int8)
    band = calibration.get("inconclusive")
    if band:
        out[(p >= float(band["low"])) & (p < float(band["high"]))] = -1
    return out


# ---------------------------------------------------------------- fitting


def _nll(z: FloatArray, y: FloatArray) -> float:
    """Sum of log-loss terms softplus(z) - y z, computed stably."""
    return float(np.sum(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """The temperature T > 0 minimising the NLL of sigmoid(s / T) against y.

    The NLL is convex in a = 1/T, so its derivative sum((sigmoid(a s) - y) s) is
    increasing in a: bisection on that derivative (in log a, over T_RANGE times
    the spread of s) finds the minimum deterministically. When the optimum lies
    outside the range (perfectly separable data: T -> 0; scores that rank the
    wrong way: a <= 0) the nearest bound is returned.
    """
    s = np.asarray(logits, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    spread = float(np.max(np.abs(s))) if s.size else 0.0
    if spread == 0.0:
        return 1.0
    lo, hi = math.log(1.0 / (spread * T_RANGE[1])), math.log(1.0 / (spread * T_RANGE[0]))

    def grad(log_a: float) -> float:
        a = math.exp(log_a)
        return float(np.dot(sigmoid(a * s) - t, s))

    return temperature_where_flat(grad, lo, hi)


def temperature_where_flat(grad: Callable[[float], float], lo: float, hi: float) -> float:
    """The temperature ``1/exp(a)`` where a convex NLL's derivative in ``a`` (log of 1/T)
    changes sign, by bisection on ``[lo, hi]`` (deterministic: no step sizes, no BLAS-order
    dependent line search); an optimum beyond the range gives the nearest bound."""
    if grad(lo) >= 0.0:
        return 1.0 / math.exp(lo)
    if grad(hi) <= 0.0:
        return 1.0 / math.exp(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if grad(mid) > 0.0:
            hi = mid
        else:
            lo = mid
    return 1.0 / math.exp(0.5 * (lo + hi))


def fit_platt(logits: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, float]:
    """Platt scaling: (a, b) of p = sigmoid(a s + b), by Newton's method with backtracking.

    Uses Platt's smoothed targets ((N+ + 1)/(N+ + 2) for positives, 1/(N- + 2)
    for negatives), which keep the fit finite on separable data, and the
    safeguarded Newton iteration of Lin, Lin & Weng (2007). The score is
    standardised first for conditioning and the result mapped back.
    """
    s = np.asarray(logits, dtype=np.float64).ravel()
    labels = np.asarray(y).ravel().astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    t = np.where(labels, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    mu = float(s.mean()) if s.size else 0.0
    sd = float(s.std()) if s.size else 0.0
    sd = sd if sd > 0.0 else 1.0
    x = (s - mu) / sd
    a, b = 0.0, math.log((n_pos + 1.0) / (n_neg + 1.0))
    f = _nll(a * x + b, t)
    for _ in range(100):
        p = sigmoid(a * x + b)
        d = p - t
        ga, gb = float(np.dot(d, x)), float(d.sum())
        if max(abs(ga), abs(gb)) < 1e-10 * max(1.0, float(labels.size)):
            break
        w = p * (1.0 - p)
        haa = float(np.dot(w, x * x)) + 1e-12
        hab = float(np.dot(w, x))
        hbb = float(w.sum()) + 1e-12
        det = haa * hbb - hab * hab
        da = -(hbb * ga - hab * gb) / det
        db = -(haa * gb - hab * ga) / det
        decrement = ga * da + gb * db
        step = 1.0
        while step >= 1e-10:
            na, nb = a + step * da, b + step * db
            nf = _nll(na * x + nb, t)
            if nf < f + 1e-4 * step * decrement:
                break
            step /= 2.0
        else:
            break  # no further decrease possible in float64
        a, b, f = na, nb, nf
    return a / sd, b - a * mu / sd


@dataclass(frozen=True, kw_only=True)
class ThresholdChoice:
    """The decision threshold on the calibrated probability and its scores on the fit split."""

    strategy: str
    value: float
    precision_target: float | None
    precision: float | None
    recall: float | None
    f1: float | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "value": self.value,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }
        if self.precision_target is not None:
            out["precision_target"] = self.precision_target
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdChoice:
        return cls(
            strategy=data["strategy"],
            value=float(data["value"]),
            precision_target=data.get("precision_target"),
            precision=data.get("precision"),
            recall=data.get("recall"),
            f1=data.get("f1"),
        )


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def choose_threshold(
    y: npt.ArrayLike,
    prob: npt.ArrayLike,
    *,
    strategy: str,
    precision_target: float | None = None,
    value: float | None = None,
) -> ThresholdChoice:
    """Pick the decision threshold on calibrated probabilities (decide positive when p >= value).

    max_f1: the threshold of maximal F1 (relgate.metrics.best_f1_threshold).
    precision_target: the lowest threshold whose precision reaches the target
    (relgate.metrics.precision_target_threshold); none reaching it is a
    ParamsError. fixed: *value* as given.
    """
    from relgate import metrics

    p = np.asarray(prob, dtype=np.float64).ravel()
    labels = np.asarray(y).ravel()
    if strategy == "max_f1":
        thr, _ = metrics.best_f1_threshold(labels, p)
        chosen = float(thr)
    elif strategy == "precision_target":
        if precision_target is None:
            raise ParamsError(
                "calibrate.threshold.strategy is precision_target but no precision_target is set",
                hint="add calibrate.threshold.precision_target (e.g. 0.9) to params.yaml",
            )
        found = metrics.precision_target_threshold(labels, p, precision_target)
        if found is None:
            raise ParamsError(
                f"no threshold reaches precision {precision_target:g} on the calibration split",
                hint="lower calibrate.threshold.precision_target or use strategy max_f1",
            )
        chosen = float(found)
    elif strategy == "fixed":
        if value is None:
            raise ParamsError(
                "calibrate.threshold.strategy is fixed but no value is set",
                hint="add calibrate.threshold.value (a probability in [0, 1]) to params.yaml",
            )
        chosen = float(value)
    else:
        raise ParamsError(f"unknown threshold strategy {strategy!r}",
                          hint="use max_f1, precision_target or fixed")
    chosen = min(max(chosen, 0.0), 1.0)
    at = metrics.threshold_metrics(labels, p, chosen)
    return ThresholdChoice(
        strategy=strategy,
        value=chosen,
        precision_target=None if strategy != "precision_target" else precision_target,
        precision=at["precision"],
        recall=at["recall"],
        f1=at["f1"],
    )


def inconclusive_band(prob: npt.ArrayLike, threshold: float, half_width: float | None) -> (
    dict[str, Any] | None
):
    """The 'no conclusive' band [thr - w, thr + w) clipped to [0, 1], with its share of samples."""
    if half_width is None or half_width <= 0.0:
        return None
    p = np.asarray(prob, dtype=np.float64).ravel()
    low, high = max(0.0, threshold - half_width), min(1.0, threshold + half_width)
    share = float(np.mean((p >= low) & (p < high))) if p.size else None
    return {"low": low, "high": high, "share": share}


# ---------------------------------------------------------------- the sweep


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """AUC over the scale x offset grid: auc[i][j] at scales[i], offsets[j] (None undefined)."""

    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    auc: tuple[tuple[float | None, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"scales": list(self.scales), "offsets": list(self.offsets),
                "auc": [list(row) for row in self.auc]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sweep:
        return cls(scales=tuple(data["scales"]), offsets=tuple(data["offsets"]),
                   auc=tuple(tuple(row) for row in data["auc"]))

    def best(self) -> tuple[float, float]:
        """(scale, offset) of the highest AUC; ties go to the point closest to (1, 0)."""
        cells = [
            (auc, s, o)
            for s, row in zip(self.scales, self.auc, strict=True)
            for o, auc in zip(self.offsets, row, strict=True)
            if auc is not None
        ]
        if not cells:
            raise DataError(
                "AUC is undefined at every point of the scale/offset sweep",
                hint="the calibration split needs both classes and finite scores",
            )
        top = max(c[0] for c in cells)
        tied = [c for c in cells if c[0] >= top - AUC_TIE]
        _, s, o = min(tied, key=lambda c: (math.hypot(c[1] - 1.0, c[2]), c[1], c[2]))
        return s, o

    def long_rows(self) -> list[tuple[float, float, float | None]]:
        """(scale, offset, auc) rows, scale-major, for a heatmap plot."""
        return [
            (s, o, auc)
            for s, row in zip(self.scales, self.auc, strict=True)
            for o, auc in zip(self.offsets, row, strict=True)
        ]


def sweep_auc(
    score_at: Callable[[float, float], npt.ArrayLike],
    y: npt.ArrayLike,
    scales: Sequence[float],
    offsets: Sequence[float],
) -> Sweep:
    """AUC of ``score_at(scale, offset)`` against *y* at every grid point (scale-major order)."""
    from relgate import metrics

    labels = np.asarray(y).ravel()
    rows: list[tuple[float | None, ...]] = []
    for s in scales:
        row: list[float | None] = []
        for o in offsets:
            scores = np.asarray(score_at(float(s), float(o)), dtype=np.float64).ravel()
            row.append(_auc_or_none(metrics, labels, scores))
        rows.append(tuple(row))
    return Sweep(scales=tuple(float(s) for s in scales), offsets=tuple(float(o) for o in offsets),
                 auc=tuple(rows))


def _auc_or_none(metrics: Any, labels: npt.NDArray[Any], scores: FloatArray) -> float | None:
    if not np.all(np.isfinite(scores)):
        return None
    try:
        value = metrics.roc_auc(labels, scores)
    except (ValueError, ArithmeticError, DataError):
        return None
    value = getattr(value, "value", value)  # a MetricEstimate or a float
    return _finite_or_none(value)


# ---------------------------------------------------------------- the whole fit


@dataclass(frozen=True, kw_only=True)
class ProbabilityMap:
    """p = sigmoid(a * s + b) on the logit-scale score s."""

    method: str
    a: float
    b: float
    temperature: float | None
    score_is_probability: bool

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b, "temperature": self.temperature,
                "score_is_probability": self.score_is_probability}


def fit_probability_map(
    scores: npt.ArrayLike, y: npt.ArrayLike, *, method: str, score_is_probability: bool
) -> ProbabilityMap:
    """Fit temperature, Platt, or nothing (a=1, b=0) on the logit-scale scores."""
    s = to_logits(scores, score_is_probability=score_is_probability)
    if method == "none":
        return ProbabilityMap(method="none", a=1.0, b=0.0, temperature=None,
                              score_is_probability=score_is_probability)
    if method == "temperature":
        temp = fit_temperature(s, y)
        return ProbabilityMap(method="temperature", a=1.0 / temp, b=0.0, temperature=temp,
                              score_is_probability=score_is_probability)
    if method == "platt":
        a, b = fit_platt(s, y)
        return ProbabilityMap(method="platt", a=a, b=b, temperature=None,
                              score_is_probability=score_is_probability)
    raise ParamsError(f"unknown calibration method {method!r}",
                      hint="use none, temperature or platt")


def check_labels(y: npt.ArrayLike, *, source: str) -> npt.NDArray[np.int8]:
    """Labels as int8 0/1 with both classes present (a calibration needs both)."""
    labels = np.asarray(y).ravel()
    if labels.size == 0:
        raise DataError(f"{source}: no samples", hint="calibrate on a non-empty validation split")
    if not np.all((labels == 0) | (labels == 1)):
        raise DataError(f"{source}: labels y must be 0 or 1", hint="encode the positive class as 1")
    out = labels.astype(np.int8)
    if out.min() == out.max():
        raise DataError(
            f"{source}: labels hold one class only ({int(out[0])})",
            hint="the calibration split needs positives and negatives",
        )
    return out


def fit_calibration(
    score_at: Callable[[float, float], npt.ArrayLike],
    y: npt.ArrayLike,
    *,
    scales: Sequence[float],
    offsets: Sequence[float],
    method: str,
    threshold_strategy: str,
    precision_target: float | None = None,
    threshold_value: float | None = None,
    inconclusive_half_width: float | None = None,
    ece_bins: int = 15,
    score_is_probability: bool = False,
) -> dict[str, Any]:
    """The fitted parts of a calibration record: sweep, input, probability, threshold, band, ECE.

    *score_at(scale, offset)* returns the model's scores on the fit split with
    inputs transformed as x * scale + offset. Pure given that callable.
    """
    from relgate import metrics

    labels = check_labels(y, source="calibration split")
    sweep = sweep_auc(score_at, labels, scales, offsets)
    scale, offset = sweep.best()
    raw = np.asarray(score_at(scale, offset), dtype=np.float64).ravel()
    if not np.all(np.isfinite(raw)):
        raise DataError("the model produced NaN or infinite scores on the calibration split",
                        hint="check the model and the input scale/offset grid")
    pmap = fit_probability_map(raw, labels, method=method,
                               score_is_probability=score_is_probability)
    cal_stub = {"probability": pmap.to_dict()}
    after = apply_calibration(raw, cal_stub)
    before = uncalibrated_probability(raw, score_is_probability=score_is_probability)
    choice = choose_threshold(labels, after, strategy=threshold_strategy,
                              precision_target=precision_target, value=threshold_value)
    return {
        "sweep": sweep.to_dict(),
        "input": {"scale": scale, "offset": offset},
        "probability": pmap.to_dict(),
        "threshold": choice.to_dict(),
        "inconclusive": inconclusive_band(after, choice.value, inconclusive_half_width),
        "ece": {
            "bins": ece_bins,
            "before": _unit(metrics.ece(labels, before, ece_bins)),
            "after": _unit(metrics.ece(labels, after, ece_bins)),
        },
        "brier": {
            "before": _unit(metrics.brier(labels, before)),
            "after": _unit(metrics.brier(labels, after)),
        },
    }


def _unit(value: Any) -> float | None:
    v = _finite_or_none(getattr(value, "value", value))
    return None if v is None else min(max(v, 0.0), 1.0)


# ---------------------------------------------------------------- files


def load_calibration(path: str | os.PathLike[str], *, kind: str | None = None) -> dict[str, Any]:
    """Read a calibration record strictly and validate it against the bundled schema; with
    *kind*, refuse (exit 2) a record fit for another task kind (a binary reader would
    otherwise look for fields a multi-class record does not have)."""
    from relgate import schemas
    from relgate.jsonio import read_json

    data = read_json(path)
    schemas.validate(data, "calibration", source=str(path))
    assert isinstance(data, dict)
    fit_for = "binary" if data.get("task") is None else str(data["task"]["kind"])
    if kind is not None and fit_for != kind:
        names = {"binary": "binary", "multiclass": "multi-class"}
        raise DataError(f"{path}: a {names.get(fit_for, fit_for)} calibration, but the task is "
                        f"{names.get(kind, kind)}",
                        hint=f"re-run relgate calibrate with the {names.get(kind, kind)} params")
    prob = data["probability"]
    if prob["method"] == "temperature":
        temp = prob.get("temperature")
        if temp is None or prob["b"] != 0 or not math.isclose(prob["a"] * temp, 1.0, rel_tol=1e-9):
            raise SchemaError(f"{path}: probability: temperature scaling needs temperature set, "
                              "a = 1/temperature and b = 0",
                              hint="re-run relgate calibrate instead of editing the record")
    band = data.get("inconclusive")
    if band and float(band["low"]) > float(band["high"]):
        raise SchemaError(f"{path}: inconclusive.low is above inconclusive.high",
                          hint="the band is [low, high) with low <= high")
    return data


def split_name(path: str | os.PathLike[str]) -> str:
    """A split's name from its file name: data/val.npz -> 'val'."""
    return Path(path).name.split(".")[0] or "data"


# ---------------------------------------------------------------- the model, end to end


@dataclass(frozen=True, kw_only=True)
class CalibrationOutcome:
    """The calibration record (schema-valid) and notes for the user (printed by the caller)."""

    record: dict[str, Any]
    notes: tuple[str, ...] = ()
    #: doubts about the declared output type (a logit whose values all lie in [0, 1])
    warnings: tuple[str, ...] = ()


def score_is_probability(contract: ModelContract) -> bool:
    """True when the chosen output holds probabilities, as declared or as the graph proves
    (the contract's ``output_type``); never guessed from names or values."""
    return contract.output_type in ("probability", "probabilities")


def resolve_contract(
    model_path: str | os.PathLike[str],
    *,
    params: Params,
    input_name: str | None = None,
    output_name: str | None = None,
    positive_index: int | None = None,
    output_type: str | None = None,
    reducer: str | None = None,
) -> ModelContract:
    """The model's contract with its output type settled: declared (flags over ``task:``),
    else proven by the graph, else a one-line refusal. Multi-class tasks are refused here
    (exit 2): their evaluation is not available yet. Calibrate and validate both use it."""
    from relgate.onnxmodel import check_contract, load_contract, require_output_type

    task = params.task
    multiclass = output_type in ("logits", "probabilities") or (
        task is not None and task.kind == "multiclass")
    if multiclass:
        raise ParamsError(
            f"{params.source}: the task is multi-class (task.kind: multiclass or output type "
            f"{output_type or (task.output_type if task else None)!r}); multi-class evaluation "
            "is not available yet",
            hint="relgate validates, calibrates and promotes binary classifiers only for now")
    contract = load_contract(model_path, input_name=input_name, output_name=output_name,
                             positive_index=positive_index, task=task, output_type=output_type,
                             reducer=reducer)
    if params.contract is not None:
        check_contract(contract, params.contract)
    require_output_type(contract, model_path)
    return contract


def _float_input(contract: ModelContract) -> tuple[str, bool]:
    """The input that scale/offset transform, and whether it is a float tensor."""
    name = contract.primary_input or contract.inputs[0].name
    return name, contract.input(name).dtype in ("float16", "bfloat16", "float32", "float64")


def calibrate_model(
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
    """Fit a calibration of *model_path* on *data_path* (the validation split), per params."""
    from relgate import schemas
    from relgate.hashing import sha256_file
    from relgate.onnxmodel import model_digest
    from relgate.provenance import package_versions
    from relgate.scoring import check_output_values, score_dataset

    model_path, data_path = Path(model_path), Path(data_path)
    spec = params.calibrate
    digest = model_digest(model_path)
    try:
        data_sha = sha256_file(data_path)
    except OSError as exc:
        raise DataError(f"{data_path}: cannot read ({exc.strerror or exc})",
                        hint="check the --data path") from None
    contract = resolve_contract(model_path, params=params, input_name=input_name,
                                output_name=output_name, positive_index=positive_index,
                                output_type=output_type, reducer=reducer)
    is_prob = score_is_probability(contract)

    notes: list[str] = []
    warnings: list[str] = []
    scales, offsets = tuple(spec.scales), tuple(spec.offsets)
    name, is_float = _float_input(contract)
    if not is_float and (scales, offsets) != ((1.0,), (0.0,)):
        notes.append(f"input {name!r} is not a float tensor: the scale/offset sweep is skipped "
                     "(scale 1, offset 0)")
        scales, offsets = (1.0,), (0.0,)

    cache: dict[tuple[float, float], Any] = {}

    def scored(scale: float, offset: float) -> Any:
        key = (scale, offset)
        if key not in cache:
            cache[key] = score_dataset(
                model_path, data_path, threads=params.evaluate.threads,
                batch_size=params.evaluate.batch_size, input_name=input_name,
                output_name=output_name, positive_index=positive_index,
                scale=scale, offset=offset, progress=progress, contract=contract,
                table=params.eval_data,
            )
            for w in check_output_values(contract, cache[key], where=model_path):
                if w not in warnings:
                    warnings.append(w)
        return cache[key]

    first = scored(scales[0], offsets[0])
    y = np.asarray(first.y)
    fitted = fit_calibration(
        lambda s, o: scored(s, o).scores, y,
        scales=scales, offsets=offsets, method=spec.method,
        threshold_strategy=spec.threshold.strategy,
        precision_target=spec.threshold.precision_target,
        threshold_value=spec.threshold.value,
        inconclusive_half_width=spec.inconclusive_band,
        ece_bins=spec.ece_bins,
        score_is_probability=is_prob,
    )
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "calibration",
        "model": {"path": model_label or str(model_path), "sha256": digest.sha256},
        "fit_split": {
            "name": split or split_name(data_path),
            "path": data_label or str(data_path),
            "sha256": data_sha,
            "n": int(y.size),
        },
        **fitted,
        "environment": package_versions(),
    }
    schemas.validate(record, "calibration", source="calibration record")
    return CalibrationOutcome(record=record, notes=tuple(notes), warnings=tuple(warnings))
