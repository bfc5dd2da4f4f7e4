"""Strict JSON reading and deterministic, atomic JSON writing.

Every record relgate reads may come from someone else (a pull request, a
remote, a hand-edited file), so reading refuses anything ambiguous: duplicate
keys, NaN/Infinity (and numbers that overflow to infinity), non-UTF-8 bytes,
files above a size cap, nesting above a depth cap and integers too long to
convert or too large for a float. Writing produces the same bytes for the same
data (sorted keys, shortest round-trip floats, two-space indent, trailing
newline) and goes through a temp file + fsync + rename so a crash never leaves
half a report.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from relgate.errors import InputError, JSONFormatError


def _default_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_mode()
MAX_JSON_BYTES = 32 * 1024 * 1024
MAX_JSON_DEPTH = 64

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def read_json(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Read one JSON document from *path* under the strict rules."""
    data = read_capped(path, max_bytes=max_bytes, what="JSON file")
    return loads_strict(data, source=str(path), max_depth=max_depth)


def read_capped(path: str | os.PathLike[str], *, max_bytes: int, what: str) -> bytes:
    """Read at most *max_bytes* from a regular file, refusing anything larger.

    The file is opened non-blocking and checked with fstat before any read, so
    a FIFO or a device given in place of a file is refused instead of hanging.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file", hint="check the path") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory", hint=f"point at a {what}") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot open ({exc.strerror})", hint="check permissions") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "is a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise InputError(f"{p}: {kind}", hint=f"point at a {what}")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise InputError(f"{p}: cannot read ({exc.strerror})", hint="check the file") from None
    if len(data) > max_bytes:
        raise JSONFormatError(
            f"{p}: larger than the {max_bytes} byte limit for a {what}",
            hint="relgate records are small; this is not one",
        )
    return data


def loads_strict(data: bytes, *, source: str = "<json>", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse *data* (bytes) as strict JSON; see the module docstring for the rules."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONFormatError(
            f"{source}: not valid UTF-8 (byte {exc.start})", hint="save the file as UTF-8"
        ) from None
    depth = _nesting_depth(data)
    if depth > max_depth:
        raise JSONFormatError(
            f"{source}: nesting depth {depth} exceeds the limit of {max_depth}",
            hint="flatten the document",
        )
    try:
        return json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_finite_int,
        )
    except JSONFormatError as exc:
        raise JSONFormatError(f"{source}: {exc.message}", hint=exc.hint) from None
    except json.JSONDecodeError as exc:
        raise JSONFormatError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            hint="fix the syntax",
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. integers beyond int_max_str_digits
        raise JSONFormatError(f"{source}: unreadable JSON: {exc}", hint="fix the value") from None


_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def _nesting_depth(data: bytes) -> int:
    """Maximum bracket depth outside strings, computed without recursion.

    Strings are removed first, then only the bracket bytes are scanned; numpy
    is imported only for very bracket-heavy documents, so small records stay
    fast to read (``relgate verify`` starts without numpy).
    """
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if len(brackets) > 200_000:
        import numpy as np

        arr = np.frombuffer(brackets, dtype=np.uint8)
        step = np.where((arr == ord("[")) | (arr == ord("{")), 1, -1)
        return int(np.cumsum(step).max(initial=0))
    depth = deepest = 0
    for byte in brackets:
        if byte in (91, 123):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JSONFormatError(f"duplicate key {key!r}", hint="each key may appear once per object")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise JSONFormatError(f"{name} is not allowed", hint="write null for an undefined number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONFormatError(f"number {text[:40]} overflows to infinity", hint="use a finite number")
    return value


def _finite_int(text: str) -> int:
    value = int(text)  # beyond int_max_str_digits: ValueError, "unreadable JSON"
    try:
        float(value)
    except OverflowError:
        raise JSONFormatError(f"integer of {len(text)} digits overflows to infinity as a number",
                              hint="use a finite number") from None
    return value


def dumps(obj: Any) -> bytes:
    """Deterministic bytes for *obj*: sorted keys, 2-space indent, trailing newline.

    Floats use Python's shortest round-trip repr (exact and stable across
    platforms), -0.0 is written as 0.0, and NaN/Infinity are refused rather
    than written as non-standard tokens. Text that is not valid Unicode (a
    non-UTF-8 file name seen on disk) makes the whole document ASCII-escaped.
    """
    try:
        text = json.dumps(
            _normalise(obj), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False
        )
    except ValueError as exc:
        raise JSONFormatError(f"cannot write JSON: {exc}", hint="replace NaN/inf with null") from None
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8 on disk: escape, as ASCII
        return (json.dumps(_normalise(obj), sort_keys=True, indent=2, ensure_ascii=True,
                           allow_nan=False) + "\n").encode("ascii")


def _normalise(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, bool) or type(obj).__name__ == "bool_":
        return bool(obj)
    if isinstance(obj, int) or _is_numpy(obj, "integer"):
        return int(obj)
    if isinstance(obj, float) or _is_numpy(obj, "floating"):
        value = float(obj)
        return 0.0 if value == 0.0 else value
    return obj


def _is_numpy(obj: Any, kind: str) -> bool:
    """isinstance against a numpy scalar type, without importing numpy for plain data."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, getattr(np, kind))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write *obj* as deterministic JSON, atomically."""
    atomic_write_bytes(path, dumps(obj))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | Iterable[bytes]) -> None:
    """Write bytes (or an iterable of chunks) to *path* atomically; see ``atomic_write``."""

    def write(fh: BinaryIO) -> None:
        for chunk in [data] if isinstance(data, bytes) else data:
            fh.write(chunk)

    atomic_write(path, write)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fh)`` on a temp file in *path*'s folder, then fsync and rename it into place.

    Readers see either the old file or the complete new one, never a prefix.
    A full disk, a file size limit or a read-only folder is an InputError
    naming the file (exit 2), and the temp file is removed.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise write_error(target, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fd, _FILE_MODE)  # mkstemp creates 0600; records are meant to be shared
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(target, exc) from None
        raise
    try:
        fsync_dir(folder)
    except OSError as exc:
        raise write_error(folder, exc) from None


def write_error(path: str | os.PathLike[str], exc: OSError) -> InputError:
    """The one-line error for a file that could not be written (disk full, EFBIG, EACCES...)."""
    return InputError(f"{path}: cannot write ({exc.strerror or type(exc).__name__})",
                      hint="check free space, file size limits and permissions; "
                           "nothing was left half-written")


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
