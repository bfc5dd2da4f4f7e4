"""relgate inspect: a model's contract, files, sizes and sha256, read safely."""

from __future__ import annotations

import argparse

from relgate.commands._options import add_model_selection
from relgate.errors import EXIT_OK

HELP = "show a model's contract (inputs, outputs, opsets, score output), files and sha256"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx",
                        help="the ONNX model (its external data files must sit next to it)")
    parser.add_argument("--json", action="store_true",
                        help="print the contract as JSON (sha256, files with sizes, contract)")
    add_model_selection(parser)
    parser.add_argument("--params", metavar="FILE",
                        help="also check the model against contract: in this params file")
    parser.add_argument("--check-runtime", action="store_true",
                        help="also load the model with onnxruntime (in a guarded child process)")


def run(args: argparse.Namespace) -> int:
    from relgate.onnxmodel import check_contract, inspect_model, probe_session
    from relgate.report import console, print_json
    from relgate.report.contract import render_inspect

    params = None
    if args.params:
        from relgate.params import load_params

        params = load_params(args.params)
    task = None if params is None else params.task
    if task is not None and task.kind == "none":  # no score to find: the health output
        from relgate.onnxmodel import ModelInfo, external_data_files, model_digest
        from relgate.tasks.none import none_contract

        info = ModelInfo(path=str(args.model), digest=model_digest(args.model),
                         contract=none_contract(args.model, input_name=args.input_name,
                                                output_name=args.output_name, task=task),
                         external=tuple(external_data_files(args.model)))
    else:
        info = inspect_model(args.model, input_name=args.input_name,
                             output_name=args.output_name, positive_index=args.positive_index,
                             task=task, output_type=args.output_type, reducer=args.reducer)
    if args.check_runtime:
        probe_session(args.model)
    if params is not None and params.contract is not None:
        # checked before anything is printed: output means the contract holds
        check_contract(info.contract, params.contract)
    shown = info.to_dict()
    if task is not None and task.kind == "none":
        shown["task"] = info.contract.task_dict("none")
    if args.json:
        print_json(shown)
    else:
        render_inspect(shown, console())
    return EXIT_OK
