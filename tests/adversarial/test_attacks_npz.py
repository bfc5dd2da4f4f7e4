"""Hostile ``.npz`` headers (issue 13): sizes that overflow int64, and Fortran-order members
that declare far more data than the file holds or that cannot be streamed by rows.

Each eval set is a real zip built byte by byte (local headers, zip64 extras, central
directory), so a test can declare a GiB without writing one: a stored member's data is a
hole in a sparse file, a deflated member is a hand-made stream of deflate blocks of
zeros. numpy itself reads every file built here (checked once below). Every command that
reads eval sets must exit 2 with one line, never exit 3, and stay within bounded memory
(peak RSS of the relgate process, measured in the child itself; no timing is asserted).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.adversarial.conftest import assert_clean_failure
from tests.support.registry import write_params

MIB = 1024**2
GIB = 1024**3
ZERO = bytes(16 * MIB)


# ---------------------------------------------------------------- building real zips by hand


def npy_header(descr: str, shape: tuple[int, ...], *, fortran: bool = False) -> bytes:
    """A version 1.0 .npy header, as numpy.lib.format writes it."""
    text = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}".encode()
    text = text.ljust(117 if len(text) < 117 else len(text) + 64 - (len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


class Member:
    """One zip member: a prefix of bytes, then ``zeros`` bytes of zeros (a hole when stored),
    with ``patches`` (offset into the member -> bytes) written over the zeros."""

    def __init__(self, name: str, prefix: bytes, zeros: int = 0, *, deflate: bool = False,
                 patches: dict[int, bytes] | None = None, declared: int | None = None) -> None:
        self.name, self.prefix, self.zeros, self.deflate = name.encode(), prefix, zeros, deflate
        self.patches = dict(patches or {})
        assert not (deflate and self.patches), "patches are for stored members"
        self.size = len(prefix) + zeros
        self.declared = self.size if declared is None else declared  # what the zip says

    def crc(self) -> int:
        crc = zlib.crc32(self.prefix)
        done = 0
        marks = sorted((off - len(self.prefix), data) for off, data in self.patches.items())
        for start, data in [*marks, (self.zeros, b"")]:
            while done < start:
                step = min(len(ZERO), start - done)
                crc = zlib.crc32(ZERO[:step], crc)
                done += step
            crc = zlib.crc32(data, crc)
            done += len(data)
        return crc

    def deflated(self) -> bytes:
        """Raw deflate: segments from fresh compressors (no back-references across them)."""
        def segment(data: bytes) -> bytes:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)

        block = segment(ZERO)
        full, rest = divmod(self.zeros, len(ZERO))
        return (segment(self.prefix) + block * full + segment(ZERO[:rest])
                + zlib.compressobj(9, zlib.DEFLATED, -15).flush())


def write_zip(path: Path, members: list[Member]) -> Path:
    """A zip64-sized archive of *members* (sizes always in zip64 extras)."""
    central = b""
    with open(path, "wb") as fh:
        for m in members:
            offset = fh.tell()
            crc = m.crc()
            data = m.deflated() if m.deflate else None
            csize = len(data) if data is not None else m.size
            method = 8 if m.deflate else 0
            extra = struct.pack("<HHQQ", 1, 16, m.declared, csize)
            fh.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0x21, crc,
                                 0xFFFFFFFF, 0xFFFFFFFF, len(m.name), len(extra)) + m.name + extra)
            if data is not None:
                fh.write(data)
            else:
                start = fh.tell()
                fh.write(m.prefix)
                for off, patch in sorted(m.patches.items()):
                    fh.seek(start + off)
                    fh.write(patch)
                fh.seek(start + m.size)
                fh.truncate()
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0x21,
                                   crc, 0xFFFFFFFF, 0xFFFFFFFF, len(m.name), len(extra), 0, 0, 0,
                                   0, offset) + m.name + extra
        cd_offset = fh.tell()
        fh.write(central)
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                             len(central), cd_offset, 0))
    return path


def labels(n: int) -> Member:
    y = (np.arange(n) % 2).astype(np.int8)
    return Member("y.npy", npy_header("|i1", (n,)) + y.tobytes())


def test_the_hand_made_zips_are_real_npz_files(tmp_path: Path) -> None:
    """numpy reads both kinds of member exactly as built (so the attacks below are real)."""
    x = np.arange(12, dtype="<f4").reshape(3, 4, order="F")
    path = write_zip(tmp_path / "ok.npz", [
        Member("x.npy", npy_header("<f4", (3, 4), fortran=True),
               patches={len(npy_header("<f4", (3, 4), fortran=True)): x.tobytes(order="F")},
               zeros=x.nbytes),
        Member("z.npy", npy_header("<f4", (2, 1000), fortran=True), 8000, deflate=True),
        labels(3)])
    with np.load(path) as npz:
        assert np.array_equal(npz["x"], x) and npz["x"].flags.f_contiguous
        assert np.array_equal(npz["z"], np.zeros((2, 1000), np.float32))
        assert list(npz["y"]) == [0, 1, 0]


# ---------------------------------------------------------------- the attacks


def _dynamic_model(path: Path) -> Path:
    """x float32 [N, D] (both dims dynamic) -> score [N] = mean over D."""
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["score"], keepdims=0)], "mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "D"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("npz")
    write_params(root)
    return {"root": root, "model": _dynamic_model(root / "mean.onnx"),
            "params": root / "params.yaml"}


# VmHWM is the peak RSS of this process image; ru_maxrss would also count the pytest
# process the child was forked from (Linux keeps the larger across exec)
_PEAK = ("import sys\n"
         "from relgate.cli import main\n"
         "code = main(sys.argv[2:])\n"
         "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
         "open(sys.argv[1], 'w').write(hwm.split()[1])\n"
         "sys.exit(code)\n")


def _relgate_peak(tmp: Path, *args: object) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run relgate in a child; its exit, output, and its own peak RSS (VmHWM) in MiB."""
    peak = tmp / "peak.txt"
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(peak), *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    return proc, int(peak.read_text()) // 1024


def _commands(s: dict[str, Path], data: Path, out: Path) -> dict[str, list[object]]:
    common = ["--model", s["model"], "--data", data]
    return {
        "evaluate": ["evaluate", *common, "--out", out / "scores.npz"],
        "calibrate": ["calibrate", *common, "--params", s["params"], "--out", out / "cal.json"],
        "validate": ["validate", *common, "--params", s["params"], "--out", out / "r.json"],
    }


@pytest.mark.parametrize("shape", [(4, 2**62), (2**62, 4), (4, 2**61, 2)])
def test_a_shape_whose_size_overflows_int64_is_bad_input(cli, setup, tmp_path, shape) -> None:
    """4 * 2**62 float32 wraps to 0 bytes in int64: the member 'matched' its (empty) data,
    and an allocation of the declared shape ended in exit 3 'internal error'."""
    path = write_zip(tmp_path / "overflow.npz",
                     [Member("x.npy", npy_header("<f4", shape)), labels(4)])
    for cmd, args in _commands(setup, path, tmp_path).items():
        line = assert_clean_failure(cli(*args))
        assert "header says" in line and "bytes of data" in line, (cmd, line)


def test_a_negative_dimension_is_bad_input(cli, setup, tmp_path) -> None:
    path = write_zip(tmp_path / "negative.npz",
                     [Member("x.npy", npy_header("<f4", (4, -4))), labels(4)])
    line = assert_clean_failure(cli(*_commands(setup, path, tmp_path)["validate"]))
    assert "negative dimension" in line


def test_a_deflated_member_cannot_declare_more_than_deflate_can_hold(cli, setup, tmp_path) -> None:
    """Header and zip agree on 1 GiB, but the member holds 1 KiB of deflate: impossible (deflate
    expands at most about 1032:1), so it is refused from the sizes, before any inflating."""
    head = npy_header("<f4", (2**24, 16))
    path = write_zip(tmp_path / "liar.npz", [
        Member("x.npy", head, 256 * 16 * 4, deflate=True, declared=len(head) + GIB),
        labels(2**24)])
    line = assert_clean_failure(cli(*_commands(setup, path, tmp_path)["validate"]))
    assert "compressed bytes can hold" in line, line


def test_a_compressed_fortran_member_declaring_a_gib_is_refused_in_bounded_memory(
        setup, tmp_path) -> None:
    """A 1 MiB file declares a 1 GiB Fortran-order float32 member (zeros, deflated). Its rows
    are spread over the whole member, so it cannot be streamed: it was inflated whole and
    copied (2x its size in RSS, the 4 GiB case took 8.4 GB and 72 s). It is refused from its
    header."""
    n, d = 4096, 2**16
    path = write_zip(tmp_path / "bomb.npz", [
        Member("x.npy", npy_header("<f4", (n, d), fortran=True), n * d * 4, deflate=True),
        labels(n)])
    assert path.stat().st_size < 2 * MIB
    for cmd, args in _commands(setup, path, tmp_path).items():
        proc, peak_mib = _relgate_peak(tmp_path, *args)
        line = assert_clean_failure(proc)
        assert "Fortran-order" in line and "cannot be read in row chunks" in line, (cmd, line)
        assert peak_mib < 400, f"{cmd}: peak RSS {peak_mib} MiB for a refused 1 GiB member"


def test_a_stored_fortran_member_is_streamed_in_bounded_memory(setup, tmp_path) -> None:
    """An uncompressed 512 MiB Fortran-order member (a sparse file) is read by column strips
    with pread: the scores are right and the peak RSS stays far below the member's size
    (it was read whole and then copied to C order: over 1 GiB)."""
    n, d = 16384, 8192
    head = npy_header("<f4", (n, d), fortran=True)
    column0 = np.arange(n, dtype="<f4")  # x[:, 0] = row index; every other value is 0
    last = np.full(n, 2.0, dtype="<f4")  # x[:, d-1] = 2
    path = write_zip(tmp_path / "fortran.npz", [
        Member("x.npy", head, n * d * 4,
               patches={len(head): column0.tobytes(), len(head) + (d - 1) * n * 4: last.tobytes()}),
        labels(n)])
    assert path.stat().st_blocks * 512 < 64 * MIB  # sparse: the test writes almost nothing
    out = tmp_path / "scores.npz"
    proc, peak_mib = _relgate_peak(tmp_path, "evaluate", "--model", setup["model"],
                                   "--data", path, "--out", out)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as scores:
        want = (column0.astype(np.float64) + 2.0) / d
        np.testing.assert_allclose(scores["score"], want, rtol=1e-6)
    assert peak_mib < 400, f"peak RSS {peak_mib} MiB streaming a 512 MiB member"
