"""Streaming sha256, parallel hashing and hash-while-copy, against openssl as the oracle."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from relgate.errors import InputError
from relgate.hashing import (
    CHUNK,
    copy_and_hash,
    remembered_copies,
    sha256_fd,
    sha256_file,
    sha256_files,
)
from tests.support.timing import within


def openssl_sha256(path: Path) -> str:
    out = subprocess.run(["openssl", "dgst", "-sha256", "-r", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[0]




SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345]


@pytest.fixture
def files(tmp_path: Path) -> dict[int, Path]:
    out = {}
    for size in SIZES:
        p = tmp_path / f"f{size}.bin"
        p.write_bytes(os.urandom(size))
        out[size] = p
    return out


@pytest.mark.parametrize("size", SIZES)
def test_sha256_file_matches_openssl(files: dict[int, Path], size: int) -> None:
    assert sha256_file(files[size]) == openssl_sha256(files[size])


def test_sha256_files_parallel_equals_sequential_and_openssl(files: dict[int, Path]) -> None:
    paths = list(files.values())
    seq = sha256_files(paths, workers=1)
    par = sha256_files(paths, workers=2)
    assert seq == par
    assert list(par) == paths  # keys are the paths given, in the order given
    for p, (size, digest) in par.items():
        assert size == p.stat().st_size
        assert digest == openssl_sha256(p)


def test_sha256_files_uses_threads_for_several_files(tmp_path: Path) -> None:
    names: set[str] = set()
    # each worker's first chunk waits for the other worker's: with one thread doing all the
    # work the barrier breaks (the test fails), and a busy machine cannot let one thread
    # finish every file before the second starts
    both = threading.Barrier(2, timeout=30)

    def sink(n: int) -> None:
        name = threading.current_thread().name
        if name not in names:
            names.add(name)
            both.wait()

    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(b"x" * (2 * CHUNK))
        paths.append(p)
    sha256_files(paths, workers=2, progress=sink)
    assert len(names) == 2 and all(n.startswith("relgate-hash") for n in names)


def test_progress_sink_sees_every_byte(files: dict[int, Path]) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def sink(n: int) -> None:
        with lock:
            seen.append(n)

    sha256_files(files.values(), progress=sink)
    assert sum(seen) == sum(SIZES)
    assert max(seen) <= CHUNK


def test_progress_true_is_silent_off_a_terminal(files: dict[int, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    sha256_files(files.values(), progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        within(10, lambda: sha256_file(fifo))
    with pytest.raises(InputError, match="pipe"):
        within(10, lambda: sha256_files([fifo]))


def test_missing_file_and_directory_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        sha256_file(tmp_path / "absent")
    with pytest.raises(InputError, match="directory"):
        sha256_file(tmp_path)


@pytest.mark.parametrize(("limit", "expect_n", "expect_more"),
                         [(0, 0, True), (50, 50, True), (99, 99, True), (100, 100, False),
                          (200, 100, False)])
def test_sha256_fd_never_reads_past_the_limit(tmp_path: Path, limit: int, expect_n: int,
                                              expect_more: bool) -> None:
    data = os.urandom(100)
    p = tmp_path / "f"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        n, digest, more = sha256_fd(fd, limit=limit)
        # at most one byte is probed beyond the limit
        assert os.lseek(fd, 0, os.SEEK_CUR) <= min(limit + 1, 100)
    finally:
        os.close(fd)
    assert (n, more) == (expect_n, expect_more)
    assert digest == hashlib.sha256(data[:expect_n]).hexdigest()


def test_sha256_fd_on_an_endless_device_stops_at_the_limit() -> None:
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        n, digest, more = within(10, lambda: sha256_fd(fd, limit=3 * CHUNK))
    finally:
        os.close(fd)
    assert (n, more) == (3 * CHUNK, True)
    assert digest == hashlib.sha256(bytes(3 * CHUNK)).hexdigest()


def test_copy_and_hash_copies_exactly_and_hashes_what_it_wrote(files: dict[int, Path],
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for size, src in files.items():
        dst = out / src.name
        got = copy_and_hash(src, dst)
        assert got == (size, openssl_sha256(dst))
        assert dst.read_bytes() == src.read_bytes()


def test_copy_and_hash_never_overwrites(files: dict[int, Path], tmp_path: Path) -> None:
    dst = tmp_path / "existing"
    dst.write_bytes(b"keep me")
    with pytest.raises(InputError, match="already exists"):
        copy_and_hash(files[1], dst)
    assert dst.read_bytes() == b"keep me"


def test_copy_and_hash_refuses_a_fifo_source(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        within(10, lambda: copy_and_hash(fifo, tmp_path / "dst"))
    assert not (tmp_path / "dst").exists()


def test_copy_and_hash_removes_the_partial_copy_when_the_disk_refuses(tmp_path: Path) -> None:
    """EFBIG mid-write (ulimit -f in a child): one-line InputError, no partial file left."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * CHUNK))
    dst = tmp_path / "dst.bin"
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))\n"
        "from relgate.errors import InputError\n"
        "from relgate.hashing import copy_and_hash\n"
        "try:\n"
        "    copy_and_hash(sys.argv[1], sys.argv[2])\n"
        "except InputError as exc:\n"
        "    print(exc.one_line()); sys.exit(2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(src), str(dst)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in proc.stdout and "dst.bin" in proc.stdout
    assert not dst.exists()


def test_hashing_memory_stays_constant(tmp_path: Path) -> None:
    """RSS does not grow with file size: hash a 768 MiB sparse file in a child process."""
    big = tmp_path / "sparse.bin"
    with open(big, "wb") as fh:
        fh.truncate(768 * 1024 * 1024)
    script = (
        "import resource, sys\n"
        "from relgate.hashing import sha256_files\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "sha256_files([sys.argv[1]], workers=2)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(after - before)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(big)], capture_output=True,
                          text=True, timeout=120, check=True)
    grew_kib = int(proc.stdout.strip())
    assert grew_kib < 32 * 1024, f"RSS grew by {grew_kib} KiB while hashing"


def test_the_progress_bar_renders_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from relgate.report import verify as report_verify

    buf = io.StringIO()
    monkeypatch.setattr(report_verify, "console",
                        lambda file=None: Console(file=buf, force_terminal=True, width=100))
    with report_verify.hash_progress(3 * CHUNK) as sink:
        for _ in range(3):
            sink(CHUNK)
    assert "hashing" in buf.getvalue() and "3.1" in buf.getvalue()  # 3.1 MB done


def test_an_error_in_one_file_stops_the_others(tmp_path: Path) -> None:
    paths = [tmp_path / "absent"] + [tmp_path / f"{i}" for i in range(20)]
    for p in paths[1:]:
        p.write_bytes(b"x")
    with pytest.raises(InputError, match="absent: no such file"):
        sha256_files(paths, workers=2)


# ------------------------------------------------ remembered copies (issue 16: one read)

def _rchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_a_remembered_copy_is_not_read_again_and_its_digest_is_hashlibs(tmp_path: Path) -> None:
    data = os.urandom(8 * CHUNK + 5)
    (tmp_path / "src").write_bytes(data)
    with remembered_copies():
        _, sha = copy_and_hash(tmp_path / "src", tmp_path / "copy")
        before = _rchar()
        again = sha256_file(tmp_path / "copy")
        many = sha256_files([tmp_path / "copy"])
        read = _rchar() - before
    assert again == sha == hashlib.sha256(data).hexdigest()
    assert many == {tmp_path / "copy": (len(data), sha)}
    assert read < CHUNK  # not the 8 MiB of the copy (only /proc/self/io itself)


def test_a_remembered_copy_rewritten_in_place_is_hashed_again(tmp_path: Path) -> None:
    """The attack: the staged copy changed after it was hashed (same size, same inode)."""
    data = os.urandom(2 * CHUNK)
    (tmp_path / "src").write_bytes(data)
    with remembered_copies():
        copy_and_hash(tmp_path / "src", tmp_path / "copy")
        evil = bytes(len(data))
        with open(tmp_path / "copy", "r+b") as f:  # in place: same inode, same size
            f.write(evil)
        assert sha256_file(tmp_path / "copy") == hashlib.sha256(evil).hexdigest()


def test_a_remembered_copy_replaced_or_linked_is_hashed_again(tmp_path: Path) -> None:
    data = os.urandom(CHUNK)
    (tmp_path / "src").write_bytes(data)
    (tmp_path / "other").write_bytes(b"x" * CHUNK)
    with remembered_copies():
        copy_and_hash(tmp_path / "src", tmp_path / "copy")
        copy_and_hash(tmp_path / "src", tmp_path / "copy2")
        os.replace(tmp_path / "other", tmp_path / "copy")  # another inode at the name
        assert sha256_file(tmp_path / "copy") == hashlib.sha256(b"x" * CHUNK).hexdigest()
        os.link(tmp_path / "copy2", tmp_path / "link")  # a new link changes the stamp
        before = _rchar()
        assert sha256_file(tmp_path / "copy2") == hashlib.sha256(data).hexdigest()
        assert _rchar() - before >= CHUNK  # read, not recalled


def test_copies_are_remembered_only_inside_the_block(tmp_path: Path) -> None:
    data = os.urandom(4 * CHUNK)
    (tmp_path / "src").write_bytes(data)
    copy_and_hash(tmp_path / "src", tmp_path / "before")
    with remembered_copies():
        with remembered_copies():  # nested: the outer memory is kept
            copy_and_hash(tmp_path / "src", tmp_path / "inner")
        before = _rchar()
        sha256_file(tmp_path / "inner")
        assert _rchar() - before < CHUNK
        before = _rchar()
        sha256_file(tmp_path / "before")  # copied outside any block: read
        assert _rchar() - before >= 4 * CHUNK
    before = _rchar()
    assert sha256_file(tmp_path / "inner") == hashlib.sha256(data).hexdigest()
    assert _rchar() - before >= 4 * CHUNK  # the block closed: read again
