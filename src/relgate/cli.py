"""The relgate command line: parse, dispatch, and map errors to exit codes.

Each subcommand lives in ``relgate.commands.<name>`` and exposes ``HELP``
(one line), ``configure(parser)`` and ``run(args) -> int``. Command modules
import only light modules at import time; onnxruntime and torch are imported
inside ``run`` so that ``relgate --help`` starts in a blink. Errors are
translated here and only here (STYLE.md item 6).

A closed stdout (``relgate releases | head -1``) never interrupts a command
half-way: output the reader can no longer take is dropped, the command
finishes its work (a promotion publishes its whole bundle), and the exit code
is 141, "the pipe closed", with one stderr line giving the exit code the
command itself finished with. A command that wrote nothing to stdout keeps
its own code: nothing was lost.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any, TextIO, cast

from relgate.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PIPE_CLOSED,
    RelgateError,
)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors reported as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"relgate: error: {message}; see '{self.prog} --help'\n")
        raise SystemExit(EXIT_BAD_INPUT)

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:  # argparse's own version swallows OSError: help into a closed pipe "succeeded"
            (file or sys.stderr).write(message)


class _StdoutGuard:
    """sys.stdout while a command runs: once the reader has closed the pipe, further output
    is dropped and remembered, so the command finishes and ``main`` can say what happened.

    Text goes to the binary buffer in a loop, because after a short write into a pipe whose
    reader left, Python's BufferedWriter returns the short count and TextIOWrapper drops the
    rest without an error; the retry is what meets EPIPE.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.pipe_closed = False
        self.told = False  # an error line is already on stderr

    def write(self, text: str) -> int:
        if not self.pipe_closed:
            try:
                self._write_all(text)
            except BrokenPipeError:
                self.pipe_closed = True
        return len(text)

    def _write_all(self, text: str) -> None:
        binary = getattr(self.stream, "buffer", None)
        if binary is None:  # a plain text stream (io.StringIO): no short writes to fear
            self.stream.write(text)
            return
        self.stream.flush()  # keep the order of text written before, by others
        view = memoryview(text.encode(self.stream.encoding, self.stream.errors or "strict"))
        while view:
            view = view[binary.write(view):]
        if getattr(self.stream, "line_buffering", False) and "\n" in text:
            binary.flush()  # a terminal sees each line at once, as through TextIOWrapper

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.pipe_closed:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.pipe_closed = True

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...: the real stream's
        return getattr(self.stream, name)


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
        "Exit codes: 0 ok, 1 governed refusal, 2 bad input or usage, 130 interrupted, "
        "141 stdout closed by its reader.",
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


def _install_progress() -> None:
    """Progress bars for the core modules (relgate.progress), rendered by relgate.report;
    imported only when a bar is actually drawn, so ``--help`` stays fast."""
    from relgate import progress

    def bytes_bar(total: int) -> Any:
        from relgate.report.verify import hash_progress

        return hash_progress(total)

    def steps_bar(description: str) -> Any:
        from relgate.report.contract import progress_bar

        return progress_bar(description)

    def enabled() -> bool:
        from relgate.report import progress_enabled

        return progress_enabled()

    progress.install(bytes_bar=bytes_bar, steps_bar=steps_bar, enabled=enabled)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module docstring for 141)."""
    _install_progress()
    guard = _StdoutGuard(sys.stdout)
    sys.stdout = cast(TextIO, guard)
    try:
        code = _dispatch(argv, guard)
        guard.flush()
    except SystemExit as exc:  # --help, --version, usage errors
        guard.flush()
        if not guard.pipe_closed:
            raise
        code = exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    finally:
        sys.stdout = guard.stream
    if not guard.pipe_closed or code in (EXIT_INTERRUPTED, EXIT_INTERNAL):
        return code
    _discard_stdout(guard.stream)
    if not guard.told:  # a RelgateError's own line already says what happened
        outcome = "succeeded (exit 0)" if code == EXIT_OK else f"finished with exit {code}"
        _say(f"relgate: output pipe closed before all output was written; "
             f"the command itself {outcome}")
    return EXIT_PIPE_CLOSED


def _dispatch(argv: Sequence[str] | None, guard: _StdoutGuard) -> int:
    """Parse and run; an error becomes one stderr line (``guard.told``) and its exit code."""
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
        guard.told = _say(f"relgate: error: {exc.one_line()}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("relgate: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # written past the guard (sys.stdout.buffer): the same closed pipe
        guard.pipe_closed = True
        return EXIT_OK
    except OSError as exc:
        if exc.errno not in _REFUSED_BY_THE_OS:
            return _internal_error(exc, args.traceback)
        if args.traceback:
            traceback.print_exc()
        guard.told = _say(f"relgate: error: {_os_error_line(exc)}")
        return EXIT_BAD_INPUT
    except (MemoryError, ImportError) as exc:
        if not _out_of_memory(exc):
            return _internal_error(exc, args.traceback)
        if args.traceback:
            traceback.print_exc()
        limit = _address_space_limit_mb()
        where = f" under the inherited address-space limit of {limit} MiB (ulimit -v)" if limit else ""
        guard.told = _say(f"relgate: error: out of memory{where}; raise the limit or free memory")
        return EXIT_BAD_INPUT
    except Exception as exc:  # a crash is a bug: say so, in one line unless asked
        return _internal_error(exc, args.traceback)


def _out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or a native library that could not be mapped for lack of memory."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "failed to map segment" in text \
        or "Cannot allocate memory" in text


def _address_space_limit_mb() -> int | None:
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft // (1024 * 1024)


def _internal_error(exc: BaseException, show_trace: bool) -> int:
    if show_trace:
        traceback.print_exception(exc)
    _say(f"relgate: internal error: {type(exc).__name__}: {exc}; "
         "this is a bug, rerun with --traceback and report it")
    return EXIT_INTERNAL


#: what the OS says about a path or a disk, not about relgate: a path that is too long, a
#: loop, missing or of the wrong kind, no permission, a full disk or a file size limit
_REFUSED_BY_THE_OS = frozenset({
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES,
    errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EEXIST,
    errno.ENOTEMPTY, errno.EXDEV, errno.EBUSY, errno.ETXTBSY, errno.EMFILE, errno.ENFILE,
    errno.EIO, errno.ENXIO, errno.ENODEV,
})


def _os_error_line(exc: OSError) -> str:
    """An OSError that a command did not translate itself, as "PATH: reason; remedy"."""
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    shown = [n if len(n) <= 200 else n[:200] + "..." for n in names]
    where = " -> ".join(shown) + ": " if shown else ""
    return (f"{where}{exc.strerror or type(exc).__name__}; "
            "check the path, free space and permissions")


def _say(line: str) -> bool:
    """One line on stderr; False when stderr is closed too (the exit code still tells)."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:
        return False
    return True


def _discard_stdout(stream: TextIO) -> None:
    """Point a closed stdout at /dev/null, so that Python's own flush at exit does not fail
    on the output still buffered (a second message, and exit 120)."""
    if stream is not sys.__stdout__:
        return
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def entry() -> None:
    """Console-script entry point: pins the numeric environment first (relgate.numeric_env).

    numpy and onnxruntime are not loaded yet here, so the pin costs nothing, and a
    command's numbers (a promotion's re-evaluation, a calibration) do not depend on
    the caller's thread or CPU-dispatch variables.
    """
    from relgate.numeric_env import pin_process

    pin_process()
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
