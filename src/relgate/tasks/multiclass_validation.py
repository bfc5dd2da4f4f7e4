"""Validation of a multi-class model: the [N, K] output read as declared, every metric of
:mod:`relgate.tasks.multiclass` with stratified-bootstrap intervals, the gates applied.

The report keeps the binary report's shape (``passed``, ``stats``, ``reasons``, model
and data sha256, contract, checks, environment) so promotion, gates and reproduction read
it the same way, and adds ``task`` (kind multiclass, classes, top_k), ``data.support``
and ``confusion`` (rows true, columns predicted). ``threshold`` is 0: every sample is
predicted by argmax (no selective prediction without a calibration).

Scores are the full output matrix: logits go through softmax, probabilities (a Softmax
output, ``zipmap: False``, or a ZipMap read in its class-key order) are checked, never
clipped. Labels are 0..K-1; a ZipMap's labels are mapped through its integer class keys.
The model checks are the binary ones on the matrix: finite outputs, and a seeded sample
of rows scored one at a time within the same tolerance of its batched row.

With ``--calibration`` (a multi-class record of ``relgate calibrate``) the calibration
must belong to this model and not have been fit on the data validated; the metrics are
those of the calibrated probabilities (softmax(z / T), :mod:`relgate.tasks.multiclass_calibration`),
and a selective threshold adds ``coverage`` and ``selective_accuracy``. A calibration whose
selective target had no threshold fails closed: both metrics are undefined (their gates
fail) and the report fails with the calibration's reason. With a baseline (``gates.baseline``
or ``--baseline``) the previous release's model is scored on the same rows, through its own
calibration when it shipped one, and paired-bootstrap deltas judge ``gates.baseline.max_drop``.
``--plots-dir`` gets ``confusion.json`` (one
``{actual, predicted}`` record per sample, class names when declared) for DVC's
``confusion`` template; the binary curves are written without points.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.errors import DataError, ModelError, ParamsError
from relgate.onnxmodel import ModelContract
from relgate.params import Params
from relgate.scoring import EvalData, Scorer, release_sessions

MULTICLASS_TYPES = ("logits", "probabilities")


class MatrixScorer(Scorer):
    """A Scorer that keeps the whole [N, K] output (labels read as class labels)."""

    label_kind = "multiclass"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._out: npt.NDArray[np.float64] | None = None

    def matrix(self, data: str | os.PathLike[str] | EvalData, *, progress: Any = None
               ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """The output matrix [N, K] (float64) and the labels mapped to 0..K-1."""
        self._out = None
        result = self.score(data, progress=progress)
        out = self._out
        if out is None:
            raise ModelError(f"{self.path}: the model returned no output",
                             hint="check --output")
        self._out = None
        return out, self._class_labels(np.asarray(result.y))

    def matrix_rows(self, data: str | os.PathLike[str] | EvalData,
                    rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """The rows at *rows*, each scored on its own (batch of one)."""
        ev = self.data(data)
        picked = ev.take(self.input_names, rows)
        out: list[npt.NDArray[np.float64]] = []
        for j, i in enumerate(int(v) for v in rows):
            one = EvalData(source=f"{ev.source}[{i}]", y=ev.y[i : i + 1],
                           shapes={k: (v.dtype, (1, *v.shape[1:])) for k, v in picked.items()},
                           arrays={k: v[j : j + 1] for k, v in picked.items()})
            out.append(self.matrix(one)[0][0])
        return np.asarray(out, dtype=np.float64)

    def _collect(self, outs: list[np.ndarray], scores: np.ndarray, features: np.ndarray | None,
                 start: int, m: int, n: int) -> np.ndarray | None:
        out = self._matrix(outs[0])
        padded = self.fixed_batch is not None and out.shape[:1] == (self.fixed_batch,)
        if out.ndim != 2 or (out.shape[0] != m and not padded):
            raise ModelError(f"{self.path}: output {self.contract.score_output!r} returned shape "
                             f"{list(out.shape)} for {m} samples, expected [N, K]",
                             hint="pick the [N, K] logits or probabilities with --output")
        if self._out is None:
            self._out = np.empty((n, out.shape[1]), dtype=np.float64)
        elif out.shape[1] != self._out.shape[1]:
            raise ModelError(f"{self.path}: output width changed between batches",
                             hint="a classifier's output has a fixed number of classes")
        self._out[start : start + m] = out[:m]
        scores[start : start + m] = 0.5  # unused: the matrix is the output
        return features

    def _labels(self, ev: EvalData) -> np.ndarray:
        return ev.y.copy()

    def _class_labels(self, y: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        """Labels as class indices: a ZipMap's y holds its class keys, mapped to positions."""
        keys = self.contract.class_keys
        if keys is None:
            return y.astype(np.int64)
        if not all(isinstance(k, int) for k in keys):
            raise ModelError(f"{self.path}: the ZipMap output {self.contract.score_output!r} has "
                             f"class keys {list(keys)}, but the labels y are numbers",
                             hint="re-fit with integer labels, or export with zipmap: False")
        index = {int(k): i for i, k in enumerate(keys)}
        unknown = sorted({int(v) for v in np.unique(y)} - set(index))
        if unknown:
            raise DataError(f"labels {unknown[:5]} are not class keys of the ZipMap "
                            f"{list(keys)}", hint="labels must be the model's class keys")
        return np.array([index[int(v)] for v in y], dtype=np.int64)


def resolve_contract(model_path: Path, *, params: Params, input_name: str | None,
                     output_name: str | None, positive_index: int | None,
                     output_type: str | None, reducer: str | None) -> ModelContract:
    """The contract of a multi-class model: declared (or proven) logits or probabilities."""
    from relgate.onnxmodel import check_contract, load_contract, require_output_type

    if positive_index is not None or reducer is not None:
        raise ParamsError("--positive-index and --reducer apply to binary tasks only",
                          hint="drop them for a multi-class task")
    task = params.task
    if task is None or task.kind != "multiclass":
        from dataclasses import replace

        from relgate.params import TaskSpec
        task = replace(task, kind="multiclass", positive=None, reducer=None) if task is not None \
            else TaskSpec(kind="multiclass")
    if output_name is None and task.output is None:
        output_name = _pick_output(model_path)
    contract = load_contract(model_path, input_name=input_name, output_name=output_name,
                             task=task, output_type=output_type)
    if params.contract is not None:
        check_contract(contract, params.contract)
    kind = require_output_type(contract, model_path)
    if kind not in MULTICLASS_TYPES:
        raise ModelError(f"{model_path}: output {contract.score_output!r} holds {kind!r} "
                         f"({contract.type_reason}); a multi-class task reads logits or "
                         "probabilities", hint="declare task.output_type: logits | probabilities")
    if contract.class_keys is not None and kind != "probabilities":
        raise ModelError(f"{model_path}: a ZipMap output holds probabilities, not {kind}",
                         hint="declare task.output_type: probabilities")
    return contract


def _pick_output(model_path: Path) -> str:
    """The one output that can hold K classes (an [N, K] float tensor or a ZipMap), when the
    task names none; several or none is a refusal that lists the outputs, never a guess."""
    from relgate.onnxmodel import (
        _FLOAT_DTYPES,
        _load_proto,
        _model_file,
        _value_info,
        _zipmap_like,
    )

    outputs = [_value_info(vi) for vi in _load_proto(_model_file(model_path)).graph.output]
    fits = [t.name for t in outputs
            if _zipmap_like(t) or (t.dtype in _FLOAT_DTYPES and t.rank == 2)]
    if len(fits) == 1:
        return fits[0]
    listed = ", ".join(t.describe() for t in outputs)
    raise ModelError(f"{model_path}: {'no output' if not fits else 'several outputs'} can hold "
                     f"a multi-class output ([N, K] or a ZipMap); outputs: {listed}",
                     hint="name it with task.output (or --output)")


def run_multiclass_validation(
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
    baseline: Any = None,
    progress: Callable[..., Any] | bool | None = None,
    **_labels: Any,
) -> Any:
    """A multi-class ValidationOutcome (module docstring)."""
    from relgate import schemas
    from relgate.calibration import load_calibration, split_name
    from relgate.gates import apply_gates
    from relgate.hashing import sha256_file
    from relgate.metrics import MetricEstimate
    from relgate.onnxmodel import model_digest
    from relgate.provenance import package_versions
    from relgate.tasks import multiclass as mc
    from relgate.tasks import multiclass_calibration as mcal
    from relgate.validation import (
        BATCH_ATOL,
        BATCH_RTOL,
        SCHEMA_VERSION,
        ValidationOutcome,
        _file_entry,
        _sha256_data,
        batch_sample,
        check_calibration_applies,
        data_columns,
    )

    if threshold is not None:
        raise ParamsError("--threshold applies to binary tasks only",
                          hint="a multi-class model predicts the argmax (the no conclusive "
                               "threshold comes from calibrate.selective)")
    model_path, data_path = Path(model_path), Path(data_path)
    contract = resolve_contract(model_path, params=params, input_name=input_name,
                                output_name=output_name, positive_index=positive_index,
                                output_type=output_type, reducer=reducer)
    digest = model_digest(model_path)
    data_sha = _sha256_data(data_path, sha256_file)
    calibration: dict[str, Any] | None = None
    calibration_ref: dict[str, Any] | None = None
    if calibration_path is not None:
        calibration = load_calibration(calibration_path)
        if calibration.get("task") is None:
            raise DataError(f"{calibration_path}: a binary calibration, but the task is "
                            "multi-class", hint="re-run relgate calibrate with the multi-class "
                                                "params")
        check_calibration_applies(calibration, model_sha256=digest.sha256, data_sha256=data_sha,
                                  calibration_source=str(calibration_path),
                                  data_source=str(data_path))
        calibration_ref = _calibration_ref(calibration, calibration_label or str(calibration_path),
                                           sha256_file(calibration_path))
    scorer = MatrixScorer(model_path, threads=params.evaluate.threads,
                          batch_size=params.evaluate.batch_size, input_name=input_name,
                          contract=contract, table=params.eval_data)
    fn = progress if callable(progress) else None
    out, y = scorer.matrix(data_path, progress=fn)
    k = int(out.shape[1])
    task = params.task
    classes = None if task is None else task.classes
    if classes is not None and len(classes) != k:
        raise ParamsError(f"{params.source}: task.classes names {len(classes)} classes, but "
                          f"output {contract.score_output!r} has {k} columns",
                          hint="list one name per output column, in column order")
    top_k = tuple(t for t in (() if task is None else task.top_k))
    too_big = [t for t in top_k if t > k]
    if too_big:
        raise ParamsError(f"{params.source}: task.top_k {too_big} exceed the {k} classes",
                          hint=f"use top_k values of at most {k}")
    mc.check_labels(y, k)
    partitions = None
    if params.slices is not None:  # slice columns are checked before any metric (issue 19)
        from relgate.slice_gates import check_targets, read_partitions

        scored = scorer.data(data_path)  # a table's identity as scored: no swapped file
        partitions = read_partitions(params.slices, data_path, int(y.size),
                                     identity=getattr(scored, "identity", None))
        check_targets(params.slices, partitions)
    if calibration is not None:
        mcal.check_multiclass_calibration(calibration, n_classes=k,
                                          output_type=str(contract.output_type),
                                          source=str(calibration_path))
    asked, sel_t = mcal.selective_threshold(calibration)

    boot = params.validate.bootstrap
    n_bad = int(out.size - np.count_nonzero(np.isfinite(out)))
    n_nan = int(np.isnan(out).sum())
    checks: dict[str, Any] = {"finite": {"outputs": int(out.size), "nan": n_nan,
                                         "inf": n_bad - n_nan, "passed": n_bad == 0},
                              "batch": None}
    failed: list[str] = []
    if n_bad:
        bad_inputs = {kk: v for kk, v in scorer.data(data_path)
                      .count_nonfinite(scorer.input_names).items() if v}
        if bad_inputs:
            detail = ", ".join(f"{v} in {kk!r}" for kk, v in sorted(bad_inputs.items()))
            raise DataError(f"{data_path}: the eval set holds NaN or infinite input values "
                            f"({detail})", hint="clean the data: a model is judged on finite inputs")
        failed.append(f"the model produced {n_bad} non-finite output value(s) ({n_nan} NaN, "
                      f"{n_bad - n_nan} infinite) on {y.size} samples of finite inputs; a model "
                      "that outputs NaN or inf fails")
    else:
        rows = batch_sample(int(y.size), seed=boot.seed)
        single = scorer.matrix_rows(data_path, rows)
        diff = np.abs(single - out[rows])
        bad = ~(diff <= BATCH_ATOL + BATCH_RTOL * np.abs(out[rows]))
        row_bad = bad.any(axis=1)
        worst = float(diff.max()) if diff.size and bool(np.isfinite(diff).all()) else None
        checks["batch"] = {"rows": int(rows.size), "seed": int(boot.seed),
                           "batch_size": int(params.evaluate.batch_size),
                           "max_abs_diff": 0.0 if not diff.size else worst,
                           "tolerance": {"abs": BATCH_ATOL, "rel": BATCH_RTOL},
                           "mismatched": int(row_bad.sum()), "passed": not bool(row_bad.any())}
        if row_bad.any():
            shown = "non-finite" if worst is None else f"{worst:.3g}"
            failed.append(f"the outputs depend on the batch size: {int(row_bad.sum())} of "
                          f"{rows.size} sampled rows scored one at a time differ from their "
                          f"batched outputs by up to {shown}; served one sample at a time, "
                          "the model would not behave as validated")

    support = np.bincount(y, minlength=k)
    confusion: list[list[int]] = [[0] * k for _ in range(k)]
    plots: dict[str, bytes] = {}
    unselective: list[str] = []
    comparison: dict[str, Any] | None = None
    prob_c: npt.NDArray[np.float64] | None = None
    if failed:
        why = "; ".join(failed)
        estimates = {name: MetricEstimate(value=None, reason=f"not computed: {why}")
                     for name in mc.metric_names(k, top_k, selective=asked)}
    else:
        try:
            prob = mcal.calibrated_probabilities(out, str(contract.output_type), calibration)
        except DataError as exc:  # say which model and output contradict their declaration
            raise DataError(f"{model_path}: output {contract.score_output!r} is declared "
                            f"{contract.output_type}, but {exc.message}", hint=exc.hint) from None
        result = mc.evaluate(y, prob, n_classes=k, top_k=top_k, ece_bins=params.validate.ece_bins,
                             resamples=boot.resamples, confidence=boot.confidence, seed=boot.seed,
                             selective_threshold=sel_t)
        estimates = dict(result.metrics)
        prob_c = prob
        if asked and sel_t is None:
            assert calibration is not None
            why = (f"no conclusive threshold in {calibration_path}: "
                   f"{calibration['selective'].get('reason', 'the target was not met')}")
            unselective.append(why)
            for name in mc.SELECTIVE_METRICS:
                estimates[name] = MetricEstimate(value=None, reason=why)
        confusion = [list(r) for r in result.confusion]
        records = mc.confusion_rows(y, prob, classes=classes)
        plots["confusion.json"] = (json.dumps(records, ensure_ascii=False, indent=0) + "\n"
                                   ).encode("utf-8")
        if baseline is not None:
            scorer.close()  # its outputs are arrays: one onnxruntime session at a time
            release_sessions()
            comparison = compare_multiclass_baseline(
                baseline, data_path, data_sha, y=y, prob=prob, selective=(asked, sel_t),
                top_k=top_k, params=params, progress=fn)
    deltas = None if comparison is None else comparison["estimates"]
    verdict = apply_gates(params.gates, estimates, deltas=deltas,
                          baseline_name=None if baseline is None else baseline.name)
    failed += unselective
    slice_block, slice_reasons = _slices(params, partitions, y=y, prob=prob_c, top_k=top_k,
                                         sel_t=sel_t, comparison=comparison, failed=failed)
    passed = bool(verdict.passed) and not failed and not slice_reasons
    metrics = {name: est.to_dict() for name, est in sorted(estimates.items())}
    task_block: dict[str, Any] = {**contract.task_dict("multiclass"), "warnings": []}
    task_block["n_classes"] = k
    if classes is not None:
        task_block["classes"] = list(classes)
    if top_k:
        task_block["top_k"] = list(top_k)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "validation-report",
        "passed": passed,
        "stats": {"auc": metrics["macro_auc"].get("value"), "mean_std": None,
                  "high_corr_frac": None, "frac_sig": None},
        "reasons": [] if passed else [*failed, *verdict.reasons, *slice_reasons],
        "model": {"path": model_label or str(model_path), "sha256": digest.sha256,
                  "files": [_file_entry(f) for f in digest.files],
                  "contract": contract.to_dict()},
        "data": {"path": data_label or str(data_path), "sha256": data_sha,
                 "split": split or split_name(data_path), "n": int(y.size),
                 "n_pos": None, "n_neg": None, "support": [int(s) for s in support],
                 **data_columns(params)},
        "calibration": calibration_ref,
        "task": task_block,
        "threshold": 0.0,
        "metrics": metrics,
        "confusion": confusion,
        "bootstrap": {"resamples": boot.resamples, "confidence": boot.confidence,
                      "seed": boot.seed},
        "gates": verdict.to_dict(),
        "checks": checks,
        "environment": package_versions(),
    }
    if comparison is not None:
        report["baseline"] = comparison["record"]
    if slice_block is not None:
        report["slices"] = slice_block
    schemas.validate(report, "validation-report", source="validation report")
    # no binary curves of a multi-class model: the plots get no points (prob NaN)
    return ValidationOutcome(report=report, y=np.zeros(y.shape, dtype=np.int8),
                             prob=np.full(y.shape, np.nan), plots=plots)


def _calibration_ref(calibration: dict[str, Any], path: str, sha256: str) -> dict[str, Any]:
    """The report's calibration block: the file pinned by sha256 plus what it applied."""
    prob, sel = calibration["probability"], calibration.get("selective")
    ref: dict[str, Any] = {"path": path, "sha256": sha256,
                           "fit_split_sha256": calibration["fit_split"]["sha256"],
                           "method": prob["method"], "temperature": prob.get("temperature"),
                           "selective": None}
    if sel is not None:
        ref["selective"] = {k: sel[k] for k in ("threshold", "target_accuracy", "min_coverage")}
        if sel.get("reason"):
            ref["selective"]["reason"] = sel["reason"]
    return ref


def compare_multiclass_baseline(
    baseline: Any,
    data_path: Path,
    data_sha: str,
    *,
    y: npt.NDArray[np.int64],
    prob: npt.NDArray[np.float64],
    selective: tuple[bool, float | None],
    top_k: tuple[int, ...],
    params: Params,
    progress: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Score the previous release on the same rows (through its own calibration when it
    shipped one) and take paired-bootstrap deltas, candidate - baseline, for the metrics named
    in ``gates.baseline.max_drop`` (every scalar metric without a baseline block). A selective
    metric has a delta only when both models have a threshold; otherwise it is undefined with
    a reason, and its rule fails closed."""
    from dataclasses import replace

    from relgate.calibration import load_calibration
    from relgate.metrics import MetricEstimate
    from relgate.onnxmodel import model_digest
    from relgate.tasks import multiclass as mc
    from relgate.tasks import multiclass_calibration as mcal
    from relgate.validation import check_calibration_applies

    digest = model_digest(baseline.model_path)
    if baseline.expected_sha256 is not None and digest.sha256 != baseline.expected_sha256:
        raise DataError(
            f"{baseline.model_path}: the baseline model does not match its release record "
            f"(sha256 {digest.sha256[:12]}…, recorded {baseline.expected_sha256[:12]}…)",
            hint="relgate verify the previous release's bundle, or dvc pull it again")
    calibration = None
    if baseline.calibration_path is not None:
        calibration = load_calibration(baseline.calibration_path)
        check_calibration_applies(calibration, model_sha256=digest.sha256, data_sha256=data_sha,
                                  calibration_source=str(baseline.calibration_path),
                                  data_source=str(data_path))
    task = params.task
    if task is not None and baseline.output_name is not None:
        task = replace(task, output=baseline.output_name)
    contract = resolve_contract(Path(baseline.model_path),
                                params=replace(params, contract=None, task=task),
                                input_name=None, output_name=baseline.output_name,
                                positive_index=None, output_type=None, reducer=None)
    scorer = MatrixScorer(baseline.model_path, threads=params.evaluate.threads,
                          batch_size=params.evaluate.batch_size, contract=contract,
                          table=params.eval_data)
    out_b, y_b = scorer.matrix(data_path, progress=progress)
    scorer.close()
    if not np.array_equal(y_b, y):
        raise DataError(f"{data_path}: labels differ between the two scorings",
                        hint="the data file changed during validation, or the baseline's "
                             "class keys differ; run again")
    k = int(prob.shape[1])
    if out_b.shape[1] != k:
        raise DataError(f"{baseline.model_path}: the baseline outputs {out_b.shape[1]} classes, "
                        f"the candidate {k}", hint="compare models of the same task")
    if not np.all(np.isfinite(out_b)):
        raise DataError(f"{baseline.model_path}: the baseline produced NaN or infinite outputs",
                        hint="a baseline must be scored on finite outputs")
    if calibration is not None:
        mcal.check_multiclass_calibration(calibration, n_classes=k,
                                          output_type=str(contract.output_type),
                                          source=str(baseline.calibration_path))
    prob_b = mcal.calibrated_probabilities(out_b, str(contract.output_type), calibration)
    _, t_b = mcal.selective_threshold(calibration)
    _, t_c = selective
    spec = params.gates.baseline
    names = sorted(spec.max_drop) if spec is not None else list(mc.SCALAR_METRICS)
    pair = (t_c, t_b) if t_c is not None and t_b is not None else None
    both = pair is not None
    plain = [n for n in names if n not in mc.SELECTIVE_METRICS or both]
    boot = params.validate.bootstrap
    estimates: dict[str, Any] = dict(mc.paired_deltas(
        y, prob, prob_b, n_classes=k, top_k=top_k, ece_bins=params.validate.ece_bins,
        resamples=boot.resamples, confidence=boot.confidence, seed=boot.seed,
        selective_thresholds=pair, metrics=plain)) if plain else {}
    for name in names:
        if name not in estimates:
            who = "the candidate" if t_c is None else "the previous release"
            estimates[name] = MetricEstimate(value=None, reason=f"{name}: {who} has no "
                                                                "conclusive threshold")
    record = {"name": baseline.name, "model_sha256": digest.sha256,
              "deltas": {n: v.to_dict() for n, v in sorted(estimates.items())}}
    if calibration is not None:
        record["temperature"] = calibration["probability"].get("temperature")
    return {"estimates": estimates, "record": record, "prob": prob_b, "threshold": t_b}


def _slices(params: Params, partitions: Any, *, y: npt.NDArray[np.int64],
            prob: npt.NDArray[np.float64] | None, top_k: tuple[int, ...], sel_t: float | None,
            comparison: dict[str, Any] | None, failed: list[str]
            ) -> tuple[dict[str, Any] | None, list[str]]:
    """The report's ``slices`` section and the reasons its rules failed (issue 19,
    :mod:`relgate.slice_gates`); (None, []) when params declare no slices."""
    spec = params.slices
    if spec is None or partitions is None:
        return None, []
    from relgate.slice_gates import judge_slices

    boot = params.validate.bootstrap
    probs = None if prob is None or failed else [prob]
    thresholds: list[float | None] = [sel_t]
    if probs is not None and comparison is not None:
        probs.append(comparison["prob"])
        t_b = comparison["threshold"]
        # selective metrics per slice only when both models have a threshold
        thresholds = [sel_t, t_b] if sel_t is not None and t_b is not None else [None, None]
    base = params.gates.baseline
    block, verdict = judge_slices(
        spec, partitions, y=y, probs=probs, thresholds=thresholds, top_k=top_k,
        ece_bins=params.validate.ece_bins, resamples=boot.resamples,
        confidence=boot.confidence, seed=boot.seed,
        baseline_on="point" if base is None else base.on,
        not_computed=("not computed: " + "; ".join(failed)) if failed else None)
    return block, list(verdict.reasons)
