"""The train and export stages on tiny params: real torch, real ONNX files, real onnxruntime."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from sklearn.linear_model import LogisticRegression

from relgate.errors import ParamsError
from relgate.jsonio import read_json
from relgate.params import load_params
from relgate.parity import Comparison, compare_outputs
from stages.data import DataSpec
from stages.export import (
    ExportSpec,
    build_readout,
    fit_logistic,
    parity_reasons,
    token_histograms,
)
from stages.tokens import N_FRAMES, VOCAB_SIZE
from stages.train import TrainSpec, load_checkpoint, predict

REPO_ROOT = Path(__file__).resolve().parents[2]

TINY = """\
schema_version: 1
seed: 11
data: {{n_train: 160, n_val: 60, n_test: 60, anomaly_share: 0.4}}
train: {{threads: 1, batch_size: 32, max_epochs: 2, patience: 1, channels: [4, 8]}}
export: {{opset: {opset}, parity_samples: 40, max_abs_diff: {max_abs_diff}}}
evaluate: {{threads: 1}}
gates:
  mode: all
  rules:
    - {{metric: auc, op: ">=", value: 0.5}}
release:
  name: tiny
  promoted: {{path: models/model.onnx}}
"""


def write_params(folder: Path, *, opset: int = 18, max_abs_diff: float = 1e-4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(TINY.format(opset=opset, max_abs_diff=max_abs_diff))


def stage(folder: Path, name: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


def run_ok(folder: Path, name: str) -> None:
    proc = stage(folder, name)
    assert proc.returncode == 0, proc.stderr[-2000:]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry folder after data -> train -> export on tiny params."""
    root = tmp_path_factory.mktemp("registry")
    write_params(root, opset=19)
    for name in ("data", "train", "export"):
        run_ok(root, name)
    return root


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------- train


def test_checkpoint_is_plain_tensors_and_hyper_parameters(registry: Path) -> None:
    ckpt = torch.load(registry / "models" / "checkpoint.pt", weights_only=True)
    assert ckpt["arch"]["channels"] == [4, 8] and ckpt["arch"]["length"] == 1600
    assert 0.0 <= ckpt["threshold"] <= 1.0
    assert all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values())
    report = read_json(registry / "analysis" / "train_report.json")
    assert report["epochs"] == len(report["history"]) <= 2
    assert report["best_val_auc"] == max(row["val_auc"] for row in report["history"])
    metrics = read_json(registry / "analysis" / "train_metrics.json")
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert read_json(registry / "analysis" / "train_history.json") == report["history"]


# --------------------------------------------------------------------- export


def test_onnx_contract_opset_and_external_data(registry: Path) -> None:
    path = registry / "models" / "model.onnx"
    proto = onnx.load(str(path), load_external_data=False)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [19]
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "x" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 1600]
    assert out.name == "score"
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch"]
    floats = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    assert floats and all(t.data_location == onnx.TensorProto.EXTERNAL for t in floats)
    assert {e.value for t in floats for e in t.external_data if e.key == "location"} == {
        "model.onnx.data"}
    assert all(len(n.metadata_props) == 0 for n in proto.graph.node)
    assert str(REPO_ROOT).encode() not in path.read_bytes()
    report = read_json(registry / "analysis" / "export_report.json")
    assert report["model"]["data"]["sha256"] == sha256(registry / "models" / "model.onnx.data")
    assert report["model"]["onnx"]["sha256"] == sha256(path)
    assert report["parity"]["passed"] is True and report["parity"]["samples"] == 40


def test_onnxruntime_matches_torch_at_any_batch_size(registry: Path) -> None:
    model, _ = load_checkpoint(registry / "models" / "checkpoint.pt")
    with np.load(registry / "data" / "test.npz") as npz:
        x = npz["x"]
    sess = session(registry / "models" / "model.onnx")
    expected = predict(model, x)
    for n in (1, 7, len(x)):
        (got,) = sess.run(["score"], {"x": x[:n]})
        assert got.shape == (n,) and got.dtype == np.float32
        assert np.max(np.abs(got - expected[:n])) < 1e-4


def test_readout_runs_on_tokens_and_equals_its_numpy_definition(registry: Path) -> None:
    path = registry / "models" / "readout.onnx"
    proto = onnx.load(str(path))
    assert [n.op_type for n in proto.graph.node] == ["Gather", "ReduceMean", "MatMul", "Add"]
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    with np.load(registry / "data" / "test.npz") as npz:
        tokens = npz["input_tokens"]
    (got,) = session(path).run(["score"], {"input_tokens": tokens})
    assert got.shape == (len(tokens),) and got.dtype == np.float32
    oracle = inits["embedding"][tokens].mean(axis=1) @ inits["readout_weight"] + inits[
        "readout_bias"]
    assert np.allclose(got, oracle, atol=1e-5)
    assert session(path).get_inputs()[0].type == "tensor(int64)"


def test_rerun_gives_byte_identical_checkpoint_and_models(registry: Path, tmp_path: Path) -> None:
    write_params(tmp_path, opset=19)
    shutil.copytree(registry / "data", tmp_path / "data")
    for name in ("train", "export"):
        run_ok(tmp_path, name)
    for rel in ("models/checkpoint.pt", "models/model.onnx", "models/model.onnx.data",
                "models/readout.onnx", "analysis/train_metrics.json",
                "analysis/export_metrics.json"):
        assert sha256(tmp_path / rel) == sha256(registry / rel), rel


def test_export_fails_with_exit_1_above_the_parity_tolerance(registry: Path,
                                                             tmp_path: Path) -> None:
    observed = read_json(registry / "analysis" / "export_report.json")["parity"]["max_abs_diff"]
    assert observed > 0  # precondition: torch and onnxruntime round differently
    write_params(tmp_path, max_abs_diff=0.0)
    shutil.copytree(registry / "data", tmp_path / "data")
    shutil.copytree(registry / "models", tmp_path / "models")
    proc = stage(tmp_path, "export")
    assert proc.returncode == 1
    assert "parity" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert read_json(tmp_path / "analysis" / "export_report.json")["parity"]["passed"] is False


def test_export_without_a_checkpoint_is_bad_input(tmp_path: Path) -> None:
    write_params(tmp_path)
    proc = stage(tmp_path, "export")
    assert proc.returncode == 2
    assert "checkpoint.pt" in proc.stderr and "Traceback" not in proc.stderr


def test_train_refuses_bad_params(tmp_path: Path) -> None:
    write_params(tmp_path)
    text = (tmp_path / "params.yaml").read_text().replace("channels: [4, 8]", "kernel_size: 4")
    (tmp_path / "params.yaml").write_text(text)
    proc = stage(tmp_path, "train")
    assert proc.returncode == 2 and "train.kernel_size" in proc.stderr


def test_train_refuses_a_split_with_one_class(tmp_path: Path) -> None:
    write_params(tmp_path)
    text = (tmp_path / "params.yaml").read_text().replace("anomaly_share: 0.4", "anomaly_share: 0")
    (tmp_path / "params.yaml").write_text(text)
    run_ok(tmp_path, "data")
    proc = stage(tmp_path, "train")
    assert proc.returncode == 2 and "only one class" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------- pure functions


def test_logistic_fit_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB_SIZE, size=(400, N_FRAMES))
    y = (tokens[:, :4].mean(axis=1) + rng.normal(0, 8, 400) > 32).astype(np.int8)
    features = token_histograms(tokens)
    l2 = 1e-3
    w, b = fit_logistic(features, y, l2=l2, iterations=100)
    ref = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-12, max_iter=100_000).fit(features, y)
    assert np.allclose(w, ref.coef_[0], atol=1e-4)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_token_histograms_are_mean_one_hot() -> None:
    tokens = np.array([[0] * 31 + [63], [5] * 32])
    hist = token_histograms(tokens)
    assert hist.shape == (2, VOCAB_SIZE) and np.allclose(hist.sum(axis=1), 1.0)
    assert hist[0, 0] == 31 / 32 and hist[0, 63] == 1 / 32 and hist[1, 5] == 1.0


def test_built_readout_is_a_valid_model_for_every_pinned_opset(tmp_path: Path) -> None:
    w = np.linspace(-1, 1, VOCAB_SIZE)
    tokens = np.arange(2 * N_FRAMES, dtype=np.int64).reshape(2, N_FRAMES)
    for opset in (18, 21):
        proto = build_readout(w, 0.25, opset=opset)
        onnx.checker.check_model(proto, full_check=True)
        (tmp_path / "r.onnx").write_bytes(proto.SerializeToString())
        (got,) = session(tmp_path / "r.onnx").run(["score"], {"input_tokens": tokens})
        assert np.allclose(got, token_histograms(tokens) @ w + 0.25, atol=1e-6)


def test_parity_failures_fail_closed() -> None:
    spec = ExportSpec()
    assert parity_reasons(compare_outputs(np.arange(5.0), np.arange(5.0)), spec) == []
    (reason,) = parity_reasons(compare_outputs(np.arange(5.0), np.arange(5.0) + 1e-3), spec)
    assert reason.startswith("parity max_abs_diff 0.001 > 0.0001")
    nan = np.arange(5.0)
    nan[1] = np.nan
    assert parity_reasons(compare_outputs(np.arange(5.0), nan), spec)
    undefined = Comparison(n=3, shape=(3,), nonfinite=0, max_abs_diff=0.0, correlation=None,
                           spearman=None)
    assert "fails closed" in parity_reasons(undefined, spec)[0]


@pytest.mark.parametrize(
    ("section", "key"),
    [({"opset": 12}, "export.opset"), ({"max_abs_diff": -1}, "export.max_abs_diff"),
     ({"model": "m.pt"}, "export.model"), ({"parity_samples": 1.5}, "export.parity_samples")],
)
def test_bad_export_params_are_refused(section: dict[str, object], key: str) -> None:
    with pytest.raises(ParamsError, match=key):
        ExportSpec.from_params(section)


def test_the_registry_params_type_check_for_every_stage() -> None:
    path = REPO_ROOT / "params.yaml"
    if not path.exists():
        pytest.skip("the repository has no params.yaml yet")
    params = load_params(path)
    DataSpec.from_params(params.data)
    TrainSpec.from_params(params.train)
    ExportSpec.from_params(params.export)
