"""Stage ``export``: the CNN to ONNX with a parity check, plus a hand-built token readout.

``python -m stages.export`` reads ``params.yaml`` (``seed``, ``export:``,
``evaluate.threads``), ``models/checkpoint.pt``, ``data/train.npz``,
``data/val.npz`` and ``data/test.npz``, and writes:

* ``models/model.onnx`` + ``models/model.onnx.data``: input ``x`` float32
  ``[batch, L]``, output ``score`` float32 ``[batch]`` (logits), opset pinned
  by ``export.opset``. Exporter: torch's default (``dynamo=True``, i.e.
  ``torch.export`` + onnxscript). It already writes a ``.onnx.data`` file, but
  only for tensors above a size threshold; we re-save with *every* weight
  (floating-point initializer) in ``model.onnx.data`` whatever its size, so the
  layout does not depend on tensor sizes and the bundle always carries the
  pair. Integer constants (axes, shapes) stay inline: onnxruntime must read
  them during shape inference and refuses them as external data. Node metadata that
  torch adds (stack traces with absolute source paths, FX node text) is
  removed, so the bytes do not depend on where the repository is checked out.
* ``models/readout.onnx``: input ``input_tokens`` int64 ``[batch, 32]``,
  output ``score`` float32 ``[batch]``, built node by node with
  ``onnx.helper``: ``Gather`` (embedding table) -> ``ReduceMean`` over the 32
  tokens -> ``MatMul`` -> ``Add``. The embedding table is the identity (one-hot
  tokens), so the mean embedding is the token histogram, and the weights are an
  L2-regularised logistic regression on the training split's histograms,
  fitted with Newton's method in numpy. Small, so stored inline.
* ``analysis/export_report.json`` (parity, files, readout fit) and
  ``analysis/export_metrics.json`` (flat numbers for ``dvc metrics``).

The parity check scores the first ``export.parity_samples`` test waveforms
with torch and with onnxruntime and compares them with relgate.parity's
functions (the one implementation ``relgate parity`` uses); the stage exits 1
when the largest absolute difference exceeds ``export.max_abs_diff`` or the
Spearman rank correlation falls below ``export.min_spearman``, or when either
is undefined (NaN scores: fail closed); the report is written first.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.errors import ModelError, Refusal
from relgate.hashing import sha256_file
from relgate.jsonio import atomic_write_bytes, fsync_dir, write_json
from relgate.metrics import roc_auc
from relgate.params import load_params
from relgate.parity import Comparison, compare_outputs, gate_reasons
from stages.common import (
    PARAMS_FILE,
    load_npz,
    require,
    run_stage,
    section_value,
)
from stages.tokens import N_FRAMES, VOCAB_SIZE

IR_VERSION = 10  # what torch 2.13 writes; onnxruntime >= 1.18 reads it


@dataclass(frozen=True, kw_only=True)
class ExportSpec:
    """The ``export:`` section of params.yaml, typed and range-checked."""

    opset: int = 18
    parity_samples: int = 512
    max_abs_diff: float = 1e-4
    min_spearman: float = 0.9999
    readout_l2: float = 1e-5
    readout_iterations: int = 50
    checkpoint: str = "models/checkpoint.pt"
    model: str = "models/model.onnx"
    readout: str = "models/readout.onnx"
    report: str = "analysis/export_report.json"
    metrics: str = "analysis/export_metrics.json"

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> ExportSpec:
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(section) - known)
        require(not extra, "export", f"has unknown key(s) {', '.join(extra)}")
        d = cls()
        num = (int, float)

        def get(key: str, kind: type | tuple[type, ...]) -> Any:
            return section_value(section, "export", key, getattr(d, key), kind)

        spec = cls(
            opset=get("opset", int), parity_samples=get("parity_samples", int),
            max_abs_diff=float(get("max_abs_diff", num)),
            min_spearman=float(get("min_spearman", num)),
            readout_l2=float(get("readout_l2", num)),
            readout_iterations=get("readout_iterations", int),
            checkpoint=get("checkpoint", str), model=get("model", str),
            readout=get("readout", str), report=get("report", str), metrics=get("metrics", str),
        )
        require(18 <= spec.opset <= 23, "export.opset", "must be within [18, 23]")
        require(spec.parity_samples >= 2, "export.parity_samples", "must be at least 2")
        require(spec.max_abs_diff >= 0, "export.max_abs_diff", "must be >= 0")
        require(-1.0 <= spec.min_spearman <= 1.0, "export.min_spearman", "must be within [-1, 1]")
        require(spec.readout_l2 > 0, "export.readout_l2", "must be > 0")
        require(spec.readout_iterations >= 1, "export.readout_iterations", "must be at least 1")
        require(spec.model.endswith(".onnx"), "export.model", "must end with .onnx")
        return spec


# ------------------------------------------------------------------ CNN -> ONNX


def export_cnn(model: Any, path: Path, *, length: int, opset: int) -> None:
    """Export *model* (torch, eval mode) to ``path`` + ``path.data`` with torch's dynamo exporter."""
    import onnx
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (torch.zeros(2, length),), dynamo=True, opset_version=opset,
            input_names=["x"], output_names=["score"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False,
        )
    if program is None:  # only when f= is given; we keep the program in memory
        raise ModelError("torch.onnx.export returned no program", hint="check the torch version")
    proto = program.model_proto
    strip_metadata(proto)
    onnx.checker.check_model(proto)
    save_with_external_data(proto, path)


def strip_metadata(proto: Any) -> None:
    """Drop per-node/value metadata and doc strings (they embed absolute source paths)."""
    graph = proto.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        del value.metadata_props[:]
    del graph.metadata_props[:]
    graph.doc_string = ""


def save_with_external_data(proto: Any, path: Path) -> None:
    """Save with every weight tensor in ``<name>.data`` beside the model, replacing both atomically.

    Every floating-point initializer goes to the data file whatever its size;
    integer initializers (axes, shapes) stay inline because onnxruntime's shape
    inference reads them while loading and refuses external ones. onnx appends
    to an existing data file, so both files are written into a fresh temp
    folder first and then renamed into place (data file first).
    """
    import onnx
    from onnx.external_data_helper import set_external_data

    weight_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                    onnx.TensorProto.BFLOAT16}
    path.parent.mkdir(parents=True, exist_ok=True)
    data_name = path.name + ".data"
    for tensor in proto.graph.initializer:
        if tensor.data_type in weight_types:
            if not tensor.HasField("raw_data"):  # typed fields -> raw bytes, same values
                tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor),
                                                             tensor.name))
            set_external_data(tensor, data_name)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        onnx.save_model(proto, os.path.join(tmp, path.name))
        for name in (data_name, path.name):
            with open(os.path.join(tmp, name), "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(os.path.join(tmp, name), path.parent / name)
    fsync_dir(path.parent)


def ort_session(path: Path, threads: int) -> Any:
    """An onnxruntime CPU session with a fixed thread count."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def ort_scores(session: Any, name: str, data: npt.NDArray[Any], batch: int = 512
               ) -> npt.NDArray[np.float32]:
    out = [session.run(["score"], {name: data[i:i + batch]})[0] for i in range(0, len(data), batch)]
    return np.concatenate(out).astype(np.float32)


def parity_reasons(check: Comparison, spec: ExportSpec) -> list[str]:
    """Reasons the torch/ONNX parity check fails under ``export:``'s bounds (empty: it
    passes); relgate.parity's gates, so an undefined or non-finite value fails closed."""
    return gate_reasons(check, max_abs_diff=spec.max_abs_diff, min_spearman=spec.min_spearman)


# ------------------------------------------------------------- token readout


def token_histograms(tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Mean one-hot embedding of each row of tokens: the token histogram, [N, VOCAB_SIZE]."""
    n = tokens.shape[0]
    rows = np.repeat(np.arange(n), tokens.shape[1])
    hist = np.zeros((n, VOCAB_SIZE), dtype=np.float64)
    np.add.at(hist, (rows, tokens.ravel()), 1.0)
    out: npt.NDArray[np.float64] = hist / tokens.shape[1]
    return out


def fit_logistic(features: npt.NDArray[np.float64], y: npt.NDArray[Any], *, l2: float,
                 iterations: int) -> tuple[npt.NDArray[np.float64], float]:
    """L2-regularised logistic regression by Newton's method (the bias is not penalised).

    Deterministic (no random init, no shuffling) and exact to float64 rounding.
    """
    n, d = features.shape
    a = np.hstack([features, np.ones((n, 1))])
    target = np.asarray(y, dtype=np.float64)
    penalty = np.full(d + 1, l2 * n)
    penalty[-1] = 0.0
    w = np.zeros(d + 1)
    for _ in range(iterations):
        z = a @ w
        p = 1.0 / (1.0 + np.exp(-z))
        grad = a.T @ (p - target) + penalty * w
        hess = (a * (p * (1.0 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return w[:-1], float(w[-1])


def build_readout(weights: npt.NDArray[np.float64], bias: float, *, opset: int) -> Any:
    """The readout as an ONNX ModelProto: Gather -> ReduceMean -> MatMul -> Add."""
    from onnx import TensorProto, helper, numpy_helper

    embedding = np.eye(VOCAB_SIZE, dtype=np.float32)
    inits = [
        numpy_helper.from_array(embedding, "embedding"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "token_axis"),
        numpy_helper.from_array(weights.astype(np.float32), "readout_weight"),
        numpy_helper.from_array(np.array(bias, dtype=np.float32), "readout_bias"),
    ]
    nodes = [
        helper.make_node("Gather", ["embedding", "input_tokens"], ["embedded"], axis=0,
                         name="embed"),
        helper.make_node("ReduceMean", ["embedded", "token_axis"], ["pooled"], keepdims=0,
                         name="mean_over_tokens"),
        helper.make_node("MatMul", ["pooled", "readout_weight"], ["logit"], name="readout"),
        helper.make_node("Add", ["logit", "readout_bias"], ["score"], name="bias"),
    ]
    graph = helper.make_graph(
        nodes, "token_readout",
        [helper.make_tensor_value_info("input_tokens", TensorProto.INT64, ["batch", N_FRAMES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="relgate-stages-export",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    model.doc_string = ("Token readout: mean one-hot token embedding (token histogram) -> "
                        "logistic regression logit. Higher score = more anomalous.")
    return model


# ------------------------------------------------------------------------ main


def _file_entry(path: Path) -> dict[str, Any]:
    return {"path": path.as_posix(), "size": path.stat().st_size, "sha256": sha256_file(path)}


def main() -> int:
    import onnx
    import torch

    from stages.train import configure_torch, load_checkpoint, predict

    params = load_params(PARAMS_FILE)
    spec = ExportSpec.from_params(params.export)
    threads = params.evaluate.threads
    started = time.perf_counter()
    configure_torch(params.seed, threads)
    model, ckpt = load_checkpoint(spec.checkpoint)
    test = load_npz("data/test.npz", ("x",))
    train = load_npz("data/train.npz", ("input_tokens", "y"))
    val = load_npz("data/val.npz", ("input_tokens", "y"))

    model_path = Path(spec.model)
    length = int(ckpt["arch"]["length"])
    export_cnn(model, model_path, length=length, opset=spec.opset)
    held_out = np.ascontiguousarray(test["x"][: spec.parity_samples])
    check = compare_outputs(predict(model, held_out),
                            ort_scores(ort_session(model_path, threads), "x", held_out),
                            what=str(model_path))

    weights, bias = fit_logistic(token_histograms(train["input_tokens"]), train["y"],
                                 l2=spec.readout_l2, iterations=spec.readout_iterations)
    readout_path = Path(spec.readout)
    readout = build_readout(weights, bias, opset=spec.opset)
    onnx.checker.check_model(readout, full_check=True)
    readout_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(readout_path, readout.SerializeToString())
    val_reference = token_histograms(val["input_tokens"]) @ weights + bias
    val_scores = ort_scores(ort_session(readout_path, threads), "input_tokens",
                            val["input_tokens"])
    readout_check = compare_outputs(val_reference, val_scores, what=str(readout_path))

    failures = parity_reasons(check, spec)
    data_file = model_path.with_name(model_path.name + ".data")
    report: dict[str, Any] = {
        "schema_version": 1,
        "exporter": {"name": "torch.onnx.export", "dynamo": True, "torch": torch.__version__,
                     "onnx": onnx.__version__, "opset": spec.opset,
                     "external_data": {"location": data_file.name,
                                       "tensors": "every floating-point initializer",
                                       "inline": "integer initializers (axes, shapes)"},
                     "stripped": "node metadata_props and doc strings (absolute source paths)"},
        "model": {"onnx": _file_entry(model_path), "data": _file_entry(data_file),
                  "input": {"name": "x", "dtype": "float32", "shape": ["batch", length]},
                  "output": {"name": "score", "dtype": "float32", "shape": ["batch"]},
                  "threshold": float(ckpt["threshold"])},
        "parity": {"split": "data/test.npz", "samples": check.n,
                   "max_abs_diff": check.max_abs_diff, "spearman": check.spearman,
                   "tolerance": {"max_abs_diff": spec.max_abs_diff,
                                 "min_spearman": spec.min_spearman},
                   "passed": not failures, "reasons": failures},
        "readout": {"onnx": _file_entry(readout_path), "vocab_size": VOCAB_SIZE,
                    "tokens": N_FRAMES, "l2": spec.readout_l2,
                    "train_samples": len(train["y"]),
                    "val_auc": roc_auc(val["y"], val_scores),
                    "parity_max_abs_diff": readout_check.max_abs_diff},
    }
    write_json(spec.report, report)
    write_json(spec.metrics, {"parity_max_abs_diff": check.max_abs_diff,
                              "parity_spearman": check.spearman,
                              "readout_val_auc": report["readout"]["val_auc"]})
    if failures:
        raise Refusal(f"export parity check failed: {'; '.join(failures)}",
                      hint=f"see {spec.report}; loosen export.max_abs_diff/min_spearman only "
                           "with a reason, or fix the export")
    if gate_reasons(readout_check, max_abs_diff=1e-4):
        raise ModelError(f"{readout_path}: onnxruntime differs from the numpy readout by "
                         f"{readout_check.max_abs_diff}", hint="this is a bug in build_readout")
    print(f"export: {model_path} (+ {data_file.name}), parity max |diff| "
          f"{check.max_abs_diff:.2e}, Spearman {check.spearman:.6f}; {readout_path} "
          f"val AUC {report['readout']['val_auc']:.4f}; {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_stage("export", main)
