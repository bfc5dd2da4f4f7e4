"""Streaming sha256 of files (constant memory)."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1024 * 1024


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
