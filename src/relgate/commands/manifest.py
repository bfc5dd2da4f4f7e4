"""relgate manifest: write DIR/manifest.json (sizes and sha256 of every file) for any folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from relgate.errors import EXIT_OK

HELP = "write DIR/manifest.json: size and sha256 of every file, and a root digest to pin"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR",
                        help="the folder to describe (symlinks, FIFOs, devices and hardlinks are "
                             "refused)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON summary (path, file count, bytes, root digest)")


def run(args: argparse.Namespace) -> int:
    from relgate.manifest import MANIFEST_NAME, write_manifest
    from relgate.report import print_json
    from relgate.report.verify import manifest_summary, manifest_text

    folder = Path(args.dir)
    manifest = write_manifest(folder, progress=not args.json)
    path = folder / MANIFEST_NAME
    if args.json:
        print_json(manifest_summary(manifest, path))
    else:
        manifest_text(manifest, path)
    return EXIT_OK
