"""relgate parity: does the deployed torch model compute what the gated ONNX model computes?

Runs a TorchScript / torch.export reference and the ONNX model on the same first N rows,
writes the parity record and applies the bounds of ``parity:`` in params. Exit 0 when
every bound holds, 1 when one fails (the record is written), 2 on bad input (a pickle
checkpoint, outputs of different shapes: nothing written).
"""

from __future__ import annotations

import argparse

from relgate.errors import EXIT_OK, EXIT_REFUSED

HELP = ("compare a TorchScript / torch.export reference with the ONNX model on the same "
        "samples (exit 0 pass, 1 a parity gate fails, 2 bad input)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", metavar="FILE",
                        help="TorchScript (.pt) or torch.export (.pt2) model; never a pickle "
                             "checkpoint (default: parity.reference in params)")
    parser.add_argument("--model", metavar="FILE.onnx",
                        help="the ONNX model (default: release.promoted.path in params)")
    parser.add_argument("--data", metavar="FILE.npz",
                        help="eval set (default: parity.data, else release.data)")
    parser.add_argument("--calibration", metavar="FILE.json",
                        help="calibration whose decision is compared (default: "
                             "release.calibration when that file exists, else 0.5 on the "
                             "declared output type)")
    parser.add_argument("--params", default="params.yaml", metavar="FILE",
                        help="params file: task, evaluate threads, parity bounds "
                             "(default: %(default)s)")
    parser.add_argument("--samples", type=int, metavar="N",
                        help="compare the first N rows (default: parity.samples, else 256)")
    parser.add_argument("--out", metavar="FILE.json",
                        help="where to write the record (default: parity.record, else "
                             "analysis/parity.json)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")


def run(args: argparse.Namespace) -> int:
    from relgate.errors import UsageError
    from relgate.jsonio import write_json
    from relgate.params import load_params
    from relgate.parity import resolve_inputs, run_parity
    from relgate.report import console, print_json
    from relgate.report.parity import render_parity

    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}",
                         hint="use --samples 1 or more")
    params = load_params(args.params)
    inputs = resolve_inputs(params, ".", reference=args.reference, model=args.model,
                            data=args.data, samples=args.samples, calibration=args.calibration)
    outcome = run_parity(params, inputs)
    out = args.out or (params.parity.record if params.parity else "analysis/parity.json")
    write_json(out, outcome.record)
    if args.json:
        print_json(outcome.record)
    else:
        render_parity(outcome.record, console(), written=out)
    return EXIT_OK if outcome.passed else EXIT_REFUSED
