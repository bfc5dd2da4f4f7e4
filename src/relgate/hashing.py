"""Streaming sha256 of files: constant memory, parallel across files, hash-while-copy.

hashlib releases the GIL while it digests a buffer, so a small thread pool
keeps both cores busy when a bundle holds several large files. Every reader
uses one preallocated 1 MiB buffer per thread (``readinto``), so memory does
not grow with file size. Files are opened non-blocking and checked with
fstat before any read: a FIFO or a device given in place of a file is refused
instead of hanging or reading forever. ``sha256_fd`` reads at most a given
number of bytes and then probes for one more, which is how verification
refuses a file that grows while it is read without ever reading past the
size a manifest declares.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from typing import Any, TypeVar

from relgate.errors import InputError

CHUNK = 1024 * 1024
# Files at least this large get a progress bar (on a terminal only).
PROGRESS_MIN_BYTES = 64 * 1024 * 1024

ByteSink = Callable[[int], None]
P = TypeVar("P", bound="str | os.PathLike[str]")

_local = threading.local()


def _buffer() -> memoryview:
    """This thread's reusable read buffer (one per thread, never per file)."""
    buf: memoryview | None = getattr(_local, "buf", None)
    if buf is None:
        buf = memoryview(bytearray(CHUNK))
        _local.buf = buf
    return buf


def sha256_fd(
    fd: int, *, limit: int | None = None, on_bytes: ByteSink | None = None
) -> tuple[int, str, bool]:
    """Hash an open file from its current offset: ``(bytes_read, hex, more)``.

    With *limit*, at most *limit* bytes are hashed and one more byte is then
    probed; ``more`` says the file holds data past the limit (it grew, or it
    is longer than declared). Without a limit, the file is read to EOF and
    ``more`` is False.
    """
    digest = hashlib.sha256()
    buf = _buffer()
    done = 0
    while limit is None or done < limit:
        want = CHUNK if limit is None else min(CHUNK, limit - done)
        n = os.readv(fd, [buf[:want]])
        if n == 0:
            break
        digest.update(buf[:n])
        done += n
        if on_bytes is not None:
            on_bytes(n)
    more = False
    if limit is not None and done == limit:
        more = len(os.read(fd, 1)) > 0
    return done, digest.hexdigest(), more


def open_regular(path: str | os.PathLike[str], *, dir_fd: int | None = None,
                 follow_symlinks: bool = True) -> tuple[int, os.stat_result]:
    """Open a regular file for reading without ever blocking: ``(fd, fstat)``.

    O_NONBLOCK makes opening a FIFO return at once; fstat then refuses
    anything that is not a regular file before a single byte is read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", hint="check the path") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror})",
                         hint="check the path and permissions") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file ({file_kind(st.st_mode)})",
                             hint="only regular files can be hashed")
        # Back to blocking reads: regular files never block, and some
        # filesystems return EAGAIN spuriously on non-blocking descriptors.
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def file_kind(mode: int) -> str:
    """A human name for the type of an lstat/fstat mode."""
    for test, name in (
        (stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a regular file, streamed through a 1 MiB buffer."""
    return _hash_path(path, None)[1]


#: while ``remembered_copies`` is open: (st_dev, st_ino) of each file copy_and_hash wrote ->
#: (its stamp after the fsync, its sha256)
_remembered: dict[tuple[int, int], tuple[tuple[int, int, int, int], str]] | None = None
_remembered_lock = threading.Lock()


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """What any write, truncation, rename over or new link changes: size, mtime, ctime, links."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink


@contextmanager
def remembered_copies() -> Iterator[None]:
    """Within this block a file that copy_and_hash wrote is not read again to be hashed:
    ``sha256_file`` and ``sha256_files`` answer the digest computed while copying, as long as
    the opened file is that inode with the same size, mtime, ctime (nanoseconds) and link
    count as right after its fsync; anything else is read and hashed as usual. Promote opens
    it around its private staging folder, so the staged copies it re-evaluates are not
    hashed a second time (issue 16: every evidence byte is read once)."""
    global _remembered
    with _remembered_lock:
        outer = _remembered
        _remembered = {} if outer is None else outer
    try:
        yield
    finally:
        with _remembered_lock:
            _remembered = outer


def _remember(fd: int, hexdigest: str) -> None:
    with _remembered_lock:
        if _remembered is not None:
            st = os.fstat(fd)
            _remembered[(st.st_dev, st.st_ino)] = (_stamp(st), hexdigest)


def _recall(st: os.stat_result) -> str | None:
    with _remembered_lock:
        if _remembered is None:
            return None
        known = _remembered.get((st.st_dev, st.st_ino))
    return known[1] if known is not None and known[0] == _stamp(st) else None


def _hash_path(path: str | os.PathLike[str], on_bytes: ByteSink | None) -> tuple[int, str]:
    fd, st = open_regular(path)
    try:
        known = _recall(st)
        if known is not None:
            if on_bytes is not None:
                on_bytes(st.st_size)
            return st.st_size, known
        try:
            size, hexdigest, _ = sha256_fd(fd, on_bytes=on_bytes)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})",
                             hint="check the file") from None
    finally:
        os.close(fd)
    return size, hexdigest


T = TypeVar("T")
R = TypeVar("R")


class WriteError(InputError):
    """The destination of a copy could not be created or written (disk full, file size limit,
    permissions): the source is fine. Publication reports it as "not published"."""


def parallel_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int = 2) -> Iterator[R]:
    """``map`` over a small thread pool (results in input order, errors re-raised)."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)),
                              thread_name_prefix="relgate-hash")
    try:
        yield from pool.map(fn, items)
    finally:
        # On an error or Ctrl-C, files not yet started are not hashed at all.
        pool.shutdown(wait=True, cancel_futures=True)


def sha256_files(
    paths: Iterable[P], *, workers: int = 2, progress: bool | ByteSink = False
) -> dict[P, tuple[int, str]]:
    """``{path: (size, sha256)}`` for many files, hashed in parallel across files.

    Memory stays at one 1 MiB buffer per worker whatever the file sizes.
    *progress*: True shows a byte progress bar when one of the files is large
    and stderr is an interactive terminal (never in CI); a callable receives
    byte counts instead (it must be thread-safe).
    """
    paths = list(paths)
    # Largest first, so two big files run side by side instead of one after another.
    sizes = {p: _size_hint(p) for p in paths}
    order = sorted(paths, key=lambda p: -sizes[p])
    with byte_progress(progress, sizes.values()) as sink:
        results = dict(zip(order, parallel_map(lambda p: _hash_path(p, sink), order,
                                               workers=workers), strict=True))
    return {p: results[p] for p in paths}


def _size_hint(path: str | os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


@contextmanager
def byte_progress(progress: bool | ByteSink, sizes: Iterable[int]) -> Iterator[ByteSink | None]:
    """A byte sink for a progress bar, or None when no bar is wanted.

    The bar itself lives in relgate.report (the only place that renders), installed by the
    CLI through relgate.progress; shown only when a terminal is attached.
    """
    if callable(progress):
        yield progress
        return
    sizes = list(sizes)
    if not progress or max(sizes, default=0) < PROGRESS_MIN_BYTES:
        yield None
        return
    from relgate.progress import byte_bar

    ctx: Any = byte_bar(sum(sizes)) if sizes else nullcontext(None)
    with ctx as sink:
        yield sink


def copy_and_hash(src: str | os.PathLike[str] | int,
                  dst: str | os.PathLike[str]) -> tuple[int, str]:
    """Copy a regular file to a new file *dst* while hashing it: ``(size, sha256)``.

    Each byte is read once and the digest is of exactly the bytes written, so
    a copy made this way can be used (evaluated, published) in place of its
    source without reading the source again: a file swapped or rewritten at
    the source afterwards cannot change what was hashed. Memory stays at one
    1 MiB buffer whatever the size (a 4 GB ``.onnx.data`` streams through).
    *src* is a path, or a descriptor of a regular file already open for
    reading (read from its offset to EOF; the caller keeps and closes it).
    *dst* must not exist (never overwrites); it is fsynced before returning,
    and removed again if the copy fails.
    """
    fd_in = src if isinstance(src, int) else open_regular(src)[0]
    try:
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd_out = os.open(dst, flags, 0o644)
        except FileExistsError:
            raise InputError(f"{dst}: already exists", hint="copy into a fresh folder") from None
        except OSError as exc:
            raise WriteError(f"{dst}: cannot create ({exc.strerror})",
                             hint="check the folder") from None
        try:
            size, hexdigest = _copy_fd(fd_in, fd_out, src, dst)
            try:
                os.fsync(fd_out)
            except OSError as exc:
                raise WriteError(f"{dst}: cannot write ({exc.strerror})",
                                 hint="check free space and file size limits") from None
            _remember(fd_out, hexdigest)
        except BaseException:
            os.close(fd_out)
            fd_out = -1
            with suppress(FileNotFoundError):
                os.unlink(dst)
            raise
        finally:
            if fd_out >= 0:
                os.close(fd_out)
    finally:
        if not isinstance(src, int):
            os.close(fd_in)
    return size, hexdigest


def _copy_fd(fd_in: int, fd_out: int, src: object, dst: object) -> tuple[int, str]:
    digest = hashlib.sha256()
    buf = _buffer()
    size = 0
    while True:
        try:
            n = os.readv(fd_in, [buf])
        except OSError as exc:
            raise InputError(f"{src}: cannot read ({exc.strerror})",
                             hint="check the file") from None
        if n == 0:
            return size, digest.hexdigest()
        chunk = buf[:n]
        digest.update(chunk)
        written = 0
        while written < n:
            try:
                written += os.write(fd_out, chunk[written:])
            except OSError as exc:
                raise WriteError(f"{dst}: cannot write ({exc.strerror})",
                                 hint="check free space and file size limits") from None
        size += n
