"""Task kind ``none``: a model without a classifier score (seed 001's feature extractor).

There are no labels and no AUC or F1: the release is gated on the contract (checked against
params ``contract:`` before anything runs), the resource budgets (:mod:`relgate.resources`)
and the health of the output, computed here in one streaming pass over the eval set:

* ``checks.finite``: every value of every model output is finite (else the report fails);
* ``checks.shape``: every output, on every batch, has the shape the graph declares (a fixed
  dimension equal, the batch dimension the rows fed; else the report fails);
* metrics ``mean_std`` (the spread: mean over the last axis's dimensions of the population
  standard deviation across samples and positions; near 0 means the output collapsed) and
  ``high_corr_frac`` (share of pairs of those dimensions with |Pearson correlation| > 0.95),
  which ``gates.rules`` may name. The health output is ``task.output``, else the first.

The eval set is an ``.npz`` of the model's inputs by name (a ``y`` is ignored). A model with
a fixed batch dimension of k is fed k rows at a time, the last batch padded by repeating its
last row (the padding's outputs are dropped).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from relgate.errors import DataError, ModelError, UsageError
from relgate.params import Params
from relgate.validation import (
    SCHEMA_VERSION,
    Baseline,
    ValidationOutcome,
    _file_entry,
    _sha256_data,
    data_columns,
)

#: what gates.rules may name for task kind none
NONE_METRICS = ("mean_std", "high_corr_frac")


def run_none_validation(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    params: Params,
    calibration_path: str | os.PathLike[str] | None = None,
    model_label: str | None = None,
    data_label: str | None = None,
    split: str | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    baseline: Baseline | None = None,
    progress: Callable[..., Any] | bool | None = None,
    **_ignored: Any,
) -> ValidationOutcome:
    """The validation outcome of a model of task kind none (module docstring)."""
    from relgate import onnxmodel, schemas, tables
    from relgate.calibration import split_name
    from relgate.gates import apply_gates
    from relgate.hashing import sha256_file
    from relgate.metrics import MetricEstimate
    from relgate.provenance import package_versions
    from relgate.scoring import EvalData

    if calibration_path is not None:
        raise UsageError("task kind none has no calibration (nothing is decided on a score)",
                         hint="drop --calibration")
    if baseline is not None:
        raise UsageError("task kind none is not compared with a baseline (no metric to compare)",
                         hint="drop --baseline and gates.baseline")
    model_path, data_path = Path(model_path), Path(data_path)
    if tables.detect_format(data_path) != "npz":
        raise DataError(f"{data_path}: task kind none reads .npz eval sets only",
                        hint="save the model's inputs by name with numpy.savez")
    contract = none_contract(model_path, input_name=input_name, output_name=output_name,
                             task=params.task)
    if params.contract is not None:
        onnxmodel.check_contract(contract, params.contract)
    digest = onnxmodel.model_digest(model_path)
    data_sha = _sha256_data(data_path, sha256_file)
    onnxmodel.probe_session(model_path, threads=params.evaluate.threads)
    session = onnxmodel.make_session(model_path, threads=params.evaluate.threads)
    try:
        ev = EvalData.open(data_path, labels="none")
        health, checks = _run(session, ev, contract, batch_size=params.evaluate.batch_size,
                              where=model_path, progress=progress)
    finally:
        del session
    failed = []
    finite, shape = checks["finite"], checks["shape"]
    if not finite["passed"]:
        failed.append(f"the model produced {finite['nan'] + finite['inf']} non-finite output "
                      f"value(s) ({finite['nan']} NaN, {finite['inf']} infinite) on {ev.n} "
                      "samples; a model that outputs NaN or inf fails")
    if not shape["passed"]:
        failed.append(f"output {shape['output']!r} returned shape {shape['observed']}, the model "
                      f"declares {shape['declared']}")
    if failed:
        why = "; ".join(failed)
        estimates = {name: MetricEstimate(value=None, reason=f"not computed: {why}")
                     for name in NONE_METRICS}
    else:
        estimates = {name: MetricEstimate(value=health[name][0], reason=health[name][1])
                     for name in NONE_METRICS}
    verdict = apply_gates(params.gates, estimates)
    passed = bool(verdict.passed) and not failed
    metrics = {name: est.to_dict() for name, est in sorted(estimates.items())}
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "validation-report",
        "passed": passed,
        "stats": {"auc": None, "mean_std": metrics["mean_std"]["value"],
                  "high_corr_frac": metrics["high_corr_frac"]["value"], "frac_sig": None},
        "reasons": [] if passed else [*failed, *verdict.reasons],
        "model": {"path": model_label or str(model_path), "sha256": digest.sha256,
                  "files": [_file_entry(f) for f in digest.files],
                  "contract": contract.to_dict()},
        "data": {"path": data_label or str(data_path), "sha256": data_sha,
                 "split": split or split_name(data_path), "n": ev.n, "n_pos": None,
                 "n_neg": None, **data_columns(params)},
        "calibration": None,
        "task": {**contract.task_dict("none"), "warnings": []},
        "threshold": 0.0,
        "metrics": metrics,
        "gates": verdict.to_dict(),
        "checks": checks,
        "environment": package_versions(),
    }
    schemas.validate(report, "validation-report", source="validation report")
    zeros = np.zeros(ev.n, dtype=np.int8)
    return ValidationOutcome(report=report, y=zeros, prob=np.full(ev.n, np.nan))


def none_contract(model_path: str | os.PathLike[str], *, input_name: str | None = None,
                  output_name: str | None = None, task: Any = None) -> Any:
    """The model's contract as task kind none reads it (``validate``, ``inspect``): the
    health output is *output_name*, else ``task.output``, else the first output; it is
    features judged on their health, never read as a score."""
    from relgate import onnxmodel

    wanted = output_name or (None if task is None else task.output)
    contract = onnxmodel.load_contract(model_path, input_name=input_name,
                                       output_name=wanted or _first_output(Path(model_path)))
    return replace(contract, output_type="features", score_kind="features", reducer=None,
                   positive_index=None,
                   type_reason="task kind none: the output is judged on its health, "
                               "not read as a score")


def _first_output(path: Path) -> str:
    """The model's first output (the health output when task.output names none)."""
    from relgate.onnxmodel import _load_proto

    outputs = [o.name for o in _load_proto(path).graph.output]
    if not outputs:
        raise ModelError(f"{path}: the model has no outputs", hint="this is not a model to judge")
    return str(outputs[0])


def _run(session: Any, ev: Any, contract: Any, *, batch_size: int, where: Path,
         progress: Callable[..., Any] | bool | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """One pass over the eval set: health of the health output, finite and shape checks."""
    from relgate.scoring import _guarded

    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in ev.shapes]
    if missing:
        raise DataError(f"{ev.source}: missing key(s) {', '.join(map(repr, missing))}; the "
                        f"model's inputs are {', '.join(map(repr, names))}",
                        hint="an eval set's keys are the model's input names")
    _check_inputs(ev, contract, names)
    fetch = [o.name for o in contract.outputs]
    declared = {o.name: o.shape for o in contract.outputs}
    dim0 = contract.input(names[0]).shape[0] if contract.input(names[0]).shape else None
    fixed = dim0 if isinstance(dim0, int) and dim0 > 0 else None
    step = fixed if fixed is not None else max(1, min(batch_size, ev.n))
    buffers = {k: np.empty((step, *ev.shapes[k][1][1:]), dtype=ev.shapes[k][0].newbyteorder("="))
               for k in names}
    stats = _Streaming()
    finite = {"outputs": 0, "nan": 0, "inf": 0, "passed": True}
    shape: dict[str, Any] = {"output": contract.score_output, "declared": None, "observed": None,
                             "passed": True}
    with ev.rows(names) as readers:
        for start in range(0, ev.n, step):
            stop = min(ev.n, start + step)
            m = stop - start
            feeds = {}
            for name, reader in readers.items():
                chunk, _ = _guarded(ev.source, name, reader, start, stop, buffers[name])
                if m < step:  # a fixed batch: pad with the last row
                    pad = buffers[name]
                    pad[:m] = chunk
                    pad[m:] = chunk[m - 1]
                    chunk = pad
                feeds[name] = chunk
            try:
                outs = session.run(fetch, feeds)
            except Exception as exc:  # onnxruntime says why in its first line
                raise ModelError(f"{where}: onnxruntime failed on samples {start}..{stop - 1}: "
                                 f"{str(exc).splitlines()[0][:300]}",
                                 hint="check that the eval set matches the model's inputs "
                                      "(relgate inspect)") from None
            for name, out in zip(fetch, outs, strict=True):
                arr = np.asarray(out)
                if shape["passed"] and not _shape_ok(declared[name], arr.shape, step):
                    shape = {"output": name, "declared": _shown(declared[name]),
                             "observed": list(arr.shape), "passed": False}
                if arr.dtype.kind in "fc":
                    live = arr[:m] if arr.ndim and arr.shape[0] == step else arr
                    bad = int(live.size - np.count_nonzero(np.isfinite(live)))
                    finite["outputs"] += int(live.size)
                    finite["nan"] += int(np.count_nonzero(np.isnan(live)))
                    finite["inf"] += bad - int(np.count_nonzero(np.isnan(live)))
                    if name == contract.score_output and shape["passed"] and bad == 0:
                        stats.add(live)
            if callable(progress):
                progress(stop, ev.n)
    finite["passed"] = finite["nan"] == 0 and finite["inf"] == 0
    if shape["passed"]:
        shape["declared"] = _shown(declared[contract.score_output])
        shape["observed"] = [ev.n, *stats.row_shape] if stats.row_shape is not None else None
    return stats.health(), {"finite": finite, "batch": None, "shape": shape}


def _check_inputs(ev: Any, contract: Any, names: list[str]) -> None:
    from relgate.onnxmodel import format_shape
    from relgate.scoring import _NP_DTYPES

    for name in names:
        info = contract.input(name)
        dtype, shape = ev.shapes[name]
        want = _NP_DTYPES.get(info.dtype)
        if want is None:
            raise ModelError(f"input {info.describe()} has a dtype relgate cannot feed",
                             hint="use a model with numeric inputs")
        if dtype.newbyteorder("=") != want:
            raise DataError(f"{ev.source}: {name!r} is {dtype}, the model wants {want}",
                            hint=f"save {name!r} as {want}")
        if len(shape) < 1 or shape[0] != ev.n:
            raise DataError(f"{ev.source}: {name!r} has {shape[0] if shape else 0} rows, the "
                            f"other inputs {ev.n}", hint="one row per sample in every input")
        if info.shape is not None and (len(shape) != len(info.shape) or any(
                isinstance(d, int) and d != s for d, s in zip(info.shape[1:], shape[1:],
                                                              strict=False))):
            raise DataError(f"{ev.source}: {name!r} has shape {list(shape)}, the model wants "
                            f"{format_shape(info.shape)}",
                            hint="reshape the eval set to the model's input shape")


def _shape_ok(declared: tuple[Any, ...] | None, got: tuple[int, ...], rows: int) -> bool:
    if declared is None:
        return True
    if len(declared) != len(got):
        return False
    for i, (d, g) in enumerate(zip(declared, got, strict=True)):
        if isinstance(d, int) and d != g:
            return False
        if i == 0 and d is not None and not isinstance(d, int) and g != rows:
            return False
    return True


def _shown(shape: tuple[Any, ...] | None) -> list[Any] | None:
    return None if shape is None else list(shape)


class _Streaming:
    """Column sums, squares and cross products of the health output's rows, where a row is
    one sample at one position and the columns are the last axis (a scalar per sample is one
    column)."""

    def __init__(self) -> None:
        self.n = 0
        self.row_shape: tuple[int, ...] | None = None
        self.total: Any = None
        self.squares: Any = None
        self.cross: Any = None

    def add(self, out: np.ndarray) -> None:
        from relgate.metrics import MAX_CORR_DIMS

        if self.row_shape is None:
            self.row_shape = tuple(int(d) for d in out.shape[1:])
        rows = out.reshape(-1, out.shape[-1] if out.ndim >= 2 else 1).astype(np.float64)
        if self.total is None:
            d = rows.shape[1]
            self.total, self.squares = np.zeros(d), np.zeros(d)
            self.cross = np.zeros((d, d)) if 2 <= d <= MAX_CORR_DIMS else None
        self.n += rows.shape[0]
        self.total += rows.sum(axis=0)
        self.squares += np.einsum("ij,ij->j", rows, rows)
        if self.cross is not None:
            self.cross += rows.T @ rows

    def health(self) -> dict[str, tuple[float | None, str | None]]:
        from relgate.metrics import HIGH_CORR, MAX_CORR_DIMS

        if not self.n:
            why = "no finite output to measure"
            return {"mean_std": (None, why), "high_corr_frac": (None, why)}
        mean = self.total / self.n
        var = np.maximum(self.squares / self.n - mean * mean, 0.0)
        std = np.sqrt(var)
        out: dict[str, tuple[float | None, str | None]] = {"mean_std": (float(std.mean()), None)}
        d = int(mean.size)
        if d < 2:
            out["high_corr_frac"] = (0.0, None)
        elif self.cross is None:
            out["high_corr_frac"] = (None, f"high_corr_frac not computed: {d} feature "
                                           f"dimensions exceed {MAX_CORR_DIMS}")
        elif self.n < 2:
            out["high_corr_frac"] = (None, "high_corr_frac undefined: fewer than 2 rows")
        else:
            cov = self.cross / self.n - np.outer(mean, mean)
            live = std > 1e-12 * max(1.0, float(np.abs(mean).max()))
            denom = np.outer(std, std)
            corr = np.zeros_like(cov)
            both = np.outer(live, live)
            corr[both] = cov[both] / denom[both]
            upper = np.triu_indices(d, k=1)
            high = int(np.count_nonzero(np.abs(corr[upper]) > HIGH_CORR))
            out["high_corr_frac"] = (high / (d * (d - 1) // 2), None)
        return out


def check_none_params(params: Mapping[str, Any], *, source: str) -> None:
    """What params may declare for task kind none: gate rules on its health metrics only, no
    baseline, no calibration threshold (nothing is decided on a score)."""
    from relgate.errors import ParamsError

    gates = params.get("gates") or {}
    for i, rule in enumerate(gates.get("rules", ())):
        if rule.get("metric") not in NONE_METRICS:
            raise ParamsError(f"{source}: gates.rules[{i}]: task kind none has no "
                              f"{rule.get('metric')!r} (no classifier score)",
                              hint=f"gate on {' or '.join(NONE_METRICS)}, and on resources:")
    if gates.get("baseline") is not None:
        raise ParamsError(f"{source}: gates.baseline: task kind none is not compared with a "
                          "previous release", hint="drop gates.baseline")
