"""The validation report: one model, one data set, the calibration applied, every number pinned.

``validate_model`` scores a model on a split (normally the test split) with the
calibration's input scale/offset, maps the scores through the calibration,
computes metrics with bootstrap intervals and output health stats, applies the
gates from params, and returns a ``validation-report`` record that keeps the
shape users already gate CI on (``passed``, ``stats``, ``reasons``) and adds
what makes it reproducible (model and data sha256, contract, calibration,
environment). Promotion calls the same function to re-evaluate, so the report
and its reproduction share one code path.

Two calibrations are refused outright (exit 2): one fit on the very data being
validated (its numbers would be optimistic), and one fit for another model.

Two checks of the model itself come before any metric (the report's ``checks``), and a
model that fails one fails the report whatever the gates say, with every metric left
undefined so that every gate, here and in promotion's re-evaluation, fails closed:

* **finite outputs**: a NaN or inf score or feature is the model failing (exit 1 with a
  report), unless the eval set's own inputs hold NaN or inf (bad input, exit 2);
* **batch independence**: a fixed, seeded sample of rows (32) is scored again one row at a
  time and must match the batched scores within a tolerance. Deployed models often serve
  one sample at a time; a score that depends on the rest of its batch (batch statistics,
  a hostile graph) would be validated on numbers no deployment sees.

The plot helpers at the end turn labels and probabilities into small CSV
files (ROC, precision-recall, reliability diagram, the scale/offset sweep)
that ``dvc plots`` renders.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.calibration import (
    apply_calibration,
    load_calibration,
    split_name,
    uncalibrated_probability,
)
from relgate.errors import DataError
from relgate.params import Params

SCHEMA_VERSION = 1
DEFAULT_THRESHOLD = 0.5
MAX_CURVE_POINTS = 1000
STAT_NAMES = ("auc", "mean_std", "high_corr_frac", "frac_sig")
#: rows re-scored one at a time to check that a score does not depend on its batch
BATCH_CHECK_ROWS = 32
BATCH_ATOL = 1e-5
BATCH_RTOL = 1e-4

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class ValidationOutcome:
    """The report record plus the labels and probabilities behind it (for the plots)."""

    report: dict[str, Any]
    y: npt.NDArray[np.int8]
    prob: FloatArray
    #: more plot files by name (a multi-class report's confusion.json for DVC's confusion
    #: template); none for a binary report
    plots: Mapping[str, bytes] | None = None

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """The previous release to compare against: its model and the calibration it shipped with."""

    name: str
    model_path: Path
    calibration_path: Path | None = None
    output_name: str | None = None
    positive_index: int | None = None
    expected_sha256: str | None = None


def baseline_from_bundle(bundle_dir: str | os.PathLike[str], *,
                         expected_root_digest: str | None = None,
                         expected_name: str | None = None) -> Baseline:
    """The promoted model of a published bundle (``models/core/<release>/``) as a baseline.

    The bundle must verify first (against *expected_root_digest* when given, the
    digest pinned outside the bundle): a rewritten previous release must not
    become the yardstick a candidate is compared with. Then the bundle's
    ``release.json`` gives the promoted artifact's path, sha256 and contract (and
    must name *expected_name*, the release the pin was looked up for); the
    bundle's ``calibration.json`` is used when the release shipped one.
    """
    from relgate import schemas
    from relgate.bundle import verify_bundle
    from relgate.errors import VerificationFailed
    from relgate.jsonio import read_json

    folder = Path(bundle_dir)
    record_path = folder / "release.json"
    if not folder.is_dir():
        raise DataError(f"{folder}: previous release bundle not found",
                        hint="dvc pull it (or dvc import it), or drop gates.baseline")
    check = verify_bundle(folder, expected_root_digest=expected_root_digest)
    if not check.ok:
        raise VerificationFailed(f"baseline {folder} does not verify: " + "; ".join(check.reasons()),
                                 hint="restore the released bundle (dvc pull / dvc checkout)")
    record = read_json(record_path)
    schemas.validate(record, "release", source=str(record_path))
    if expected_name is not None and record["name"] != expected_name:
        raise VerificationFailed(f"baseline {folder}: release.json names release "
                                 f"{record['name']!r}, not {expected_name!r}",
                                 hint="point --baseline at the bundle of the release it is pinned as")
    promoted = [a for a in record["artifacts"] if a["role"] == "promoted"]
    if len(promoted) != 1:
        raise DataError(f"{record_path}: expected one promoted artifact, found {len(promoted)}",
                        hint="point --baseline at a bundle published by relgate promote")
    art = promoted[0]
    contract = art.get("contract") or {}
    has_calibration = (record.get("evidence") or {}).get("calibration") is not None
    return Baseline(
        name=str(record["name"]),
        model_path=folder / art["path"],
        calibration_path=folder / "calibration.json" if has_calibration else None,
        output_name=contract.get("score_output"),
        positive_index=contract.get("positive_index"),
        expected_sha256=str(art["sha256"]),
    )


def baseline_for_params(params: Params, *, root: str | os.PathLike[str] | None = None,
                        pins: str | os.PathLike[str] | None = None) -> Baseline | None:
    """The previous release named by ``gates.baseline.release``, from ``<core_dir>/<release>/``.

    None when params name no previous release (then baseline gates fail closed:
    there is nothing to compare with). A named release whose bundle is absent is
    a DataError: fetch it (``dvc pull``) rather than skip the comparison. The
    bundle must verify against the root digest pinned in ``analysis/release_<name>.json``
    of *pins* (the trusted registry checkout; default *root*, the registry itself):
    a named release without that pin is refused, never checked against its own manifest.
    """
    spec = params.gates.baseline
    if spec is None or not spec.release:
        return None
    base = Path.cwd() if root is None else Path(root)
    trusted = base if pins is None else Path(pins)
    digest = pinned_root_digest(trusted, spec.release, required=True)
    return baseline_from_bundle(base / params.release.core_dir / spec.release,
                                expected_root_digest=digest, expected_name=spec.release)


def pinned_root_digest(root: Path, release: str, *, required: bool = False) -> str | None:
    """The root digest pinned for *release* in the git-tracked ``analysis/release_<name>.json``.

    None when the registry has no such record (then only the bundle's own manifest can
    be checked); with *required*, that is a refusal (VerificationFailed, exit 1) instead.
    """
    from relgate import schemas
    from relgate.errors import VerificationFailed
    from relgate.jsonio import read_json

    path = Path(root) / "analysis" / f"release_{release}.json"
    if not path.is_file():
        if required:
            raise VerificationFailed(
                f"baseline {release!r}: no root digest is pinned for it ({path} not found), "
                "so its bundle cannot be verified",
                hint="compare only with a release the trusted registry pins "
                     "(analysis/release_<name>.json, written by relgate promote)")
        return None
    record = read_json(path)
    schemas.validate(record, "release", source=str(path))
    if record["name"] != release:
        raise VerificationFailed(f"{path}: names release {record['name']!r}, not {release!r}",
                                 hint="the record's file name and its name field must agree")
    bundle = record.get("bundle")
    if bundle is None and required:
        raise VerificationFailed(f"{path}: records no bundle.root_digest for release {release!r}, "
                                 "so its bundle cannot be verified",
                                 hint="promote the release again to record its root digest")
    return None if bundle is None else str(bundle["root_digest"])


def run_validation(
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
) -> ValidationOutcome:
    """Validate *model_path* on *data_path* (module docstring); labels name paths in the report.

    A task of another kind than binary (``task.kind``, or an ``--output-type`` of that kind)
    is validated by its own module (:func:`relgate.tasks.validation_runner`)."""
    from relgate.tasks import task_kind, validation_runner

    runner = validation_runner(task_kind(params, output_type))
    if runner is not None:
        outcome: ValidationOutcome = runner(
            model_path, data_path, params=params, calibration_path=calibration_path,
            model_label=model_label, data_label=data_label, split=split, threshold=threshold,
            input_name=input_name, output_name=output_name, positive_index=positive_index,
            output_type=output_type, reducer=reducer, baseline=baseline, progress=progress)
        return outcome
    from relgate import schemas
    from relgate.calibration import resolve_contract, score_is_probability
    from relgate.gates import apply_gates
    from relgate.hashing import sha256_file
    from relgate.metrics import evaluate_metrics
    from relgate.onnxmodel import model_digest
    from relgate.provenance import package_versions
    from relgate.scoring import check_output_values, score_dataset

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
                               "positive_index": positive_index, "contract": contract}
    result = score_dataset(model_path, data_path, scale=scale, offset=offset, progress=progress,
                           **scoring)
    warnings = check_output_values(contract, result, where=model_path)
    scores = np.asarray(result.scores, dtype=np.float64)
    y = np.asarray(result.y).astype(np.int8)
    boot = params.validate.bootstrap
    checks, failed = model_checks(model_path, data_path, scores, result.features, seed=boot.seed,
                                  scale=scale, offset=offset, **scoring)
    if calibration is not None:
        thr = float(calibration["threshold"]["value"]) if threshold is None else float(threshold)
    else:
        thr = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if not checks["finite"]["passed"]:
        prob = np.full(scores.shape, np.nan)  # no probability of a NaN; no plot points either
    elif calibration is not None:
        prob = apply_calibration(scores, calibration)
    else:
        prob = uncalibrated_probability(scores, score_is_probability=is_prob)

    health_input = result.features if result.features is not None else scores
    comparison: dict[str, Any] | None = None
    if failed:  # no metric of a model that fails its checks: every gate fails closed
        from relgate.metrics import ALL_METRICS, MetricEstimate

        why = ("the model outputs NaN or inf" if not checks["finite"]["passed"]
               else "the model's scores depend on the batch size")
        estimates = {name: MetricEstimate(value=None, reason=f"not computed: {why}")
                     for name in ALL_METRICS}
    else:
        estimates = evaluate_metrics(
            y, prob, thr, resamples=boot.resamples, confidence=boot.confidence, seed=boot.seed,
            ece_bins=params.validate.ece_bins, features=health_input,
        )
        if baseline is not None:
            comparison = compare_with_baseline(
                baseline, data_path, data_sha, y=y, prob=prob, threshold=thr,
                features=health_input, params=params, progress=progress,
            )
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
        },
        "calibration": calibration_ref,
        "task": {**contract.task_dict(), "warnings": warnings},
        "threshold": thr,
        "metrics": metrics,
        "bootstrap": {
            "resamples": boot.resamples, "confidence": boot.confidence, "seed": boot.seed,
        },
        "gates": verdict.to_dict(),
        "checks": checks,
        "environment": package_versions(),
    }
    if comparison is not None:
        report["baseline"] = comparison["record"]
    schemas.validate(report, "validation-report", source="validation report")
    return ValidationOutcome(report=report, y=y, prob=prob)


def validate_model(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    params: Params,
    calibration_path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The validation-report record (schema-valid) for *model_path* on *data_path*."""
    return run_validation(model_path, data_path, params=params, calibration_path=calibration_path,
                          **options).report


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


def batch_sample(n: int, *, seed: int, rows: int = BATCH_CHECK_ROWS) -> npt.NDArray[np.intp]:
    """A fixed, seeded, sorted sample of ``min(n, rows)`` distinct row indices."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, rows), replace=False)).astype(np.intp)


def batch_check(batched: FloatArray, single: FloatArray, *, batch_size: int,
                seed: int) -> dict[str, Any]:
    """Compare scores of the same rows scored in batches and one at a time.

    A row passes when ``|single - batched| <= BATCH_ATOL + BATCH_RTOL * |batched|``: wide
    enough for the float rounding of batched kernels, far below any real dependence on
    the other rows of a batch. A non-finite single-row score never passes.
    """
    diff = np.abs(np.asarray(single, dtype=np.float64) - np.asarray(batched, dtype=np.float64))
    bad = ~(diff <= BATCH_ATOL + BATCH_RTOL * np.abs(batched))
    worst = float(diff.max()) if diff.size and bool(np.isfinite(diff).all()) else None
    return {"rows": int(diff.size), "seed": int(seed), "batch_size": int(batch_size),
            "max_abs_diff": 0.0 if not diff.size else worst,
            "tolerance": {"abs": BATCH_ATOL, "rel": BATCH_RTOL},
            "mismatched": int(bad.sum()), "passed": not bool(bad.any())}


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
) -> dict[str, Any]:
    """Score the previous release on the same samples and take paired deltas (candidate - baseline).

    Deltas are computed for the metrics named in ``gates.baseline.max_drop``
    (every bootstrap metric when no baseline block is set): a paired bootstrap
    (same resamples for both models) for ranking and threshold metrics, a point
    difference for the health stats.
    """
    from relgate.calibration import score_is_probability
    from relgate.metrics import (
        BOOTSTRAP_METRICS,
        MetricEstimate,
        health_stats,
        paired_bootstrap_delta,
    )
    from relgate.onnxmodel import load_contract, model_digest, require_output_type
    from relgate.scoring import check_output_values, score_dataset

    digest = model_digest(baseline.model_path)
    if baseline.expected_sha256 is not None and digest.sha256 != baseline.expected_sha256:
        raise DataError(
            f"{baseline.model_path}: the baseline model does not match its release record "
            f"(sha256 {digest.sha256[:12]}…, recorded {baseline.expected_sha256[:12]}…)",
            hint="relgate verify the previous release's bundle, or dvc pull it again",
        )
    calibration = None
    if baseline.calibration_path is not None:
        calibration = load_calibration(baseline.calibration_path)
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
    spec = params.gates.baseline
    names = sorted(spec.max_drop) if spec is not None else list(BOOTSTRAP_METRICS)
    boot = params.validate.bootstrap
    estimates: dict[str, Any] = {}
    health_c: dict[str, float | None] | None = None
    health_b: dict[str, float | None] | None = None
    for name in names:
        if name in BOOTSTRAP_METRICS:
            estimates[name] = paired_bootstrap_delta(
                y, prob, prob_b, name, threshold, thr_b, resamples=boot.resamples,
                confidence=boot.confidence, seed=boot.seed, ece_bins=params.validate.ece_bins,
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


def check_calibration_applies(
    calibration: Mapping[str, Any],
    *,
    model_sha256: str,
    data_sha256: str,
    calibration_source: str = "calibration",
    data_source: str = "data",
) -> None:
    """Refuse a calibration fit on the data being validated, or fit for another model (exit 2)."""
    if calibration["fit_split"]["sha256"] == data_sha256:
        raise DataError(
            f"{calibration_source}: calibration was fit on the test split ({data_source} has the "
            f"same sha256 as its fit split {calibration['fit_split']['path']!r})",
            hint="fit the calibration on the validation split (relgate calibrate --data VAL.npz)",
        )
    check_calibration_model(calibration, model_sha256=model_sha256,
                            calibration_source=calibration_source)


def check_calibration_model(calibration: Mapping[str, Any], *, model_sha256: str,
                            calibration_source: str = "calibration") -> None:
    """Refuse a calibration that was fit for another model (exit 2)."""
    if calibration["model"]["sha256"] != model_sha256:
        raise DataError(
            f"{calibration_source}: calibration was fit for another model (sha256 "
            f"{calibration['model']['sha256'][:12]}…, this model is {model_sha256[:12]}…)",
            hint="re-run relgate calibrate for this model",
        )


def _sha256_data(path: Path, sha256_file: Callable[[Path], str]) -> str:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file", hint="check the --data path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory", hint="point --data at an .npz file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})", hint="check the file") from None


def _stat(metrics: Mapping[str, Mapping[str, Any]], name: str) -> float | None:
    entry = metrics.get(name)
    return None if entry is None else entry.get("value")


def _file_entry(entry: Any) -> dict[str, Any]:
    if isinstance(entry, Mapping):
        return {"path": entry["path"], "size": int(entry["size"]), "sha256": entry["sha256"]}
    to_dict = getattr(entry, "to_dict", None)
    if to_dict is not None:
        return _file_entry(to_dict())
    return {"path": entry.path, "size": int(entry.size), "sha256": entry.sha256}


def flat_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """A flat metrics file for ``dvc metrics``: each metric with its interval, threshold, verdict.

    Undefined values are left out (DVC skips nulls anyway) so diffs stay clean.
    """
    out: dict[str, Any] = {}
    for name, entry in sorted(report["metrics"].items()):
        for field, suffix in (("value", ""), ("ci_low", "_ci_low"), ("ci_high", "_ci_high")):
            value = entry.get(field)
            if value is not None:
                out[name + suffix] = value
    out["threshold"] = report["threshold"]
    out["gates_passed"] = bool(report["passed"])
    out["n"] = report["data"]["n"]
    return out


# ---------------------------------------------------------------- plot data


def _distinct_cuts(
    y: npt.ArrayLike, prob: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Distinct thresholds (descending) with cumulative TP and FP at ``prob >= threshold``."""
    labels = np.asarray(y).ravel().astype(bool)
    p = np.asarray(prob, dtype=np.float64).ravel()
    order = np.argsort(-p, kind="mergesort")
    ps, ls = p[order], labels[order]
    last = np.r_[ps[1:] != ps[:-1], True] if ps.size else np.zeros(0, dtype=bool)
    tp = np.cumsum(ls)[last].astype(np.float64)
    fp = np.cumsum(~ls)[last].astype(np.float64)
    return ps[last], tp, fp


def _thin(n: int, limit: int = MAX_CURVE_POINTS) -> npt.NDArray[np.intp]:
    """At most *limit* evenly spaced indices into 0..n-1, first and last kept."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.intp))


def roc_points(y: npt.ArrayLike, prob: npt.ArrayLike) -> list[tuple[float, float, float | None]]:
    """(fpr, tpr, threshold) from (0, 0) to (1, 1); threshold None for the (0, 0) start."""
    thr, tp, fp = _distinct_cuts(y, prob)
    n_pos, n_neg = (tp[-1], fp[-1]) if tp.size else (0.0, 0.0)
    if n_pos == 0 or n_neg == 0:
        return []
    keep = _thin(thr.size)
    rows: list[tuple[float, float, float | None]] = [(0.0, 0.0, None)]
    rows += [(float(fp[i] / n_neg), float(tp[i] / n_pos), float(thr[i])) for i in keep]
    return rows


def pr_points(y: npt.ArrayLike, prob: npt.ArrayLike) -> list[tuple[float, float, float]]:
    """(recall, precision, threshold) at each distinct threshold, highest threshold first."""
    thr, tp, fp = _distinct_cuts(y, prob)
    if not tp.size or tp[-1] == 0:
        return []
    keep = _thin(thr.size)
    return [(float(tp[i] / tp[-1]), float(tp[i] / (tp[i] + fp[i])), float(thr[i])) for i in keep]


def reliability_bins(
    y: npt.ArrayLike, prob: npt.ArrayLike, bins: int
) -> list[tuple[int, float, float, int, float | None, float | None]]:
    """(bin, lower, upper, count, mean predicted, observed positive rate) over equal-width bins.

    Bin k holds lower <= p < upper; the last bin also holds p == 1 (as ECE bins do).
    """
    labels = np.asarray(y).ravel().astype(np.float64)
    p = np.asarray(prob, dtype=np.float64).ravel()
    idx = np.minimum((p * bins).astype(np.intp), bins - 1)
    rows: list[tuple[int, float, float, int, float | None, float | None]] = []
    for k in range(bins):
        mask = idx == k
        count = int(mask.sum())
        rows.append((k, k / bins, (k + 1) / bins, count,
                     float(p[mask].mean()) if count else None,
                     float(labels[mask].mean()) if count else None))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(0.0 if value == 0.0 else value) if math.isfinite(value) else ""
    return str(value)


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """Deterministic CSV: shortest round-trip floats, empty cell for undefined, '\\n' line ends."""
    lines = [",".join(header)]
    lines += [",".join(_cell(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_plots(
    outcome: ValidationOutcome, folder: str | os.PathLike[str], *, bins: int
) -> list[Path]:
    """Write roc.csv, pr.csv and reliability.csv (and the outcome's own plots, e.g. a multi-class
    confusion.json) for ``dvc plots``; returns the paths written."""
    from relgate.jsonio import atomic_write_bytes

    target = Path(folder)
    keep = np.isfinite(outcome.prob)  # a model with non-finite outputs has no points to plot
    y, prob = outcome.y[keep], outcome.prob[keep]
    files = {
        "roc.csv": csv_bytes(("fpr", "tpr", "threshold"), roc_points(y, prob)),
        "pr.csv": csv_bytes(("recall", "precision", "threshold"), pr_points(y, prob)),
        "reliability.csv": csv_bytes(
            ("bin", "lower", "upper", "count", "mean_predicted", "fraction_positive"),
            reliability_bins(y, prob, bins),
        ),
    }
    files.update(outcome.plots or {})
    written = []
    for name, data in files.items():
        atomic_write_bytes(target / name, data)
        written.append(target / name)
    return written


def sweep_csv(calibration: Mapping[str, Any]) -> bytes:
    """The scale/offset sweep in long format (scale, offset, auc) for a heatmap."""
    from relgate.calibration import Sweep

    sweep = calibration.get("sweep")
    rows = [] if not sweep else Sweep.from_dict(sweep).long_rows()
    return csv_bytes(("scale", "offset", "auc"), rows)
