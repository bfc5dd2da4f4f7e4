"""Eval sets as tables: Parquet and CSV, read with pyarrow into the same :class:`EvalData`
the ``.npz`` reader builds, so every command scores them through the one Scorer path.

* **Format.** :func:`detect_format` decides by magic bytes first (``PK`` zip: ``.npz``,
  ``PAR1`` at both ends: Parquet), then by extension (``.csv``). A name that contradicts
  the bytes (``x.parquet`` holding a zip, ``x.npz`` holding Parquet) and an unknown
  extension are refused, listing the formats: nothing is guessed.
* **Columns.** One column per model input: a scalar column (``[N]``), a fixed-size list
  (nested for more dims), a variable list whose rows all have one length, or an
  ``arrow.fixed_shape_tensor`` column (``[N, *shape]``, row-major); or, as
  ``eval_data.inputs`` names them, scalar columns assembled in order into ``[N, F]``. The
  label column is ``eval_data.label`` (``y``). Element types are plain numbers (ints,
  floats, bool); dictionary, string, struct, nested and null values are refused, each
  naming its column. Parquet types must match the model as ``.npz`` dtypes must; CSV text
  is parsed straight to the model's input dtype (the only type CSV can have). Labels are
  checked as for ``.npz`` (0/1, or whole numbers >= 0 for multi-class).
* **Memory.** Inputs are streamed: Parquet by record batch within row groups (buffered
  reads, no pre-buffering), CSV by block, so memory stays near one batch plus the scores.
  Before anything is decoded the footer is checked against the file: row counts add up,
  each column holds exactly N x F values (ragged lists and nulls show here), no column
  chunk lives in another file, every page header is walked and no page may decompress to
  more than :data:`MAX_PAGE_BYTES`, and the declared data may not exceed
  :data:`MAX_EXPANSION` times the file's size (a tiny file cannot declare 10^12 rows).
* **Identity.** The file is opened as a regular file (never a FIFO) and its identity
  (device, inode, size, mtime, ctime) is recorded; every later pass re-checks it before
  and after reading, so a file swapped or rewritten between the hash a report pins and the
  rows scored is refused rather than read.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import numpy as np

from relgate.errors import DataError, InputError
from relgate.hashing import open_regular
from relgate.scoring import EvalData, TableSpecLike, _Rows, plain_value

FORMATS = ("npz", "parquet", "csv")
#: a page may decompress to at most this (pyarrow writes 1 MiB pages; the .npz reader holds
#: compressed members of up to 64 MiB in memory)
MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_PAGE_HEADER = 16 * 1024 * 1024  # pyarrow's own limit on a page header
#: decoded inputs and labels may be at most this many times the file's size
MAX_EXPANSION = 4096
#: rows per record batch: about this many bytes of inputs (pyarrow's decoding of a batch
#: takes a few times its size; scoring is no faster with bigger batches)
BATCH_BYTES = 1024 * 1024
_NUMBER_KINDS = "biuf"


@dataclass(frozen=True, kw_only=True)
class TableSpec:
    """A :class:`relgate.scoring.TableSpecLike` for direct use (params carry their own)."""

    label: str = "y"
    inputs: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))


DEFAULT_SPEC = TableSpec()


# ---------------------------------------------------------------- format


def detect_format(path: str | os.PathLike[str]) -> str:
    """``npz``, ``parquet`` or ``csv`` from the file's bytes and name; else a refusal."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        fd, st = open_regular(p)
    except InputError as exc:
        raise DataError(exc.message, hint="point --data at an .npz, .parquet or .csv file") \
            from None
    try:
        head = os.pread(fd, 4, 0)
        tail = os.pread(fd, 4, st.st_size - 4) if st.st_size >= 8 else b""
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror})", hint="check the file") from None
    finally:
        os.close(fd)
    found = ("npz" if head[:2] == b"PK" else
             "parquet" if head == b"PAR1" and tail == b"PAR1" else None)
    named = {".npz": "npz", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(suffix)
    if found is not None and named not in (None, found):
        raise DataError(f"{p}: named {suffix} but holds {_FORMAT_NAMES[found]}",
                        hint=f"rename it to end in .{found}, or write it as {suffix}")
    if found is not None:
        return found
    if named == "parquet":
        raise DataError(f"{p}: not a Parquet file (no PAR1 magic at both ends; truncated or "
                        "another format)", hint="write it with pyarrow.parquet.write_table")
    if named is not None:
        return named  # .npz: the npz reader says what is wrong; .csv: text
    raise DataError(f"{p}: unknown eval set format {suffix or '(no extension)'!r} (formats: "
                    ".npz, .parquet, .csv)",
                    hint="eval sets are .npz (numpy.savez), .parquet (pyarrow) or .csv")


_FORMAT_NAMES = {"npz": "an .npz (zip) archive", "parquet": "Parquet", "csv": "CSV"}


def refuse_spec_for_npz(path: str | os.PathLike[str], spec: TableSpecLike | None) -> None:
    """A non-default table spec names table columns: on an ``.npz`` it is refused, never
    ignored (the arrays would be read another way than the params say)."""
    if spec is not None and (spec.label != "y" or spec.inputs):
        raise DataError(f"{path}: params eval_data (label {spec.label!r}, inputs "
                        f"{sorted(spec.inputs)}) names table columns, but this is an .npz",
                        hint="an .npz eval set holds arrays named after the model's inputs "
                             "plus y; drop eval_data or use a Parquet/CSV eval set")


# ---------------------------------------------------------------- columns


@dataclass(frozen=True)
class _Input:
    """How one model input is built from a batch: its columns and its per-row shape."""

    name: str
    columns: tuple[str, ...]
    dtype: np.dtype[Any]
    row_shape: tuple[int, ...]
    assembled: bool  # scalar columns stacked into [N, F]
    variable: bool = False  # a variable-length list column (lengths checked per batch)


def _element(t: Any) -> tuple[Any, tuple[int, ...], bool] | None:
    """(element type, row shape, variable) of a supported input column type, else None."""
    import pyarrow as pa  # type: ignore[import-untyped]

    if isinstance(t, pa.BaseExtensionType):
        if getattr(t, "extension_name", None) != "arrow.fixed_shape_tensor":
            return None
        perm = list(t.permutation or [])
        if perm and perm != list(range(len(perm))):
            return None
        inner = _element(t.storage_type)
        if inner is None or inner[2]:
            return None
        return inner[0], tuple(int(d) for d in t.shape), False
    if pa.types.is_fixed_size_list(t):
        inner = _element(t.value_type)
        if inner is None or inner[2]:
            return None
        return inner[0], (int(t.list_size), *inner[1]), False
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _element(t.value_type)
        if inner is None or inner[1]:  # one variable level of scalars
            return None
        return inner[0], (-1,), True
    if pa.types.is_dictionary(t):  # an Arrow dictionary of numbers: read as its values
        inner = _element(t.value_type)
        return inner if inner is not None and not inner[1] else None
    if _is_number(t):
        return t, (), False
    return None


def _is_number(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))


def _decoded(arr: Any) -> Any:
    """A dictionary-typed array as its values (other arrays as they are)."""
    import pyarrow as pa

    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _np_dtype(t: Any) -> np.dtype[Any]:
    out: np.dtype[Any] = np.dtype(t.to_pandas_dtype())
    return out


def _leaves(t: Any) -> int:
    """Parquet leaf columns of an Arrow type (the order pyarrow maps fields to leaves)."""
    import pyarrow as pa

    if isinstance(t, pa.BaseExtensionType):
        return _leaves(t.storage_type)
    if pa.types.is_dictionary(t):
        return 1
    if pa.types.is_struct(t):
        return sum(_leaves(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _leaves(t.key_type) + _leaves(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) \
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return _leaves(t.value_type)
    return 1


def _describe(t: Any) -> str:
    return " ".join(str(t).split())[:120]


def _kind_hint(col: str) -> str:
    return (f"store {col!r} as plain numbers: a scalar column, a fixed-size list "
            "(pa.list_(pa.float32(), F)) or a fixed_shape_tensor column; no nulls")


# ---------------------------------------------------------------- the data


@dataclass(frozen=True)
class _Identity:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class TableData(EvalData):
    """A Parquet or CSV eval set: labels in memory, inputs streamed per pass."""

    def __init__(self, *, source: str, path: Path, fmt: str, y: np.ndarray,
                 inputs: Mapping[str, _Input], identity: _Identity, metadata: Any,
                 csv_columns: tuple[str, ...] = (), batch_rows: int = 65536) -> None:
        shapes = {k: (i.dtype, (int(y.shape[0]), *i.row_shape)) for k, i in inputs.items()}
        super().__init__(source=source, shapes=shapes, y=y, path=path)
        self.fmt = fmt
        self.inputs = dict(inputs)
        self.identity = identity
        self._metadata = metadata
        self._csv_columns = csv_columns
        self.batch_rows = batch_rows

    # -- construction

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, labels: str = "binary",
             fmt: str | None = None, spec: TableSpecLike | None = None,
             dtypes: Mapping[str, np.dtype[Any]] | None = None) -> TableData:
        """Parse a Parquet or CSV eval set: schema checks, labels; inputs stay on disk.
        (:meth:`EvalData.open` calls this for a table; it is the one entry point.)"""
        p = Path(path)
        fmt = fmt or detect_format(p)
        if fmt not in ("parquet", "csv"):
            raise DataError(f"{p}: not a table ({fmt})", hint="use EvalData.open")
        spec = spec or DEFAULT_SPEC
        with _opened(p) as (fh, fd, ident):
            try:
                if fmt == "parquet":
                    return cls._open_parquet(p, fh, fd, ident, labels, spec, dtypes)
                return cls._open_csv(p, fh, ident, labels, spec, dtypes)
            except _arrow_errors() as exc:
                raise _arrow_error(p, exc, ()) from None

    @classmethod
    def _open_parquet(cls, p: Path, fh: IO[bytes], fd: int, ident: _Identity, labels: str,
                      spec: TableSpecLike, dtypes: Mapping[str, np.dtype[Any]] | None) -> TableData:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        pf = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)
        meta = pf.metadata
        schema = pf.schema_arrow
        names = list(schema.names)
        types = {n: schema.field(n).type for n in names if names.count(n) == 1}
        first_leaf, leaf = {}, 0
        for f in schema:
            first_leaf[f.name] = leaf
            leaf += _leaves(f.type)
        if leaf != meta.num_columns:
            raise DataError(f"{p}: the Arrow schema does not match the Parquet columns "
                            f"({leaf} vs {meta.num_columns})", hint="re-write the file with pyarrow")
        n = int(meta.num_rows)
        if sum(int(meta.row_group(r).num_rows) for r in range(meta.num_row_groups)) != n:
            raise DataError(f"{p}: the row groups do not add up to the {n} rows the footer "
                            "declares", hint="the file is corrupted; re-write it")
        inputs = _plan(p, names, types, spec, dtypes, csv=False)
        _check_label_type(p, spec.label, names, types)
        for inp in list(inputs.values()):
            if inp.variable and n:  # one length for every row: the first row's
                first = next(pf.iter_batches(batch_size=1, columns=[inp.columns[0]],
                                             use_threads=False)).column(0)
                width = len(first[0]) if first[0].is_valid else 0
                inputs[inp.name] = _Input(inp.name, inp.columns, inp.dtype, (width,), False, True)
        _check_footer(p, fd, meta, ident.size, n, inputs, spec.label,
                      {c: first_leaf[c] for c in (*_columns(inputs), spec.label)})
        rows = _batch_rows(inputs)
        y = _read_labels(p, spec.label, labels, (b.column(0) for b in pf.iter_batches(
            batch_size=65536, columns=[spec.label], use_threads=False)))
        if y.shape[0] != n:
            raise DataError(f"{p}: column {spec.label!r} holds {y.shape[0]} labels, the footer "
                            f"declares {n} rows", hint="the file is corrupted; re-write it")
        return cls(source=str(p), path=p, fmt="parquet", y=y, inputs=inputs, identity=ident,
                   metadata=meta, batch_rows=rows)

    @classmethod
    def _open_csv(cls, p: Path, fh: IO[bytes], ident: _Identity, labels: str,
                  spec: TableSpecLike, dtypes: Mapping[str, np.dtype[Any]] | None) -> TableData:
        import pyarrow as pa
        from pyarrow import csv

        # the header comes from a copy of the first block: a streaming reader on *fh* reads
        # ahead on pyarrow's IO threads, and would race the seek(0) and the pass below
        # (measured: wrong columns or SIGABRT on files over one block)
        block = fh.read(1 << 20)
        cut = block.rfind(b"\n")
        head = csv.open_csv(pa.BufferReader(block if cut < 0 else block[:cut + 1]),
                            read_options=csv.ReadOptions(block_size=1 << 20, use_threads=False))
        header = tuple(head.schema.names)
        del head
        names = list(header)
        if spec.label not in names:
            raise DataError(f"{p}: no label column {spec.label!r}; columns: "
                            f"{_listing(names)}", hint=_LABEL_HINT)
        types: dict[str, Any] = {}
        want = dict(dtypes) if dtypes is not None else None
        for name in names:
            if names.count(name) != 1:
                continue
            target = (want or {}).get(name)
            types[name] = pa.from_numpy_dtype(target) if target is not None else pa.float32()
        for inp, cols in spec.inputs.items():
            target = (want or {}).get(inp)
            for c in cols:
                if c in types:
                    types[c] = pa.from_numpy_dtype(target) if target is not None else pa.float32()
        inputs = _plan(p, names, types, spec, dtypes, csv=True)
        fh.seek(0)
        y = _read_labels(p, spec.label, labels, (b.column(0) for b in _csv_batches(
            p, fh, header, [spec.label], {spec.label: pa.float64()})))
        if y.shape[0] == 0:
            raise DataError(f"{p}: the eval set has no samples", hint="use a non-empty eval set")
        return cls(source=str(p), path=p, fmt="csv", y=y, inputs=inputs, identity=ident,
                   metadata=None, csv_columns=header, batch_rows=_batch_rows(inputs))

    # -- reading

    @contextmanager
    def rows(self, names: list[str]) -> Iterator[dict[str, _Rows]]:
        """Row readers for the named inputs: one streaming pass over their columns."""
        plan = {n: self.inputs[n] for n in names}
        assert self.path is not None
        with _opened(self.path, expect=self.identity) as (fh, _, _):
            batches = self._batches(fh, plan)
            shared = _Pass(self.path, batches, plan, self.n, self._csv_columns)
            try:
                yield {n: _TableRows(shared, n) for n in names}
            finally:
                shared.close()

    def _batches(self, fh: IO[bytes], plan: Mapping[str, _Input]) -> Iterator[Any]:
        import pyarrow as pa

        cols = _columns(plan)
        if not cols:
            return iter(())
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(fh, metadata=self._metadata, pre_buffer=False,
                                buffer_size=1 << 20)
            return iter(pf.iter_batches(batch_size=self.batch_rows, columns=cols,
                                        use_threads=False))
        types = {c: pa.from_numpy_dtype(i.dtype) for i in plan.values() for c in i.columns}
        return _csv_batches(self.path or Path(self.source), fh, self._csv_columns, cols, types)


# ---------------------------------------------------------------- planning and checks

_LABEL_HINT = "the label column is y, or the one params eval_data.label names"


def _listing(names: list[str]) -> str:
    shown = ", ".join(map(repr, names[:20]))
    return (shown or "none") + (f" (+{len(names) - 20} more)" if len(names) > 20 else "")


def _columns(plan: Mapping[str, _Input]) -> list[str]:
    out: list[str] = []
    for inp in plan.values():
        out.extend(c for c in inp.columns if c not in out)
    return out


def _plan(p: Path, names: list[str], types: Mapping[str, Any], spec: TableSpecLike,
          dtypes: Mapping[str, np.dtype[Any]] | None, *, csv: bool) -> dict[str, _Input]:
    """The inputs to expose and how each is built; refusals name the column."""
    wanted = list(dtypes) if dtypes is not None else None
    if wanted is not None:
        extra = [k for k in spec.inputs if k not in wanted]
        if extra:
            raise DataError(f"{p}: params eval_data.inputs names {_listing(extra)}, which the model "
                            f"does not take (its inputs: {_listing(wanted)})",
                            hint="name the model's input names under eval_data.inputs")
    candidates = wanted if wanted is not None else [
        *spec.inputs, *(n for n in names if n != spec.label and n not in spec.inputs)]
    plan: dict[str, _Input] = {}
    for name in candidates:
        cols = tuple(spec.inputs.get(name, ()))
        assembled = bool(cols)
        if not cols:
            cols = (name,)
        for c in cols:
            if c not in names:
                raise DataError(f"{p}: no column {c!r} for the model input {name!r}; columns: "
                                f"{_listing(names)}",
                                hint="name the input's columns in params eval_data.inputs"
                                if not assembled else "check params eval_data.inputs")
            if names.count(c) > 1:
                raise DataError(f"{p}: column {c!r} appears {names.count(c)} times",
                                hint="give every column its own name")
            if c == spec.label:
                raise DataError(f"{p}: column {c!r} is the label; it cannot be an input too",
                                hint="check params eval_data")
        if len(set(cols)) != len(cols):
            raise DataError(f"{p}: params eval_data.inputs lists a column twice for {name!r}",
                            hint="list each column once")
        elems = []
        for c in cols:
            t = types[c]
            el = _element(t)
            if el is None or (assembled and el[1]):
                if wanted is None and not assembled:
                    break  # not a model input we know of: an unsupported column is ignored
                what = "a scalar number" if assembled else "a number or a list of numbers"
                raise DataError(f"{p}: column {c!r} is {_describe(t)}, not {what}",
                                hint=_kind_hint(c))
            elems.append(el)
        else:
            found = [_np_dtype(e[0]) for e in elems]
            model_dtype = (dtypes or {}).get(name)
            if assembled and model_dtype is not None:  # name the column that is off
                odd = [c for c, d in zip(cols, found, strict=True) if d != model_dtype]
            else:
                common = max(set(found), key=found.count)
                odd = [c for c, d in zip(cols, found, strict=True) if d != common]
            if odd and (len(set(found)) != 1 or assembled):
                c = odd[0]
                want = model_dtype if model_dtype is not None else common
                more = f" (and {len(odd) - 1} more of its columns)" if len(odd) > 1 else ""
                raise DataError(f"{p}: column {c!r} of input {name!r} is "
                                f"{found[cols.index(c)]}, the model wants {want}{more}",
                                hint=f"write the input's columns as {want}")
            dtype = set(found)
            if csv and elems[0][1]:
                raise DataError(f"{p}: CSV column {cols[0]!r} cannot hold arrays",
                                hint="list the input's scalar columns in eval_data.inputs")
            row = (len(cols),) if assembled else elems[0][1]
            plan[name] = _Input(name, cols, dtype.pop(), row, assembled, elems[0][2])
    return plan


def _check_label_type(p: Path, label: str, names: list[str], types: Mapping[str, Any]) -> None:
    import pyarrow as pa

    if label not in names:
        raise DataError(f"{p}: no label column {label!r}; columns: {_listing(names)}",
                        hint=_LABEL_HINT)
    if names.count(label) > 1:
        raise DataError(f"{p}: column {label!r} appears {names.count(label)} times",
                        hint="give every column its own name")
    t = types[label]
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not _is_number(t):
        raise DataError(f"{p}: label column {label!r} is {_describe(t)}, not numbers",
                        hint="labels are 0/1 (or class numbers 0..K-1), one per row")


def _read_labels(p: Path, col: str, kind: str, chunks: Iterator[Any]) -> np.ndarray:
    """The label column as int8 0/1 (int64 class labels for *kind* ``multiclass``)."""
    parts: list[np.ndarray] = []
    done = 0
    for arr in chunks:
        if arr.null_count:
            first = done + _first_null(arr)
            raise DataError(f"{p}: label column {col!r} is empty (null) at row {first}",
                            hint="every row needs a label")
        v = _decoded(arr).to_numpy(zero_copy_only=False)
        parts.append(_label_values(p, col, v, kind, done))
        done += len(v)
    if not parts:
        raise DataError(f"{p}: the eval set has no samples", hint="use a non-empty eval set")
    y = np.concatenate(parts)
    if y.size == 0:
        raise DataError(f"{p}: the eval set has no samples", hint="use a non-empty eval set")
    return y


def _label_values(p: Path, col: str, y: np.ndarray, kind: str, offset: int) -> np.ndarray:
    if kind == "multiclass":
        with np.errstate(invalid="ignore"):
            whole = (np.isfinite(y) & (y >= 0) & (np.floor(y) == y)) if y.dtype.kind == "f" \
                else (y >= 0)
        if not bool(np.all(whole)):
            first = int(np.argmax(~whole))
            raise DataError(f"{p}: {col}[{offset + first}] = {plain_value(y[first])} is not a class "
                            f"label ({int((~whole).sum())} such labels in rows "
                            f"{offset}..{offset + len(y) - 1})",
                            hint="multi-class labels are whole numbers 0..K-1")
        return y.astype(np.int64)
    bad = ~((y == 0) | (y == 1))
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"{p}: {col}[{offset + first}] = {plain_value(y[first])} is not 0 or 1 "
                        f"({int(bad.sum())} such labels in rows {offset}..{offset + len(y) - 1})",
                        hint="labels must be 0 or 1")
    return y.astype(np.int8)


def _first_null(arr: Any) -> int:
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    return int(np.argmin(valid))


def _batch_rows(plan: Mapping[str, _Input]) -> int:
    row = sum(math.prod(i.row_shape) * i.dtype.itemsize for i in plan.values()) or 1
    return max(1, min(65536, BATCH_BYTES // row))


def _check_footer(p: Path, fd: int, meta: Any, size: int, n: int,
                  plan: Mapping[str, _Input], label: str, leaf: Mapping[str, int]) -> None:
    """Refuse a footer that declares more than the file can hold, before decoding a byte."""
    declared = n * (8 + sum(math.prod(i.row_shape) * i.dtype.itemsize for i in plan.values()))
    if declared > MAX_EXPANSION * max(size, 1):
        raise DataError(f"{p}: declares {n} rows ({declared} bytes of data), more than "
                        f"{MAX_EXPANSION}x its {size} bytes can plausibly hold",
                        hint="the file is corrupted or hostile; re-write it")
    per_row = {label: 1}
    for inp in plan.values():
        for c in inp.columns:
            per_row[c] = 1 if inp.assembled else math.prod(inp.row_shape)
    for col, width in per_row.items():
        j = leaf[col]
        values = 0
        for r in range(meta.num_row_groups):
            chunk = meta.row_group(r).column(j)
            values += int(chunk.num_values)
            if chunk.file_path:
                raise DataError(f"{p}: column {col!r} is stored in another file "
                                f"({chunk.file_path!r})", hint="write a self-contained file")
            _walk_pages(p, fd, col, chunk, size)
        if values != n * width:
            raise DataError(f"{p}: column {col!r} holds {values} values for {n} rows"
                            + (f" of {width}" if width != 1 else "")
                            + " (ragged lists or nulls)",
                            hint=_kind_hint(col))


def _walk_pages(p: Path, fd: int, col: str, chunk: Any, size: int) -> None:
    """Every page header of a column chunk: inside the chunk, none decompressing too far."""
    starts = [int(chunk.data_page_offset)]
    if chunk.has_dictionary_page and int(chunk.dictionary_page_offset or 0) > 0:
        starts.append(int(chunk.dictionary_page_offset))
    pos = min(starts)
    end = pos + int(chunk.total_compressed_size)
    if pos < 4 or end > size - 8 or end < pos:
        raise DataError(f"{p}: column {col!r} lies outside the file",
                        hint="the file is corrupted or truncated")
    while pos < end:
        hlen, uncompressed, compressed = _page_header(p, fd, col, pos, end)
        if uncompressed > MAX_PAGE_BYTES:
            raise DataError(f"{p}: a page of column {col!r} decompresses to {uncompressed} "
                            f"bytes (at most {MAX_PAGE_BYTES} are read at once)",
                            hint="re-write it with smaller pages (pyarrow's defaults)")
        pos += hlen + compressed
    if pos != end:
        raise DataError(f"{p}: the pages of column {col!r} run past its chunk",
                        hint="the file is corrupted")


class _Short(Exception):
    """A thrift header runs past the bytes read so far."""


def _page_header(p: Path, fd: int, col: str, pos: int, end: int) -> tuple[int, int, int]:
    """(header length, uncompressed size, compressed size) of the page at *pos*."""
    want = 256
    while True:
        buf = os.pread(fd, min(want, end - pos), pos)
        try:
            fields, hlen = _thrift_struct(buf, 0, 0, (1, 2, 3))
            break
        except _Short:
            if len(buf) < want or want >= MAX_PAGE_HEADER:
                raise DataError(f"{p}: a page header of column {col!r} is truncated or too "
                                "large", hint="the file is corrupted") from None
            want *= 4
        except ValueError:
            raise DataError(f"{p}: a page header of column {col!r} is malformed",
                            hint="the file is corrupted") from None
    unc, comp = fields.get(2, -1), fields.get(3, -1)
    if unc < 0 or comp < 0 or pos + hlen + comp > end:
        raise DataError(f"{p}: a page of column {col!r} declares impossible sizes",
                        hint="the file is corrupted")
    return hlen, unc, comp


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= len(buf):
            raise _Short
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _zigzag(v: int) -> int:
    return (v >> 1) ^ -(v & 1)


def _thrift_skip(buf: bytes, i: int, t: int, depth: int, *, in_list: bool = False) -> int:
    if t in (1, 2):  # booleans: in the field header, one byte in a list
        return i + 1 if in_list else i
    if t == 3:
        if i >= len(buf):
            raise _Short
        return i + 1
    if t in (4, 5, 6):
        return _varint(buf, i)[1]
    if t == 7:
        if i + 8 > len(buf):
            raise _Short
        return i + 8
    if t == 8:
        n, i = _varint(buf, i)
        if i + n > len(buf):
            raise _Short
        return i + n
    if t in (9, 10):
        if i >= len(buf):
            raise _Short
        h = buf[i]
        i += 1
        n, et = h >> 4, h & 0x0F
        if n == 15:
            n, i = _varint(buf, i)
        for _ in range(n):
            i = _thrift_skip(buf, i, et, depth + 1, in_list=True)
        return i
    if t == 11:
        n, i = _varint(buf, i)
        if n == 0:
            return i
        if i >= len(buf):
            raise _Short
        kv = buf[i]
        i += 1
        for _ in range(n):
            i = _thrift_skip(buf, i, kv >> 4, depth + 1, in_list=True)
            i = _thrift_skip(buf, i, kv & 0x0F, depth + 1, in_list=True)
        return i
    if t == 12:
        return _thrift_struct(buf, i, depth + 1, ())[1]
    raise ValueError(f"thrift type {t}")


def _thrift_struct(buf: bytes, i: int, depth: int,
                   want: tuple[int, ...]) -> tuple[dict[int, int], int]:
    """A compact-protocol struct from *i*: its wanted i32 fields and where it ends."""
    if depth > 32:
        raise ValueError("nested too deep")
    fields: dict[int, int] = {}
    fid = 0
    while True:
        if i >= len(buf):
            raise _Short
        h = buf[i]
        i += 1
        if h == 0:
            return fields, i
        t, delta = h & 0x0F, h >> 4
        if delta:
            fid += delta
        else:
            z, i = _varint(buf, i)
            fid = _zigzag(z)
        if t == 5 and fid in want:
            v, i = _varint(buf, i)
            fields[fid] = _zigzag(v)
        else:
            i = _thrift_skip(buf, i, t, depth)


# ---------------------------------------------------------------- streaming


@contextmanager
def _opened(p: Path, *, expect: _Identity | None = None
            ) -> Iterator[tuple[IO[bytes], int, _Identity]]:
    """The file open for reading (a regular file), its identity checked before and after."""
    try:
        fd, st = open_regular(p)
    except InputError as exc:
        raise DataError(exc.message, hint="check the --data path") from None
    ident = _Identity.of(st)
    fh = os.fdopen(fd, "rb", buffering=0)
    with fh:
        if expect is not None and ident != expect:
            raise DataError(f"{p}: the eval set changed since it was opened",
                            hint="score it again once nothing writes to it")
        yield fh, fd, ident
        if _Identity.of(os.fstat(fd)) != ident:
            raise DataError(f"{p}: the eval set changed while it was read",
                            hint="score it again once nothing writes to it")


def _csv_batches(p: Path, fh: IO[bytes], header: tuple[str, ...], cols: list[str],
                 types: Mapping[str, Any]) -> Iterator[Any]:
    from pyarrow import csv

    try:
        reader = csv.open_csv(
            fh, read_options=csv.ReadOptions(block_size=4 << 20, use_threads=False),
            parse_options=csv.ParseOptions(newlines_in_values=False),
            convert_options=csv.ConvertOptions(
                include_columns=cols, column_types=dict(types), null_values=[""],
                strings_can_be_null=False, quoted_strings_can_be_null=False))
        yield from reader
    except _arrow_errors() as exc:
        raise _arrow_error(p, exc, header) from None


class _Pass:
    """One pass over the batches, shared by the row readers of every input (they read the
    same row ranges in turn; rows all of them have passed are dropped)."""

    def __init__(self, path: Path, batches: Iterator[Any], plan: Mapping[str, _Input],
                 n: int, header: tuple[str, ...]) -> None:
        self.path, self.batches, self.plan, self.n, self.header = path, batches, plan, n, header
        self.chunks: deque[tuple[int, int, dict[str, np.ndarray]]] = deque()
        self.end = 0
        self.pos = dict.fromkeys(plan, 0)

    def close(self) -> None:
        close: Callable[[], None] | None = getattr(self.batches, "close", None)
        if close is not None:
            with suppress(*_arrow_errors()):
                close()

    def read(self, name: str, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Rows [start, stop) of input *name* copied into *out*, batch by batch: each
        batch's rows of *name* are dropped as soon as *name* has read past them, so a pass
        holds one batch plus what the other inputs have not read yet."""
        if start < self.pos[name]:
            raise AssertionError("table rows are read in order")
        part = out[: stop - start]

        def take(chunk: tuple[int, int, dict[str, np.ndarray]]) -> None:
            first, last, arrays = chunk
            lo, hi = max(start, first), min(stop, last)
            if lo < hi:
                part[lo - start : hi - start] = arrays[name][lo - first : hi - first]
            if last <= stop:  # rows are read in order: these are never asked for again
                arrays.pop(name, None)

        for chunk in self.chunks:
            if name in chunk[2]:
                take(chunk)
        while self.end < stop:
            try:
                self._pull()
            except _arrow_errors() as exc:
                raise _arrow_error(self.path, exc, self.header) from None
            take(self.chunks[-1])
        while self.chunks and not self.chunks[0][2]:
            self.chunks.popleft()
        self.pos[name] = stop
        return part

    def _pull(self) -> None:
        batch = next(self.batches, None)
        if batch is None:
            raise DataError(f"{self.path}: the file ended at row {self.end} of {self.n}",
                            hint="the file is truncated; re-write it")
        m = batch.num_rows
        if self.end + m > self.n:
            raise DataError(f"{self.path}: more rows than its {self.n} labels",
                            hint="the file changed or is corrupted; re-write it")
        arrays = {name: _convert(str(self.path), batch, inp, self.end)
                  for name, inp in self.plan.items()}
        self.chunks.append((self.end, self.end + m, arrays))
        self.end += m


class _TableRows:
    def __init__(self, shared: _Pass, name: str) -> None:
        self.shared, self.name = shared, name

    def read(self, start: int, stop: int, out: np.ndarray) -> tuple[np.ndarray, bool]:
        return self.shared.read(self.name, start, stop, out), True


def _convert(source: str, batch: Any, inp: _Input, offset: int) -> np.ndarray:
    """One input's rows of a record batch as [m, *row_shape] in its dtype."""
    m = batch.num_rows
    if inp.assembled:
        out = np.empty((m, len(inp.columns)), dtype=inp.dtype)
        for j, c in enumerate(inp.columns):
            out[:, j] = _scalars(source, batch.column(c), c, offset)
        return out
    col = inp.columns[0]
    arr = batch.column(col)
    if not inp.row_shape:
        return _scalars(source, arr, col, offset)
    if arr.null_count:
        raise DataError(f"{source}: column {col!r} is null at row {offset + _first_null(arr)}",
                        hint=_kind_hint(col))
    import pyarrow as pa

    if isinstance(arr.type, pa.BaseExtensionType):
        arr = arr.storage
    if inp.variable:
        lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
        bad = lengths != inp.row_shape[0]
        if bad.any():
            first = int(np.argmax(bad))
            raise DataError(f"{source}: column {col!r} is ragged: row {offset + first} holds "
                            f"{int(lengths[first])} values, row 0 holds {inp.row_shape[0]}",
                            hint=_kind_hint(col))
    values = arr
    for _ in inp.row_shape:
        values = values.flatten()
    flat = _scalars(source, values, col, offset, per_row=math.prod(inp.row_shape))
    return flat.reshape((m, *inp.row_shape))


def _scalars(source: str, arr: Any, col: str, offset: int, *, per_row: int = 1) -> np.ndarray:
    if arr.null_count:
        raise DataError(f"{source}: column {col!r} is null at row "
                        f"{offset + _first_null(arr) // per_row}", hint=_kind_hint(col))
    out: np.ndarray = _decoded(arr).to_numpy(zero_copy_only=False)
    return out


@functools.cache
def _arrow_errors() -> tuple[type[BaseException], ...]:
    """What pyarrow raises on a damaged or hostile file (bad input, never a crash)."""
    import pyarrow as pa

    return (pa.ArrowException, OSError, EOFError)

_CSV_COLUMN = re.compile(r"In CSV column #(\d+)")


def _arrow_error(p: Path, exc: BaseException, header: tuple[str, ...]) -> DataError:
    """pyarrow's error as a one-line refusal naming the column when pyarrow says which."""
    text = " ".join(str(exc).split())
    m = _CSV_COLUMN.search(text)
    where = ""
    if m and int(m.group(1)) < len(header):
        where = f" in column {header[int(m.group(1))]!r}"
    if len(text) > 200:
        text = text[:197] + "..."
    return DataError(f"{p}: unreadable{where} ({type(exc).__name__}: {text})",
                     hint="re-write the eval set with pyarrow (Parquet) or as plain CSV")
