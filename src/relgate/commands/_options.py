"""Options shared by several commands, defined once so their meaning never drifts."""

from __future__ import annotations

import argparse


def add_model_selection(parser: argparse.ArgumentParser) -> None:
    """--input / --output / --positive-index: override the contract's auto-detection."""
    parser.add_argument("--input", dest="input_name", metavar="NAME",
                        help="the model input to feed (default: the first input)")
    parser.add_argument("--output", dest="output_name", metavar="NAME",
                        help="the output to read scores from (default: auto-detected: a score "
                             "[N]/[N,1], else a probability [N,2], else features [N,D])")
    parser.add_argument("--positive-index", type=int, metavar="I",
                        help="column of the positive class in a probability output "
                             "(default 1) or of a features output")
