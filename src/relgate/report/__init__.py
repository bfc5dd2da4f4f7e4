"""Rendering of results for people and machines.

Domain modules return result objects; this package turns them into rich
tables for terminals, Markdown for pull requests and step summaries, and JSON
for machines. Only this package and ``relgate.commands`` import rich.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from relgate.jsonio import dumps


def console(file: IO[str] | None = None) -> Any:
    """A rich Console on stdout; plain (no colour, no live widgets) when not a TTY."""
    from rich.console import Console

    stream = file or sys.stdout
    tty = stream.isatty() and os.environ.get("TERM") != "dumb"
    return Console(file=stream, force_terminal=tty, no_color=not tty or "NO_COLOR" in os.environ,
                   width=None if tty else 120, soft_wrap=not tty)


def print_json(obj: Any, file: IO[str] | None = None) -> None:
    """Deterministic JSON on stdout (the same bytes relgate writes to files)."""
    (file or sys.stdout).write(dumps(obj).decode("utf-8"))


def progress_enabled(file: IO[str] | None = None) -> bool:
    """Progress bars only on an interactive terminal and never in CI logs."""
    stream = file or sys.stderr
    return stream.isatty() and not os.environ.get("CI") and os.environ.get("TERM") != "dumb"
