"""relgate promote: reproduce the evidence, apply the gates, publish the core bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "reproduce the validation evidence, apply the gates and publish models/core/<release>/"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: ./params.yaml)")
    parser.add_argument("--release", help="release name (default: release.name from params)")
    parser.add_argument("--root", default=".", help="the registry folder (default: current folder)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("--allow-dvc-cache-links", action="store_true",
                        help="accept evidence and bundle files that are links into the "
                             "registry's own DVC cache (cache.type hardlink or symlink), as "
                             "release.allow_dvc_cache_links: true does; their bytes are still "
                             "hashed")


def run(args: argparse.Namespace) -> int:
    from relgate.params import load_params, params_from_dict, thaw
    from relgate.release import promote
    from relgate.report import console, print_json

    params = load_params(args.params)
    if args.release:  # the params as if release.name said so: the record must not say otherwise
        raw = thaw(params.raw)
        params = params_from_dict({**raw, "release": {**raw["release"], "name": args.release}},
                                  source=f"{args.params} with --release {args.release}")
    result = promote(params, root=Path(args.root), allow_dvc_cache_links=args.allow_dvc_cache_links)
    for warning in result.warnings:
        print(f"relgate: warning: {warning}", file=sys.stderr)
    if args.json:
        print_json(result.to_dict())
    else:
        out = console()
        out.print(f"[bold green]{result.message}[/]" if result.created else result.message)
        out.print(f"release {result.name}: {result.path}  root digest {result.root_digest}")
    return 0
