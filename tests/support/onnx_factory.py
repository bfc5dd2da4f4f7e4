"""Builders of the ONNX models the tests (and the bench) run relgate on.

Real models, written to real folders: a 1-D CNN exported by torch's default (dynamo)
exporter with its ``.onnx.data``, a token readout built with the ``onnx`` helper API
(Gather -> ReduceMean -> MatMul/Add -> score, as in the seed), a fixed-batch-1 model, a
two-column probability model (as scikit-learn converters emit), a features model, and
hostile files (traversal, absolute, symlinked and hard-linked external data, offsets out
of range, truncated, random bytes).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10
OPSET = 18
WAVE = 1600
TOKENS = 32
VOCAB = 64


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _model(graph: onnx.GraphProto, *, producer: str = "relgate-tests") -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=producer, producer_version="1")
    model.ir_version = IR_VERSION
    return model


# ---------------------------------------------------------------- torch


def torch_cnn(folder: Path, *, width: int = 4, seed: int = 0, name: str = "cnn.onnx") -> Path:
    """A small 1-D CNN ``x [batch, 1600] -> score [batch]``, exported by torch.onnx.export.

    torch 2.13's default exporter (dynamo) writes the weights to ``<name>.data``. ``width``
    scales the channels: 4 gives ~1k parameters; 32 gives ~100k (the bench's model).
    """
    import torch

    torch.manual_seed(seed)
    c1, c2, c3 = width, 2 * width, 4 * width

    class CNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv1d(1, c1, 9, stride=4), torch.nn.ReLU(),
                torch.nn.Conv1d(c1, c2, 9, stride=4), torch.nn.ReLU(),
                torch.nn.Conv1d(c2, c3, 9, stride=2), torch.nn.ReLU(),
            )
            self.head = torch.nn.Linear(c3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x.unsqueeze(1)).mean(dim=-1)
            return self.head(h).squeeze(-1)

    net = CNN().eval()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.randn(2, WAVE),), str(path), input_names=["x"],
            output_names=["score"], dynamic_shapes={"x": {0: batch}}, dynamo=True,
            external_data=True, verbose=False,
        )
    return path


def cnn_parameter_count(width: int) -> int:
    c1, c2, c3 = width, 2 * width, 4 * width
    return (9 * c1 + c1) + (9 * c1 * c2 + c2) + (9 * c2 * c3 + c3) + (c3 + 1)


# ---------------------------------------------------------------- onnx helper models


def token_model(folder: Path, *, seed: int = 1, name: str = "tokens.onnx") -> Path:
    """``input_tokens int64 [N, 32] -> score float [N, 1]`` (Gather, ReduceMean, MatMul, Add)."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(VOCAB, 8)).astype(np.float32)
    w = rng.normal(size=(8, 1)).astype(np.float32)
    b = np.array([0.1], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "input_tokens"], ["e"], axis=0),
            helper.make_node("ReduceMean", ["e", "axes"], ["m"], keepdims=0),
            helper.make_node("MatMul", ["m", "w"], ["mw"]),
            helper.make_node("Add", ["mw", "b"], ["score"]),
        ],
        "token_readout",
        [helper.make_tensor_value_info("input_tokens", TensorProto.INT64, ["N", TOKENS])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=[
            numpy_helper.from_array(emb, "emb"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
        ],
    )
    return _save(_model(graph), folder / name)


def fixed_batch1_model(folder: Path, *, seed: int = 2, batch: int = 1,
                       name: str = "fixed1.onnx") -> Path:
    """``x float [1, 1600] -> score float [1, 1]`` (as the seed's models: batch fixed to 1).

    ``batch`` fixes another batch size (to exercise padding of the last batch).
    """
    w = fixed_weight(seed)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["score"])],
        "fixed_batch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, WAVE])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 1])],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(np.array([0.05], dtype=np.float32), "b")],
    )
    return _save(_model(graph), folder / name)


def fixed_weight(seed: int = 2) -> np.ndarray:
    """The weight of :func:`fixed_batch1_model` (bias 0.05), for oracles."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(WAVE, 1)) / 40).astype(np.float32)


def probability_model(folder: Path, coef: np.ndarray, intercept: float, *,
                      name: str = "proba.onnx") -> Path:
    """A logistic regression as skl2onnx emits it (zipmap off).

    ``x float [N, F] -> label int64 [N], probabilities float [N, 2]`` with
    ``p1 = sigmoid(x @ coef + intercept)`` and ``probabilities = [1 - p1, p1]``.
    """
    f = int(coef.shape[0])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "coef"], ["z0"]),
            helper.make_node("Add", ["z0", "intercept"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["p1"]),
            helper.make_node("Sub", ["one", "p1"], ["p0"]),
            helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "logreg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", f])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            numpy_helper.from_array(coef.reshape(f, 1).astype(np.float32), "coef"),
            numpy_helper.from_array(np.array([intercept], dtype=np.float32), "intercept"),
            numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"),
        ],
    )
    return _save(_model(graph, producer="skl2onnx-like"), folder / name)


def features_model(folder: Path, *, dims: int = 16, seed: int = 3,
                   name: str = "features.onnx") -> Path:
    """``x float [N, 1600] -> features float [N, D]`` (tanh of a projection); no score output."""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(WAVE, dims)) / 40).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]),
         helper.make_node("Tanh", ["z"], ["features"])],
        "features",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WAVE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", dims])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    return _save(_model(graph), folder / name)


def score_and_features_model(folder: Path, *, dims: int = 8, seed: int = 4,
                             name: str = "score_feats.onnx") -> Path:
    """``x [N, 1600] -> score [N], feats [N, D]``: a score plus features for health stats."""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(WAVE, dims)) / 40).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]),
         helper.make_node("Tanh", ["z"], ["feats"]),
         helper.make_node("ReduceMean", ["feats", "axes"], ["score"], keepdims=0)],
        "score_feats",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WAVE])],
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["N", dims]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return _save(_model(graph), folder / name)


# ---------------------------------------------------------------- seed 001: no score

#: seed 001's interface: ``audio_codes`` int64 [1, CODEBOOKS, FRAMES]
CODEBOOKS, FRAMES, CODE_VOCAB = 16, 128, 1024


def codec_features_model(folder: Path, *, dims: int = 512, seed: int = 6, scale: float = 1.0,
                         name: str = "codec.onnx") -> Path:
    """Seed 001's form: ``audio_codes int64 [1, 16, 128] -> features float [1, 128, dims]``,
    the mean over the 16 codebooks of an embedding table ``[1024, dims]`` gathered at the
    codes, times *scale*; the table (2 MiB at dims 512) is external data in
    ``<name>.data``. No classifier score: a features model (task kind none). *scale* 0
    gives a collapsed model (every feature 0)."""
    rng = np.random.default_rng(seed)
    table = (scale * rng.normal(size=(CODE_VOCAB, dims))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "audio_codes"], ["emb"], axis=0),
         helper.make_node("ReduceMean", ["emb", "axes"], ["features"], keepdims=0)],
        "codec",
        [helper.make_tensor_value_info("audio_codes", TensorProto.INT64, [1, CODEBOOKS, FRAMES])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, FRAMES, dims])],
        initializer=[numpy_helper.from_array(table, "table"),
                     numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    model = _model(graph, producer="codec-like")
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=name + ".data", size_threshold=1024)
    return path


def codec_table(*, dims: int = 512, seed: int = 6, scale: float = 1.0) -> np.ndarray:
    """The embedding table :func:`codec_features_model` stores (an oracle for its features)."""
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(CODE_VOCAB, dims))).astype(np.float32)


def audio_codes(n: int, *, seed: int = 0) -> np.ndarray:
    """``audio_codes int64 [n, 16, 128]`` in ``[0, 1024)``: n samples of seed 001's input."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, CODE_VOCAB, size=(n, CODEBOOKS, FRAMES), dtype=np.int64)


# ---------------------------------------------------------------- external data by hand


def external_model(folder: Path, location: str, *, name: str = "ext.onnx",
                   offset: int = 0, length: int | None = None,
                   write_data: bool = True, seed: int = 5) -> Path:
    """``x [N, 1600] -> score [N, 1]`` whose weight ``w [1600, 1]`` lives in *location*.

    With ``write_data`` the weight bytes are written to ``folder/location`` at *offset*
    (nothing is written when the location is hostile: the caller arranges the file).
    """
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(WAVE, 1)) / 40).astype(np.float32)
    tensor = numpy_helper.from_array(w, "w")
    raw = tensor.raw_data
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset),
               "length": str(len(raw) if length is None else length)}
    for key, value in entries.items():
        e = tensor.external_data.add()
        e.key, e.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["score"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WAVE])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=[tensor, numpy_helper.from_array(np.array([0.0], dtype=np.float32), "b")],
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(_model(graph).SerializeToString())
    if write_data:
        data = folder / location
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_bytes(b"\0" * offset + raw)
    return path


def external_weight(seed: int = 5) -> np.ndarray:
    """The weight that :func:`external_model` stores (to check scores by hand)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(WAVE, 1)) / 40).astype(np.float32)


@dataclass(frozen=True)
class Hostile:
    """A hostile model file and the words its refusal must contain."""

    path: Path
    expect: str


def hostile_models(root: Path) -> dict[str, Hostile]:
    """Every hostile case, each in its own folder under *root* (with an outside/ folder).

    ``root/outside/secret.bin`` is a FIFO: opening it for reading blocks, so a test that
    finishes proves nobody opened it (chmod 000 too, for runs that are not root).
    """
    outside = root / "outside"
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.bin"
    if not secret.exists():
        os.mkfifo(secret)
        secret.chmod(0)
    plain = outside / "plain.bin"
    plain.write_bytes(b"\0" * (WAVE * 4))
    out: dict[str, Hostile] = {}

    def folder(name: str) -> Path:
        f = root / name
        f.mkdir(parents=True, exist_ok=True)
        return f

    out["traversal"] = Hostile(
        external_model(folder("traversal"), "../outside/secret.bin", write_data=False), "'..'")
    out["absolute"] = Hostile(
        external_model(folder("absolute"), str(secret.absolute()), write_data=False),
        "absolute path")
    f = folder("symlink_file")
    (f / "ext.onnx.data").symlink_to(secret)
    out["symlink_file"] = Hostile(external_model(f, "ext.onnx.data", write_data=False),
                                  "is a symlink")
    f = folder("symlink_parent")
    (f / "weights").symlink_to(outside, target_is_directory=True)
    out["symlink_parent"] = Hostile(external_model(f, "weights/secret.bin", write_data=False),
                                    "goes through the symlink")
    f = folder("hardlink")
    os.link(plain, f / "ext.onnx.data")
    out["hardlink"] = Hostile(external_model(f, "ext.onnx.data", write_data=False),
                              "hard-linked")
    f = folder("offset")
    path = external_model(f, "ext.onnx.data")
    (f / "ext.onnx.data").write_bytes((f / "ext.onnx.data").read_bytes()[:100])
    out["offset_outside"] = Hostile(path, "outside the")
    out["length_mismatch"] = Hostile(
        external_model(folder("length"), "ext.onnx.data", length=8), "does not match")
    out["missing_data"] = Hostile(
        external_model(folder("missing"), "ext.onnx.data", write_data=False), "is missing")
    good = token_model(folder("good"))
    blob = good.read_bytes()
    out["truncated"] = Hostile(_write(folder("truncated") / "m.onnx", blob[: len(blob) // 2]),
                               "m.onnx")
    rng = np.random.default_rng(99)
    out["random"] = Hostile(_write(folder("random") / "m.onnx", rng.bytes(4096)), "m.onnx")
    out["empty"] = Hostile(_write(folder("empty") / "m.onnx", b""), "empty file")
    out["checker"] = Hostile(_invalid_graph(folder("checker") / "m.onnx"), "onnx.checker")
    return out


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _invalid_graph(path: Path) -> Path:
    """Well-formed protobuf, invalid ONNX: a node reads a tensor nobody defines."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "nowhere"], ["score"])],
        "invalid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 4])],
    )
    path.write_bytes(_model(graph).SerializeToString())
    return path


# ---------------------------------------------------------------- data


def waveforms(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x float32 [n, 1600]`` (noise, with a sine burst for the positives) and ``y``."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    x = rng.normal(0, 0.5, size=(n, WAVE)).astype(np.float32)
    t = np.arange(WAVE, dtype=np.float32)
    x[y == 1] += np.sin(t / 7).astype(np.float32)
    return x, y


def tokens(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``input_tokens int64 [n, 32]`` in ``[0, 64)`` and labels ``y``."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int64)
    toks = rng.integers(0, VOCAB, size=(n, TOKENS), dtype=np.int64)
    return toks, y


def write_npz(path: Path, *, compressed: bool = False, **arrays: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path
