"""relgate validate: metrics with intervals, health stats and gates for a model on a split.

With ``--pins DIR`` it is the pull-request judge (release-gate.yml): DIR is the base
branch's checkout, and nothing the candidate supplies is trusted for what DIR pins. Every
baseline must verify against the root digest in DIR's ``analysis/release_<name>.json``;
the test split and the split the calibration claims it was fit on must be the files DIR's
``dvc.lock`` pins (their md5), and the fit split's sha256 must be the one the calibration
records. Anything unpinned or different is a refusal (exit 1), never a fallback.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from relgate.commands._options import add_model_selection, add_variant_option, resolve_variant
from relgate.errors import EXIT_OK, EXIT_REFUSED

HELP = ("validate a model on a split (calibration applied): metrics with intervals, gates, "
        "a schema-valid report; exit 1 when gates fail")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="MODEL.onnx",
                        help="the ONNX model (required unless --variant names one)")
    parser.add_argument("--data", metavar="TEST.npz",
                        help="the split to validate on (.npz: the model's input names plus y; "
                             "default with --variant: the variant's data)")
    parser.add_argument("--calibration", metavar="FILE",
                        help="a calibration record from relgate calibrate (refused when it was "
                             "fit on this data or for another model); default: raw scores")
    parser.add_argument("--out", metavar="FILE",
                        help="where to write the validation report (default: "
                             "analysis/validation_report.json; with --variant, its report)")
    parser.add_argument("--params", default="params.yaml", metavar="FILE",
                        help="params file with gates:, validate: and evaluate: "
                             "(default: %(default)s)")
    parser.add_argument("--metrics-out", metavar="FILE",
                        help="also write a flat metrics file for dvc metrics")
    parser.add_argument("--plots-dir", metavar="DIR",
                        help="also write roc.csv, pr.csv and reliability.csv for dvc plots")
    parser.add_argument("--threshold", type=float, metavar="P",
                        help="decision threshold on the probability (default: the calibration's, "
                             "else 0.5)")
    parser.add_argument("--split", metavar="NAME",
                        help="name recorded for the split (default: the data file's stem)")
    add_model_selection(parser)
    add_variant_option(parser)
    parser.add_argument("--baseline", metavar="PATH",
                        help="previous release to compare with (paired deltas for "
                             "gates.baseline): a published bundle folder or an ONNX model; "
                             "default: <release.core_dir>/<gates.baseline.release> when named")
    parser.add_argument("--baseline-root-digest", metavar="HEX",
                        help="root digest a --baseline bundle must verify against (pinned outside "
                             "it, e.g. in the base branch's analysis/release_<name>.json)")
    parser.add_argument("--pins", metavar="DIR",
                        help="a trusted checkout of the registry (in CI: the base branch): "
                             "baselines must verify against the root digest its "
                             "analysis/release_<name>.json pins, --data and the calibration's "
                             "fit split must be the files its dvc.lock pins; else exit 1")
    parser.add_argument("--baseline-calibration", metavar="FILE",
                        help="calibration of a --baseline given as an ONNX model")
    parser.add_argument("--baseline-name", metavar="NAME",
                        help="name of a --baseline given as an ONNX model (default: its stem)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON instead of a summary")
    parser.add_argument("--record-verdict", action="store_true",
                        help="exit 0 when gates fail (the report records the verdict, with a "
                             "line on stderr): for a DVC stage, which would otherwise delete "
                             "the report; relgate promote then refuses the model")


def run(args: argparse.Namespace) -> int:
    from relgate.errors import UsageError
    from relgate.jsonio import write_json
    from relgate.params import load_params
    from relgate.report import console, print_json, progress_enabled
    from relgate.report.validation import render_validation
    from relgate.validation import flat_metrics, run_validation, write_plots

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold {args.threshold:g} is not a probability",
                         hint="give a value in [0, 1]")
    params = resolve_variant(args, load_params(args.params),
                             out_default="analysis/validation_report.json", data_default=True)
    pins = None if args.pins is None else _pins_dir(args.pins)
    checked = {} if pins is None else check_pinned_inputs(args.data, args.calibration, pins)
    outcome = run_validation(
        args.model, args.data, params=params, calibration_path=args.calibration,
        split=args.split, threshold=args.threshold, input_name=args.input_name,
        output_name=args.output_name, positive_index=args.positive_index,
        output_type=args.output_type, reducer=args.reducer,
        baseline=_baseline(args, params, pins), progress=progress_enabled(),
    )
    for warning in outcome.report["task"]["warnings"]:
        sys.stderr.write(f"relgate: warning: {warning}\n")
    _same_as_checked(outcome.report, checked)
    write_json(args.out, outcome.report)
    if args.metrics_out:
        write_json(args.metrics_out, flat_metrics(outcome.report))
    if args.plots_dir:
        write_plots(outcome, args.plots_dir, bins=params.validate.ece_bins)
    if args.json:
        print_json(outcome.report)
    else:
        render_validation(outcome.report, console(), out=args.out)
    if not outcome.passed and args.record_verdict:
        sys.stderr.write(f"relgate: gates failed (recorded in {args.out}; relgate promote will "
                         "refuse this model)\n")
        return EXIT_OK
    return EXIT_OK if outcome.passed else EXIT_REFUSED


def _pins_dir(value: str) -> Path:
    from relgate.errors import UsageError

    pins = Path(value)
    if not pins.is_dir():
        raise UsageError(f"--pins {value}: not a folder",
                         hint="give the trusted registry checkout (the base branch in CI)")
    return pins


def _lock_key(value: str, what: str) -> str:
    """*value* as dvc.lock names paths (relative to the registry, POSIX); else a refusal."""
    from relgate.errors import VerificationFailed

    pure = PurePosixPath(value.replace("\\", "/"))
    if not value or pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise VerificationFailed(f"{what} {value!r}: not a path inside the registry, so the "
                                 "trusted registry cannot pin it",
                                 hint="give it relative to the registry root, as dvc.lock does")
    return pure.as_posix()


def check_pinned_inputs(data: str, calibration: str | None, pins: Path) -> dict[str, str]:
    """Refuse (exit 1) a test split or calibration fit split that *pins* does not pin.

    Returns the sha256 of what was checked ({"data", "calibration"}), so the caller can
    confirm that validation read the same bytes.
    """
    from relgate import schemas
    from relgate.errors import VerificationFailed
    from relgate.jsonio import MAX_JSON_BYTES, loads_strict, read_capped

    data_key = _lock_key(data, "--data")
    data_sha = _pinned_sha256(Path(data), data_key, pins, what="the test split")
    checked = {"data": data_sha}
    if calibration is None:
        return checked
    raw = read_capped(calibration, max_bytes=MAX_JSON_BYTES, what="calibration")
    record = loads_strict(raw, source=calibration)
    schemas.validate(record, "calibration", source=calibration)
    checked["calibration"] = hashlib.sha256(raw).hexdigest()
    fit = record["fit_split"]
    fit_key = _lock_key(fit["path"], f"{calibration}: fit_split.path")
    if fit_key == data_key:
        raise VerificationFailed(f"{calibration}: claims it was fit on {fit_key}, the split it "
                                 "is judged on", hint="fit the calibration on the validation split")
    fit_sha = _pinned_sha256(Path(fit_key), fit_key, pins,
                             what=f"the split {calibration} claims it was fit on")
    if fit_sha != fit["sha256"]:
        raise VerificationFailed(
            f"{calibration}: claims it was fit on {fit_key} with sha256 {fit['sha256'][:12]}…, "
            f"but that split (as {pins} pins it) has sha256 {fit_sha[:12]}…",
            hint="re-run relgate calibrate on the pinned validation split")
    return checked


def _pinned_sha256(path: Path, key: str, pins: Path, *, what: str) -> str:
    """sha256 of *path*, once its md5 is the one *pins* records for *key*; else a refusal."""
    from relgate.distribution import md5_and_sha256, pinned_file
    from relgate.errors import InputError, VerificationFailed

    pin = pinned_file(pins, key)
    if pin is None:
        raise VerificationFailed(
            f"{key} ({what}): the trusted registry {pins} does not pin it (no output {key} in "
            f"its dvc.lock or {key}.dvc)",
            hint="the splits must be the base branch's own; change them there first, by review")
    try:
        md5, sha = md5_and_sha256(path)
    except InputError as exc:
        raise VerificationFailed(f"{key} ({what}): {exc.message}",
                                 hint="the candidate must include the file it was checked on") \
            from None
    if md5 != pin.md5:
        raise VerificationFailed(f"{path} ({what}) is not the file {pin.source} pins "
                                 f"(md5 {md5} != {pin.md5})",
                                 hint="the splits must be the base branch's own; change them "
                                      "there first, by review")
    return sha


def _same_as_checked(report: Any, checked: dict[str, str]) -> None:
    """The report must describe the bytes that were checked against the pins."""
    from relgate.errors import VerificationFailed

    used = {"data": report["data"]["sha256"],
            "calibration": (report.get("calibration") or {}).get("sha256")}
    for key, sha in checked.items():
        if used[key] != sha:
            raise VerificationFailed(f"the {key} file changed while it was validated",
                                     hint="validate again once nothing writes to it")


def _baseline(args: argparse.Namespace, params: Any, pins: Path | None) -> Any:
    from dataclasses import replace

    from relgate.errors import UsageError
    from relgate.validation import (
        Baseline,
        baseline_for_params,
        baseline_from_bundle,
        pinned_root_digest,
    )

    if args.baseline is None:
        if args.baseline_calibration or args.baseline_name:
            raise UsageError("--baseline-calibration and --baseline-name need --baseline",
                             hint="add --baseline MODEL.onnx")
        return baseline_for_params(params, pins=pins)
    path = Path(args.baseline)
    if pins is not None:  # the judge: only a bundle the trusted registry pins, by its own name
        if args.baseline_calibration or args.baseline_name:
            raise UsageError("--baseline-calibration and --baseline-name do not go with --pins",
                             hint="with --pins the baseline is a pinned bundle, named by its folder")
        pinned = pinned_root_digest(pins, path.name, required=True)
        if args.baseline_root_digest not in (None, pinned):
            raise UsageError(f"--baseline-root-digest differs from the root digest {pins} pins "
                             f"for {path.name!r}", hint="drop --baseline-root-digest")
        return baseline_from_bundle(path, expected_root_digest=pinned, expected_name=path.name)
    if path.is_dir():
        if args.baseline_calibration:
            raise UsageError("--baseline-calibration applies to a model file, not a bundle",
                             hint="a bundle brings its own calibration.json")
        found = baseline_from_bundle(path, expected_root_digest=args.baseline_root_digest)
        return replace(found, name=args.baseline_name) if args.baseline_name else found
    return Baseline(name=args.baseline_name or path.stem, model_path=path,
                    calibration_path=None if args.baseline_calibration is None
                    else Path(args.baseline_calibration))
