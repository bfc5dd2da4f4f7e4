"""relgate reproduce: re-run a registry revision in a temp clone and compare with its dvc.lock."""

from __future__ import annotations

import argparse
import sys

from relgate.errors import EXIT_OK, EXIT_REFUSED

HELP = ("re-run the pipeline at REV in a temporary clone (dvc repro --force) and compare every "
        "output with dvc.lock: bytes, numbers within tolerance, the release against its pin")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rev", metavar="REV", nargs="?", default="HEAD",
                        help="commit, branch or release tag (e.g. core@v1.0.0); default HEAD")
    parser.add_argument("--registry", default=".", metavar="PATH",
                        help="the registry's git checkout (default: the current folder)")
    parser.add_argument("--format", choices=("text", "md", "json"), default="text",
                        help="output format (md: for a pull request or step summary)")
    parser.add_argument("--json", action="store_const", const="json", dest="format",
                        help="same as --format json")
    parser.add_argument("--summary", metavar="FILE",
                        help="also append the Markdown table to FILE (e.g. $GITHUB_STEP_SUMMARY)")


def run(args: argparse.Namespace) -> int:
    from relgate.report import print_json, progress_enabled
    from relgate.report.reproduce import reproduce_markdown, reproduce_text
    from relgate.reproduce import reproduce

    def progress(stage: str, index: int, total: int) -> None:
        sys.stderr.write(f"reproduce: running stage {stage} ({index}/{total})\n")
        sys.stderr.flush()

    result = reproduce(args.registry, args.rev,
                       progress=progress if progress_enabled(sys.stderr) else None)
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as fh:
            fh.write(reproduce_markdown(result))
    if args.format == "json":
        print_json(result.to_dict())
    elif args.format == "md":
        sys.stdout.write(reproduce_markdown(result))
    else:
        reproduce_text(result)
    return EXIT_OK if result.ok else EXIT_REFUSED
