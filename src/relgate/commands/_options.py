"""Options shared by several commands, defined once so their meaning never drifts."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relgate.params import Params


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


def add_variant_option(parser: argparse.ArgumentParser) -> None:
    """--variant NAME: judge an entry of release.variants with its own params (see
    :meth:`relgate.params.Params.for_variant`)."""
    parser.add_argument("--variant", metavar="NAME",
                        help="an evaluated entry of release.variants (by its name): its own "
                             "task, contract, calibrate and gates apply, and --model, --data "
                             "and --out default to its path, test split and report")


def resolve_variant(args: argparse.Namespace, params: Params, *, out_default: str,
                    data_default: bool) -> Params:
    """The params a command judges with (the variant's under --variant), filling in
    ``args.model`` (and ``args.data`` when *data_default*) and ``args.out``. A --model
    that is not the variant's path, or no --model at all without --variant, is a
    UsageError (exit 2)."""
    from relgate.errors import UsageError

    if args.variant is None:
        if args.model is None:
            raise UsageError("--model is required (or --variant NAME)",
                             hint="give the ONNX model, or an entry of release.variants")
        if data_default and args.data is None:
            raise UsageError("--data is required (or --variant NAME)",
                             hint="give the test split, or an entry of release.variants")
        args.out = args.out or out_default
        return params
    judged = params.for_variant(args.variant)
    path = judged.release.promoted.path
    if args.model is not None and args.model != path:
        raise UsageError(f"--model {args.model} is not variant {args.variant!r}'s model ({path})",
                         hint="drop --model: --variant names the model")
    args.model = path
    if data_default and args.data is None:
        args.data = judged.release.data
    args.out = args.out or (judged.release.report if data_default else judged.release.calibration)
    return judged


def add_signature_trust(parser: argparse.ArgumentParser) -> None:
    """--public-key / --certificate-chain / --identity --issuer: what an OpenSSF model
    signature (relgate.signing) is checked against."""
    parser.add_argument("--public-key", metavar="PUB.pem",
                        help="check the signature with this EC public key (PEM)")
    parser.add_argument("--certificate-chain", metavar="CHAIN.pem", action="append",
                        help="check a certificate signature up to these certificates "
                             "(repeatable; the CA that issued the signer's)")
    parser.add_argument("--identity", metavar="ID",
                        help="Sigstore keyless: the signer's identity (e.g. the workflow "
                             "https://github.com/ORG/REPO/.github/workflows/publish.yml@"
                             "refs/heads/main); needs --issuer")
    parser.add_argument("--issuer", metavar="URL",
                        help="Sigstore keyless: the OIDC issuer (GitHub Actions: "
                             "https://token.actions.githubusercontent.com)")


def signature_trust(args: argparse.Namespace) -> Any:
    """The relgate.signing.Trust the options name (None when none was given)."""
    from relgate.signing import trust_from_options

    return trust_from_options(public_key=args.public_key, certificate_chain=args.certificate_chain,
                              identity=args.identity, issuer=args.issuer)
