"""Scoring an eval set with onnxruntime: the one code path evaluate, calibrate, validate
and promote use.

* **Data.** An eval set is an ``.npz`` whose keys are the model's input names plus ``y``
  (0/1 labels), or a Parquet or CSV table with one column per input plus ``y``
  (:mod:`relgate.tables`; :meth:`EvalData.open` decides the format by magic bytes, then
  extension). An ``.npz`` is read without pickles: the zip members are parsed with
  ``numpy.lib.format`` headers (object and structured dtypes refused). Inputs are streamed
  in chunks of rows: an uncompressed member is read with ``pread`` straight into a reused
  buffer, a compressed one is decompressed sequentially (or held in memory when it is
  small), so memory stays near one chunk plus the scores whatever the size of the set.
  A Fortran-order member is read as column strips with ``pread`` when stored, in memory
  when it is small, and refused when it is compressed and large (its rows cannot be
  streamed). Declared sizes are exact integers checked against the member before anything
  is allocated: a header cannot overflow int64 or promise more than the file holds.
* **Determinism.** onnxruntime runs with fixed settings (``intra_op_num_threads=threads``,
  ``inter_op_num_threads=1``, sequential execution, deterministic compute), so two runs
  with the same threads and batch size give bit-identical scores.
* **Batching.** Batches of ``batch_size`` rows when the model's batch dim is dynamic; a
  loop over batches of exactly *k* rows when it is fixed to *k* (the seed's models have
  k = 1), the last one padded by repeating its last row and the padding dropped.
* **Input transform.** ``scale``/``offset`` apply to float inputs per chunk as
  ``x * scale + offset``, computed in the input's own dtype (two roundings, no fused
  multiply-add); integer inputs are left alone. With the defaults (1, 0) inputs are passed
  through untouched.
* **Scores.** float64 ``[N]``: the ``score`` output as is (``[N]`` or ``[N, 1]``), column
  ``positive_index`` of a probability output, or for a features output the mean over D
  (the seed's mean-pooled logits; column ``positive_index`` when one is given).

The first session is created in a guarded child process (``onnxmodel.probe_session``);
scoring then runs in-process. :class:`Scorer` keeps the session and the parsed eval sets,
so a calibration sweep calling :func:`score_dataset` many times pays for them once.
"""

from __future__ import annotations

import gc
import json
import math
import os
import stat
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from relgate import onnxmodel
from relgate.errors import DataError, ModelError
from relgate.jsonio import atomic_write
from relgate.onnxmodel import ModelContract
from relgate.params import DEFAULT_BATCH

ProgressFn = Callable[[int, int], None]


class TableSpecLike(Protocol):
    """``params.eval_data`` for a Parquet/CSV eval set: the label column (``y``) and, per
    model input, the scalar columns assembled in order into ``[N, F]`` (empty: one column
    per input, named after it)."""

    @property
    def label(self) -> str: ...

    @property
    def inputs(self) -> Mapping[str, Sequence[str]]: ...


#: rows of declared probabilities must sum to 1 within this
ROW_SUM_ATOL = 1e-4
SMALL_MEMBER_BYTES = 64 * 1024 * 1024  # compressed members up to this size are held in memory
MAX_HEADER = 10000
#: deflate cannot expand data by more than about 1032:1 (a 258-byte match per 2 bits)
MAX_DEFLATE_RATIO = 1040

_NP_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name) for name in (
        "float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16",
        "uint32", "uint64", "bool", "complex64", "complex128")
}


@dataclass(frozen=True, kw_only=True)
class ScoreResult:
    """Scores of an eval set: float64 ``scores [N]`` (positive class), int8 ``y [N]``, and
    ``features [N, D]`` when the model exposes a features output (else None)."""

    scores: np.ndarray
    y: np.ndarray
    features: np.ndarray | None = None
    #: finite scores outside [0, 1], and rows of a probability matrix that do not sum to 1
    #: within ROW_SUM_ATOL or hold a value outside [0, 1] (see :func:`check_output_values`)
    outside_unit: int = 0
    bad_rows: int = 0

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])


# ---------------------------------------------------------------- eval data


class _Rows(Protocol):
    def read(self, start: int, stop: int, out: np.ndarray) -> tuple[np.ndarray, bool]:
        """Rows [start, stop): the array, and whether it is a private buffer (writable)."""
        ...


class _ArrayRows:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def read(self, start: int, stop: int, out: np.ndarray) -> tuple[np.ndarray, bool]:
        chunk = self.array[start:stop]
        if chunk.flags.c_contiguous and chunk.dtype.isnative:
            return chunk, False
        out = out[: stop - start]
        out[...] = chunk
        return out, True


class _StoredRows:
    """Rows of an uncompressed npz member, read with pread into the caller's buffer."""

    def __init__(self, fd: int, offset: int, row_bytes: int, dtype: np.dtype[Any]) -> None:
        self.fd, self.offset, self.row_bytes, self.dtype = fd, offset, row_bytes, dtype

    def read(self, start: int, stop: int, out: np.ndarray) -> tuple[np.ndarray, bool]:
        raw = _raw_view(out, stop - start, self.dtype)
        _pread_into(self.fd, raw, self.offset + start * self.row_bytes)
        return _native(out, stop - start, self.dtype), True


class _StreamRows:
    """Rows of a compressed npz member, decompressed in order."""

    def __init__(self, fh: IO[bytes], row_bytes: int, dtype: np.dtype[Any]) -> None:
        self.fh, self.row_bytes, self.dtype, self.pos = fh, row_bytes, dtype, 0

    def read(self, start: int, stop: int, out: np.ndarray) -> tuple[np.ndarray, bool]:
        if start < self.pos:
            raise AssertionError("compressed members are read in order")
        skip = (start - self.pos) * self.row_bytes  # rows not asked for (a sample) are passed over
        while skip:
            data = self.fh.read(min(skip, 16 * 1024 * 1024))
            if not data:
                raise DataError("an npz member ended early (truncated file)",
                                hint="re-create the eval set")
            skip -= len(data)
        raw = _raw_view(out, stop - start, self.dtype)
        view = raw.data.cast("B")
        got = 0
        while got < len(view):
            data = self.fh.read(min(len(view) - got, 16 * 1024 * 1024))
            if not data:
                raise DataError("an npz member ended early (truncated file)",
                                hint="re-create the eval set")
            view[got : got + len(data)] = data
            got += len(data)
        self.pos = stop
        return _native(out, stop - start, self.dtype), True


class _FortranRows:
    """Rows of an uncompressed Fortran-order member: one pread per column strip.

    Element ``(i, *r)`` of an ``[N, *rest]`` Fortran-order array lies at flat index
    ``i + N * t``, ``t`` the Fortran-order index of ``r`` in ``rest``: each strip ``t`` holds
    the N values of one trailing position, so rows ``[start, stop)`` are one slice per strip.
    """

    def __init__(self, fd: int, offset: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.fd, self.offset, self.dtype = fd, offset, dtype
        self.n, self.rest = shape[0], shape[1:]
        self.strips = math.prod(self.rest)

    def read(self, start: int, stop: int, out: np.ndarray) -> tuple[np.ndarray, bool]:
        rows = stop - start
        block = np.empty((self.strips, rows), dtype=self.dtype)
        size = self.dtype.itemsize
        for t in range(self.strips):
            _pread_into(self.fd, block[t], self.offset + (t * self.n + start) * size)
        part = out[:rows]
        part[...] = block.reshape((*self.rest[::-1], rows)).T  # converts the byte order too
        return part, True


def _raw_view(out: np.ndarray, rows: int, dtype: np.dtype[Any]) -> np.ndarray:
    """The first *rows* of *out* seen as the file's dtype (same itemsize)."""
    return out[:rows].view(dtype) if dtype != out.dtype else out[:rows]


def _native(out: np.ndarray, rows: int, dtype: np.dtype[Any]) -> np.ndarray:
    part = out[:rows]
    if not dtype.isnative:
        raw = part.view(dtype)
        part[...] = raw.astype(dtype.newbyteorder("="))
    return part


def _pread_into(fd: int, array: np.ndarray, offset: int) -> None:
    view = array.data.cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise DataError("an npz member ended early (truncated file)",
                            hint="re-create the eval set")
        done += n


@dataclass(frozen=True, kw_only=True)
class _Member:
    key: str
    info: zipfile.ZipInfo
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    fortran: bool
    header_len: int
    data_offset: int | None  # file offset of the array bytes for an uncompressed member

    @property
    def nbytes(self) -> int:
        """Exact (Python int): a declared shape must not wrap around in int64."""
        return math.prod(self.shape) * self.dtype.itemsize


class EvalData:
    """An eval set: model inputs by name (read in row chunks) and validated labels ``y``.

    Build it with :meth:`open` (an ``.npz``, Parquet or CSV path) or :meth:`from_arrays`
    (in memory).
    """

    def __init__(self, *, source: str, shapes: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]],
                 y: np.ndarray, path: Path | None = None,
                 members: Mapping[str, _Member] | None = None,
                 arrays: Mapping[str, np.ndarray] | None = None) -> None:
        self.source = source
        self.shapes = dict(shapes)
        self.y = y
        self.path = path
        self._members = dict(members or {})
        self._arrays = dict(arrays or {})

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def keys(self) -> list[str]:
        return sorted(self.shapes)

    # -- construction

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, labels: str = "binary",
             table: TableSpecLike | None = None,
             dtypes: Mapping[str, np.dtype[Any]] | None = None) -> EvalData:
        """Parse an eval set: headers (or a table's footer) and the labels only; inputs stay
        on disk. *labels* ``multiclass`` reads y as class labels instead of 0/1.

        The format comes from the file's magic bytes, then its extension
        (:func:`relgate.tables.detect_format`): ``.npz`` here, Parquet and CSV by
        :class:`relgate.tables.TableData`. *table* (``params.eval_data``: the label column,
        scalar columns assembled into an input) applies to tables only: an ``.npz`` given
        a non-default one is refused. *dtypes* are the model's inputs by name: the columns
        a table is read for (all numeric columns when None) and the types CSV text is
        parsed to; an ``.npz`` ignores them (the Scorer checks its dtypes).
        """
        from relgate import tables

        fmt = tables.detect_format(path)
        if fmt != "npz":
            return tables.TableData.load(path, fmt=fmt, labels=labels, spec=table,
                                         dtypes=dtypes)
        tables.refuse_spec_for_npz(path, table)
        return cls._open_npz(path, labels=labels)

    @classmethod
    def _open_npz(cls, path: str | os.PathLike[str], *, labels: str = "binary") -> EvalData:
        """Parse an ``.npz`` eval set (headers and ``y`` only; inputs stay on disk)."""
        p = Path(path)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise DataError(f"{p}: no such file", hint="check the data path") from None
        except OSError as exc:
            raise DataError(f"{p}: cannot stat ({exc.strerror})", hint="check the path") from None
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{p}: not a regular file", hint="point at an .npz file")
        members: dict[str, _Member] = {}
        try:
            with zipfile.ZipFile(p) as zf, open(p, "rb") as raw:
                for info in zf.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    member = _parse_member(p, zf, raw, info, st.st_size)
                    if member.key in members:
                        raise DataError(f"{p}: key {member.key!r} appears twice",
                                        hint="re-create the eval set with np.savez")
                    members[member.key] = member
            if labels == "none":  # task kind none: no labels; n is the inputs' row count
                y = _no_labels(p, members)
            elif "y" not in members:
                raise DataError(f"{p}: no 'y' (labels) in the eval set; keys: "
                                + (", ".join(sorted(members)) or "none"),
                                hint="an eval set holds the model's inputs plus y (0/1 labels)")
            elif len(members["y"].shape) != 1:  # before reading it: a header can declare GiBs
                raise DataError(f"{p}: y has shape {list(members['y'].shape)}, expected [N]",
                                hint="labels are one 0/1 value per sample")
            else:
                y = _labels(p, _read_whole(p, members["y"]), labels)
        except zipfile.BadZipFile as exc:
            raise DataError(f"{p}: not an .npz file or damaged ({exc})",
                            hint="save eval sets with numpy.savez") from None
        except _UNREADABLE as exc:
            raise DataError(f"{p}: unreadable .npz ({type(exc).__name__}: {_short(exc)})",
                            hint="re-create the eval set with numpy.savez") from None
        shapes = {k: (m.dtype, m.shape) for k, m in members.items() if k != "y"}
        return cls(source=str(p), shapes=shapes, y=y, path=p, members=members)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, source: str = "<arrays>") -> EvalData:
        """An eval set held in memory: the model inputs by name plus ``y``."""
        if "y" not in arrays:
            raise DataError(f"{source}: no 'y' (labels)", hint="pass the labels as y")
        held = {k: np.asarray(v) for k, v in arrays.items() if k != "y"}
        for k, v in held.items():
            if v.dtype.hasobject or v.dtype.fields is not None:
                raise DataError(f"{source}: {k!r} has dtype {v.dtype}",
                                hint="inputs must be plain numeric arrays")
        y = _labels(Path(source), np.asarray(arrays["y"]))
        return cls(source=source, shapes={k: (v.dtype, v.shape) for k, v in held.items()},
                   y=y, arrays=held)

    # -- reading

    @contextmanager
    def rows(self, names: list[str]) -> Iterator[dict[str, _Rows]]:
        """Row readers for the named inputs, open for one pass in row order."""
        with ExitStack() as stack:
            readers: dict[str, _Rows] = {}
            fd: int | None = None
            zf: zipfile.ZipFile | None = None
            for name in names:
                if name in self._arrays:
                    readers[name] = _ArrayRows(self._arrays[name])
                    continue
                m = self._members[name]
                row_bytes = m.nbytes // m.shape[0] if m.shape and m.shape[0] else 0
                if m.nbytes <= SMALL_MEMBER_BYTES and (m.fortran or m.data_offset is None):
                    assert self.path is not None
                    array = np.ascontiguousarray(_read_whole(self.path, m))
                    if m.data_offset is None:
                        self._arrays[name] = array  # small: keep for the next pass
                    readers[name] = _ArrayRows(array)
                elif m.data_offset is not None:
                    if fd is None:
                        fd = os.open(str(self.path), os.O_RDONLY)
                        stack.callback(os.close, fd)
                    readers[name] = (_FortranRows(fd, m.data_offset, m.shape, m.dtype) if m.fortran
                                     else _StoredRows(fd, m.data_offset, row_bytes, m.dtype))
                else:
                    if zf is None:
                        zf = stack.enter_context(zipfile.ZipFile(str(self.path)))
                    fh = stack.enter_context(zf.open(m.info))
                    fh.read(m.header_len)
                    readers[name] = _StreamRows(fh, row_bytes, m.dtype)
            yield readers

    def take(self, names: list[str], indices: np.ndarray) -> dict[str, np.ndarray]:
        """The rows at sorted *indices* of the named inputs, in memory (one pass, in order)."""
        picked = {name: np.empty((len(indices), *self.shapes[name][1][1:]),
                                 dtype=self.shapes[name][0].newbyteorder("="))
                  for name in names}
        with self.rows(names) as readers:
            for j, i in enumerate(int(v) for v in indices):
                for name, reader in readers.items():
                    row = picked[name][j : j + 1]
                    chunk, _ = _guarded(self.source, name, reader, i, i + 1, row)
                    row[...] = chunk
        return picked

    def count_nonfinite(self, names: list[str]) -> dict[str, int]:
        """NaN and infinite values per named float input (a pass in chunks of about 16 MiB)."""
        floats = [n for n in names if self.shapes[n][0].kind in "fc"]
        counts = dict.fromkeys(floats, 0)
        if not floats:
            return counts
        row = max(1, max(self._row_bytes(n) for n in floats))
        step = max(1, min(self.n, (16 * 1024 * 1024) // row))
        buffers = {n: np.empty((step, *self.shapes[n][1][1:]),
                               dtype=self.shapes[n][0].newbyteorder("=")) for n in floats}
        with self.rows(floats) as readers:
            for start in range(0, self.n, step):
                stop = min(self.n, start + step)
                for name, reader in readers.items():
                    chunk, _ = _guarded(self.source, name, reader, start, stop, buffers[name])
                    counts[name] += int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
        return counts

    def _row_bytes(self, name: str) -> int:
        dtype, shape = self.shapes[name]
        return math.prod(shape[1:]) * dtype.itemsize


def _guarded(source: str, name: str, reader: _Rows, start: int, stop: int,
             out: np.ndarray) -> tuple[np.ndarray, bool]:
    """``reader.read``, with a damaged member (bad CRC, broken stream) as bad input."""
    try:
        return reader.read(start, stop, out)
    except _DAMAGED as exc:
        raise DataError(f"{source}: member {name!r} is damaged "
                        f"({type(exc).__name__}: {_short(exc)})",
                        hint="re-create the eval set with numpy.savez") from None


def _short(exc: object) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


#: what reading a damaged zip member raises (bad CRC, broken deflate stream, short file)
_DAMAGED: tuple[type[BaseException], ...] = (zipfile.BadZipFile, zlib.error, EOFError, OSError)
_UNREADABLE: tuple[type[BaseException], ...] = (*_DAMAGED, ValueError, NotImplementedError,
                                               RuntimeError)


def _parse_member(p: Path, zf: zipfile.ZipFile, raw: IO[bytes], info: zipfile.ZipInfo,
                  file_size: int) -> _Member:
    key = info.filename[:-4]
    where = f"{p}: member {key!r}"
    if info.flag_bits & 0x1:
        raise DataError(f"{where} is encrypted", hint="save eval sets with numpy.savez")
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(fh, max_header_size=MAX_HEADER)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(fh, max_header_size=MAX_HEADER)
        else:
            raise DataError(f"{where}: unsupported .npy format {version}",
                            hint="save plain numeric arrays with numpy.savez")
        header_len = fh.tell()
    shape, fortran, dtype = header
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{where} has dtype {dtype} (objects and records are not read)",
                        hint="eval sets hold plain numeric arrays; never pickles")
    if any(int(d) < 0 for d in shape):
        raise DataError(f"{where}: header declares a negative dimension {list(shape)}",
                        hint="the file is corrupted; re-create it with numpy.savez")
    member = _Member(key=key, info=info, dtype=dtype, shape=tuple(int(d) for d in shape),
                     fortran=bool(fortran) and len(shape) > 1, header_len=header_len,
                     data_offset=None)
    if info.file_size != header_len + member.nbytes:
        raise DataError(f"{where}: header says {member.nbytes} bytes of data, the member has "
                        f"{info.file_size - header_len}", hint="the file is truncated or corrupted")
    if info.compress_type == zipfile.ZIP_DEFLATED and \
            info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024:
        raise DataError(f"{where}: declares {info.file_size} bytes, more than its "
                        f"{info.compress_size} compressed bytes can hold",
                        hint="the file is corrupted or hostile; re-create it with numpy.savez")
    if member.fortran and info.compress_type != zipfile.ZIP_STORED \
            and member.nbytes > SMALL_MEMBER_BYTES:
        raise DataError(f"{where}: a compressed Fortran-order array of {member.nbytes} bytes "
                        "cannot be read in row chunks (its rows are spread over the whole member)",
                        hint="save it C-contiguous (np.ascontiguousarray) or uncompressed "
                             "(np.savez)")
    if info.compress_type == zipfile.ZIP_STORED:
        raw.seek(info.header_offset)
        local = raw.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise DataError(f"{where}: bad zip local header", hint="the file is corrupted")
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
            + int.from_bytes(local[28:30], "little") + header_len
        if start + member.nbytes > file_size:
            raise DataError(f"{where}: data runs past the end of the file",
                            hint="the file is truncated")
        member = _Member(**{**member.__dict__, "data_offset": start})
    return member


def _read_whole(p: Path, m: _Member) -> np.ndarray:
    """One member fully in memory (labels, small compressed inputs, Fortran order)."""
    try:
        with zipfile.ZipFile(p) as zf, zf.open(m.info) as fh:
            fh.read(m.header_len)
            data = fh.read(m.nbytes)
    except _DAMAGED as exc:  # bad CRC, broken deflate stream: damaged data is bad input
        raise DataError(f"{p}: member {m.key!r} is damaged ({type(exc).__name__}: {_short(exc)})",
                        hint="re-create the eval set with numpy.savez") from None
    if len(data) != m.nbytes:
        raise DataError(f"{p}: member {m.key!r} is truncated", hint="re-create the eval set")
    flat = np.frombuffer(data, dtype=m.dtype)
    array = flat.reshape(m.shape, order="F") if m.fortran else flat.reshape(m.shape)
    out: np.ndarray = array.astype(m.dtype.newbyteorder("="), copy=not m.dtype.isnative)
    return out


def _no_labels(p: Path, members: Mapping[str, _Member]) -> np.ndarray:
    """Placeholder labels (zeros) for an eval set read without labels (task kind ``none``):
    one per row of its inputs, which must agree on the row count; a ``y`` is ignored."""
    rows = {m.shape[0] for k, m in members.items() if k != "y" and len(m.shape) >= 1}
    if not rows:
        raise DataError(f"{p}: no inputs in the eval set", hint="save the model's inputs by name")
    if len(rows) != 1:
        raise DataError(f"{p}: the inputs have different row counts ({sorted(rows)})",
                        hint="one row per sample in every input")
    n = rows.pop()
    if n == 0:
        raise DataError(f"{p}: the eval set has no samples", hint="use a non-empty eval set")
    return np.zeros(n, dtype=np.int8)


def _labels(p: Path, y: np.ndarray, kind: str = "binary") -> np.ndarray:
    """``y`` as int8 0/1, refusing anything else; with *kind* ``multiclass``, as int64 class
    labels (whole numbers >= 0; the task checks them against its classes)."""
    if y.ndim != 1:
        raise DataError(f"{p}: y has shape {list(y.shape)}, expected [N]",
                        hint="labels are one 0/1 value per sample")
    if y.size == 0:
        raise DataError(f"{p}: the eval set has no samples", hint="use a non-empty eval set")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{p}: y has dtype {y.dtype}", hint="labels are 0/1 integers")
    if kind == "multiclass":
        whole = np.isfinite(y) & (y >= 0) & (np.floor(y) == y) if y.dtype.kind == "f" else y >= 0
        if not bool(np.all(whole)):
            first = int(np.argmax(~whole))
            raise DataError(f"{p}: y[{first}] = {plain_value(y[first])} is not a class label "
                            f"({int((~whole).sum())} such labels)",
                            hint="multi-class labels are whole numbers 0..K-1")
        return y.astype(np.int64)
    bad = ~((y == 0) | (y == 1))
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"{p}: y[{first}] = {plain_value(y[first])} is not 0 or 1 "
                        f"({int(bad.sum())} such labels)", hint="labels must be 0 or 1")
    return y.astype(np.int8)


def plain_value(v: Any) -> str:
    """A label as a person writes it (``-1``, ``2.5``, ``nan``), never numpy's repr
    (``np.int64(-1)``)."""
    x = v.item() if hasattr(v, "item") else v
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return repr(x)


# ---------------------------------------------------------------- scorer


class Scorer:
    """A model loaded for scoring: guarded first load, then one in-process session.

    Reuse one Scorer for repeated scoring (a calibration sweep): the session, the contract
    and the parsed eval sets are kept between calls.
    """

    #: how eval sets' labels are read (``binary``: 0/1; a multi-class scorer sets ``multiclass``)
    label_kind = "binary"

    def __init__(self, model_path: str | os.PathLike[str], *, threads: int = 1,
                 batch_size: int = DEFAULT_BATCH, input_name: str | None = None,
                 output_name: str | None = None, positive_index: int | None = None,
                 contract: ModelContract | None = None, probe: bool = True,
                 probe_timeout_s: float = 60.0, table: TableSpecLike | None = None) -> None:
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}", hint="use --threads 1 or more")
        if batch_size < 1:
            raise ModelError(f"batch size must be >= 1, got {batch_size}",
                             hint="use --batch-size 1 or more")
        self.path = Path(model_path)
        #: how a Parquet/CSV eval set maps to the inputs (``params.eval_data``); None: the
        #: columns are named after the inputs, labels in ``y``
        self.table = table
        self.threads = threads
        self.batch_size = batch_size
        self.contract = contract if contract is not None else onnxmodel.load_contract(
            self.path, input_name=input_name, output_name=output_name,
            positive_index=positive_index)
        if probe:  # checks external data confinement again, then loads in a child
            onnxmodel.probe_session(self.path, timeout_s=probe_timeout_s, threads=threads)
        else:
            onnxmodel.external_data_files(self.path)
        self.session = onnxmodel.make_session(self.path, threads=threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.features_output = self.contract.features_output
        fetch = [self.contract.score_output]
        if self.features_output and self.features_output not in fetch:
            fetch.append(self.features_output)
        self.fetch = fetch
        first = self.contract.input(self.input_names[0]).shape if self.input_names else None
        dim0 = first[0] if first else None
        self.fixed_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None
        self._data: OrderedDict[tuple[Any, ...], EvalData] = OrderedDict()

    # -- data

    def data(
        self, source: str | os.PathLike[str] | EvalData | Mapping[str, np.ndarray]
    ) -> EvalData:
        """An eval set checked against the model's inputs (cached per unchanged file)."""
        if isinstance(source, EvalData):
            data = source
        elif isinstance(source, Mapping):
            data = EvalData.from_arrays(source)
        else:
            p = Path(source)
            try:
                st = os.stat(p)
                key: tuple[Any, ...] = (str(p.absolute()), st.st_dev, st.st_ino, st.st_size,
                                        st.st_mtime_ns)
            except OSError:
                key = (str(p),)
            cached = self._data.get(key)
            if cached is None:
                cached = EvalData.open(p, labels=self.label_kind, table=self.table,
                                       dtypes=self._input_dtypes())
                self._data[key] = cached
                while len(self._data) > 4:
                    self._data.popitem(last=False)
            data = cached
        self._check(data)
        return data

    def _input_dtypes(self) -> dict[str, np.dtype[Any]]:
        """The model's inputs and their numpy dtypes (those relgate can feed)."""
        out: dict[str, np.dtype[Any]] = {}
        for name in self.input_names:
            want = _NP_DTYPES.get(self.contract.input(name).dtype)
            if want is not None:
                out[name] = want
        return out

    def _check(self, data: EvalData) -> None:
        missing = [n for n in self.input_names if n not in data.shapes]
        if missing:
            raise DataError(
                f"{data.source}: missing key(s) {', '.join(map(repr, missing))}; the model's "
                f"inputs are {', '.join(map(repr, self.input_names))}, found "
                f"{', '.join(map(repr, data.keys)) or 'none'}",
                hint="an eval set's keys (or a table's columns) are the model's input names "
                     "plus y",
            )
        for name in self.input_names:
            info = self.contract.input(name)
            dtype, shape = data.shapes[name]
            want = _NP_DTYPES.get(info.dtype)
            if want is None:
                raise ModelError(f"{self.path}: input {info.describe()} has a dtype relgate "
                                 "cannot feed", hint="use a model with numeric inputs")
            if dtype.newbyteorder("=") != want:
                raise DataError(f"{data.source}: {name!r} is {dtype}, the model wants {want}",
                                hint=f"save {name!r} as {want} (e.g. x.astype(np.{want}))")
            if len(shape) < 1 or shape[0] != data.n:
                raise DataError(f"{data.source}: {name!r} has shape {list(shape)} but y has "
                                f"{data.n} samples", hint="one row per label")
            if info.shape is not None:
                ok = len(shape) == len(info.shape) and all(
                    not isinstance(d, int) or d == s
                    for d, s in zip(info.shape[1:], shape[1:], strict=False))
                if not ok:
                    raise DataError(
                        f"{data.source}: {name!r} has shape {list(shape)}, the model wants "
                        f"{onnxmodel.format_shape(info.shape)}",
                        hint="reshape the eval set to the model's input shape")

    # -- scoring

    def score(self, data: str | os.PathLike[str] | EvalData | Mapping[str, np.ndarray], *,
              scale: float = 1.0, offset: float = 0.0,
              progress: ProgressFn | None = None) -> ScoreResult:
        """Score every sample; see the module docstring for the rules."""
        ev = self.data(data)
        n = ev.n
        k = self.fixed_batch
        step = self.batch_size if k is None else max(k, (self.batch_size // k) * k)
        step = min(step, n) if k is None else step
        transform = scale != 1.0 or offset != 0.0
        buffers: dict[str, np.ndarray] = {}
        pads: dict[str, np.ndarray] = {}
        for name in self.input_names:
            dtype, shape = ev.shapes[name]
            native = dtype.newbyteorder("=")
            buffers[name] = np.empty((step, *shape[1:]), dtype=native)
            if k is not None:
                pads[name] = np.empty((k, *shape[1:]), dtype=native)
        floats = {n_ for n_ in self.input_names if ev.shapes[n_][0].kind in "fc"}
        scores = np.empty(n, dtype=np.float64)
        features: np.ndarray | None = None
        self._bad_rows = 0
        with ev.rows(self.input_names) as readers:
            for start in range(0, n, step):
                stop = min(n, start + step)
                m = stop - start
                feeds: dict[str, np.ndarray] = {}
                for name, reader in readers.items():
                    chunk, owned = _guarded(ev.source, name, reader, start, stop, buffers[name])
                    if transform and name in floats:
                        work = chunk if owned else buffers[name][:m]
                        # a scale/offset beyond the dtype's range gives inf/NaN inputs (then
                        # non-finite scores, which judging refuses), not warnings on stderr
                        with np.errstate(over="ignore", invalid="ignore"):
                            np.multiply(chunk, chunk.dtype.type(scale), out=work)
                            np.add(work, work.dtype.type(offset), out=work)
                        chunk = work
                    feeds[name] = chunk
                if k is None:
                    outs = self._run(feeds, start, stop)
                    features = self._collect(outs, scores, features, start, m, n)
                else:
                    for j in range(0, m, k):
                        part = {}
                        for name, chunk in feeds.items():
                            sub = chunk[j : j + k]
                            if sub.shape[0] < k:
                                pad = pads[name]
                                pad[: sub.shape[0]] = sub
                                pad[sub.shape[0] :] = sub[-1]
                                sub = pad
                            part[name] = sub
                        take = min(k, m - j)
                        outs = self._run(part, start + j, start + j + take)
                        features = self._collect(outs, scores, features, start + j, take, n)
                if progress is not None:
                    progress(stop, n)
        outside = int(np.count_nonzero((scores < 0.0) | (scores > 1.0)))
        return ScoreResult(scores=scores, y=self._labels(ev), features=features,
                           outside_unit=outside, bad_rows=self._bad_rows)

    def score_each(self, data: str | os.PathLike[str] | EvalData | Mapping[str, np.ndarray],
                   rows: np.ndarray, *, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
        """Scores of the rows at sorted indices *rows*, each scored on its own (batch of one).

        This is how a deployed model that serves one sample at a time sees them; comparing
        with :meth:`score` shows whether the scores depend on the rest of the batch. A model
        with a fixed batch of k gets each row repeated k times, as the padding does.
        """
        ev = self.data(data)
        picked = ev.take(self.input_names, rows)
        out = np.empty(len(rows), dtype=np.float64)
        for j, i in enumerate(int(v) for v in rows):
            one = EvalData(source=f"{ev.source}[{i}]", y=ev.y[i : i + 1],
                           shapes={k: (v.dtype, (1, *v.shape[1:])) for k, v in picked.items()},
                           arrays={k: v[j : j + 1] for k, v in picked.items()})
            out[j] = self.score(one, scale=scale, offset=offset).scores[0]
        return out

    def close(self) -> None:
        """Release the onnxruntime session (its weights) and the parsed eval sets; scores
        already returned are plain arrays and stay. A closed Scorer cannot score again."""
        self.session = None
        self._data.clear()

    def _run(self, feeds: dict[str, np.ndarray], start: int, stop: int) -> list[np.ndarray]:
        if self.session is None:
            raise RuntimeError(f"{self.path}: scorer used after close()")
        try:
            outs: list[np.ndarray] = self.session.run(self.fetch, feeds)
        except Exception as exc:
            if onnxmodel.out_of_memory(exc, (*onnxmodel._OOM_WORDS, "bfc_arena")):
                raise onnxmodel.memory_error(  # the batch did not fit: never the data's fault
                    self.path, f"scoring samples {start}..{stop - 1} in one batch (declare "
                    "resources.max_memory_mb to size the batch, or lower evaluate.batch_size)"
                ) from None
            raise ModelError(
                f"{self.path}: onnxruntime failed on samples {start}..{stop - 1}: {_short(exc)}",
                hint="check that the eval set matches the model's inputs (relgate inspect)",
            ) from None
        return outs

    def _collect(self, outs: list[np.ndarray], scores: np.ndarray, features: np.ndarray | None,
                 start: int, m: int, n: int) -> np.ndarray | None:
        c = self.contract
        out = self._matrix(outs[0])
        padded = self.fixed_batch is not None and out.shape[:1] == (self.fixed_batch,)
        if out.shape[:1] != (m,) and not padded:
            raise ModelError(f"{self.path}: output {c.score_output!r} returned shape "
                             f"{list(out.shape)} for {m} samples", hint="check --output")
        out = out[:m]
        if c.score_kind == "score" and c.output_type == "logit" and out.ndim == 2 \
                and out.shape[1] == 2 and c.positive_index is not None:
            idx = c.positive_index  # two-class logits: the log-odds is their difference
            value = out[:, idx].astype(np.float64) - out[:, 1 - idx].astype(np.float64)
        elif c.score_kind == "score":
            if out.ndim == 2 and out.shape[1] == 1:
                value = out[:, 0]
            elif out.ndim == 1 and c.positive_index is None:
                value = out
            else:
                raise ModelError(f"{self.path}: output {c.score_output!r} returned shape "
                                 f"{list(out.shape)}, expected [N] or [N, 1]",
                                 hint="pick another output with --output")
        elif c.score_kind == "probability" or (c.positive_index is not None
                                              and c.reducer in (None, "column")):
            idx = c.positive_index if c.positive_index is not None else 1
            if out.ndim != 2 or idx >= out.shape[1]:
                raise ModelError(f"{self.path}: output {c.score_output!r} returned shape "
                                 f"{list(out.shape)}; column {idx} does not exist",
                                 hint="check --positive-index")
            value = out[:, idx]
            if c.score_kind == "probability":
                rows = out.astype(np.float64)
                off = np.abs(rows.sum(axis=1) - 1.0) > ROW_SUM_ATOL
                off |= np.any((rows < 0.0) | (rows > 1.0), axis=1)
                self._bad_rows += int(np.count_nonzero(off))
        else:  # features, reduced as declared (mean when a record names no reducer)
            if out.ndim != 2:
                raise ModelError(f"{self.path}: features output {c.score_output!r} returned "
                                 f"shape {list(out.shape)}, expected [N, D]",
                                 hint="pick another output with --output")
            value = _reduce(out, c.reducer or "mean")
        scores[start : start + m] = value
        if self.features_output is None:
            return features
        feats = np.asarray(outs[self.fetch.index(self.features_output)])[:m]
        if feats.ndim != 2:
            raise ModelError(f"{self.path}: features output {self.features_output!r} returned "
                             f"shape {list(feats.shape)}, expected [N, D]",
                             hint="pick the score output with --output")
        if features is None:
            features = np.empty((n, feats.shape[1]), dtype=feats.dtype)
        elif feats.shape[1] != features.shape[1]:
            raise ModelError(f"{self.path}: features output changed width between batches",
                             hint="the model's features must have a fixed width")
        features[start : start + m] = feats
        return features


    def _labels(self, ev: EvalData) -> np.ndarray:
        """The labels, mapped through a ZipMap's class keys: 1 where y is the positive key.

        An eval set's y holds 0/1, so a binary ZipMap must have the keys 0 and 1 (whatever
        its positive key); other keys are refused rather than matched by position.
        """
        keys = self.contract.class_keys
        if keys is None:
            return ev.y.copy()
        if sorted(keys, key=str) != [0, 1]:
            raise ModelError(f"{self.path}: the ZipMap output {self.contract.score_output!r} has "
                             f"class keys {list(keys)}, but the labels y are 0/1",
                             hint="a binary ZipMap needs the class keys 0 and 1 (re-fit with "
                                  "0/1 labels, or export with zipmap: False)")
        positive = keys[self.contract.positive_index if self.contract.positive_index is not None
                        else 1]
        mapped: np.ndarray = (ev.y == positive).astype(np.int8)
        return mapped

    def _matrix(self, out: Any) -> np.ndarray:
        """The output as an array; a ZipMap's list of {key: p} as [N, K] in key order."""
        if isinstance(out, np.ndarray):
            return out
        if isinstance(out, list):
            keys = self.contract.class_keys
            try:
                if keys is None:
                    keys = tuple(sorted(out[0])) if out else ()
                return np.array([[row[k] for k in keys] for row in out], dtype=np.float64
                                ).reshape(len(out), len(keys))
            except (KeyError, TypeError, IndexError, AttributeError):
                raise ModelError(f"{self.path}: output {self.contract.score_output!r} returned "
                                 "maps without the ZipMap's class keys",
                                 hint="export with zipmap: False") from None
        return np.asarray(out)


def _reduce(out: np.ndarray, reducer: str) -> np.ndarray:
    """One score per row of a features output [N, D], as task.reducer declares."""
    x = out.astype(np.float64)
    if reducer == "mean":
        return np.asarray(x.mean(axis=1))
    if reducer == "max":
        return np.asarray(x.max(axis=1))
    if reducer == "max_abs":
        return np.asarray(np.abs(x).max(axis=1))
    if reducer == "l2":
        return np.asarray(np.sqrt(np.einsum("ij,ij->i", x, x)))
    raise ModelError(f"unknown reducer {reducer!r}", hint="use mean, max, max_abs, l2 or column")


def check_output_values(contract: ModelContract, result: ScoreResult, *,
                        where: str | os.PathLike[str]) -> list[str]:
    """Fail closed when the values contradict the declared type; warnings for the doubtful.

    A probability outside [0, 1], or probability rows that do not sum to 1 within
    ROW_SUM_ATOL, is bad input naming the count (DataError). A logit whose every value
    lies in [0, 1] may be a probability: that is a warning (returned), not a refusal.
    """
    kind, name, n = contract.output_type, contract.score_output, result.n
    if kind == "probability" and result.bad_rows:
        raise DataError(
            f"{where}: output {name!r} is read as probabilities, but {result.bad_rows} of {n} "
            f"rows do not sum to 1 within {ROW_SUM_ATOL:g} or hold values outside [0, 1]",
            hint="they are not probabilities: declare output_type: logit (two-class logits) "
                 "or features, or pick another output")
    if kind == "probability" and result.outside_unit:
        raise DataError(
            f"{where}: output {name!r} is read as a probability, but {result.outside_unit} of "
            f"{n} values lie outside [0, 1]",
            hint="declare output_type: logit if it is a log-odds score")
    inside = (result.scores >= 0.0) & (result.scores <= 1.0)  # NaN is neither (model_checks)
    if kind == "logit" and n and bool(np.all(inside)):
        return [f"output {name!r} is declared a logit, but every one of its {n} values lies in "
                "[0, 1]: it may be a probability (then declare output_type: probability, or "
                "its numbers are wrong)"]
    return []


# ---------------------------------------------------------------- the thin wrapper

_SCORERS: OrderedDict[tuple[Any, ...], Scorer] = OrderedDict()
_MAX_SCORERS = 2


_EXTERNAL_FILES: dict[tuple[Any, ...], list[Path]] = {}


def _model_key(path: Path) -> tuple[Any, ...]:
    """Identity of the model's files (path, inode, size, mtime of each), for the scorer cache.

    The external data files named by an .onnx file depend only on its bytes, so they are
    looked up (which parses the model) once per version of the .onnx file, not per call.
    """
    st = os.stat(path)
    own = (str(path.absolute()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if own not in _EXTERNAL_FILES:
        _EXTERNAL_FILES.clear()  # one model version at a time is all a sweep needs
        _EXTERNAL_FILES[own] = [e.abspath for e in onnxmodel.external_data_files(path)]
    out: list[Any] = [own]
    for f in _EXTERNAL_FILES[own]:
        fst = os.stat(f)
        out.append((fst.st_dev, fst.st_ino, fst.st_size, fst.st_mtime_ns))
    return tuple(out)


def _table_key(table: TableSpecLike | None) -> tuple[Any, ...] | None:
    """A hashable form of a table spec (None and the default spec are the same)."""
    if table is None:
        return None
    inputs = tuple(sorted((str(k), tuple(v)) for k, v in table.inputs.items()))
    if table.label == "y" and not inputs:
        return None
    return (table.label, inputs)


def release_sessions() -> None:
    """Close every cached Scorer, so that no onnxruntime session outlives its scoring.

    A baseline comparison calls this between the candidate and the previous release: each
    model's weights are in memory in turn, never both at once (issue 16).
    """
    while _SCORERS:
        _SCORERS.popitem(last=False)[1].close()
    gc.collect()  # a session caught in a reference cycle is freed now, not later


def get_scorer(model_path: str | os.PathLike[str], *, threads: int = 1, batch_size: int = DEFAULT_BATCH,
               input_name: str | None = None, output_name: str | None = None,
               positive_index: int | None = None,
               contract: ModelContract | None = None,
               table: TableSpecLike | None = None) -> Scorer:
    """A Scorer for the model, reused while the model's files are unchanged (and the
    settings, *table* included, are the same)."""
    path = Path(model_path)
    contract_key = None if contract is None else (
        json.dumps(contract.to_dict(), sort_keys=True), contract.output_type, contract.reducer,
        contract.class_keys)
    key = (_model_key(path), threads, batch_size, input_name, output_name, positive_index,
           contract_key, _table_key(table))
    scorer = _SCORERS.get(key)
    if scorer is None:
        scorer = Scorer(path, threads=threads, batch_size=batch_size, input_name=input_name,
                        output_name=output_name, positive_index=positive_index,
                        contract=contract, table=table)
        _SCORERS[key] = scorer
        while len(_SCORERS) > _MAX_SCORERS:
            _SCORERS.popitem(last=False)
    else:
        _SCORERS.move_to_end(key)
    return scorer


def score_dataset(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH,
    input_name: str | None = None,
    output_name: str | None = None,
    positive_index: int | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    progress: bool | ProgressFn | None = False,
    contract: ModelContract | None = None,
    table: TableSpecLike | None = None,
) -> ScoreResult:
    """Score an eval set (``.npz``, Parquet or CSV) with a model (see the module docstring);
    *table* is ``params.eval_data`` for a Parquet/CSV eval set (None: columns named after
    the inputs, labels ``y``).

    Repeated calls with the same model and settings reuse one :class:`Scorer` (session and
    parsed data), so a scale/offset sweep is cheap. ``progress=True`` shows a progress bar
    on an interactive terminal (never in CI); a callable receives ``(done, total)``.
    """
    scorer = get_scorer(model_path, threads=threads, batch_size=batch_size,
                        input_name=input_name, output_name=output_name,
                        positive_index=positive_index, contract=contract, table=table)
    if callable(progress):
        return scorer.score(data_path, scale=scale, offset=offset, progress=progress)
    if not progress:
        return scorer.score(data_path, scale=scale, offset=offset)
    from relgate.progress import step_bar

    with step_bar(f"scoring {Path(data_path).name}") as update:
        return scorer.score(data_path, scale=scale, offset=offset, progress=update)


def score_each(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    rows: np.ndarray,
    *,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH,
    input_name: str | None = None,
    output_name: str | None = None,
    positive_index: int | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    contract: ModelContract | None = None,
    table: TableSpecLike | None = None,
) -> np.ndarray:
    """The rows at sorted indices *rows* scored one at a time (:meth:`Scorer.score_each`),
    with the scorer :func:`score_dataset` uses for the same settings."""
    scorer = get_scorer(model_path, threads=threads, batch_size=batch_size,
                        input_name=input_name, output_name=output_name,
                        positive_index=positive_index, contract=contract, table=table)
    return scorer.score_each(data_path, np.asarray(rows), scale=scale, offset=offset)


def nonfinite_inputs(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH,
    input_name: str | None = None,
    output_name: str | None = None,
    positive_index: int | None = None,
    contract: ModelContract | None = None,
    table: TableSpecLike | None = None,
) -> dict[str, int]:
    """NaN and infinite values in each float input the model reads from the eval set (as
    stored, before any scale/offset): tells bad data apart from a model that makes NaN."""
    scorer = get_scorer(model_path, threads=threads, batch_size=batch_size,
                        input_name=input_name, output_name=output_name,
                        positive_index=positive_index, contract=contract, table=table)
    return scorer.data(data_path).count_nonfinite(scorer.input_names)


def write_scores(path: str | os.PathLike[str], result: ScoreResult,
                 extra: Mapping[str, np.ndarray[Any, Any]] | None = None) -> None:
    """Write ``score`` (float64), ``y`` (int8), ``features`` (when any) and *extra* arrays
    (e.g. calibrated ``prob`` and ``decision``) as an npz, atomically."""
    arrays = {"score": result.scores, "y": result.y}
    if result.features is not None:
        arrays["features"] = result.features
    arrays.update(extra or {})
    atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]
