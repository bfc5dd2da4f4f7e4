"""relgate compare: rank candidate models on one eval split (relgate.compare); exit 0.

Candidates are ``NAME=MODEL.onnx``, ``NAME=MODEL.onnx:CAL.json``, ``NAME=REPORT.json``
(a validation report: its model and calibration, checked by sha256) or a snapshot set
``NAME=A.onnx[:A.json],B.onnx[:B.json],...`` (ranked by its mean; the first one ships).
"""

from __future__ import annotations

import argparse

from relgate.errors import EXIT_OK

HELP = "rank candidate models on one eval split by a metric with tie-breakers (paired bootstrap)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("candidates", nargs="+", metavar="CANDIDATE",
                        help="NAME=MODEL.onnx[:CAL.json], NAME=REPORT.json, or a snapshot set "
                             "NAME=A.onnx[:CAL.json],B.onnx[:CAL.json],... (its first snapshot "
                             "is the one it ships)")
    parser.add_argument("--data", required=True, metavar="TEST.npz",
                        help="the one eval split every candidate is scored on")
    parser.add_argument("--params", default="params.yaml", metavar="FILE",
                        help="params file: task:, evaluate: and validate.bootstrap "
                             "(default: %(default)s)")
    parser.add_argument("--by", default="f1", metavar="METRIC",
                        help="primary metric (default: %(default)s)")
    parser.add_argument("--then", default="", metavar="M1,M2",
                        help="tie-breakers, in order, e.g. precision,recall")
    parser.add_argument("--root", metavar="DIR",
                        help="where validation reports' paths are relative to (default: cwd)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--format", choices=("text", "md"), default="text",
                     help="table format on stdout (default: %(default)s)")
    out.add_argument("--json", action="store_true", help="print the compare record as JSON")
    out.add_argument("--pick", action="store_true",
                     help="print only the winner: NAME<TAB>MODEL[<TAB>CALIBRATION]")
    parser.add_argument("--out", metavar="COMPARE.json",
                        help="also write the compare record here (schema 'compare')")


def run(args: argparse.Namespace) -> int:
    from relgate.compare import check_metrics, compare, parse_candidate
    from relgate.params import load_params
    from relgate.report import print_json
    from relgate.report.compare import compare_markdown, compare_text, pick_line
    from relgate.tasks import refuse_kind_none, task_kind

    then = [t.strip() for t in args.then.split(",") if t.strip()]
    specs = [parse_candidate(c) for c in args.candidates]
    params = load_params(args.params)
    refuse_kind_none(task_kind(params), "compare")
    check_metrics(args.by, then, task_kind(params))  # before any model is scored
    record = compare(specs, data_path=args.data, params=params, by=args.by, then=then,
                     root=args.root)
    if args.out:
        from relgate.jsonio import write_json

        write_json(args.out, record)
    if args.pick:
        print(pick_line(record))
    elif args.json:
        print_json(record)
    elif args.format == "md":
        compare_markdown(record)
    else:
        compare_text(record)
    return EXIT_OK
