"""relgate calibrate: fit input scale/offset, probability map and threshold on the val split.

The task kind (``task.kind`` in params, or an ``--output-type`` of that kind) picks the
fit: binary (:func:`relgate.calibration.calibrate_model`) or multi-class (temperature
and the "no conclusive" threshold, :mod:`relgate.tasks.multiclass_calibration`). For a
multi-class task ``--plots-dir`` writes nothing: it has no input sweep.
"""

from __future__ import annotations

import argparse
import sys

from relgate.commands._options import add_model_selection, add_variant_option, resolve_variant
from relgate.errors import EXIT_OK

HELP = "fit a calibration (scale/offset sweep, temperature or Platt, threshold) on the val split"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="MODEL.onnx",
                        help="the ONNX model (required unless --variant names one)")
    parser.add_argument("--data", required=True, metavar="VAL.npz",
                        help="the validation split (.npz: the model's input names plus y); "
                             "never the test split")
    parser.add_argument("--out", metavar="FILE",
                        help="where to write the calibration record (default: "
                             "analysis/calibration.json; with --variant, its calibration)")
    parser.add_argument("--params", default="params.yaml", metavar="FILE",
                        help="params file with the calibrate: section (default: %(default)s)")
    parser.add_argument("--split", metavar="NAME",
                        help="name recorded for the fit split (default: the data file's stem)")
    parser.add_argument("--plots-dir", metavar="DIR",
                        help="also write DIR/calibration_sweep.csv (scale, offset, auc) "
                             "for dvc plots (binary tasks; a multi-class task writes nothing)")
    add_model_selection(parser)
    add_variant_option(parser)
    parser.add_argument("--json", action="store_true",
                        help="print the calibration record as JSON instead of a summary")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from relgate.calibration import calibrate_model
    from relgate.jsonio import atomic_write_bytes, write_json
    from relgate.params import load_params
    from relgate.report import console, print_json, progress_enabled
    from relgate.report.validation import render_calibration
    from relgate.tasks import calibration_runner, task_kind
    from relgate.validation import sweep_csv

    params = resolve_variant(args, load_params(args.params),
                             out_default="analysis/calibration.json", data_default=False)
    fit = calibration_runner(task_kind(params, args.output_type)) or calibrate_model
    outcome = fit(
        args.model, args.data, params=params, split=args.split,
        input_name=args.input_name, output_name=args.output_name,
        positive_index=args.positive_index, output_type=args.output_type, reducer=args.reducer,
        progress=progress_enabled(),
    )
    multiclass = outcome.record.get("task") is not None
    write_json(args.out, outcome.record)
    if args.plots_dir and not multiclass:
        atomic_write_bytes(Path(args.plots_dir) / "calibration_sweep.csv",
                           sweep_csv(outcome.record))
    for note in outcome.notes:
        sys.stderr.write(f"relgate: note: {note}\n")
    for warning in outcome.warnings:
        sys.stderr.write(f"relgate: warning: {warning}\n")
    if args.json:
        print_json(outcome.record)
    elif multiclass:
        from relgate.report.multiclass_calibration import render_multiclass_calibration

        render_multiclass_calibration(outcome.record, console(), out=args.out)
    else:
        render_calibration(outcome.record, console(), out=args.out)
    return EXIT_OK
