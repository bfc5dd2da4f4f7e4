"""Rendering of manifests, verification results and hashing progress."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from relgate.report import console

if TYPE_CHECKING:
    from relgate.bundle import VerifyResult
    from relgate.manifest import Manifest


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def verify_lines(result: VerifyResult) -> list[tuple[str, str]]:
    """(style, text) lines: a verdict, one line per problem, the root digest to pin."""
    reasons = result.reasons()
    if result.ok:
        pinned = " (matches the pinned digest)" if result.expected_root_digest else ""
        return [("green", f"verified: {result.folder}: {result.files} files, "
                          f"{_size(result.bytes)}, every byte matches manifest.json"),
                ("", f"root digest {result.root_digest}{pinned}")]
    plural = "s" if len(reasons) != 1 else ""
    return [("red", f"NOT verified: {result.folder}: {len(reasons)} problem{plural}"),
            *(("", f"  - {reason}") for reason in reasons),
            ("", f"root digest of its manifest: {result.root_digest}")]


def manifest_lines(manifest: Manifest, path: Path) -> list[tuple[str, str]]:
    return [("", f"wrote {path}: {len(manifest.files)} files, {_size(manifest.total_size)}"),
            ("", f"root digest {manifest.root_digest}")]


def emit(lines: list[tuple[str, str]], file: IO[str] | None = None) -> None:
    """Rich on a terminal; plain lines otherwise (and without importing rich, which
    keeps the start-up of ``relgate verify`` in scripts and CI short)."""
    stream = file or sys.stdout
    if not stream.isatty():
        stream.write("".join(text + "\n" for _, text in lines))
        return
    out = console(stream)
    for style, text in lines:
        out.print(text, style=style or None, markup=False, highlight=False)


def verify_text(result: VerifyResult, file: IO[str] | None = None) -> None:
    emit(verify_lines(result), file)


def manifest_text(manifest: Manifest, path: Path, file: IO[str] | None = None) -> None:
    emit(manifest_lines(manifest, path), file)


def manifest_summary(manifest: Manifest, path: Path) -> dict[str, Any]:
    """The JSON that ``relgate manifest --json`` prints."""
    return {"manifest": str(path), "files": len(manifest.files), "bytes": manifest.total_size,
            "root_digest": manifest.root_digest}


@contextmanager
def hash_progress(total_bytes: int) -> Iterator[Callable[[int], None]]:
    """A transient byte progress bar on stderr; yields a thread-safe sink for byte counts."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    lock = threading.Lock()
    with Progress("hashing", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=console(sys.stderr), transient=True) as bar:
        task = bar.add_task("hashing", total=total_bytes)

        def sink(n: int) -> None:
            with lock:
                bar.advance(task, n)

        yield sink
