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
    parser.add_argument("release", metavar="RELEASE", nargs="?", default=None,
                        help="the release name, e.g. v1.0.0 (or --stage instead)")
    parser.add_argument("-o", "--out", required=True, metavar="DIR",
                        help="where the verified bundle goes; must not exist (never overwritten)")
    parser.add_argument("--rev", metavar="REV", default=None,
                        help="git revision of the registry: a release tag (release.tag, e.g. "
                             "core@v1.0.0 or core/v1.0.0), a branch or a commit (default: its "
                             "default branch)")
    parser.add_argument("--json", action="store_true",
                        help="print the outcome as JSON (verification, pin, files named)")
    parser.add_argument("--allow-dvc-cache-links", action="store_true",
                        help="accept files that dvc get linked from a local registry's own DVC "
                             "cache (its cache.type hardlink or symlink), each to the entry the "
                             "registry's metadata names for it; their bytes are still hashed")
    parser.add_argument("--stage", metavar="STAGE", default=None,
                        help="fetch the release GTO's tags put in this stage (e.g. prod: the "
                             "newest core#prod#N on an active version, as 'gto show core#prod' "
                             "says), at its registration tag unless --rev is given")
    parser.add_argument("--allow-deprecated", action="store_true",
                        help="fetch a release that GTO's tags deprecate (core@vX.Y.Z! or "
                             "core@deprecated); refused (exit 1) without it")
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
                          allow_dvc_cache_links=args.allow_dvc_cache_links,
                          stage=args.stage, allow_deprecated=args.allow_deprecated,
                          trust=signature_trust(args))
    if args.json:
        print_json(result.to_dict())
    else:
        fetch_text(result)
    return EXIT_OK if result.ok else EXIT_REFUSED
