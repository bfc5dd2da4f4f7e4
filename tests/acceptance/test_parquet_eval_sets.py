"""Parquet and CSV eval sets through the real CLI (issue 18, point 2).

The same numbers written as ``.npz``, as Parquet (a fixed-size-list column, a
``fixed_shape_tensor`` column, scalar columns) and as CSV give the same validate report
to the last bit, with no params change: the columns are named after the model's inputs
plus ``y``. Every report pins the file's sha256 (checked against ``openssl dgst``); a bad
table is a one-line error naming the column (exit 2) with nothing written; a full pass
over a large Parquet file stays near one record batch of memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.support.registry import DIM, PARAMS, make_registry, relgate


def cli(root: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """``python -m relgate ...`` in a child, from *root*.

    The CLI pins numpy's SIMD dispatch before numpy loads (relgate.numeric_env), which an
    in-process :func:`relgate` call cannot do once pytest has imported numpy: the last bit
    of a metric may differ between the two. Runs compared bit for bit are made the same way.
    """
    return subprocess.run([sys.executable, "-m", "relgate", *map(str, args)], cwd=root,
                          capture_output=True, text=True, timeout=300, check=False)


def openssl_sha256(path: Path) -> str:
    out = subprocess.run(["openssl", "dgst", "-sha256", "-r", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[0]


def fixed_list(x: np.ndarray) -> pa.Array:
    width = int(np.prod(x.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(len(x), width).ravel()), width)


def _report(root: Path, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((root / name).read_text())
    return out


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


# ---------------------------------------------------------------- binary, array input


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test registry (x [N, 16] float32), its splits also as Parquet, calibrated on val."""
    root = make_registry(tmp_path_factory.mktemp("reg"))
    for split in ("val", "test"):
        with np.load(root / "data" / f"{split}.npz") as d:
            x, y = d["x"], d["y"]
        pq.write_table(pa.table({"x": fixed_list(x), "y": y}), root / "data" / f"{split}.parquet")
    with np.load(root / "data" / "test.npz") as d:
        x, y = d["x"], d["y"]
    pq.write_table(pa.table({"y": y, "x": pa.FixedShapeTensorArray.from_numpy_ndarray(x)}),
                   root / "data" / "test_tensor.parquet", row_group_size=300,
                   compression="zstd")
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                   "--out", "analysis/calibration.json") == 0
    return root


@needs_openssl
def test_validate_on_parquet_gives_the_npz_metrics_and_pins_the_file(registry: Path) -> None:
    reports = {}
    runs = [("cli", "test.npz"), ("cli", "test.parquet"), ("in", "test.npz"),
            ("in", "test_tensor.parquet")]
    for how, name in runs:
        args = ("validate", "--model", "models/model.onnx", "--data", f"data/{name}",
                "--calibration", "analysis/calibration.json", "--out", f"out/{how}-{name}.json")
        if how == "cli":
            res = cli(registry, *args)
            assert res.returncode == 0, res.stderr
        else:
            assert relgate(registry, *args) == 0
        reports[how, name] = _report(registry, f"out/{how}-{name}.json")
        data = reports[how, name]["data"]
        assert data["path"] == f"data/{name}"
        assert data["sha256"] == openssl_sha256(registry / "data" / name)
    for how, name in (("cli", "test.parquet"), ("in", "test_tensor.parquet")):
        want = reports[how, "test.npz"]
        assert want["metrics"]["auc"]["value"] > 0.7  # a real model, not an empty comparison
        got = reports[how, name]
        assert got["metrics"] == want["metrics"], name  # exact: JSON floats round-trip
        assert got["passed"] == want["passed"] and got["reasons"] == want["reasons"]
        assert {k: v for k, v in got["data"].items() if k not in ("path", "sha256", "split")} == \
            {k: v for k, v in want["data"].items() if k not in ("path", "sha256", "split")}


def test_calibrate_and_evaluate_on_parquet_match_npz(registry: Path) -> None:
    assert relgate(registry, "calibrate", "--model", "models/model.onnx",
                   "--data", "data/val.parquet", "--out", "out/cal_pq.json") == 0
    npz_cal = _report(registry, "analysis/calibration.json")
    pq_cal = _report(registry, "out/cal_pq.json")
    assert pq_cal["fit_split"]["sha256"] != npz_cal["fit_split"]["sha256"]
    assert pq_cal["fit_split"]["path"] == "data/val.parquet"
    for key in npz_cal:
        if key != "fit_split":
            assert pq_cal[key] == npz_cal[key], key
    for name in ("test.npz", "test_tensor.parquet"):
        assert relgate(registry, "evaluate", "--model", "models/model.onnx",
                       "--data", f"data/{name}", "--out", f"out/{name}.scores.npz") == 0
    with np.load(registry / "out" / "test.npz.scores.npz") as a, \
            np.load(registry / "out" / "test_tensor.parquet.scores.npz") as b:
        assert a["score"].tobytes() == b["score"].tobytes()
        assert a["y"].tobytes() == b["y"].tobytes()


def test_compare_on_parquet_matches_npz(registry: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    records = {}
    for name in ("test.npz", "test.parquet"):
        capsys.readouterr()
        assert relgate(registry, "compare", "--data", f"data/{name}", "--json",
                       "a=models/model.onnx", "b=models/model.onnx:analysis/calibration.json"
                       ) == 0
        records[name] = json.loads(capsys.readouterr().out)
    assert records["test.parquet"]["candidates"] == records["test.npz"]["candidates"]


@needs_openssl
def test_promote_reproduces_a_release_whose_test_split_is_parquet(tmp_path: Path) -> None:
    """release.data names a Parquet file: validate writes the evidence, promote re-scores the
    same file (its sha256 pinned in the bundle), verify passes."""
    root = make_registry(tmp_path / "reg")
    with np.load(root / "data" / "test.npz") as d:
        pq.write_table(pa.table({"x": fixed_list(d["x"]), "y": d["y"]}),
                       root / "data" / "test.parquet")
    params = PARAMS.format(release="v1.0.0", auc_bound=0.7, baseline="")
    params = params.replace("  tolerance: 1.0e-9\n",
                            "  tolerance: 1.0e-9\n  data: data/test.parquet\n")
    (root / "params.yaml").write_text(params)
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                   "--out", "analysis/calibration.json") == 0
    assert relgate(root, "validate", "--model", "models/model.onnx", "--data",
                   "data/test.parquet", "--calibration", "analysis/calibration.json",
                   "--out", "analysis/validation_report.json") == 0
    assert relgate(root, "promote") == 0
    bundle = root / "models" / "core" / "v1.0.0"
    text = "".join(p.read_text() for p in bundle.rglob("*.json"))
    assert openssl_sha256(root / "data" / "test.parquet") in text
    assert relgate(root, "verify", "models/core/v1.0.0") == 0


# ---------------------------------------------------------------- CSV: scalar inputs


def _scalar_model(path: Path) -> Path:
    """Three scalar inputs, two dtypes: score = 0.8 a - 0.5 b + 0.1 k, shape [batch]."""
    w = numpy_helper.from_array(np.array([0.8, -0.5, 0.1], np.float32), "w")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["a", "axes"], ["a2"]),
         helper.make_node("Unsqueeze", ["b", "axes"], ["b2"]),
         helper.make_node("Unsqueeze", ["kf", "axes"], ["k2"]),
         helper.make_node("Concat", ["a2", "b2", "k2"], ["abk"], axis=1),
         helper.make_node("Mul", ["abk", "w"], ["t"]),
         helper.make_node("ReduceSum", ["t", "axes"], ["score"], keepdims=0)],
        "scalars",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("k", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        initializer=[w, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="relgate-tests")
    model.ir_version = 10
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def _scalar_split(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n).astype(np.float32)
    b = rng.normal(size=n).astype(np.float32)
    k = rng.integers(-3, 4, n).astype(np.int64)
    z = 0.8 * a - 0.5 * b + 0.1 * k
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int8)
    return {"a": a, "b": b, "k": k, "y": y}


def _write_all(root: Path, split: str, arrays: dict[str, np.ndarray]) -> None:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    np.savez(data / f"{split}.npz", **arrays)  # type: ignore[arg-type]
    # columns in another order than the model's inputs: they are matched by name
    pq.write_table(pa.table({k: arrays[k] for k in ("y", "k", "b", "a")}),
                   data / f"{split}.parquet")
    with open(data / f"{split}.csv", "w") as fh:  # float32's shortest repr: the same bits back
        fh.write("b,y,a,k\n")
        for row in zip(arrays["b"], arrays["y"], arrays["a"], arrays["k"], strict=True):
            fh.write(",".join(str(v) for v in row) + "\n")


@pytest.fixture(scope="module")
def scalar_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scalars")
    _scalar_model(root / "models" / "model.onnx")
    _write_all(root, "val", _scalar_split(1500, 1))
    _write_all(root, "test", _scalar_split(1500, 2))
    params = PARAMS.format(release="v1.0.0", auc_bound=0.6, baseline="")
    params = params.split("  variants:")[0]  # no readout variant here
    (root / "params.yaml").write_text(params + "  tolerance: 1.0e-9\n")
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.csv",
                   "--out", "analysis/calibration.json") == 0
    return root


@needs_openssl
def test_csv_and_parquet_scalar_columns_validate_like_the_npz(scalar_registry: Path) -> None:
    root = scalar_registry
    reports = {}
    for how, fmt in (("cli", "npz"), ("cli", "csv"), ("in", "npz"), ("in", "parquet")):
        args = ("validate", "--model", "models/model.onnx", "--data", f"data/test.{fmt}",
                "--calibration", "analysis/calibration.json", "--out", f"out/{how}-{fmt}.json")
        if how == "cli":
            res = cli(root, *args)
            assert res.returncode == 0, res.stderr
        else:
            assert relgate(root, *args) == 0
        reports[how, fmt] = _report(root, f"out/{how}-{fmt}.json")
        assert reports[how, fmt]["data"]["sha256"] == \
            openssl_sha256(root / "data" / f"test.{fmt}")
    assert reports["cli", "npz"]["metrics"]["auc"]["value"] > 0.6
    assert reports["cli", "csv"]["metrics"] == reports["cli", "npz"]["metrics"]
    assert reports["in", "parquet"]["metrics"] == reports["in", "npz"]["metrics"]
    cal = _report(root, "analysis/calibration.json")
    assert cal["fit_split"]["sha256"] == openssl_sha256(root / "data" / "val.csv")


def test_bad_tables_are_one_line_naming_the_column_and_write_nothing(
        scalar_registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = scalar_registry
    good = (root / "data" / "test.csv").read_text().splitlines()
    row = good[7].split(",")
    (root / "data" / "word.csv").write_text(
        "\n".join([*good[:7], ",".join(["oops", *row[1:]]), *good[8:]]) + "\n")
    with np.load(root / "data" / "test.npz") as d:
        arrays = {k: d[k] for k in d.files}
    pq.write_table(pa.table({"a": arrays["a"], "b": arrays["b"].astype(np.float64),
                             "k": arrays["k"], "y": arrays["y"]}), root / "data" / "f64.parquet")
    pq.write_table(pa.table({"a": arrays["a"], "k": arrays["k"], "y": arrays["y"]}),
                   root / "data" / "nob.parquet")
    pq.write_table(pa.table({"a": pa.array(arrays["a"], mask=np.arange(1500) == 9),
                             "b": arrays["b"], "k": arrays["k"], "y": arrays["y"]}),
                   root / "data" / "null.parquet")
    cases = {"word.csv": "in column 'b'", "f64.parquet": "'b' is float64, the model wants float32",
             "nob.parquet": "no column 'b' for the model input 'b'",
             "null.parquet": "column 'a' is null at row 9"}
    for i, (name, words) in enumerate(cases.items()):
        out = root / "out" / f"bad{i}.json"
        args = ("validate", "--model", "models/model.onnx", "--data", f"data/{name}",
                "--calibration", "analysis/calibration.json", "--out", out)
        if i == 0:  # one in a real process: exit status 2, no traceback
            res = cli(root, *args)
            code, err = res.returncode, res.stderr
        else:
            capsys.readouterr()
            code, err = relgate(root, *args), capsys.readouterr().err
        assert code == 2, (name, err)
        assert "Traceback" not in err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and words in lines[0], (name, err)
        assert not out.exists()


# ---------------------------------------------------------------- multi-class


def test_multiclass_digits_from_parquet_validate_like_the_npz(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    clf = LogisticRegression(C=0.05, max_iter=1000).fit(x[:900], y[:900])
    model = to_onnx(clf, initial_types=[("x", FloatTensorType([None, 64]))],
                    options={id(clf): {"zipmap": False}}, target_opset={"": 18, "ai.onnx.ml": 3})
    root = tmp_path / "mc"
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.onnx").write_bytes(model.SerializeToString())
    (root / "data").mkdir()
    xt, yt = x[900:], y[900:].astype(np.int64)
    np.savez(root / "data" / "test.npz", x=xt, y=yt)
    pq.write_table(pa.table({"x": fixed_list(xt), "y": yt.astype(np.int32)}),
                   root / "data" / "test.parquet", row_group_size=256)
    (root / "params.yaml").write_text(textwrap.dedent("""\
        schema_version: 1
        seed: 0
        task:
          kind: multiclass
          output: probabilities
          output_type: probabilities
          top_k: [3]
        evaluate:
          threads: 1
          batch_size: 100
        validate:
          bootstrap:
            resamples: 40
            confidence: 0.9
            seed: 3
          ece_bins: 10
        gates:
          mode: all
          rules:
          - metric: accuracy
            op: '>='
            value: 0.8
        release:
          name: v1.0.0
          promoted:
            path: models/model.onnx
        """))
    reports = {}
    for fmt in ("npz", "parquet"):
        assert relgate(root, "validate", "--model", "models/model.onnx", "--data",
                       f"data/test.{fmt}", "--out", f"{fmt}.json") == 0
        reports[fmt] = _report(root, f"{fmt}.json")
    assert reports["npz"]["metrics"]["accuracy"]["value"] > 0.8
    assert reports["parquet"]["metrics"] == reports["npz"]["metrics"]
    assert reports["parquet"]["confusion"] == reports["npz"]["confusion"]


# ---------------------------------------------------------------- memory


_MEASURE = """
import json, sys
import numpy as np
from relgate.scoring import EvalData, Scorer

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))

model, warm, big, scores = sys.argv[1:]
dtypes = {"x": np.dtype("float32")}
scorer = Scorer(model, batch_size=256)
first = EvalData.open(warm, dtypes=dtypes)  # the code paths and allocators, warmed up
first.count_nonfinite(["x"])
scorer.score(first)
ev = EvalData.open(big, dtypes=dtypes)
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # the peak (VmHWM) restarts from the current RSS
before = status("VmRSS")
counts = ev.count_nonfinite(["x"])
result = scorer.score(ev)
after = status("VmHWM")
np.save(scores, result.scores)
print(json.dumps({"growth_kib": after - before, "n": result.n, "nonfinite": counts["x"]}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_a_pass_over_a_large_parquet_file_does_not_hold_its_inputs(tmp_path: Path) -> None:
    """A count pass and a scoring pass over Parquet files of 300k and 1.2M rows x 16
    float32 (18 and 73 MiB of inputs; three row groups), each in a child: the peak RSS grows
    by a fixed amount (buffers of fixed size, about one record batch of decoding) plus the
    scores, not with the inputs; the scores equal numpy's."""
    from tests.support.registry import W_TRUE, linear_model

    model = linear_model(tmp_path / "m.onnx", 3 * W_TRUE, external=False)
    w = (3 * W_TRUE).astype(np.float32).astype(np.float64)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1_200_000, DIM)).astype(np.float32)
    y = (rng.random(len(x)) < 0.5).astype(np.int8)
    warm = tmp_path / "warm.parquet"
    pq.write_table(pa.table({"x": fixed_list(x[:2000]), "y": y[:2000]}), warm)
    growth, inputs = {}, {}
    for n in (300_000, 1_200_000):
        path = tmp_path / f"{n}.parquet"
        pq.write_table(pa.table({"x": fixed_list(x[:n]), "y": y[:n]}), path,
                       row_group_size=n // 3)
        scores = tmp_path / f"{n}.npy"
        res = subprocess.run([sys.executable, "-c", _MEASURE, str(model), str(warm), str(path),
                              str(scores)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                             capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)
        assert got["n"] == n and got["nonfinite"] == 0
        assert np.allclose(np.load(scores), x[:n].astype(np.float64) @ w, rtol=0, atol=1e-4)
        growth[n], inputs[n] = got["growth_kib"] * 1024, x[:n].nbytes
        print(f"{n} rows: peak RSS grew {growth[n] / 2**20:.1f} MiB over a count and a score "
              f"pass, for {inputs[n] / 2**20:.1f} MiB of inputs")
    more_inputs = inputs[1_200_000] - inputs[300_000]  # 55 MiB
    more_scores = 8 * (1_200_000 - 300_000)  # 7 MB of float64 scores
    assert growth[1_200_000] - growth[300_000] < more_scores + 0.2 * more_inputs, growth
    assert growth[1_200_000] < 0.75 * inputs[1_200_000], growth


# ---------------------------------------------------------------- params eval_data, end to end
#
# A scikit-learn model (skl2onnx, default options: ZipMap) on six features. The tables hold
# the features as scalar columns in another order than the model's, a renamed label column
# (target) and decoys: a column y holding the opposite labels and a column x holding the
# features reversed. A command that ignored params eval_data would read the decoys (or fail
# on them) and report another number than scikit-learn's: every path is checked against it.

FEATURES = ("age", "dose", "bmi", "hr", "sbp", "glu")
FILE_ORDER = ("glu", "target", "hr", "id", "age", "x", "y", "sbp", "dose", "bmi")
EVAL_DATA = """\
eval_data:
  label: target
  inputs:
    x: [age, dose, bmi, hr, sbp, glu]
"""
SKL_PARAMS = """\
schema_version: 1
seed: 0
task:
  kind: binary
evaluate:
  threads: 1
  batch_size: 128
calibrate:
  method: none
  threshold:
    strategy: fixed
    value: 0.5
  ece_bins: 10
validate:
  bootstrap:
    resamples: 50
    confidence: 0.9
    seed: 3
  ece_bins: 10
gates:
  mode: all
  rules:
  - metric: auc
    op: '>='
    value: 0.7
release:
  name: v1.0.0
  promoted:
    path: models/model.onnx
    description: logistic regression on six features (skl2onnx, ZipMap)
  data: data/test.parquet
  tolerance: 1.0e-9
"""


def _skl_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    z = x.astype(np.float64) @ np.array([1.2, -0.8, 0.5, 0.0, 0.9, -1.1])
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int8)
    return x, y


def _skl_table(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    cols: dict[str, Any] = {f: x[:, j] for j, f in enumerate(FEATURES)}
    cols.update(target=y, y=(1 - y).astype(np.int8), x=fixed_list(x[:, ::-1].copy()),
                id=pa.array([f"row-{i}" for i in range(len(y))]))
    return {k: cols[k] for k in FILE_ORDER}


def _skl_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    names = [c for c in FILE_ORDER if c != "x"]  # CSV has no list columns
    with open(path, "w") as fh:
        fh.write(",".join(names) + "\n")
        for i in range(len(y)):
            vals = {f: str(x[i, j]) for j, f in enumerate(FEATURES)}
            vals.update(target=str(int(y[i])), y=str(int(1 - y[i])), id=f"row-{i}")
            fh.write(",".join(vals[c] for c in names) + "\n")


def _ort_probability(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    zipmap = sess.run(None, {"x": x})[1]
    return np.array([row[1] for row in zipmap], dtype=np.float64)


@pytest.fixture(scope="module")
def skl_registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("skl")
    x_train, y_train = _skl_split(600, 10)
    clf = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    onx = to_onnx(clf, initial_types=[("x", FloatTensorType([None, len(FEATURES)]))],
                  target_opset={"": 18, "ai.onnx.ml": 3})
    (root / "models").mkdir()
    model = root / "models" / "model.onnx"
    model.write_bytes(onx.SerializeToString())
    (root / "data").mkdir()
    splits = {}
    for split, n, seed in (("val", 700, 11), ("test", 900, 12)):
        x, y = _skl_split(n, seed)
        splits[split] = (x, y)
        pq.write_table(pa.table(_skl_table(x, y)), root / "data" / f"{split}.parquet",
                       row_group_size=250)
        _skl_csv(root / "data" / f"{split}.csv", x, y)
        np.savez(root / "data" / f"{split}.npz", x=x, y=y)
    (root / "params.yaml").write_text(SKL_PARAMS + EVAL_DATA)
    return {"root": root, "model": model, "clf": clf, "splits": splits}


def _one_line_refusal(res: subprocess.CompletedProcess[str], words: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0], res.stderr
    return lines[0]


@needs_openssl
def test_eval_data_renamed_label_and_assembled_columns_through_validate_and_promote(
        skl_registry: dict[str, Any]) -> None:
    """calibrate, validate (Parquet and CSV), promote, verify, evaluate and compare, each a
    real ``python -m relgate`` process, read the declared columns: the metrics are
    scikit-learn's on the same rows, and every report pins the table's sha256."""
    from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, roc_auc_score

    root, model, clf = skl_registry["root"], skl_registry["model"], skl_registry["clf"]
    x, y = skl_registry["splits"]["test"]
    prob = _ort_probability(model, x)
    assert np.allclose(prob, clf.predict_proba(x)[:, 1], rtol=0, atol=1e-5)
    want = {"auc": roc_auc_score(y, prob), "f1": f1_score(y, prob >= 0.5),
            "accuracy": accuracy_score(y, prob >= 0.5)}
    decoy = roc_auc_score(1 - y, prob)  # what reading the y column would give
    assert abs(want["auc"] - decoy) > 0.2

    res = cli(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.parquet",
              "--out", "analysis/calibration.json")
    assert res.returncode == 0, res.stderr
    cal = _report(root, "analysis/calibration.json")
    assert cal["fit_split"]["sha256"] == openssl_sha256(root / "data" / "val.parquet")
    assert cal["fit_split"]["n"] == 700
    xv, yv = skl_registry["splits"]["val"]
    pv = _ort_probability(model, xv)
    assert cal["sweep"]["auc"][0][0] == pytest.approx(roc_auc_score(yv, pv), abs=1e-12)
    assert cal["brier"]["before"] == pytest.approx(brier_score_loss(yv, pv), abs=1e-12)
    assert cal["threshold"]["f1"] == pytest.approx(f1_score(yv, pv >= 0.5), abs=1e-12)

    reports = {}
    for fmt, out in (("parquet", "analysis/validation_report.json"), ("csv", "out/csv.json")):
        res = cli(root, "validate", "--model", "models/model.onnx", "--data",
                  f"data/test.{fmt}", "--calibration", "analysis/calibration.json",
                  "--out", out)
        assert res.returncode == 0, res.stderr
        rep = reports[fmt] = _report(root, out)
        assert rep["data"]["sha256"] == openssl_sha256(root / "data" / f"test.{fmt}")
        assert rep["data"]["n"] == 900 and rep["data"]["n_pos"] == int(y.sum())
        # the report records how the table was read, as params eval_data mapped it
        assert rep["data"]["columns"] == {"label": "target", "inputs": {"x": list(FEATURES)}}
        for metric, value in want.items():
            assert rep["metrics"][metric]["value"] == pytest.approx(value, abs=1e-12), metric
        assert rep["passed"] is True
    assert reports["csv"]["metrics"] == reports["parquet"]["metrics"]

    res = cli(root, "promote")
    assert res.returncode == 0, res.stderr
    bundle = root / "models" / "core" / "v1.0.0"
    text = "".join(p.read_text() for p in bundle.rglob("*.json"))
    assert openssl_sha256(root / "data" / "test.parquet") in text
    res = cli(root, "verify", "models/core/v1.0.0")
    assert res.returncode == 0, res.stderr

    res = cli(root, "evaluate", "--model", "models/model.onnx", "--data", "data/test.parquet",
              "--params", "params.yaml", "--out", "out/scores.npz")
    assert res.returncode == 0, res.stderr
    with np.load(root / "out" / "scores.npz") as scored:
        assert np.array_equal(scored["y"], y)
        assert np.allclose(scored["score"], prob, rtol=0, atol=1e-7)

    res = cli(root, "compare", "--data", "data/test.parquet", "--json",
              "a=models/model.onnx", "b=models/model.onnx:analysis/calibration.json")
    assert res.returncode == 0, res.stderr
    candidates = json.loads(res.stdout)["candidates"]
    assert len(candidates) == 2
    for cand in candidates:  # compare ranks by F1 at the 0.5 threshold here
        assert cand["metrics"]["f1"]["value"] == pytest.approx(want["f1"], abs=1e-12), cand


def test_eval_data_on_an_npz_is_refused_not_ignored(skl_registry: dict[str, Any]) -> None:
    root = skl_registry["root"]
    out = root / "out" / "npz.json"
    res = cli(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
              "--out", out)
    _one_line_refusal(res, "names table columns, but this is an .npz")
    assert not out.exists()


def test_bad_tables_under_eval_data_are_one_line_naming_the_column(
        skl_registry: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    root = skl_registry["root"]
    x, y = skl_registry["splits"]["test"]
    base = _skl_table(x, y)
    bad_label = np.where(np.arange(len(y)) == 17, 2, y).astype(np.int8)
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "label2": ({**base, "target": bad_label}, "target[17] = 2 is not 0 or 1"),
        "string": ({**base, "hr": pa.array([str(v) for v in x[:, 3]])},
                   "column 'hr' is string, not a scalar number"),
        "f64": ({**base, "age": x[:, 0].astype(np.float64)},
                "column 'age' of input 'x' is float64, the model wants float32"),
        "null": ({**base, "bmi": pa.array(x[:, 2], mask=np.arange(len(y)) == 3)},
                 "column 'bmi' is null at row 3"),
        "missing": ({k: v for k, v in base.items() if k != "sbp"},
                    "no column 'sbp' for the model input 'x'"),
        "nolabel": ({k: v for k, v in base.items() if k != "target"},
                    "no label column 'target'"),
        "nulllabel": ({**base, "target": pa.array(y, mask=np.arange(len(y)) == 5)},
                      "label column 'target' is empty (null) at row 5"),
    }
    for i, (name, (columns, words)) in enumerate(cases.items()):
        path = root / "data" / f"bad-{name}.parquet"
        pq.write_table(pa.table(columns), path)
        out = root / "out" / f"bad-{name}.json"
        args = ("validate", "--model", "models/model.onnx", "--data", path, "--out", out)
        if i == 0:
            _one_line_refusal(cli(root, *args), words)
        else:
            capsys.readouterr()
            code, err = relgate(root, *args), capsys.readouterr().err
            assert code == 2, (name, err)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert "Traceback" not in err and len(lines) == 1 and words in lines[0], (name, err)
        assert not out.exists(), name
    leftovers = [p.name for p in (root / "out").iterdir() if p.name.startswith(("bad-", "."))]
    assert leftovers == [], leftovers


def test_a_ragged_list_column_is_one_line_naming_it(registry: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with np.load(registry / "data" / "test.npz") as d:
        x, y = d["x"], d["y"]
    rows = [list(map(float, r)) for r in x]
    rows[40] = rows[40][:-1]
    path = registry / "data" / "ragged.parquet"
    pq.write_table(pa.table({"x": pa.array(rows, type=pa.list_(pa.float32())), "y": y}), path)
    out = registry / "out" / "ragged.json"
    capsys.readouterr()
    code = relgate(registry, "validate", "--model", "models/model.onnx", "--data", path,
                   "--calibration", "analysis/calibration.json", "--out", out)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "column 'x'" in lines[0] and "ragged" in lines[0], err
    assert not out.exists()


def test_multiclass_reads_eval_data_in_calibrate_validate_evaluate_and_compare(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The multi-class paths (MatrixScorer) read the declared label and scalar columns:
    accuracy is scikit-learn's on the rows the model scored; a decoy y would give another."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)[:, :20]
    clf = LogisticRegression(C=0.5, max_iter=2000).fit(x[:900], y[:900])
    onx = to_onnx(clf, initial_types=[("x", FloatTensorType([None, 20]))],
                  options={id(clf): {"zipmap": False}}, target_opset={"": 18, "ai.onnx.ml": 3})
    root = tmp_path / "mc"
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.onnx").write_bytes(onx.SerializeToString())
    (root / "data").mkdir()
    names = [f"px{j}" for j in range(20)]
    for split, rows in (("val", slice(900, 1300)), ("test", slice(1300, None))):
        xs, ys = x[rows], y[rows].astype(np.int64)
        cols: dict[str, Any] = {n: xs[:, j] for j, n in enumerate(names)}
        cols = {**dict(reversed(list(cols.items()))), "digit": ys, "y": (ys + 1) % 10}
        pq.write_table(pa.table(cols), root / "data" / f"{split}.parquet", row_group_size=128)
    (root / "params.yaml").write_text(textwrap.dedent("""\
        schema_version: 1
        seed: 0
        task: {kind: multiclass, output: probabilities, output_type: probabilities}
        evaluate: {threads: 1, batch_size: 100}
        validate: {bootstrap: {resamples: 20, confidence: 0.9, seed: 3}, ece_bins: 10}
        gates:
          mode: all
          rules: [{metric: accuracy, op: '>=', value: 0.5}]
        release: {name: v1.0.0, promoted: {path: models/model.onnx}}
        eval_data:
          label: digit
        """) + "  inputs: {x: [" + ", ".join(names) + "]}\n")
    xt, yt = x[1300:], y[1300:]
    sess = ort.InferenceSession(str(root / "models" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    pred = np.argmax(sess.run(["probabilities"], {"x": xt})[0], axis=1)
    want = accuracy_score(yt, pred)
    assert want > 0.5 and abs(want - accuracy_score((yt + 1) % 10, pred)) > 0.3
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data",
                   "data/val.parquet", "--out", "analysis/calibration.json") == 0
    assert _report(root, "analysis/calibration.json")["fit_split"]["n"] == 400
    assert relgate(root, "validate", "--model", "models/model.onnx", "--data",
                   "data/test.parquet", "--calibration", "analysis/calibration.json",
                   "--out", "report.json") == 0
    report = _report(root, "report.json")
    assert report["metrics"]["accuracy"]["value"] == pytest.approx(want, abs=1e-12)
    assert relgate(root, "evaluate", "--model", "models/model.onnx", "--params", "params.yaml",
                   "--data", "data/test.parquet", "--out", "scores.npz") == 0
    with np.load(root / "scores.npz") as scored:
        assert np.array_equal(scored["y"], yt)
        assert np.array_equal(scored["pred"], pred)
    capsys.readouterr()
    assert relgate(root, "compare", "--data", "data/test.parquet", "--json", "--by",
                   "accuracy", "a=models/model.onnx",
                   "b=models/model.onnx:analysis/calibration.json") == 0
    cands = json.loads(capsys.readouterr().out)["candidates"]
    assert len(cands) == 2
    for cand in cands:  # a temperature keeps the argmax: both are the model's accuracy
        assert cand["metrics"]["accuracy"]["value"] == pytest.approx(want, abs=1e-12), cand


def test_parity_reads_eval_data_columns(tmp_path: Path) -> None:
    """relgate parity feeds both models the declared columns, assembled in the declared
    order: its max_abs_diff is the one computed here on those rows (the file has no x or y
    column: a parity that ignored eval_data could not read it)."""
    import warnings

    import onnxruntime as ort
    import torch

    torch.manual_seed(0)
    lin = torch.nn.Linear(len(FEATURES), 1)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = lin

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x).squeeze(-1)

    net = Net().eval()
    root = tmp_path / "par"
    (root / "models").mkdir(parents=True)
    (root / "data").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(root / "models" / "deploy.pt"))
    w = lin.weight.detach().numpy().astype(np.float32).T.copy()
    b = lin.bias.detach().numpy().astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["s"]),
         helper.make_node("Add", ["s", "b"], ["t"]),
         helper.make_node("Squeeze", ["t", "sq"], ["score"])], "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", len(FEATURES)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
                     numpy_helper.from_array(np.array([1], np.int64), "sq")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save_model(model, str(root / "models" / "model.onnx"))
    x, y = _skl_split(300, 21)
    table = {k: v for k, v in _skl_table(x, y).items() if k not in ("x", "y")}
    pq.write_table(pa.table(table), root / "data" / "test.parquet", row_group_size=100)
    (root / "params.yaml").write_text(textwrap.dedent("""\
        schema_version: 1
        seed: 0
        task: {kind: binary, output: score, output_type: logit}
        evaluate: {threads: 1, batch_size: 64}
        gates:
          mode: all
          rules: [{metric: auc, op: '>=', value: 0.5}]
        release:
          name: v1.0.0
          promoted: {path: models/model.onnx}
          data: data/test.parquet
        parity: {reference: models/deploy.pt, samples: 250, max_abs_diff: 1.0e-4}
        """) + EVAL_DATA)
    with torch.no_grad():
        ref = net(torch.from_numpy(x[:250])).numpy().astype(np.float64)
    sess = ort.InferenceSession(str(root / "models" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    got = np.asarray(sess.run(["score"], {"x": x[:250]})[0], dtype=np.float64)
    assert relgate(root, "parity", "--out", "parity.json") == 0
    record = _report(root, "parity.json")
    assert record["data"]["sha256"] == __import__("hashlib").sha256(
        (root / "data" / "test.parquet").read_bytes()).hexdigest()
    assert record["data"]["rows"] == 300 and record["samples"]["n"] == 250
    assert record["metrics"]["max_abs_diff"] == pytest.approx(float(np.max(np.abs(ref - got))),
                                                              rel=0, abs=1e-12)
