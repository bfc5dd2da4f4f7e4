"""relgate fetch: get a released core bundle through DVC, verify it, and only then place it."""

from __future__ import annotations

import argparse

from relgate.commands._options import add_signature_trust, signature_trust
from relgate.errors import EXIT_OK, EXIT_REFUSED

HELP = ("download a release's core bundle with dvc get, verify it against the root digest git "
        "pins (the release record at that commit, else the annotated release tag; neither is a "
        "refusal) and, when the registry signed it, its signature, then move it to -o DIR; "
        "nothing is left at DIR unless it verified")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", metavar="REPO",
                        help="the registry: a git URL or the path of its git repository")
    parser.add_argument("release", metavar="RELEASE", help="the release name, e.g. v1.0.0")
    parser.add_argument("-o", "--out", required=True, metavar="DIR",
                        help="where the verified bundle goes; must not exist (never overwritten)")
    parser.add_argument("--rev", metavar="REV", default=None,
                        help="git revision of the registry: a release tag (release.tag, e.g. "
                             "core@v1.0.0 or core/v1.0.0), a branch or a commit (default: its "
                             "default branch)")
    parser.add_argument("--json", action="store_true",
                        help="print the outcome as JSON (verification, pin, files named)")
    add_signature_trust(parser)  # default: the key or identity the release record names


def run(args: argparse.Namespace) -> int:
    import sys

    from relgate.distribution import fetch_bundle
    from relgate.report import print_json, progress_enabled
    from relgate.report.releases import fetch_text

    show = progress_enabled() and not args.json

    def step(message: str) -> None:
        if show:
            sys.stderr.write(f"relgate fetch: {message}\n")

    result = fetch_bundle(args.repo, args.release, args.out, rev=args.rev, on_step=step,
                          trust=signature_trust(args))
    if args.json:
        print_json(result.to_dict())
    else:
        fetch_text(result)
    return EXIT_OK if result.ok else EXIT_REFUSED
