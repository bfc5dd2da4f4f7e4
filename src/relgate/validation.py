"""The validation report: one model, one data set, the calibration applied, every number pinned.

``validate_model`` / ``run_validation`` hand the model to its task kind's room
(:func:`relgate.tasks.validation_runner`: :mod:`relgate.tasks.binary`,
:mod:`relgate.tasks.multiclass_validation`), which scores it on a split (normally the
test split) with the calibration's input scale/offset, maps the scores through the
calibration, computes metrics with bootstrap intervals, applies the gates from params,
and returns a ``validation-report`` record that keeps the shape users already gate CI on
(``passed``, ``stats``, ``reasons``) and adds what makes it reproducible (model and data
sha256, contract, calibration, environment). Promotion calls the same function to
re-evaluate, so the report and its reproduction share one code path. This module keeps
what every kind shares: the outcome record, baselines, the checks below, the plot writers.

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
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

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

#: names that moved to the binary task kind (relgate.tasks.binary), still importable from here
_MOVED = ("model_checks", "compare_with_baseline", "run_binary_validation")


def __getattr__(name: str) -> Any:
    """Lazy re-exports of the binary kind's functions (the kind imports this module)."""
    if name in _MOVED:
        from relgate.tasks import binary

        return getattr(binary, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, kw_only=True)
class ValidationOutcome:
    """The report record plus the labels and probabilities behind it (for the plots)."""

    report: dict[str, Any]
    y: npt.NDArray[np.int8]
    prob: FloatArray
    #: more plot files by name (a multi-class report's confusion.json for DVC's confusion
    #: template); none for a binary report
    plots: Mapping[str, bytes] | None = None
    #: promote's own measurement of the resource budgets (the report keeps the reported one)
    fresh_resources: Mapping[str, Any] | None = None

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
    #: the threshold the release was validated and published at (release.json ``threshold``);
    #: None for a record published before relgate recorded it (then: its calibration's)
    threshold: float | None = None


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
        threshold=_released_threshold(record),
    )


def _released_threshold(record: Mapping[str, Any]) -> float | None:
    """The binary decision threshold a release record carries (None: not recorded, or a
    multi-class record, whose 0 means argmax and is no threshold on a probability)."""
    thr = record.get("threshold")
    if (record.get("task") or {}).get("kind") == "multiclass" or isinstance(thr, bool) \
            or not isinstance(thr, int | float):
        return None
    if not 0.0 <= float(thr) <= 1.0:
        raise DataError(f"baseline {record['name']}: release.json threshold {thr!r} is not a "
                        "probability", hint="point gates.baseline at a release relgate published")
    return float(thr)


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
    batch_size: int | None = None,
    promoting: Mapping[str, Any] | None = None,
) -> ValidationOutcome:
    """Validate *model_path* on *data_path* (module docstring); labels name paths in the report.

    *batch_size* forces the batch (promote re-evaluates at the report's); else it is sized as
    :func:`_sized_batch` says. With ``resources:`` in params, the budgets are measured when
    the evaluation is done and gated (:mod:`relgate.resources`). *promoting* is the report
    being promoted: its budgets are then gated on the measurement it records (the verdict
    must be the report's) and the fresh one is returned as ``fresh_resources``.

    The declared task kind (``task.kind``, or an ``--output-type`` of that kind) validates
    in its own module (:func:`relgate.tasks.validation_runner`): binary in
    :mod:`relgate.tasks.binary`, multi-class in :mod:`relgate.tasks.multiclass_validation`."""
    from dataclasses import replace

    from relgate.tasks import task_kind, validation_runner

    kind = task_kind(params, output_type)
    runner = validation_runner(kind)
    params, batch = _sized_batch(model_path, data_path, params, kind=kind,
                                 forced=batch_size, input_name=input_name,
                                 output_name=output_name)
    outcome: ValidationOutcome = runner(
        model_path, data_path, params=params, calibration_path=calibration_path,
        model_label=model_label, data_label=data_label, calibration_label=calibration_label,
        split=split, threshold=threshold, input_name=input_name, output_name=output_name,
        positive_index=positive_index, output_type=output_type, reducer=reducer,
        baseline=baseline, progress=progress)
    if params.resources is not None:  # budgets: measured now, gated, recorded (issue 16)
        from relgate import schemas
        from relgate.resources import apply_to_report, measure

        report = outcome.report
        usage = measure(model_path, data_path, spec=params.resources,
                        model_bytes=sum(int(f["size"]) for f in report["model"]["files"]),
                        threads=params.evaluate.threads, table=params.eval_data,
                        labels=_label_kind(kind), batch=batch)
        if promoting is None:
            apply_to_report(report, usage, params.resources)
        else:
            reported = promoting.get("resources")
            apply_to_report(report, usage, params.resources, judged_on=reported)
            outcome = replace(outcome, fresh_resources=usage)
        schemas.validate(report, "validation-report", source="validation report")
    return outcome


def _label_kind(kind: str) -> str:
    return kind if kind in ("multiclass", "none") else "binary"


def _sized_batch(model_path: str | os.PathLike[str], data_path: str | os.PathLike[str],
                 params: Params, *, kind: str, forced: int | None, input_name: str | None,
                 output_name: str | None) -> tuple[Params, dict[str, Any] | None]:
    """The params with the batch size the evaluation uses, and the record of the choice.

    *forced* (promote passes the report's) wins; else a declared ``resources.max_memory_mb``
    sizes it on a probe batch (:func:`relgate.resources.choose_batch`); else an undeclared
    ``evaluate.batch_size`` gets the memory-aware default
    (:func:`relgate.resources.default_batch`). The record is None without a budget.
    """
    from dataclasses import replace

    from relgate import resources

    requested = params.evaluate.batch_size
    spec = params.resources
    record: dict[str, Any] | None
    if forced is not None:
        chosen, record = int(forced), None
        if spec is not None:
            record = {"requested": requested, "chosen": chosen, "per_sample_bytes": None,
                      "reason": "the batch size the validation report used"}
    elif spec is not None and spec.max_memory_mb is not None:
        record = resources.choose_batch(model_path, data_path, budget_mb=spec.max_memory_mb,
                                        requested=requested, threads=params.evaluate.threads,
                                        table=params.eval_data, labels=_label_kind(kind))
        chosen = int(record["chosen"])
    else:
        chosen, record = requested, None
        if "batch_size" not in (params.raw.get("evaluate") or {}):
            shapes = resources.declared_shapes(model_path)
            if shapes is not None:
                chosen = resources.default_batch(shapes, requested)
        if spec is not None:
            record = {"requested": requested, "chosen": chosen, "per_sample_bytes": None,
                      "reason": "no memory budget: the configured batch, capped to "
                                f"{resources.DEFAULT_BATCH_BYTES // resources.MIB} MiB of "
                                "inputs and outputs"}
    if chosen != requested:
        params = replace(params, evaluate=replace(params.evaluate, batch_size=chosen))
    return params, record


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


def data_columns(params: Params) -> dict[str, Any]:
    """The report's record of how a table's columns were read (``data.columns``), when the
    params map them (``eval_data``); nothing for the default (inputs by name, labels ``y``)."""
    spec = params.eval_data
    if spec.is_default:
        return {}
    return {"columns": {"label": spec.label,
                        "inputs": {k: list(v) for k, v in sorted(spec.inputs.items())}}}


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


def slice_plot_files(report: Mapping[str, Any]) -> dict[str, bytes]:
    """``slices_<partition>_<metric>.csv`` for each metric a slice rule judges (``dvc plots``:
    one bar per slice): slice, n, gated, value, the interval and the simultaneous interval,
    worst first as in the report. UTF-8 and quoted: slice values are the eval set's text."""
    import csv
    import io

    section = report.get("slices")
    if not isinstance(section, Mapping):
        return {}
    judged = sorted({r["metric"] for r in section.get("results") or [] if r.get("metric")})
    files: dict[str, bytes] = {}
    for part in section.get("partitions") or []:
        for metric in judged:
            buf = io.StringIO()
            out = csv.writer(buf, lineterminator="\n")
            out.writerow(("slice", "n", "gated", "value", "ci_low", "ci_high", "sim_low",
                          "sim_high"))
            for sl in part.get("slices") or []:
                m = (sl.get("metrics") or {}).get(metric) or {}
                out.writerow((sl.get("key"), sl.get("n"), str(bool(sl.get("gated"))).lower(),
                              *(_cell(m.get(k)) for k in ("value", "ci_low", "ci_high",
                                                          "sim_low", "sim_high"))))
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"slices_{part['name']}_{metric}")
            files[f"{name}.csv"] = buf.getvalue().encode("utf-8")
    return files


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
    files.update(slice_plot_files(outcome.report))
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
