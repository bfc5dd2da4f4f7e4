"""Models that game evaluation (issue 13): scores that depend on the batch, outputs that are
NaN or inf, and the guarded model probe under a memory limit the caller set.

* A model that subtracts the batch mean ranks well in batches of 256 and is useless one
  sample at a time (every score 0), which is how deployed models often run. validate must
  fail it (exit 1, a report that says why) and promote, which re-evaluates with the same
  code, must refuse it.
* A model that outputs NaN or inf fails: a report with ``passed: false`` and the count of
  non-finite outputs (exit 1). NaN in the labels or in the inputs stays bad input (exit 2).
* Under ``ulimit -v`` (RLIMIT_AS inherited by relgate and its probe child) a small model
  must load; the probe used to raise the limit, fail, and call every model malformed.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from relgate.metrics import roc_auc
from relgate.scoring import score_dataset
from tests.adversarial.conftest import assert_clean_failure
from tests.support.registry import DIM, W_TRUE, relgate

MIB = 1024**2


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="relgate-tests")
    model.ir_version = 10
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def batch_mean_model(path: Path) -> Path:
    """score = x @ w - mean over the BATCH of x @ w (ReduceMean over axis 0): fine in batches,
    identically 0 for a batch of one."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["s"]),
         helper.make_node("ReduceMean", ["s", "axis0"], ["m"], keepdims=1),
         helper.make_node("Sub", ["s", "m"], ["score"])], "batch_mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array((3 * W_TRUE).astype(np.float32).reshape(DIM, 1), "w"),
                     numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0")])
    return _save(graph, path)


def nonfinite_model(path: Path, kind: str) -> Path:
    """score = (x @ w) / 0 (``inf``: +-inf per row) or (x @ w) * 0 / 0 (``nan``)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"])]
    if kind == "nan":
        nodes += [helper.make_node("Mul", ["s", "zero"], ["s0"]),
                  helper.make_node("Div", ["s0", "zero"], ["score"])]
    else:
        nodes += [helper.make_node("Div", ["s", "zero"], ["score"])]
    graph = helper.make_graph(
        nodes, f"{kind}_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(W_TRUE.astype(np.float32).reshape(DIM, 1), "w"),
                     numpy_helper.from_array(np.zeros(1, np.float32), "zero")])
    return _save(graph, path)


def memory_hog_model(path: Path) -> Path:
    """A 300-byte model whose one sample allocates 2 GiB (ConstantOfShape [batch, 2**29])."""
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["n"], start=0, end=1),
         helper.make_node("Concat", ["n", "width"], ["full"], axis=0),
         helper.make_node("ConstantOfShape", ["full"], ["big"],
                          value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
         helper.make_node("ReduceSum", ["big", "axis1"], ["s"], keepdims=1),
         helper.make_node("MatMul", ["x", "w"], ["xw"]),
         helper.make_node("Add", ["xw", "s"], ["score"])], "hog",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(np.array([1 << 29], dtype=np.int64), "width"),
                     numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
                     numpy_helper.from_array(W_TRUE.astype(np.float32).reshape(DIM, 1), "w")])
    return _save(graph, path)


def _use_model(root: Path, make: Callable[[Path], Path]) -> Path:
    """Replace the registry's promoted model (and its external weights) with *make*'s."""
    target = root / "models" / "model.onnx"
    (root / "models" / "model.onnx.data").unlink()
    target.unlink()
    return make(target)


def _report(root: Path) -> dict[str, Any]:
    return json.loads((root / "analysis" / "validation_report.json").read_text())


# ---------------------------------------------------------------- batch-size dependence


def test_a_model_whose_scores_depend_on_the_batch_is_failed_and_never_promoted(
        registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _use_model(registry, batch_mean_model)
    # the attack: in batches of 256 (params evaluate.batch_size) the model ranks well enough
    # to pass the gate (auc >= 0.7), one sample at a time every score is 0 (auc 0.5)
    batched = score_dataset(model, registry / "data/test.npz", batch_size=256)
    alone = score_dataset(model, registry / "data/test.npz", batch_size=1)
    assert roc_auc(batched.y, batched.scores) > 0.8
    assert np.all(alone.scores == 0.0)

    assert relgate(registry, "calibrate", "--model", "models/model.onnx", "--data",
                   "data/val.npz", "--out", "analysis/calibration.json") == 0
    code = relgate(registry, "validate", "--model", "models/model.onnx", "--data",
                   "data/test.npz", "--calibration", "analysis/calibration.json",
                   "--out", "analysis/validation_report.json")
    assert code == 1
    report = _report(registry)
    assert report["passed"] is False
    batch = report["checks"]["batch"]
    assert batch["passed"] is False and batch["rows"] == 32 and batch["mismatched"] > 0
    assert "depend on the batch size" in report["reasons"][0]
    assert report["stats"]["auc"] is None  # no metric of a model that is not a function of its row

    capsys.readouterr()
    assert relgate(registry, "promote") == 1
    err = capsys.readouterr().err
    assert "gates failed" in err and "batch size" in err, err
    assert not (registry / "models" / "core" / "v1.0.0").exists()


def test_honest_models_pass_the_batch_check(registry: Path) -> None:
    """The prepared registry's linear model (external weights) passes, exactly."""
    report = _report(registry)
    assert report["passed"] is True
    assert report["checks"]["batch"]["passed"] is True
    assert report["checks"]["batch"]["max_abs_diff"] <= 1e-6
    assert report["checks"]["finite"] == {"outputs": 2000, "nan": 0, "inf": 0, "passed": True}


# ---------------------------------------------------------------- non-finite outputs


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_a_model_that_outputs_nan_or_inf_fails_with_a_report(cli, registry: Path, kind: str,
                                                             in_dir) -> None:
    _use_model(registry, lambda p: nonfinite_model(p, kind))
    with in_dir(registry):
        result = cli("validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                     "--out", "analysis/validation_report.json", "--plots-dir", "plots",
                     "--metrics-out", "metrics.json")
    assert result.code == 1, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    report = _report(registry)
    finite = report["checks"]["finite"]
    assert report["passed"] is False
    assert finite["passed"] is False and finite[kind] == 2000 and finite["outputs"] == 2000
    assert "2000 non-finite output" in report["reasons"][0]
    assert all(m["value"] is None for m in report["metrics"].values())
    assert (registry / "plots" / "roc.csv").read_text() == "fpr,tpr,threshold\n"
    assert json.loads((registry / "metrics.json").read_text())["gates_passed"] is False


def test_nan_in_the_inputs_or_labels_stays_bad_input(cli, registry: Path, tmp_path: Path) -> None:
    """The data is at fault, not the model: exit 2, one line, no report written."""
    with np.load(registry / "data/test.npz") as npz:
        x, y = npz["x"].copy(), npz["y"].astype(np.float64)
    bad_x = x.copy()
    bad_x[7, 3] = np.nan
    bad_x[9, 0] = np.inf
    bad_y = y.copy()
    bad_y[5] = np.nan
    cases = {"inputs": {"x": bad_x, "y": y}, "labels": {"x": x, "y": bad_y}}
    nan_model = nonfinite_model(tmp_path / "nan.onnx", "nan")
    for name, arrays in cases.items():
        data = tmp_path / f"{name}.npz"
        np.savez(data, **arrays)
        for model in (registry / "models/model.onnx", nan_model):
            out = tmp_path / f"{name}-{model.stem}.json"
            line = assert_clean_failure(cli("validate", "--model", model, "--data", data,
                                            "--params", registry / "params.yaml", "--out", out))
            assert ("NaN or infinite input values (2 in 'x')" in line if name == "inputs"
                    else "y[5]" in line and "is not 0 or 1" in line), line
            assert not out.exists()


# ---------------------------------------------------------------- the probe under ulimit -v

def _run_limited(limit: int, *args: object) -> subprocess.CompletedProcess[str]:
    """relgate in a child process under RLIMIT_AS = *limit* bytes (soft and hard)."""
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-m", "relgate", *map(str, args)],
                          capture_output=True, text=True, timeout=300, preexec_fn=lower)


def _address_space_with_onnxruntime() -> int:
    """VmSize of a Python that imported numpy and onnxruntime: what the probe child uses
    before it sets its own cap (that much plus 1 GiB and 4x the model)."""
    code = ("import numpy, onnxruntime\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmSize:')][0].split()[1])")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return int(out.stdout) * 1024


def test_the_probe_respects_an_inherited_memory_limit(registry: Path, tmp_path: Path) -> None:
    """Under a limit of 512 MiB above what the probe child starts with (so below the 1 GiB
    more it used to set for itself, which it then could not) a small real model loads and
    scores; a model that needs 2 GiB is refused for the inherited limit, not called malformed."""
    model, data = registry / "models/model.onnx", registry / "data/test.npz"
    limit = _address_space_with_onnxruntime() + 512 * MIB

    ok = _run_limited(limit, "evaluate", "--model", model, "--data", data,
                      "--out", tmp_path / "limited.npz")
    assert ok.returncode == 0, ok.stderr
    with np.load(tmp_path / "limited.npz") as scores, np.load(data) as npz:
        want = npz["x"].astype(np.float64) @ (3 * W_TRUE).astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(scores["score"], want, rtol=1e-5, atol=1e-5)

    hog = memory_hog_model(tmp_path / "hog.onnx")
    refused = _run_limited(limit, "evaluate", "--model", hog, "--data", data,
                           "--out", tmp_path / "hog.npz")
    line = assert_clean_failure(refused)
    assert "ulimit -v" in line and "malformed" not in line, line
