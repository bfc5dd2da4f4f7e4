"""The relgate command line: parse, dispatch, and map errors to exit codes.

Each subcommand lives in ``relgate.commands.<name>`` and exposes ``HELP``
(one line), ``configure(parser)`` and ``run(args) -> int``. Command modules
import only light modules at import time; onnxruntime and torch are imported
inside ``run`` so that ``relgate --help`` starts in a blink. Errors are
translated here and only here (STYLE.md item 6).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

from relgate.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, RelgateError


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors reported as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"relgate: error: {message}; see '{self.prog} --help'\n")
        raise SystemExit(EXIT_BAD_INPUT)


class _VersionAction(argparse.Action):
    """Like argparse's version action, but reads the version only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        import relgate

        sys.stdout.write(f"relgate {relgate.__version__}\n")
        parser.exit()


def command_modules() -> list[ModuleType]:
    """Every module in relgate.commands, sorted by name."""
    import relgate.commands as pkg

    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"relgate.commands.{name}") for name in names]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="relgate",
        description="Reproducible, governed releases of ML models. "
        "Exit codes: 0 ok, 1 governed refusal, 2 bad input or usage, 130 interrupted.",
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0,
                        help="show relgate's version and exit")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full Python traceback on errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in command_modules():
        name = module.__name__.rsplit(".", 1)[-1]
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        cmd.add_argument(
            "--traceback", action="store_true", default=argparse.SUPPRESS,
            help="show the full Python traceback on errors",
        )
        module.configure(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args._run(args))
    except RelgateError as exc:
        if args.traceback:
            traceback.print_exc()
        sys.stderr.write(f"relgate: error: {exc.one_line()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("relgate: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away: never report success for unseen output
        with contextlib.suppress(OSError):
            sys.stderr.write("relgate: output pipe closed\n")
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe
    except Exception as exc:  # a crash is a bug: say so, in one line unless asked
        if args.traceback:
            traceback.print_exc()
        sys.stderr.write(
            f"relgate: internal error: {type(exc).__name__}: {exc}; "
            "this is a bug, rerun with --traceback and report it\n"
        )
        return 3


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
