"""relgate schema: check a record against a bundled schema, or print a schema."""

from __future__ import annotations

import argparse
import sys

from relgate.errors import EXIT_OK
from relgate.schemas import KINDS

HELP = "check a JSON record (or params.yaml) against a bundled schema, or print a schema"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                parser_class=type(parser))
    check = sub.add_parser("check", help="validate FILE against the schema of KIND (exit 0 valid, 2 not)")
    check.add_argument("file", metavar="FILE", help="the record to check (JSON; YAML for --kind params)")
    check.add_argument("--kind", required=True, choices=KINDS, help="which schema to check against")
    show = sub.add_parser("show", help="print the bundled schema of KIND")
    show.add_argument("kind", metavar="KIND", choices=(*KINDS, "common"), help="schema to print")
    sub.add_parser("list", help="list the record kinds")


def run(args: argparse.Namespace) -> int:
    from relgate import schemas

    if args.action == "list":
        sys.stdout.write("\n".join(KINDS) + "\n")
        return EXIT_OK
    if args.action == "show":
        sys.stdout.write(schemas.schema_text(args.kind))
        return EXIT_OK
    if args.kind == "params":
        from relgate.params import load_params

        load_params(args.file)
    else:
        from relgate.jsonio import read_json

        schemas.validate(read_json(args.file), args.kind, source=args.file)
    sys.stdout.write(f"{args.file}: valid {args.kind}\n")
    return EXIT_OK
