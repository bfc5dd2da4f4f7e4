"""Rank candidate models on one eval split: paired bootstrap, tie groups, snapshot stability.

``relgate compare`` replaces the hand-written "pick the best run by F1, precision and recall
as tie-breakers, and check that its snapshots agree" script. Comparing is not a gate: it
refuses bad input (exit 2) but never says "no".

* **Candidates.** A :class:`CandidateSpec` is a name and one or more snapshots; a snapshot
  is a model with its calibration (``MODEL.onnx[:CAL.json]``) or a validation report, whose
  model and calibration are read from the paths it records (relative to *root*) and must
  have the sha256 the report records. Spec syntax: :func:`parse_candidate`.
* **One split.** Every candidate is scored on the same ``--data`` file; a report that
  names another split (by sha256), or a calibration fit on that very split, is refused.
* **Its own threshold.** A snapshot is judged at its calibration's threshold (a report's:
  the threshold it recorded), else 0.5 on the declared probability; the output type is
  never guessed (:func:`relgate.calibration.resolve_contract`).
* **Same resamples.** Every snapshot of every candidate is measured on the very same
  stratified bootstrap resamples (seed, count and confidence from ``validate.bootstrap``).
  A snapshot set's metric on a resample is the mean over its snapshots, so a set is ranked
  and paired by its mean; its first snapshot is the one it ships (``pick``), and the spread
  of the primary metric across snapshots is its stability.
* **Ranking.** Candidates are sorted by the primary metric (ascending for lower-is-better
  metrics). The leader heads group 1, with every candidate whose paired interval of the
  delta against it spans 0 ("tied with the leader"); the best remaining candidate heads
  group 2, and so on. Within a group the tie-breakers decide, then the primary metric,
  then the order given: the winner is the first of group 1 (it may differ from the leader
  when a tied candidate is better on a tie-breaker). Deltas are against the leader.

A multi-class task (``task.kind: multiclass``) ranks by its own metrics (``macro_f1``,
``accuracy``, ``top3_accuracy``, ``log_loss``...): argmax predictions on the calibrated
probabilities, resamples drawn per class (:mod:`relgate.tasks.multiclass`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.errors import DataError, Refusal, UsageError
from relgate.gates import LOWER_IS_BETTER
from relgate.metrics import (
    BOOTSTRAP_METRICS,
    SELECTIVE_METRICS,
    _interval,
    _point,
    _Ranked,
    _resampled,
    check_binary,
)
from relgate.params import Params

SCHEMA_VERSION = 1
DEFAULT_THRESHOLD = 0.5
FloatArray = npt.NDArray[np.float64]


# ---------------------------------------------------------------- candidate specs


@dataclass(frozen=True, kw_only=True)
class SnapshotSpec:
    """One model: with its calibration, or a validation report that names both."""

    model: Path | None = None
    calibration: Path | None = None
    report: Path | None = None


@dataclass(frozen=True, kw_only=True)
class CandidateSpec:
    name: str
    snapshots: tuple[SnapshotSpec, ...]


def _snapshot(text: str, spec: str) -> SnapshotSpec:
    if not text:
        raise UsageError(f"candidate {spec!r}: an empty snapshot between commas",
                         hint="write NAME=MODEL.onnx[:CAL.json][,MODEL2.onnx[:CAL2.json]...]")
    head, sep, tail = text.rpartition(":")
    if sep and tail.endswith(".json") and head:
        if not head.endswith(".onnx"):
            raise UsageError(f"candidate {spec!r}: {head!r} is not an .onnx model",
                             hint="write MODEL.onnx:CAL.json")
        return SnapshotSpec(model=Path(head), calibration=Path(tail))
    if text.endswith(".json"):
        return SnapshotSpec(report=Path(text))
    if text.endswith(".onnx"):
        return SnapshotSpec(model=Path(text))
    raise UsageError(f"candidate {spec!r}: {text!r} is neither MODEL.onnx, MODEL.onnx:CAL.json "
                     "nor a validation REPORT.json",
                     hint="write NAME=MODEL.onnx[:CAL.json] or NAME=REPORT.json")


def parse_candidate(spec: str) -> CandidateSpec:
    """``NAME=SNAP[,SNAP...]``, each SNAP ``MODEL.onnx``, ``MODEL.onnx:CAL.json`` or a
    validation ``REPORT.json``; several snapshots make a snapshot set (first one ships)."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not name or not rest:
        raise UsageError(f"candidate {spec!r}: expected NAME=MODEL.onnx[:CAL.json], "
                         "NAME=REPORT.json or NAME=A.onnx,B.onnx,...",
                         hint="e.g. run1=models/run1.onnx:analysis/cal_run1.json")
    if not all(c.isalnum() or c in "._-@+" for c in name):
        raise UsageError(f"candidate {spec!r}: name {name!r} may hold only letters, digits "
                         "and . _ - @ +", hint="e.g. run1=models/run1.onnx")
    return CandidateSpec(name=name, snapshots=tuple(_snapshot(s, spec) for s in rest.split(",")))


# ---------------------------------------------------------------- scoring


@dataclass(frozen=True, kw_only=True)
class Scored:
    """One snapshot's probabilities on the split, at its own threshold, and what it came from."""

    model: dict[str, Any]
    calibration: dict[str, Any] | None
    report: dict[str, Any] | None
    threshold: float
    threshold_source: str
    band: tuple[float, float] | None
    prob: FloatArray = field(repr=False)
    y: npt.NDArray[Any] = field(repr=False)
    #: multi-class: the selective ("no conclusive") threshold, None when the calibration has none
    selective: float | None = None


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        state = "is not a regular file" if path.exists() else "not found"
        raise DataError(f"{path}: {what} {state}", hint="check the candidate's paths")
    return path


def _from_report(spec: SnapshotSpec, root: Path, data_sha: str, data_path: Path, task_kind: str
                 ) -> tuple[Path, Path | None, dict[str, Any], float | None, dict[str, Any]]:
    """The model and calibration a validation report names, checked by sha256."""
    from relgate import schemas
    from relgate.hashing import sha256_file
    from relgate.jsonio import read_json
    from relgate.onnxmodel import model_digest

    assert spec.report is not None
    src = _existing(spec.report, "validation report")
    record = read_json(src)
    schemas.validate(record, "validation-report", source=str(src))
    kind = (record.get("task") or {}).get("kind", "binary")
    if kind != task_kind:
        raise UsageError(f"{src}: a {kind} report, but the task in --params is {task_kind}",
                         hint="compare candidates of one task kind")
    if record["data"]["sha256"] != data_sha:
        raise DataError(f"{src}: evaluated on another split ({record['data']['path']!r}, sha256 "
                        f"{record['data']['sha256'][:12]}…) than --data {data_path} "
                        f"({data_sha[:12]}…)",
                        hint="compare candidates validated on the same split")
    model = _existing(root / record["model"]["path"], "model named by the report")
    if model_digest(model).sha256 != record["model"]["sha256"]:
        raise DataError(f"{src}: model {model} does not have the sha256 the report records",
                        hint="re-run relgate validate for this model")
    cal = record.get("calibration")
    cal_path = None
    if cal is not None:
        cal_path = _existing(root / cal["path"], "calibration named by the report")
        if sha256_file(cal_path) != cal["sha256"]:
            raise DataError(f"{src}: calibration {cal_path} does not have the sha256 the report "
                            "records", hint="re-run relgate validate with this calibration")
    threshold = record.get("threshold")
    ref = {"path": str(src), "sha256": sha256_file(src)}
    return model, cal_path, record["model"].get("contract") or {}, \
        None if threshold is None else float(threshold), ref


def score_snapshot(spec: SnapshotSpec, *, data_path: Path, data_sha: str, params: Params,
                   root: Path, name: str, kind: str = "binary") -> Scored:
    """Score one snapshot on the split at its own threshold (module docstring)."""
    from relgate.calibration import (
        apply_calibration,
        load_calibration,
        resolve_contract,
        score_is_probability,
        uncalibrated_probability,
    )
    from relgate.hashing import sha256_file
    from relgate.onnxmodel import model_digest
    from relgate.scoring import check_output_values, score_dataset
    from relgate.validation import check_calibration_applies

    report_ref: dict[str, Any] | None = None
    recorded_threshold: float | None = None
    overrides: dict[str, Any] = {}
    if spec.report is not None:
        model_path, cal_path, contract_rec, recorded_threshold, report_ref = _from_report(
            spec, root, data_sha, data_path, kind)
        overrides = {"output_name": contract_rec.get("score_output"),
                     "positive_index": contract_rec.get("positive_index")}
    else:
        assert spec.model is not None
        model_path, cal_path = _existing(spec.model, "model"), spec.calibration
        if cal_path is not None:
            _existing(cal_path, "calibration")
    if kind == "multiclass":
        return _score_multiclass(model_path, cal_path, report_ref, data_path=data_path,
                                 data_sha=data_sha, params=params, name=name,
                                 output_name=overrides.get("output_name"))
    contract = resolve_contract(model_path, params=params, **overrides)
    digest = model_digest(model_path)
    calibration = None
    cal_ref = None
    if cal_path is not None:
        calibration = load_calibration(cal_path, kind="binary")
        check_calibration_applies(calibration, model_sha256=digest.sha256, data_sha256=data_sha,
                                  calibration_source=str(cal_path), data_source=str(data_path))
        if bool(calibration["probability"]["score_is_probability"]) != \
                score_is_probability(contract):
            raise DataError(f"{cal_path}: fit on another kind of output than {model_path}'s "
                            f"{contract.score_output!r} ({contract.output_type})",
                            hint="compare with the output the calibration was fit on")
        cal_ref = {"path": str(cal_path), "sha256": sha256_file(cal_path)}
    scale, offset = (1.0, 0.0) if calibration is None else (
        float(calibration["input"]["scale"]), float(calibration["input"]["offset"]))
    result = score_dataset(model_path, data_path, scale=scale, offset=offset,
                           threads=params.evaluate.threads,
                           batch_size=params.evaluate.batch_size, contract=contract,
                           table=params.eval_data, **overrides)
    check_output_values(contract, result, where=model_path)
    scores = np.asarray(result.scores, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(scores)))
    if bad:
        raise Refusal(f"candidate {name}: {model_path} outputs NaN or inf on {bad} of "
                      f"{scores.size} rows; it cannot be ranked",
                      hint="relgate validate reports which rows")
    if calibration is not None:
        prob = apply_calibration(scores, calibration)
        threshold, source = float(calibration["threshold"]["value"]), "calibration"
        band_rec = calibration.get("inconclusive")
        band = None if not band_rec else (float(band_rec["low"]), float(band_rec["high"]))
    else:
        prob = uncalibrated_probability(scores, score_is_probability=score_is_probability(contract))
        threshold, source, band = DEFAULT_THRESHOLD, "default", None
    if recorded_threshold is not None:
        threshold, source = recorded_threshold, "report"
    return Scored(model={"path": str(model_path), "sha256": digest.sha256,
                         "output": contract.score_output,
                         "output_type": contract.output_type},
                  calibration=cal_ref, report=report_ref, threshold=threshold,
                  threshold_source=source, band=band, prob=prob,
                  y=np.asarray(result.y).astype(np.int8))


def _score_multiclass(model_path: Path, cal_path: Path | None, report_ref: dict[str, Any] | None,
                      *, data_path: Path, data_sha: str, params: Params, name: str,
                      output_name: str | None) -> Scored:
    """A multi-class snapshot: calibrated probabilities [N, K], predicted by argmax (rows
    under the calibration's selective threshold, if any, are the "no conclusive" ones)."""
    from relgate.calibration import load_calibration
    from relgate.hashing import sha256_file
    from relgate.onnxmodel import model_digest
    from relgate.tasks import multiclass as mc
    from relgate.tasks import multiclass_calibration as mcal
    from relgate.tasks.multiclass_validation import MatrixScorer, resolve_contract
    from relgate.validation import check_calibration_applies

    contract = resolve_contract(model_path, params=params, input_name=None,
                                output_name=output_name, positive_index=None, output_type=None,
                                reducer=None)
    digest = model_digest(model_path)
    calibration = None
    cal_ref = None
    if cal_path is not None:
        calibration = load_calibration(cal_path, kind="multiclass")
        check_calibration_applies(calibration, model_sha256=digest.sha256, data_sha256=data_sha,
                                  calibration_source=str(cal_path), data_source=str(data_path))
        cal_ref = {"path": str(cal_path), "sha256": sha256_file(cal_path)}
    scorer = MatrixScorer(model_path, threads=params.evaluate.threads,
                          batch_size=params.evaluate.batch_size, contract=contract,
                          table=params.eval_data)
    out, y = scorer.matrix(data_path)
    bad = int(out.size - np.count_nonzero(np.isfinite(out)))
    if bad:
        raise Refusal(f"candidate {name}: {model_path} outputs {bad} NaN or infinite values; "
                      "it cannot be ranked", hint="relgate validate reports which rows")
    k = int(out.shape[1])
    mc.check_labels(y, k)
    if calibration is not None:
        mcal.check_multiclass_calibration(calibration, n_classes=k,
                                          output_type=str(contract.output_type),
                                          source=str(cal_path))
    try:
        prob = mcal.calibrated_probabilities(out, str(contract.output_type), calibration)
    except DataError as exc:
        raise DataError(f"{model_path}: output {contract.score_output!r} is declared "
                        f"{contract.output_type}, but {exc.message}", hint=exc.hint) from None
    _, selective = mcal.selective_threshold(calibration)
    return Scored(model={"path": str(model_path), "sha256": digest.sha256,
                         "output": contract.score_output, "output_type": contract.output_type},
                  calibration=cal_ref, report=report_ref,
                  threshold=0.0 if selective is None else float(selective),
                  threshold_source="argmax" if selective is None else "calibration",
                  band=None, prob=prob, y=np.asarray(y, dtype=np.int64), selective=selective)


def paired_multiclass(y: Any, probs: Sequence[FloatArray], selective: Sequence[float | None],
                      names: Sequence[str], *, resamples: int, seed: int, bins: int = 15,
                      top_k: Sequence[int] = ()
                      ) -> tuple[list[dict[str, float]], list[dict[str, FloatArray]]]:
    """The multi-class twin of :func:`paired_metrics`: resamples are drawn per class from the
    labels alone (:mod:`relgate.tasks.multiclass`), so every model sees the same rows."""
    from relgate.tasks import multiclass as mc

    k = int(probs[0].shape[1])
    labels = mc.check_labels(y, k)
    ks = tuple(top_k)
    support = np.bincount(labels, minlength=k).astype(np.int64)
    want_auc = bool({"macro_auc", "weighted_auc"} & set(names))
    points = []
    for p, t in zip(probs, selective, strict=True):
        values = mc._point(labels, p, ks, bins, t, want_auc)[0]
        points.append({n: (values[n] if mc._reason(n, support) is None else math.nan)
                       for n in names})
    defined = frozenset(n for n in names if mc._reason(n, support) is None)
    if not resamples or not defined:
        return points, [{n: np.empty(0) for n in names} for _ in probs]
    order = mc._class_order(labels)
    per_class = bool({"macro_auc", "weighted_auc", "classwise_ece"} & defined)
    models = [mc._model(labels, p, order, support, ks, bins, t, per_class)
              for p, t in zip(probs, selective, strict=True)]
    boots = mc._resampled(models, defined, resamples=resamples, seed=seed)
    return points, [{n: b.get(n, np.full(resamples, np.nan)) for n in names} for b in boots]


def check_multiclass_metrics(names: Sequence[str], *, n_classes: int, top_k: Sequence[int],
                             selective: bool) -> None:
    """Every named metric is one the multi-class task reports (selective ones need every
    snapshot to have a selective threshold)."""
    from relgate.tasks import multiclass as mc

    known = mc.metric_names(n_classes, top_k, selective=selective)
    for name in names:
        if name not in known:
            extra = "" if selective or name not in mc.SELECTIVE_METRICS else \
                " (every candidate needs a calibration with a selective threshold)"
            raise UsageError(f"unknown metric {name!r} for this multi-class task{extra}",
                             hint=f"use one of: {', '.join(known[:12])}, ...")


# ---------------------------------------------------------------- the paired engine


def paired_metrics(y: Any, probs: Sequence[FloatArray], thresholds: Sequence[float],
                   names: Sequence[str], *, resamples: int, seed: int, bins: int = 15,
                   bands: Sequence[tuple[float, float] | None] | None = None
                   ) -> tuple[list[dict[str, float]], list[dict[str, FloatArray]]]:
    """Per model: each metric's point value and its values on the very same resamples.

    The resamples are drawn once (stratified, like every relgate interval) in the first
    model's sorted order and mapped into each model's own order, as in
    :func:`relgate.metrics.paired_bootstrap_delta`, so a delta per resample is paired.
    """
    labels, _ = check_binary(y, probs[0])
    mask = labels.astype(np.bool_)
    idx_pos, idx_neg = np.flatnonzero(mask), np.flatnonzero(~mask)
    band_list = list(bands) if bands is not None else [None] * len(probs)
    rankeds, orders = [], []
    for p in probs:
        _, q = check_binary(labels, p)
        o_pos = idx_pos[np.argsort(q[idx_pos], kind="stable")]
        o_neg = idx_neg[np.argsort(q[idx_neg], kind="stable")]
        rankeds.append(_Ranked.build(q[o_pos], q[o_neg]))
        orders.append((o_pos, o_neg))
    rank = np.empty(labels.size, dtype=np.int64)
    rank[orders[0][0]] = np.arange(orders[0][0].size)
    rank[orders[0][1]] = np.arange(orders[0][1].size)
    perms = tuple(None if m == 0 else (rank[o[0]], rank[o[1]]) for m, o in enumerate(orders))
    names_t = tuple(names)
    points = [_point(r, names_t, float(t), bins, b)
              for r, t, b in zip(rankeds, thresholds, band_list, strict=True)]
    if not resamples:
        return points, [{n: np.empty(0) for n in names_t} for _ in probs]
    boots = _resampled(tuple(rankeds), perms, names_t, tuple(float(t) for t in thresholds),
                       resamples=resamples, seed=seed, bins=bins, bands=tuple(band_list))
    return points, boots


# ---------------------------------------------------------------- the comparison


def check_metrics(by: str, then: Sequence[str], kind: str = "binary") -> tuple[str, ...]:
    """The primary metric and tie-breakers, none twice; binary: each a bootstrap metric
    (multi-class names are checked once the number of classes is known)."""
    known = BOOTSTRAP_METRICS + SELECTIVE_METRICS
    names = (by, *then)
    for name in names:
        if kind == "binary" and name not in known:
            raise UsageError(f"unknown metric {name!r}", hint=f"use one of: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise UsageError(f"a metric is named twice in --by/--then: {', '.join(names)}",
                         hint="name each metric once")
    return names


def _sign(name: str) -> float:
    """+1 where larger is better, -1 where smaller is (the sort key is sign * value)."""
    return -1.0 if name in LOWER_IS_BETTER else 1.0


def _key(values: Mapping[str, float], names: Sequence[str]) -> tuple[float, ...]:
    """Sort key: better first; an undefined (NaN) value sorts last."""
    return tuple(-_sign(n) * values[n] if math.isfinite(values[n]) else math.inf for n in names)


def _estimate(value: float, boot: FloatArray, confidence: float) -> dict[str, Any]:
    if not math.isfinite(value):
        return {"value": None, "reason": "undefined on this split"}
    lo, hi = _interval(boot, confidence) if boot.size else (None, None)
    out: dict[str, Any] = {"value": value}
    if lo is not None and hi is not None:
        out["ci_low"], out["ci_high"] = lo, hi
    return out


def compare(specs: Sequence[CandidateSpec], *, data_path: str | os.PathLike[str],
            params: Params, by: str = "f1", then: Sequence[str] = (),
            root: str | os.PathLike[str] | None = None,
            data_label: str | None = None) -> dict[str, Any]:
    """The ``compare`` record (schema-valid) ranking *specs* on *data_path* (module docstring)."""
    from relgate import schemas
    from relgate.hashing import sha256_file
    from relgate.tasks import task_kind
    from relgate.validation import _sha256_data

    kind = task_kind(params)
    names = check_metrics(by, then, kind)
    if len(specs) < 2:
        raise UsageError("compare needs at least two candidates", hint="name two or more")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise UsageError(f"candidate name {spec.name!r} is given twice",
                             hint="give every candidate its own NAME=")
        seen.add(spec.name)
    data = Path(data_path)
    data_sha = _sha256_data(data, sha256_file)
    base = Path.cwd() if root is None else Path(root)
    scored = [[score_snapshot(s, data_path=data, data_sha=data_sha, params=params, root=base,
                              name=spec.name, kind=kind) for s in spec.snapshots]
              for spec in specs]
    flat = [s for group in scored for s in group]
    y = flat[0].y
    boot = params.validate.bootstrap
    if kind == "multiclass":
        k = {int(s.prob.shape[1]) for s in flat}
        if len(k) != 1:
            raise DataError(f"candidates output different numbers of classes ({sorted(k)})",
                            hint="compare models of the same task")
        top_k = tuple(() if params.task is None else params.task.top_k)
        check_multiclass_metrics(names, n_classes=k.pop(), top_k=top_k,
                                 selective=all(s.selective is not None for s in flat))
        points, boots = paired_multiclass(y, [s.prob for s in flat],
                                          [s.selective for s in flat], names,
                                          resamples=boot.resamples, seed=boot.seed,
                                          bins=params.validate.ece_bins, top_k=top_k)
    else:
        points, boots = paired_metrics(y, [s.prob for s in flat], [s.threshold for s in flat],
                                       names, resamples=boot.resamples, seed=boot.seed,
                                       bins=params.validate.ece_bins,
                                       bands=[s.band for s in flat])
    cands: list[dict[str, Any]] = []
    at = 0
    for spec, group in zip(specs, scored, strict=True):
        m = len(group)
        pts = points[at:at + m]
        bts = boots[at:at + m]
        at += m
        mean_pt = {n: float(np.mean([p[n] for p in pts])) for n in names}
        mean_bt = {n: np.mean(np.stack([b[n] for b in bts]), axis=0) for n in names}
        cands.append({"spec": spec, "group": group, "pts": pts, "point": mean_pt,
                      "boot": mean_bt})
    ranked = _rank(cands, names, boot.confidence)
    record = _record(ranked, names, data=data, data_label=data_label, data_sha=data_sha, y=y,
                     params=params, kind=kind)
    schemas.validate(record, "compare", source="compare record")
    return record


def _rank(cands: list[dict[str, Any]], names: Sequence[str], confidence: float
          ) -> list[dict[str, Any]]:
    """Groups of candidates not distinguishable on the primary metric (module docstring)."""
    primary = names[0]
    order = sorted(range(len(cands)), key=lambda i: _key(cands[i]["point"], (primary,)))
    left = list(order)
    out: list[dict[str, Any]] = []
    group = 0
    while left:
        group += 1
        head = cands[left[0]]
        members = [left[0]]
        for i in left[1:]:
            delta = cands[i]["boot"][primary] - head["boot"][primary]
            lo, hi = _interval(delta, confidence) if delta.size else (None, None)
            if lo is None or hi is None or lo <= 0.0 <= hi:
                members.append(i)
        for i in members:
            left.remove(i)
        within = sorted(members, key=lambda i: (*_key(cands[i]["point"], (*names[1:], primary)),
                                                i))
        for i in within:
            out.append({**cands[i], "group_no": group, "head": head})
    return out


def _record(ranked: list[dict[str, Any]], names: Sequence[str], *, data: Path,
            data_label: str | None, data_sha: str, y: npt.NDArray[Any],
            params: Params, kind: str) -> dict[str, Any]:
    boot = params.validate.bootstrap
    primary = names[0]
    leader = ranked[0]["head"]  # the best on the primary metric; the tie test is against it
    rows = []
    for rank, c in enumerate(ranked, start=1):
        deltas = {}
        for n in names:
            d_point = c["point"][n] - leader["point"][n]
            d_boot = c["boot"][n] - leader["boot"][n]
            deltas[n] = _estimate(d_point, d_boot, boot.confidence)
        snaps = [{"model": s.model, "calibration": s.calibration, "report": s.report,
                  "threshold": s.threshold, "threshold_source": s.threshold_source,
                  "metrics": {n: (p[n] if math.isfinite(p[n]) else None) for n in names}}
                 for s, p in zip(c["group"], c["pts"], strict=True)]
        values = np.array([p[primary] for p in c["pts"]], dtype=np.float64)
        stability = None
        if len(snaps) > 1 and bool(np.isfinite(values).all()):
            stability = {"metric": primary, "snapshots": len(snaps),
                         "mean": float(values.mean()), "std": float(values.std(ddof=1)),
                         "min": float(values.min()), "max": float(values.max())}
        first = c["group"][0]
        rows.append({
            "rank": rank, "name": c["spec"].name, "group": c["group_no"],
            "tied_with_leader": c["group_no"] == 1 and c["spec"] is not leader["spec"],
            "metrics": {n: _estimate(c["point"][n], c["boot"][n], boot.confidence)
                        for n in names},
            "delta_vs_leader": deltas,
            "stability": stability,
            "pick": {"model": first.model["path"],
                     "calibration": None if first.calibration is None
                     else first.calibration["path"]},
            "snapshots": snaps,
        })
    data_rec: dict[str, Any] = {"path": data_label or str(data), "sha256": data_sha,
                                "n": int(y.size)}
    if kind == "binary":
        n_pos = int(np.sum(y == 1))
        data_rec.update(n_pos=n_pos, n_neg=int(y.size) - n_pos)
    else:
        data_rec["support"] = [int(v) for v in np.bincount(y)]
    return {
        "schema_version": SCHEMA_VERSION, "kind": "compare", "task": kind,
        "data": data_rec,
        "by": primary, "then": list(names[1:]),
        "lower_is_better": [n for n in names if n in LOWER_IS_BETTER],
        "bootstrap": {"resamples": boot.resamples, "confidence": boot.confidence,
                      "seed": boot.seed},
        "leader": leader["spec"].name,
        "winner": rows[0]["name"],
        "candidates": rows,
    }
