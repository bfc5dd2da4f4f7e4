"""relgate releases: list a registry's releases from its release records and tags."""

from __future__ import annotations

import argparse

from relgate.errors import EXIT_OK

HELP = "list the releases of a registry (local folder or git repository): tag, digest, metrics"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", metavar="REPO", nargs="?", default=".",
                        help="a registry folder, or a git URL/bare repository (cloned to a temp "
                             "folder); default: the current folder")
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")


def run(args: argparse.Namespace) -> int:
    from relgate.distribution import list_releases
    from relgate.report import print_json
    from relgate.report.releases import releases_text

    listing = list_releases(args.repo)
    if args.json:
        print_json(listing.to_dict())
    else:
        releases_text(listing)
    return EXIT_OK
