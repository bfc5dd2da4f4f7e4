"""A small but complete model registry on disk, for promotion, distribution and CI tests.

The promoted model is a linear ONNX model whose weights live in an external
``model.onnx.data`` file (as torch 2.13's exporter writes them), with a token
readout as a variant, val/test splits and a params.yaml; ``prepare`` runs the
real calibrate and validate commands so the evidence is genuine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from relgate.cli import main

DIM = 16
W_TRUE = np.linspace(-1.0, 1.0, DIM) * 0.9

PARAMS = """\
schema_version: 1
seed: 0
task:
  kind: binary
  output: score
  output_type: logit
evaluate:
  threads: 1
  batch_size: 256
calibrate:
  scales: [1.0]
  offsets: [0.0]
  method: temperature
  threshold:
    strategy: max_f1
  ece_bins: 10
validate:
  bootstrap:
    resamples: 200
    confidence: 0.9
    seed: 3
  ece_bins: 10
gates:
  mode: all
  rules:
  - metric: auc
    op: '>='
    value: {auc_bound}
  - metric: ece
    op: '<='
    value: 0.2
{baseline}release:
  name: {release}
  promoted:
    path: models/model.onnx
    description: linear scorer on 16 features
  variants:
  - path: models/readout.onnx
    description: token readout (experimental)
    evaluated: false
  tolerance: 1.0e-9
"""


def linear_model(path: Path, weights: np.ndarray, *, external: bool = True) -> Path:
    """score = x @ weights, [batch, 1]; weights in ``<name>.data`` beside the model when external."""
    w = numpy_helper.from_array(np.asarray(weights, dtype=np.float32).reshape(DIM, 1), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["score"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="relgate-tests")
    model.ir_version = 10
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def readout_model(path: Path, *, vocab: int = 64, seed: int = 1) -> Path:
    """input_tokens int64 [batch, 32] -> Gather -> ReduceMean -> MatMul -> score [batch]."""
    rng = np.random.default_rng(seed)
    emb = numpy_helper.from_array(rng.normal(size=(vocab, 4)).astype(np.float32), "emb")
    w = numpy_helper.from_array(rng.normal(size=(4, 1)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    sq = numpy_helper.from_array(np.array([1], dtype=np.int64), "sq")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["emb", "input_tokens"], ["e"]),
         helper.make_node("ReduceMean", ["e", "axes"], ["m"], keepdims=0),
         helper.make_node("MatMul", ["m", "w"], ["s"]),
         helper.make_node("Squeeze", ["s", "sq"], ["score"])],
        "readout",
        [helper.make_tensor_value_info("input_tokens", TensorProto.INT64, ["batch", 32])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        initializer=[emb, w, axes, sq],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="relgate-tests")
    model.ir_version = 10
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def dataset(path: Path, n: int, seed: int) -> Path:
    """x ~ N(0, 1) [n, 16]; y ~ Bernoulli(sigmoid(x @ W_TRUE))."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, DIM)).astype(np.float32)
    z = x.astype(np.float64) @ W_TRUE
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


def write_params(root: Path, *, release: str = "v1.0.0", auc_bound: float = 0.7,
                 baseline: str = "") -> Path:
    path = root / "params.yaml"
    path.write_text(PARAMS.format(release=release, auc_bound=auc_bound, baseline=baseline))
    return path


def make_registry(root: Path, *, scale: float = 3.0, release: str = "v1.0.0",
                  auc_bound: float = 0.7, weights: np.ndarray | None = None) -> Path:
    """Write model, variant, splits and params into *root* (returns root)."""
    linear_model(root / "models" / "model.onnx", scale * W_TRUE if weights is None else weights)
    readout_model(root / "models" / "readout.onnx")
    dataset(root / "data" / "val.npz", 2000, seed=1)
    dataset(root / "data" / "test.npz", 2000, seed=2)
    write_params(root, release=release, auc_bound=auc_bound)
    return root


def relgate(root: Path, *args: object) -> int:
    """Run the relgate CLI in-process from *root* (paths relative to it)."""
    import os

    here = Path.cwd()
    os.chdir(root)
    try:
        return main([str(a) for a in args])
    finally:
        os.chdir(here)


def prepare(root: Path) -> None:
    """Calibrate on val and validate on test with the real commands (the pipeline's last steps)."""
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                   "--out", "analysis/calibration.json") == 0
    code = relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--calibration", "analysis/calibration.json",
                   "--out", "analysis/validation_report.json")
    assert code in (0, 1)


TASK_PARAMS = """\
schema_version: 1
seed: 0
task:
{task}evaluate:
  threads: 1
  batch_size: 256
calibrate:
  scales: [1.0]
  offsets: [0.0]
  method: none
  threshold:
    strategy: fixed
    value: 0.5
  ece_bins: 10
validate:
  bootstrap:
    resamples: {resamples}
    confidence: 0.9
    seed: 3
  ece_bins: 10
gates:
  mode: all
  rules:
  - metric: auc
    op: '>='
    value: 0.9
  - metric: f1
    op: '>='
    value: 0.8
release:
  name: v1.0.0
  promoted:
    path: models/model.onnx
    description: a binary classifier whose output type is declared
  tolerance: 1.0e-9
"""


def task_registry(root: Path, model: bytes, splits: dict[str, dict[str, np.ndarray]],
                  task: dict[str, object], *, resamples: int = 50) -> Path:
    """A registry for one model whose ``task:`` is *task*: ``models/model.onnx`` (the model's
    bytes), ``data/<split>.npz`` per split (its input arrays plus y) and a params.yaml whose
    calibration is the identity (method none, threshold fixed at 0.5), so the validated
    probabilities are the model's own."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / "model.onnx").write_bytes(model)
    (root / "data").mkdir(exist_ok=True)
    for name, arrays in splits.items():
        np.savez(root / "data" / f"{name}.npz", **arrays)  # type: ignore[arg-type]
    lines = "".join(f"  {k}: {v}\n" for k, v in task.items())
    (root / "params.yaml").write_text(TASK_PARAMS.format(task=lines, resamples=resamples))
    return root
