"""relgate validate: metrics with intervals, health stats and gates for a model on a split."""

from __future__ import annotations

import argparse
from typing import Any

from relgate.commands._options import add_model_selection
from relgate.errors import EXIT_OK, EXIT_REFUSED

HELP = ("validate a model on a split (calibration applied): metrics with intervals, gates, "
        "a schema-valid report; exit 1 when gates fail")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL.onnx", help="the ONNX model")
    parser.add_argument("--data", required=True, metavar="TEST.npz",
                        help="the split to validate on (.npz: the model's input names plus y)")
    parser.add_argument("--calibration", metavar="FILE",
                        help="a calibration record from relgate calibrate (refused when it was "
                             "fit on this data or for another model); default: raw scores")
    parser.add_argument("--out", default="analysis/validation_report.json", metavar="FILE",
                        help="where to write the validation report (default: %(default)s)")
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
    parser.add_argument("--baseline", metavar="PATH",
                        help="previous release to compare with (paired deltas for "
                             "gates.baseline): a published bundle folder or an ONNX model; "
                             "default: <release.core_dir>/<gates.baseline.release> when named")
    parser.add_argument("--baseline-root-digest", metavar="HEX",
                        help="root digest a --baseline bundle must verify against (pinned outside "
                             "it, e.g. in the base branch's analysis/release_<name>.json)")
    parser.add_argument("--baseline-calibration", metavar="FILE",
                        help="calibration of a --baseline given as an ONNX model")
    parser.add_argument("--baseline-name", metavar="NAME",
                        help="name of a --baseline given as an ONNX model (default: its stem)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON instead of a summary")


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
    params = load_params(args.params)
    outcome = run_validation(
        args.model, args.data, params=params, calibration_path=args.calibration,
        split=args.split, threshold=args.threshold, input_name=args.input_name,
        output_name=args.output_name, positive_index=args.positive_index,
        baseline=_baseline(args, params), progress=progress_enabled(),
    )
    write_json(args.out, outcome.report)
    if args.metrics_out:
        write_json(args.metrics_out, flat_metrics(outcome.report))
    if args.plots_dir:
        write_plots(outcome, args.plots_dir, bins=params.validate.ece_bins)
    if args.json:
        print_json(outcome.report)
    else:
        render_validation(outcome.report, console(), out=args.out)
    return EXIT_OK if outcome.passed else EXIT_REFUSED


def _baseline(args: argparse.Namespace, params: Any) -> Any:
    from dataclasses import replace
    from pathlib import Path

    from relgate.errors import UsageError
    from relgate.validation import Baseline, baseline_for_params, baseline_from_bundle

    if args.baseline is None:
        if args.baseline_calibration or args.baseline_name:
            raise UsageError("--baseline-calibration and --baseline-name need --baseline",
                             hint="add --baseline MODEL.onnx")
        return baseline_for_params(params)
    path = Path(args.baseline)
    if path.is_dir():
        if args.baseline_calibration:
            raise UsageError("--baseline-calibration applies to a model file, not a bundle",
                             hint="a bundle brings its own calibration.json")
        found = baseline_from_bundle(path, expected_root_digest=args.baseline_root_digest)
        return replace(found, name=args.baseline_name) if args.baseline_name else found
    return Baseline(name=args.baseline_name or path.stem, model_path=path,
                    calibration_path=None if args.baseline_calibration is None
                    else Path(args.baseline_calibration))
