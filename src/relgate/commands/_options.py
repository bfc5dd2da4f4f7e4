"""Options shared by several commands, defined once so their meaning never drifts."""

from __future__ import annotations

import argparse


def add_model_selection(parser: argparse.ArgumentParser) -> None:
    """--input / --output / --output-type / --reducer / --positive-index: override params'
    task: (and the contract's auto-detection of the output)."""
    parser.add_argument("--input", dest="input_name", metavar="NAME",
                        help="the model input to feed (default: the first input)")
    parser.add_argument("--output", dest="output_name", metavar="NAME",
                        help="the output to read scores from (default: task.output in "
                             "params, else auto-detected: a score [N]/[N,1], else a probability "
                             "[N,2] or ZipMap, else features [N,D])")
    parser.add_argument("--output-type", dest="output_type",
                        choices=("logit", "probability", "features", "logits", "probabilities"),
                        help="what the output holds (default: task.output_type in params, else "
                             "what the graph proves: Sigmoid -> probability, Softmax/ZipMap -> "
                             "probabilities; else relgate refuses rather than guess)")
    parser.add_argument("--reducer", choices=("mean", "max", "max_abs", "l2", "column"),
                        help="how a features output [N,D] becomes one score (default: "
                             "task.reducer)")
    parser.add_argument("--positive-index", type=int, metavar="I",
                        help="column of the positive class in a probability output "
                             "(default: task.positive, else 1) or of a features output")
