"""relgate verify: check every byte of a bundle against its manifest.json."""

from __future__ import annotations

import argparse

from relgate.errors import EXIT_OK, EXIT_REFUSED

HELP = "check a bundle against its manifest.json (exit 0 verified, 1 not, 2 unreadable manifest)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE_DIR",
                        help="the bundle folder (holds manifest.json)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON (every problem, with the files named)")
    parser.add_argument("--root-digest", metavar="HEX", default=None,
                        help="the root digest pinned outside the bundle (release record, tag); "
                             "a consistent rewrite of files and manifest is caught only with it")
    parser.add_argument("--allow-dvc-cache-links", action="store_true",
                        help="accept files that are links into the DVC cache of the repository "
                             "holding the bundle (cache.type hardlink or symlink), each to the "
                             "entry DVC's metadata names for it; their bytes are still hashed")


def run(args: argparse.Namespace) -> int:
    from relgate.bundle import verify_bundle
    from relgate.report import print_json
    from relgate.report.verify import verify_text

    links = None
    if args.allow_dvc_cache_links:
        from relgate.dvclinks import DvcCacheLinks

        links = DvcCacheLinks.for_folder(args.bundle)
    result = verify_bundle(args.bundle, expected_root_digest=args.root_digest,
                           progress=not args.json, dvc_links=links)
    if args.json:
        print_json(result.to_dict())
    else:
        verify_text(result)
    return EXIT_OK if result.ok else EXIT_REFUSED
