"""Rendering of manifests, verification results and hashing progress."""

from __future__ import annotations

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


def verify_text(result: VerifyResult, file: IO[str] | None = None) -> None:
    """A verdict line, the root digest to pin, and one line per problem."""
    out = console(file)
    reasons = result.reasons()
    if result.ok:
        pinned = " (matches the pinned digest)" if result.expected_root_digest else ""
        out.print(f"[green]verified[/green]: {result.folder}: {result.files} files, "
                  f"{_size(result.bytes)}, every byte matches manifest.json", markup=True,
                  highlight=False)
        out.print(f"root digest {result.root_digest}{pinned}", highlight=False)
        return
    out.print(f"[red]NOT verified[/red]: {result.folder}: {len(reasons)} "
              f"problem{'s' if len(reasons) != 1 else ''}", markup=True, highlight=False)
    for reason in reasons:
        out.print(f"  - {reason}", markup=False, highlight=False)
    out.print(f"root digest of its manifest: {result.root_digest}", highlight=False)


def manifest_text(manifest: Manifest, path: Path, file: IO[str] | None = None) -> None:
    out = console(file)
    out.print(f"wrote {path}: {len(manifest.files)} files, {_size(manifest.total_size)}",
              markup=False, highlight=False)
    out.print(f"root digest {manifest.root_digest}", highlight=False)


def manifest_summary(manifest: Manifest, path: Path) -> dict[str, Any]:
    """The JSON that ``relgate manifest --json`` prints."""
    return {"manifest": str(path), "files": len(manifest.files), "bytes": manifest.total_size,
            "root_digest": manifest.root_digest}


@contextmanager
def hash_progress(total_bytes: int) -> Iterator[Callable[[int], None]]:
    """A transient byte progress bar on stderr; yields a thread-safe sink for byte counts."""
    import sys

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from relgate.report import console as make_console

    lock = threading.Lock()
    with Progress("hashing", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=make_console(sys.stderr), transient=True) as bar:
        task = bar.add_task("hashing", total=total_bytes)

        def sink(n: int) -> None:
            with lock:
                bar.advance(task, n)

        yield sink
