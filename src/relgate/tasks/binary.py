"""The binary task kind: one score per sample, labels 0/1, a threshold on the calibrated probability.

:func:`run_binary_validation` is the binary room behind :func:`relgate.tasks.validation_runner`
(the same interface as :func:`relgate.tasks.multiclass_validation.run_multiclass_validation`):
it resolves the output contract, scores the split with the calibration's input scale/offset,
checks the model (finite outputs, batch independence: :func:`model_checks`), maps the scores
through the calibration, computes every metric of :mod:`relgate.metrics` with stratified
bootstrap intervals, compares with a previous release on paired resamples
(:func:`compare_with_baseline`), applies the gates and builds the schema-valid report.

Beyond the metrics, a binary report carries ``confusion``: ``[[TN, FP], [FN, TP]]`` (rows the
true class 0, 1; columns the prediction ``prob >= threshold``), as scikit-learn lays it out.
When the calibration has a "no conclusive" band ``[low, high)`` (``calibrate.inconclusive_band``;
:func:`relgate.calibration.decide` gives -1 inside it), ``coverage`` (the share of samples outside
the band) and ``selective_precision`` (the precision of the conclusive positives: outside the
band and ``prob >= threshold``) are metrics with intervals; a gate or a baseline ``max_drop``
that names them without a band finds them undefined and fails closed.

The kind-independent parts (the outcome record, baselines, the calibration checks, the batch
check, plot writers) stay in :mod:`relgate.validation`; calibration is
:func:`relgate.calibration.calibrate_model`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.calibration import apply_calibration, load_calibration, split_name, uncalibrated_probability
from relgate.errors import DataError
from relgate.metrics import (
    ALL_METRICS,
    BOOTSTRAP_METRICS,
    SELECTIVE_METRICS,
    MetricEstimate,
    confusion_at,
    evaluate_metrics,
    health_stats,
    paired_bootstrap_delta,
)
from relgate.params import Params
from relgate.validation import (
    BATCH_ATOL,
    BATCH_RTOL,
    DEFAULT_THRESHOLD,
    SCHEMA_VERSION,
    STAT_NAMES,
    Baseline,
    ValidationOutcome,
    _file_entry,
    _sha256_data,
    batch_check,
    batch_sample,
    check_calibration_applies,
    data_columns,
)

FloatArray = npt.NDArray[np.float64]


def run_binary_validation(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    params: Params,
    calibration_path: str | os.PathLike[str] | None = None,
    model_label: str | None = None,
    data_label: str | None = None,
    calibration_label: str | None = None,
    split: str | None = None,
    threshold: float | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    positive_index: int | None = None,
    output_type: str | None = None,
    reducer: str | None = None,
    baseline: Baseline | None = None,
    progress: Callable[..., Any] | bool | None = None,
    **_labels: Any,
) -> ValidationOutcome:
    """A binary ValidationOutcome (module docstring); labels name paths in the report."""
    from relgate import schemas
    from relgate.calibration import resolve_contract, score_is_probability
    from relgate.gates import apply_gates
    from relgate.hashing import sha256_file
    from relgate.onnxmodel import model_digest
    from relgate.provenance import package_versions
    from relgate.scoring import check_output_values, score_dataset

    if params.slices is not None:  # issue 19: per-slice gates are multi-class only so far
        from relgate.errors import ParamsError

        raise ParamsError(f"{params.source}: slices: per-slice gates are built for multi-class "
                          "tasks; a binary task cannot be gated per slice yet",
                          hint="drop the slices: section, or declare task.kind: multiclass")
    model_path, data_path = Path(model_path), Path(data_path)
    contract = resolve_contract(model_path, params=params, input_name=input_name,
                                output_name=output_name, positive_index=positive_index,
                                output_type=output_type, reducer=reducer)
    digest = model_digest(model_path)
    data_sha = _sha256_data(data_path, sha256_file)

    calibration: dict[str, Any] | None = None
    calibration_ref: dict[str, Any] | None = None
    if calibration_path is not None:
        calibration = load_calibration(calibration_path, kind="binary")
        check_calibration_applies(
            calibration, model_sha256=digest.sha256, data_sha256=data_sha,
            calibration_source=str(calibration_path), data_source=str(data_path),
        )
        calibration_ref = {
            "path": calibration_label or str(calibration_path),
            "sha256": sha256_file(calibration_path),
            "fit_split_sha256": calibration["fit_split"]["sha256"],
        }

    is_prob = score_is_probability(contract)
    fit_prob = None if calibration is None else calibration["probability"]["score_is_probability"]
    if fit_prob is not None and bool(fit_prob) != is_prob:
        raise DataError(
            f"{calibration_path}: the calibration was fit on a "
            f"{'probability' if not is_prob else 'raw score'} output, but the model's score output "
            f"{contract.to_dict().get('score_output')!r} is a "
            f"{'probability' if is_prob else 'raw score'}",
            hint="validate with the same --output / --positive-index the calibration used",
        )

    scale, offset = (1.0, 0.0)
    if calibration is not None:
        scale, offset = float(calibration["input"]["scale"]), float(calibration["input"]["offset"])
    scoring: dict[str, Any] = {"threads": params.evaluate.threads, "batch_size": params.evaluate.batch_size,
                               "input_name": input_name, "output_name": output_name,
                               "positive_index": positive_index, "contract": contract,
                               "table": params.eval_data}
    result = score_dataset(model_path, data_path, scale=scale, offset=offset, progress=progress,
                           **scoring)
    warnings = check_output_values(contract, result, where=model_path)
    scores = np.asarray(result.scores, dtype=np.float64)
    y = np.asarray(result.y).astype(np.int8)
    boot = params.validate.bootstrap
    checks, failed = model_checks(model_path, data_path, scores, result.features, seed=boot.seed,
                                  scale=scale, offset=offset, **scoring)
    if threshold is not None:
        thr, thr_source = float(threshold), "command line"
    elif calibration is not None:
        thr, thr_source = float(calibration["threshold"]["value"]), "calibration"
    else:
        thr, thr_source = DEFAULT_THRESHOLD, "default"
    if not checks["finite"]["passed"]:
        prob = np.full(scores.shape, np.nan)  # no probability of a NaN; no plot points either
    elif calibration is not None:
        prob = apply_calibration(scores, calibration)
    else:
        prob = uncalibrated_probability(scores, score_is_probability=is_prob)

    health_input = result.features if result.features is not None else scores
    band = _band(calibration)
    comparison: dict[str, Any] | None = None
    confusion: list[list[int]] | None = None
    if failed:  # no metric of a model that fails its checks: every gate fails closed
        why = ("the model outputs NaN or inf" if not checks["finite"]["passed"]
               else "the model's scores depend on the batch size")
        names = ALL_METRICS + (SELECTIVE_METRICS if band is not None else ())
        estimates = {name: MetricEstimate(value=None, reason=f"not computed: {why}")
                     for name in names}
    else:
        estimates = evaluate_metrics(
            y, prob, thr, resamples=boot.resamples, confidence=boot.confidence, seed=boot.seed,
            ece_bins=params.validate.ece_bins, features=health_input, band=band,
        )
        confusion = confusion_matrix(y, prob, thr)
        if baseline is not None:
            comparison = compare_with_baseline(
                baseline, data_path, data_sha, y=y, prob=prob, threshold=thr,
                features=health_input, params=params, progress=progress, band=band,
            )
    for name in _named_selective(params):  # gated without a band: undefined, fails closed
        estimates.setdefault(name, MetricEstimate(
            value=None, reason=f"{name} undefined: the calibration has no inconclusive band "
                               "(calibrate.inconclusive_band)"))
    deltas = None if comparison is None else comparison["estimates"]
    verdict = apply_gates(params.gates, estimates, deltas=deltas,
                          baseline_name=None if baseline is None else baseline.name)
    passed = bool(verdict.passed) and not failed
    metrics = {name: est.to_dict() for name, est in sorted(estimates.items())}
    n_pos = int(np.sum(y == 1))
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "validation-report",
        "passed": passed,
        "stats": {name: _stat(metrics, name) for name in STAT_NAMES},
        "reasons": [] if passed else [*failed, *verdict.reasons],
        "model": {
            "path": model_label or str(model_path),
            "sha256": digest.sha256,
            "files": [_file_entry(f) for f in digest.files],
            "contract": contract.to_dict(),
        },
        "data": {
            "path": data_label or str(data_path),
            "sha256": data_sha,
            "split": split or split_name(data_path),
            "n": int(y.size),
            "n_pos": n_pos,
            "n_neg": int(y.size) - n_pos,
            **data_columns(params),
        },
        "calibration": calibration_ref,
        "task": {**contract.task_dict(), "warnings": warnings},
        "threshold": thr,
        "threshold_source": thr_source,
        "metrics": metrics,
        "bootstrap": {
            "resamples": boot.resamples, "confidence": boot.confidence, "seed": boot.seed,
        },
        "gates": verdict.to_dict(),
        "checks": checks,
        "environment": package_versions(),
    }
    if confusion is not None:
        report["confusion"] = confusion
    if comparison is not None:
        report["baseline"] = comparison["record"]
    schemas.validate(report, "validation-report", source="validation report")
    return ValidationOutcome(report=report, y=y, prob=prob)


def confusion_matrix(y: npt.ArrayLike, prob: npt.ArrayLike, threshold: float) -> list[list[int]]:
    """``[[TN, FP], [FN, TP]]``: rows the true class 0, 1; columns the prediction
    (``prob >= threshold``) 0, 1, as scikit-learn's ``confusion_matrix`` lays them out."""
    c = confusion_at(y, prob, threshold)
    return [[c.tn, c.fp], [c.fn, c.tp]]


def _band(calibration: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The calibration's "no conclusive" band ``[low, high)`` on the probability, if any."""
    band = None if calibration is None else calibration.get("inconclusive")
    return None if not band else (float(band["low"]), float(band["high"]))


def _named_selective(params: Params) -> list[str]:
    """The selective metrics a gate rule or a baseline max_drop names."""
    spec = params.gates
    named = {rule.metric for rule in spec.rules}
    if spec.baseline is not None:
        named |= set(spec.baseline.max_drop)
    return [name for name in SELECTIVE_METRICS if name in named]


def model_checks(model_path: Path, data_path: Path, scores: FloatArray, features: Any, *,
                 seed: int, scale: float, offset: float,
                 **scoring: Any) -> tuple[dict[str, Any], list[str]]:
    """The report's ``checks`` block and a sentence per failed check (see the module docstring).

    Non-finite outputs are the model's failure only when the inputs are finite: a NaN or
    inf in the eval set itself is bad input (DataError, exit 2), found by a second pass
    over the data that runs only when some output was not finite.
    """
    from relgate.scoring import nonfinite_inputs, score_each

    n = int(scores.shape[0])
    n_nan = int(np.isnan(scores).sum())
    n_bad = int(scores.size - np.count_nonzero(np.isfinite(scores)))
    outputs = int(scores.size)
    if features is not None:
        feats = np.asarray(features)
        outputs += int(feats.size)
        n_nan += int(np.isnan(feats).sum())
        n_bad += int(feats.size - np.count_nonzero(np.isfinite(feats)))
    finite = {"outputs": outputs, "nan": n_nan, "inf": n_bad - n_nan, "passed": n_bad == 0}
    checks: dict[str, Any] = {"finite": finite, "batch": None}
    if n_bad:
        bad_inputs = {k: v for k, v in nonfinite_inputs(model_path, data_path, **scoring).items()
                      if v}
        if bad_inputs:
            detail = ", ".join(f"{v} in {k!r}" for k, v in sorted(bad_inputs.items()))
            raise DataError(f"{data_path}: the eval set holds NaN or infinite input values "
                            f"({detail})", hint="clean the data: a model is judged on finite inputs")
        return checks, [f"the model produced {n_bad} non-finite output value(s) ({n_nan} NaN, "
                        f"{n_bad - n_nan} infinite) on {n} samples of finite inputs; a model "
                        "that outputs NaN or inf fails"]
    rows = batch_sample(n, seed=seed)
    single = score_each(model_path, data_path, rows, scale=scale, offset=offset, **scoring)
    checks["batch"] = batch_check(scores[rows], single, batch_size=int(scoring["batch_size"]),
                                  seed=seed)
    if checks["batch"]["passed"]:
        return checks, []
    b = checks["batch"]
    worst = "non-finite" if b["max_abs_diff"] is None else f"{b['max_abs_diff']:.3g}"
    return checks, [f"the scores depend on the batch size: {b['mismatched']} of {b['rows']} "
                    f"sampled rows scored one at a time differ from their batch-of-"
                    f"{b['batch_size']} scores by up to {worst} (tolerance {BATCH_ATOL:g} + "
                    f"{BATCH_RTOL:g} x |score|); served one sample at a time, the model would not "
                    "behave as validated"]


def compare_with_baseline(
    baseline: Baseline,
    data_path: Path,
    data_sha: str,
    *,
    y: npt.NDArray[np.int8],
    prob: FloatArray,
    threshold: float,
    features: Any,
    params: Params,
    progress: Callable[..., Any] | bool | None = None,
    band: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Score the previous release on the same samples and take paired deltas (candidate - baseline).

    Deltas are computed for the metrics named in ``gates.baseline.max_drop``
    (every bootstrap metric when no baseline block is set): a paired bootstrap
    (same resamples for both models) for ranking and threshold metrics, a point
    difference for the health stats. The selective metrics compare the candidate's
    *band* with the baseline calibration's own (undefined when either has none).
    Each model decides at its own threshold: the candidate at *threshold*, the baseline at
    the one its release record carries (``Baseline.threshold``), else its calibration's.
    """
    from relgate.calibration import score_is_probability
    from relgate.onnxmodel import load_contract, model_digest, require_output_type
    from relgate.scoring import check_output_values, release_sessions, score_dataset

    release_sessions()  # the candidate is scored (its scores are arrays): one model at a time
    digest = model_digest(baseline.model_path)
    if baseline.expected_sha256 is not None and digest.sha256 != baseline.expected_sha256:
        raise DataError(
            f"{baseline.model_path}: the baseline model does not match its release record "
            f"(sha256 {digest.sha256[:12]}…, recorded {baseline.expected_sha256[:12]}…)",
            hint="relgate verify the previous release's bundle, or dvc pull it again",
        )
    calibration = None
    if baseline.calibration_path is not None:
        calibration = load_calibration(baseline.calibration_path, kind="binary")
        check_calibration_applies(
            calibration, model_sha256=digest.sha256, data_sha256=data_sha,
            calibration_source=str(baseline.calibration_path), data_source=str(data_path),
        )
    contract = load_contract(baseline.model_path, output_name=baseline.output_name,
                             positive_index=baseline.positive_index, task=params.task)
    if calibration is None:  # without its calibration, the baseline's type must be known too
        require_output_type(contract, baseline.model_path)
    scale, offset = (1.0, 0.0)
    if calibration is not None:
        scale, offset = float(calibration["input"]["scale"]), float(calibration["input"]["offset"])
    result = score_dataset(
        baseline.model_path, data_path,
        threads=params.evaluate.threads, batch_size=params.evaluate.batch_size,
        output_name=baseline.output_name, positive_index=baseline.positive_index,
        scale=scale, offset=offset, progress=progress, contract=contract,
        table=params.eval_data,
    )
    if not np.array_equal(np.asarray(result.y), y):
        raise DataError(f"{data_path}: labels differ between the two scorings",
                        hint="the data file changed during validation; run again")
    check_output_values(contract, result, where=baseline.model_path)
    scores_b = np.asarray(result.scores, dtype=np.float64)
    if calibration is not None:
        prob_b = apply_calibration(scores_b, calibration)
        thr_b = float(calibration["threshold"]["value"])
    else:
        prob_b = uncalibrated_probability(scores_b,
                                          score_is_probability=score_is_probability(contract))
        thr_b = DEFAULT_THRESHOLD
    if baseline.threshold is not None:  # the threshold the baseline was released at
        thr_b = float(baseline.threshold)
    release_sessions()  # nothing scores the baseline again
    spec = params.gates.baseline
    names = sorted(spec.max_drop) if spec is not None else list(BOOTSTRAP_METRICS)
    boot = params.validate.bootstrap
    estimates: dict[str, Any] = {}
    health_c: dict[str, float | None] | None = None
    health_b: dict[str, float | None] | None = None
    for name in names:
        if name in BOOTSTRAP_METRICS or name in SELECTIVE_METRICS:
            estimates[name] = paired_bootstrap_delta(
                y, prob, prob_b, name, threshold, thr_b, resamples=boot.resamples,
                confidence=boot.confidence, seed=boot.seed, ece_bins=params.validate.ece_bins,
                band_candidate=band, band_baseline=_band(calibration),
            )
            continue
        if health_c is None or health_b is None:
            health_c = health_stats(features, prob, threshold)
            feats_b = result.features if result.features is not None else scores_b
            health_b = health_stats(feats_b, prob_b, thr_b)
        c, b = health_c.get(name), health_b.get(name)
        estimates[name] = (MetricEstimate(value=c - b) if c is not None and b is not None
                           else MetricEstimate(value=None, reason=f"{name} undefined for a model"))
    record = {
        "name": baseline.name,
        "model_sha256": digest.sha256,
        "deltas": {k: v.to_dict() for k, v in sorted(estimates.items())},
    }
    return {"estimates": estimates, "record": record}


def _stat(metrics: Mapping[str, Mapping[str, Any]], name: str) -> float | None:
    entry = metrics.get(name)
    return None if entry is None else entry.get("value")
