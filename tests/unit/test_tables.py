"""relgate.tables: Parquet and CSV eval sets read into EvalData, against the .npz reader.

Each bad or hostile file must be a one-line DataError naming the column (exit 2), never
a crash or a silent reinterpretation; the same numbers in any format must score alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from relgate import tables
from relgate.errors import DataError
from relgate.scoring import EvalData, Scorer
from relgate.tables import TableData, TableSpec, detect_format
from tests.support.registry import DIM, W_TRUE, linear_model, readout_model

N = 517  # not a multiple of any batch size
F32 = {"x": np.dtype("float32")}
COLS = tuple(f"f{i}" for i in range(DIM))
SPEC = TableSpec(label="label", inputs=MappingProxyType({"x": COLS}))


def _data(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, DIM)).astype(np.float32)
    y = (rng.random(n) < 0.4).astype(np.int8)
    return x, y


def fixed_list(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(len(x), -1).ravel()),
                                             int(np.prod(x.shape[1:])))


def write_parquet(path: Path, **columns: Any) -> Path:
    options = columns.pop("_options", {})
    pq.write_table(pa.table(columns), path, **options)
    return path


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, *, label: str = "label") -> Path:
    """Float32 values in their shortest repr: parsing them back gives the same bits."""
    with open(path, "w") as fh:
        fh.write(",".join([*COLS, label]) + "\n")
        for row, v in zip(x, y, strict=True):
            fh.write(",".join([*(str(e) for e in row), str(int(v))]) + "\n")
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linear_model(tmp_path_factory.mktemp("m") / "model.onnx", 3 * W_TRUE)


@pytest.fixture(scope="module")
def same_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One eval set in every supported layout."""
    root = tmp_path_factory.mktemp("same")
    x, y = _data()
    np.savez(root / "d.npz", x=x, y=y)
    scalars = {c: x[:, i] for i, c in enumerate(COLS)}
    return {
        "npz": root / "d.npz",
        "fixed": write_parquet(root / "fixed.parquet", x=fixed_list(x), y=y),
        "tensor": write_parquet(root / "tensor.parquet",
                                x=pa.FixedShapeTensorArray.from_numpy_ndarray(x), y=y),
        "varlist": write_parquet(root / "varlist.parquet", x=pa.array(list(x)), y=y),
        "small_groups": write_parquet(root / "groups.parquet", x=fixed_list(x), y=y,
                                      _options={"row_group_size": 100,
                                                "compression": "zstd"}),
        "scalars": write_parquet(root / "scalars.parquet", **scalars, label=y),
        "csv": write_csv(root / "d.csv", x, y),
    }


def _spec(kind: str) -> TableSpec | None:
    return SPEC if kind in ("scalars", "csv") else None


# ---------------------------------------------------------------- same numbers


@pytest.mark.parametrize("kind", ["fixed", "tensor", "varlist", "small_groups", "scalars", "csv"])
def test_every_layout_scores_bit_identically_to_the_npz(model: Path, same_data: dict[str, Path],
                                                        kind: str) -> None:
    scorer = Scorer(model, batch_size=64)
    want = scorer.score(same_data["npz"])
    ev = EvalData.open(same_data[kind], table=_spec(kind), dtypes=F32)
    assert isinstance(ev, TableData) and ev.shapes["x"] == (np.dtype("float32"), (N, DIM))
    got = scorer.score(ev)
    assert got.scores.tobytes() == want.scores.tobytes()
    assert got.y.dtype == want.y.dtype and np.array_equal(got.y, want.y)
    # the other passes EvalData makes: sampled rows (take) and the non-finite count
    rows = np.array([0, 1, 63, 64, 65, 300, N - 1])
    assert np.array_equal(scorer.score_each(ev, rows), scorer.score_each(same_data["npz"], rows))
    assert ev.count_nonfinite(["x"]) == {"x": 0}


def test_scale_and_offset_apply_to_table_inputs_as_to_npz(model: Path,
                                                          same_data: dict[str, Path]) -> None:
    scorer = Scorer(model, batch_size=100)
    want = scorer.score(same_data["npz"], scale=1.5, offset=-0.25).scores
    got = scorer.score(EvalData.open(same_data["fixed"], dtypes=F32), scale=1.5, offset=-0.25)
    assert got.scores.tobytes() == want.tobytes()


def test_integer_inputs_from_parquet_and_csv(tmp_path: Path) -> None:
    readout = readout_model(tmp_path / "readout.onnx")
    rng = np.random.default_rng(4)
    t = rng.integers(0, 64, (N, 32), dtype=np.int64)
    y = rng.integers(0, 2, N).astype(np.int8)
    np.savez(tmp_path / "t.npz", input_tokens=t, y=y)
    write_parquet(tmp_path / "t.parquet", input_tokens=fixed_list(t), y=y)
    cols = tuple(f"t{i}" for i in range(32))
    with open(tmp_path / "t.csv", "w") as fh:
        fh.write(",".join([*cols, "y"]) + "\n")
        fh.writelines(",".join([*map(str, r), str(v)]) + "\n" for r, v in zip(t, y, strict=True))
    scorer = Scorer(readout)
    want = scorer.score(tmp_path / "t.npz").scores
    ints = {"input_tokens": np.dtype("int64")}
    assert scorer.score(EvalData.open(tmp_path / "t.parquet", dtypes=ints)).scores.tobytes() \
        == want.tobytes()
    spec = TableSpec(inputs={"input_tokens": cols})
    ev = EvalData.open(tmp_path / "t.csv", table=spec, dtypes=ints)
    assert ev.shapes["input_tokens"][0] == np.dtype("int64")
    assert scorer.score(ev).scores.tobytes() == want.tobytes()


def test_multiclass_labels_are_class_numbers(tmp_path: Path) -> None:
    x, _ = _data(50)
    y = np.arange(50) % 4
    p = write_parquet(tmp_path / "m.parquet", x=fixed_list(x), y=y.astype(np.int32))
    ev = EvalData.open(p, labels="multiclass", dtypes=F32)
    assert ev.y.dtype == np.int64 and np.array_equal(ev.y, y)
    bad = write_parquet(tmp_path / "b.parquet", x=fixed_list(x), y=np.where(y == 3, -1, y))
    with pytest.raises(DataError, match=r"y\[3\] = -1 is not a class label"):
        EvalData.open(bad, labels="multiclass", dtypes=F32)
    frac = write_parquet(tmp_path / "f.parquet", x=fixed_list(x), y=y + 0.5)
    with pytest.raises(DataError, match=r"y\[0\] = 0\.5 is not a class label"):
        EvalData.open(frac, labels="multiclass", dtypes=F32)


def test_label_column_is_renamable_and_float_or_bool_labels_are_read(tmp_path: Path) -> None:
    x, y = _data(20)
    for label in (y.astype(np.float64), y.astype(bool), y.astype(np.uint8)):
        p = write_parquet(tmp_path / "l.parquet", x=fixed_list(x), target=label)
        ev = EvalData.open(p, table=TableSpec(label="target"), dtypes=F32)
        assert ev.y.dtype == np.int8 and np.array_equal(ev.y, y)


def test_without_the_model_every_numeric_column_is_an_input(same_data: dict[str, Path]) -> None:
    ev = TableData.load(same_data["scalars"], spec=TableSpec(label="label"))
    assert ev.keys == sorted(COLS) and ev.shapes["f0"] == (np.dtype("float32"), (N,))


# ---------------------------------------------------------------- format detection


def test_format_is_decided_by_magic_then_extension(tmp_path: Path,
                                                   same_data: dict[str, Path]) -> None:
    assert detect_format(same_data["npz"]) == "npz"
    assert detect_format(same_data["fixed"]) == "parquet"
    assert detect_format(same_data["csv"]) == "csv"
    noext = tmp_path / "evalset"
    noext.write_bytes(same_data["fixed"].read_bytes())
    assert detect_format(noext) == "parquet"  # the bytes say so unambiguously


@pytest.mark.parametrize(("name", "source", "message"), [
    ("x.parquet", "npz", r"named \.parquet but holds an \.npz"),
    ("x.npz", "fixed", r"named \.npz but holds Parquet"),
    ("x.csv", "fixed", r"named \.csv but holds Parquet"),
    ("x.parquet", "csv", r"not a Parquet file"),
    ("x.feather", "csv", r"unknown eval set format '\.feather'.*\.npz.*\.parquet.*\.csv"),
    ("x", "csv", r"unknown eval set format '\(no extension\)'"),
])
def test_a_name_that_contradicts_the_bytes_or_an_unknown_format_is_refused(
        tmp_path: Path, same_data: dict[str, Path], name: str, source: str, message: str) -> None:
    p = tmp_path / name
    p.write_bytes(same_data[source].read_bytes())
    with pytest.raises(DataError, match=message) as err:
        EvalData.open(p, dtypes=F32)
    assert "\n" not in err.value.one_line()


def test_truncated_parquet_is_not_parquet(tmp_path: Path, same_data: dict[str, Path]) -> None:
    p = tmp_path / "cut.parquet"
    p.write_bytes(same_data["fixed"].read_bytes()[:-100])
    with pytest.raises(DataError, match="not a Parquet file"):
        EvalData.open(p, dtypes=F32)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.parquet"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        EvalData.open(fifo, dtypes=F32)


def test_params_eval_data_on_an_npz_is_refused_not_ignored(same_data: dict[str, Path]) -> None:
    with pytest.raises(DataError, match=r"names table columns, but this is an \.npz"):
        EvalData.open(same_data["npz"], table=TableSpec(label="target"), dtypes=F32)


# ---------------------------------------------------------------- bad files: one line, the column


def _refused(path: Path, match: str, *, spec: TableSpec | None = None,
             dtypes: dict[str, np.dtype[Any]] | None = None, labels: str = "binary") -> str:
    with pytest.raises(DataError, match=match) as err:
        ev = EvalData.open(path, table=spec, dtypes=F32 if dtypes is None else dtypes,
                           labels=labels)
        ev.count_nonfinite(list(ev.shapes))
    line = err.value.one_line()
    assert "\n" not in line and str(path) in line
    return line


def test_bad_parquet_files_name_their_column(tmp_path: Path) -> None:
    x, y = _data(40)
    cases: list[tuple[dict[str, Any], str, TableSpec | None]] = [
        ({"x": pa.array([str(v) for v in range(40)]), "y": y},
         r"column 'x' is string, not a number", None),
        ({"x": fixed_list(x)}, r"no label column 'y'; columns: 'x'", None),
        ({"z": fixed_list(x), "y": y}, r"no column 'x' for the model input 'x'; columns: 'z', 'y'",
         None),
        ({"x": fixed_list(x), "y": pa.array(["a"] * 40)}, r"label column 'y' is string", None),
        ({"x": fixed_list(x), "y": np.where(y == 1, 2, 0)}, r"y\[\d+\] = 2 is not 0 or 1", None),
        ({"x": fixed_list(x), "y": pa.array([None, *y[1:].tolist()], pa.int8())},
         r"label column 'y' is empty \(null\) at row 0", None),
        ({"x": pa.array([None, *list(x[1:])], pa.list_(pa.float32(), DIM)), "y": y},
         r"column 'x' holds .* values for 40 rows of 16 \(ragged lists or nulls\)", None),
        ({"x": pa.array([list(x[0][:3]), *list(x[1:])]), "y": y},
         r"column 'x' holds 627 values for 40 rows of 3 \(ragged", None),
        ({"f0": x[:, 0], "f1": x[:, 1].astype(np.float64), "label": y},
         r"column 'f1' of input 'x' is float64, the model wants float32",
         TableSpec(label="label", inputs={"x": ("f0", "f1")})),
        ({"f0": x[:, 0], "label": y}, r"no column 'f1' for the model input 'x'",
         TableSpec(label="label", inputs={"x": ("f0", "f1")})),
        ({"f0": x[:, 0], "label": y}, r"column 'label' is the label; it cannot be an input",
         TableSpec(label="label", inputs={"x": ("f0", "label")})),
        ({"x": fixed_list(x), "y": y}, r"eval_data.inputs names 'z', which the model does not take",
         TableSpec(inputs={"z": ("x",)})),
    ]
    for i, (columns, match, spec) in enumerate(cases):
        _refused(write_parquet(tmp_path / f"bad{i}.parquet", **columns), match, spec=spec)


def test_null_inside_an_input_is_refused_at_its_row(tmp_path: Path) -> None:
    x, y = _data(40)
    flat = pa.array(x.ravel())
    mask = np.zeros(flat.shape if hasattr(flat, "shape") else len(flat), dtype=bool)
    mask[5 * DIM + 3] = True
    values = pa.array(x.ravel(), mask=mask)
    p = write_parquet(tmp_path / "n.parquet",
                      x=pa.FixedSizeListArray.from_arrays(values, DIM), y=y)
    _refused(p, r"column 'x' (holds|is null at row 5)")
    scalar = write_parquet(tmp_path / "s.parquet",
                           f0=pa.array(x[:, 0], mask=np.arange(40) == 7), label=y)
    _refused(scalar, r"column 'f0' (is null at row 7|holds)",
             spec=TableSpec(label="label", inputs={"x": ("f0",)}))


def test_a_duplicated_column_is_refused(tmp_path: Path) -> None:
    x, y = _data(10)
    t = pa.Table.from_arrays([fixed_list(x), fixed_list(x), pa.array(y)], names=["x", "x", "y"])
    pq.write_table(t, tmp_path / "d.parquet")
    _refused(tmp_path / "d.parquet", r"column 'x' appears 2 times")


def test_bad_csv_files_name_their_column(tmp_path: Path) -> None:
    x, y = _data(30)
    good = write_csv(tmp_path / "good.csv", x, y).read_text().splitlines()
    head = good[0]

    def csv(name: str, lines: list[str]) -> Path:
        p = tmp_path / name
        p.write_text("\n".join(lines) + "\n")
        return p

    row = good[5].split(",")
    empty = [*row[:3], "", *row[4:]]
    word = [*row[:2], "abc", *row[3:]]
    cases = [
        (csv("empty.csv", [head, *good[1:5], ",".join(empty), *good[6:]]),
         r"column 'f3'.*(null|empty)"),
        (csv("word.csv", [head, *good[1:5], ",".join(word), *good[6:]]),
         r"in column 'f2'.*abc"),
        (csv("nolabel.csv", [head.replace("label", "lbl"), *good[1:]]),
         r"no label column 'label'"),
        (csv("nocol.csv", [head.replace("f7", "g7"), *good[1:]]),
         r"no column 'f7' for the model input 'x'"),
        (csv("label2.csv", [head, *good[1:3], ",".join([*row[:-1], "2"]), *good[4:]]),
         r"label\[2\] = 2 is not 0 or 1"),
        (csv("labelword.csv", [head, *good[1:3], ",".join([*row[:-1], "yes"]), *good[4:]]),
         r"in column 'label'.*yes"),
        (csv("short.csv", [head, *good[1:3], ",".join(row[:-3]), *good[4:]]),
         r"unreadable.*(columns|Expected)"),
    ]
    for path, match in cases:
        _refused(path, match, spec=SPEC)
    nospec = write_csv(tmp_path / "nospec.csv", x, y, label="y")
    line = _refused(nospec, r"no column 'x' for the model input 'x'")
    assert "name the input's columns in params eval_data.inputs" in line


def test_nan_in_a_table_reaches_the_nonfinite_check_as_in_npz(tmp_path: Path) -> None:
    x, y = _data(30)
    x[4, 2] = np.nan
    x[9, 0] = np.inf
    np.savez(tmp_path / "n.npz", x=x, y=y)
    want = EvalData.open(tmp_path / "n.npz").count_nonfinite(["x"])
    assert want == {"x": 2}
    p = write_parquet(tmp_path / "n.parquet", x=fixed_list(x), y=y)
    assert EvalData.open(p, dtypes=F32).count_nonfinite(["x"]) == want
    c = write_csv(tmp_path / "n.csv", x, y)
    assert "nan" in c.read_text() and "inf" in c.read_text()
    assert EvalData.open(c, table=SPEC, dtypes=F32).count_nonfinite(["x"]) == want


# ---------------------------------------------------------------- attacks


def test_attack_decompression_bomb_page_is_refused_before_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One page that decompresses far beyond what is read at once (zeros, zstd)."""
    n = 1 << 20
    zeros = np.zeros(n, np.float32)
    p = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"f0": zeros, "label": np.zeros(n, np.int8)}), p,
                   use_dictionary=False, compression="zstd", row_group_size=n,
                   max_rows_per_page=n, write_batch_size=n, data_page_size=1 << 30)
    assert p.stat().st_size < 64 * 1024  # 4 MiB of floats in a few KiB
    spec = TableSpec(label="label", inputs={"x": ("f0",)})
    monkeypatch.setattr(tables, "MAX_PAGE_BYTES", 1 << 20)  # the page holds 4 MiB
    monkeypatch.setattr(tables, "MAX_EXPANSION", 1 << 30)  # this rule alone (the next test)
    before = pa.total_allocated_bytes()
    _refused(p, r"a page of column '(f0|label)' decompresses to \d+ bytes", spec=spec)
    assert pa.total_allocated_bytes() - before < 1 << 20
    # the same numbers written with pyarrow's default pages are read
    ok = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"f0": zeros, "label": np.zeros(n, np.int8)}), ok,
                   compression="zstd", use_dictionary=False)
    assert EvalData.open(ok, table=spec, dtypes=F32).n == n


def test_attack_huge_declared_row_group_in_a_tiny_file_is_refused(tmp_path: Path) -> None:
    """8M rows of zeros in one row group of one page: 2 KiB declaring 96 MB of decoded data."""
    n = 8_000_000
    p = tmp_path / "huge.parquet"
    pq.write_table(pa.table({"f0": np.zeros(n, np.float32), "label": np.zeros(n, np.int8)}), p,
                   compression="zstd", row_group_size=n, max_rows_per_page=n, write_batch_size=n,
                   use_dictionary=False)
    assert p.stat().st_size < 8192
    _refused(p, r"declares 8000000 rows \(\d+ bytes of data\), more than 4096x",
             spec=TableSpec(label="label", inputs={"x": ("f0",)}))


def test_attack_footer_declaring_more_rows_than_its_pages_hold(tmp_path: Path) -> None:
    """The footer's row counts rewritten (same varint length) to promise rows that are not there."""
    n = 300_000
    x = np.random.default_rng(1).normal(size=n).astype(np.float32)
    p = write_parquet(tmp_path / "lie.parquet", f0=x, label=(np.arange(n) % 2).astype(np.int8))
    raw = bytearray(p.read_bytes())
    footer_len = int.from_bytes(raw[-8:-4], "little")
    start = len(raw) - 8 - footer_len

    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            b, v = v & 0x7F, v >> 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)

    old, new = varint(2 * n), varint(2 * 1_000_000)  # zigzag of the i64 row counts
    assert len(old) == len(new)
    footer = bytes(raw[start:-8])
    assert footer.count(old) >= 2
    raw[start:-8] = footer.replace(old, new)
    p.write_bytes(bytes(raw))
    line = _refused(p, r"(footer|ended at row|holds|unreadable)",
                    spec=TableSpec(label="label", inputs={"x": ("f0",)}))
    assert "label" in line or "f0" in line or "footer" in line


def test_dictionary_typed_columns_are_read_as_their_values(tmp_path: Path) -> None:
    """An Arrow dictionary of numbers (restored as such by some pyarrow versions, decoded by
    others) is read as its values; a dictionary of strings is refused naming its column."""
    x, y = _data(30)
    spec = TableSpec(label="label", inputs={"x": tuple(COLS)})
    cols = {c: pa.array(x[:, i]).dictionary_encode() for i, c in enumerate(COLS)}
    p = write_parquet(tmp_path / "dict.parquet", **cols, label=pa.array(y).dictionary_encode())
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ev = EvalData.open(p, table=spec, dtypes=F32)
    assert np.array_equal(ev.y, y) and ev.y.dtype == np.int8
    got = ev.take(["x"], np.arange(30))["x"]
    assert got.dtype == np.float32 and got.tobytes() == x.tobytes()
    words = write_parquet(tmp_path / "w.parquet", x=fixed_list(x),
                          y=pa.array([str(v) for v in y]).dictionary_encode())
    _refused(words, r"label column 'y' is (dictionary|string)")
    # Parquet's own dictionary encoding (pyarrow's default) is just storage: read as usual
    plain = write_parquet(tmp_path / "plain.parquet", x=fixed_list(np.round(x)), y=y)
    assert "RLE_DICTIONARY" in pq.ParquetFile(plain).metadata.row_group(0).column(0).encodings
    assert EvalData.open(plain, dtypes=F32).n == 30


def test_attack_nested_struct_and_list_of_lists_are_refused(tmp_path: Path) -> None:
    x, y = _data(12)
    struct = pa.StructArray.from_arrays([fixed_list(x), pa.array(y)], names=["a", "b"])
    _refused(write_parquet(tmp_path / "s.parquet", x=struct, y=y), r"column 'x' is struct<a:")
    nested = pa.array([[list(r[:8]), list(r[8:])] for r in x])
    _refused(write_parquet(tmp_path / "n.parquet", x=nested, y=y),
             r"column 'x' is list<element: list<element: float>>, not a number")
    # an unused struct column beside the inputs is left alone
    ok = write_parquet(tmp_path / "ok.parquet", meta=struct, x=fixed_list(x), y=y)
    assert EvalData.open(ok, dtypes=F32).keys == ["x"]


def test_attack_tensor_with_a_permutation_is_refused(tmp_path: Path) -> None:
    x, y = _data(12)
    t = pa.fixed_shape_tensor(pa.float32(), [4, 4], permutation=[1, 0])
    arr = pa.ExtensionArray.from_storage(t, fixed_list(x))
    _refused(write_parquet(tmp_path / "p.parquet", x=arr, y=y), r"column 'x' is extension")


def test_attack_file_swapped_after_opening_is_refused(tmp_path: Path,
                                                      same_data: dict[str, Path]) -> None:
    p = tmp_path / "d.parquet"
    p.write_bytes(same_data["fixed"].read_bytes())
    ev = EvalData.open(p, dtypes=F32)
    other = tmp_path / "other.parquet"
    x, y = _data(seed=9)
    write_parquet(other, x=fixed_list(x), y=y)
    os.replace(other, p)  # same name, other bytes: the report's hash would be of these
    with pytest.raises(DataError, match="changed since it was opened"):
        ev.count_nonfinite(["x"])


def test_attack_file_rewritten_in_place_while_read_is_refused(tmp_path: Path,
                                                              same_data: dict[str, Path]) -> None:
    p = tmp_path / "d.parquet"
    p.write_bytes(same_data["fixed"].read_bytes())
    ev = EvalData.open(p, dtypes=F32)
    out = np.empty((N, DIM), np.float32)
    with pytest.raises(DataError, match="changed while it was read"), ev.rows(["x"]) as readers:
        readers["x"].read(0, 10, out)
        with open(p, "r+b") as fh:  # same inode: only the identity check can tell
            fh.seek(100)
            fh.write(b"\0" * 8)


def test_attack_corrupted_bytes_never_crash(tmp_path: Path, same_data: dict[str, Path]) -> None:
    """Bytes flipped all over a small Parquet file: a refusal or the same numbers, nothing else."""
    x, y = _data(64)
    src = write_parquet(tmp_path / "src.parquet", x=fixed_list(x), y=y,
                        _options={"row_group_size": 16, "compression": "snappy"})
    raw = src.read_bytes()
    rng = np.random.default_rng(5)
    outcomes = {"refused": 0, "read": 0}
    for i in range(60):
        bad = bytearray(raw)
        for at in rng.integers(4, len(raw) - 8, size=int(rng.integers(1, 4))):
            bad[int(at)] = int(rng.integers(0, 256))
        p = tmp_path / f"c{i}.parquet"
        p.write_bytes(bytes(bad))
        try:
            ev = EvalData.open(p, dtypes=F32)
            ev.count_nonfinite(["x"])
            outcomes["read"] += 1
        except DataError as exc:
            assert "\n" not in exc.one_line()
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


def test_page_header_walker_reads_what_pyarrow_writes(tmp_path: Path,
                                                      same_data: dict[str, Path]) -> None:
    """The thrift walk covers each chunk exactly (v1 and v2 pages, dictionary pages, stats)."""
    x, y = _data(5000)
    v2 = write_parquet(tmp_path / "v2.parquet", x=fixed_list(x), y=y,
                       _options={"data_page_version": "2.0", "compression": "gzip",
                                 "write_page_index": True, "max_rows_per_page": 700})
    paths = [same_data[k] for k in ("fixed", "small_groups", "scalars", "varlist")] + [v2]
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        fd = os.open(path, os.O_RDONLY)
        try:
            for r in range(meta.num_row_groups):
                for j in range(meta.num_columns):
                    tables._walk_pages(path, fd, "c", meta.row_group(r).column(j),
                                       os.fstat(fd).st_size)
        finally:
            os.close(fd)
    assert EvalData.open(v2, dtypes=F32).count_nonfinite(["x"]) == {"x": 0}


_CSV_CHILD = """
import sys
import numpy as np
from relgate.scoring import score_dataset
np.save(sys.argv[3], score_dataset(sys.argv[1], sys.argv[2]).scores)
"""


def test_a_csv_of_many_blocks_is_read_whole_every_time(tmp_path: Path) -> None:
    """Regression: the header was read by a streaming reader left open on the file, whose
    read-ahead raced the label pass: on files over one block, wrong-column errors or SIGABRT
    in most runs (measured 4 of 6). Each child must score every row, equal to the .npz."""
    import subprocess
    import sys

    rng = np.random.default_rng(4)
    x = rng.normal(size=(60_000, DIM)).astype(np.float32)
    y = (x @ W_TRUE > 0).astype(np.int64)
    path = tmp_path / "big.csv"
    header = ",".join(f"c{i}" for i in range(DIM))
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", fmt=["%.9g"] * DIM + ["%d"],
               header=header + ",y", comments="")
    assert path.stat().st_size > 6 * (1 << 20)  # several of the reader's blocks
    model = linear_model(tmp_path / "m.onnx", W_TRUE)
    spec = TableSpec(label="y", inputs=MappingProxyType(
        {"x": tuple(f"c{i}" for i in range(DIM))}))
    want = np.asarray(Scorer(model).score(EvalData.from_arrays({"x": x, "y": y})).scores)
    for k in range(4):
        out = tmp_path / f"s{k}.npy"
        code = _CSV_CHILD.replace("score_dataset(sys.argv[1], sys.argv[2])",
                                  "score_dataset(sys.argv[1], sys.argv[2], table=SPEC)")
        code = ("from types import MappingProxyType\nfrom relgate.tables import TableSpec\n"
                f"SPEC = TableSpec(label='y', inputs=MappingProxyType({{'x': {spec.inputs['x']!r}}}))\n"
                + code)
        done = subprocess.run([sys.executable, "-c", code, str(model), str(path), str(out)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-400:]
        assert np.array_equal(np.load(out), want)
