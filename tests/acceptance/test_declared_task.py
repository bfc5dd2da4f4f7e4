"""Declared tasks on real scikit-learn exports: each validates, promotes, and its gated numbers
are scikit-learn's on the model's own probabilities.

* a LogisticRegression exported by skl2onnx with default options (its probabilities are a
  ZipMap: ``sequence(map(int64, float))``), read as [N, K] in the order of its class keys;
* the same with ``zipmap: False`` ([N, 2] probabilities from LinearClassifier, LOGISTIC);
* an averaged probability ``p`` [N] (two logistic regressions' probabilities averaged with
  Add and Mul: its last node is not a Sigmoid), declared ``probability`` in params.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.support.registry import relgate, task_registry


@pytest.fixture(scope="module")
def cancer() -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    order = np.random.default_rng(1).permutation(len(y))
    train, val, test = order[:250], order[250:400], order[400:]
    a = LogisticRegression(C=0.05, max_iter=5000).fit(x[train], y[train])
    b = LogisticRegression(C=1.0, max_iter=5000).fit(x[train], y[train])
    split = {name: {"x": x[rows], "y": y[rows].astype(np.int8)}
             for name, rows in (("val", val), ("test", test))}
    return {"a": a, "b": b, "splits": split}


def _skl2onnx(model: Any, zipmap: bool) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = None if zipmap else {id(model): {"zipmap": False}}
    onx = to_onnx(model, initial_types=[("x", FloatTensorType([None, 30]))], options=options,
                  target_opset={"": 18, "ai.onnx.ml": 3})
    return onx.SerializeToString()


def _averaged(a: Any, b: Any) -> bytes:
    def t(name: str, v: Any) -> Any:
        return numpy_helper.from_array(np.asarray(v, dtype=np.float32), name)

    nodes = []
    for i in (1, 2):
        nodes += [helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"]),
                  helper.make_node("Sigmoid", [f"z{i}"], [f"p{i}"])]
    nodes += [helper.make_node("Add", ["p1", "p2"], ["s"]),
              helper.make_node("Mul", ["s", "half"], ["p"])]
    graph = helper.make_graph(
        nodes, "averaged", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 30])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N"])],
        initializer=[t("w1", a.coef_[0]), t("b1", a.intercept_), t("w2", b.coef_[0]),
                     t("b2", b.intercept_), t("half", [0.5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model.SerializeToString()


def _positive_probability(model: bytes, x: np.ndarray) -> np.ndarray:
    """The positive class's probability as onnxruntime computes it (ZipMap: key 1)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x})
    prob = out[-1]
    if isinstance(prob, list):
        return np.array([row[1] for row in prob], dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    return prob[:, 1] if prob.ndim == 2 else prob


CASES = {
    # name: (how the model is made, the task: lines, the reason relgate must give)
    "zipmap": (lambda c: _skl2onnx(c["a"], True), {"kind": "binary"}, "produced by ZipMap"),
    "no-zipmap": (lambda c: _skl2onnx(c["a"], False),
                  {"kind": "binary", "output": "probabilities"},
                  "produced by LinearClassifier (post_transform LOGISTIC)"),
    "averaged": (lambda c: _averaged(c["a"], c["b"]),
                 {"kind": "binary", "output": "p", "output_type": "probability"},
                 "declared probability (produced by Mul"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_real_export_validates_and_promotes_with_scikit_learns_numbers(
        cli: Any, cancer: dict[str, Any], tmp_path: Path, case: str) -> None:
    from sklearn.metrics import f1_score, roc_auc_score

    make, task, reason = CASES[case]
    model = make(cancer)
    root = task_registry(tmp_path / "reg", model, cancer["splits"], task)
    test = cancer["splits"]["test"]
    prob = _positive_probability(model, test["x"])
    if case != "averaged":  # the export is the scikit-learn model (float32 rounding aside)
        want = cancer["a"].predict_proba(test["x"].astype(np.float64))[:, 1]
        assert np.max(np.abs(prob - want)) < 1e-5

    shown = cli("inspect", root / "models" / "model.onnx", "--json")
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["task"]["output_type"] == (
        "probability" if case != "averaged" else None)  # undeclared, inspect only proposes

    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                   "--out", "analysis/calibration.json") == 0
    assert relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--calibration", "analysis/calibration.json",
                   "--out", "analysis/validation_report.json") == 0
    report = json.loads((root / "analysis" / "validation_report.json").read_text())
    assert report["task"]["output_type"] == "probability"
    assert reason in report["task"]["reason"]
    assert report["task"]["warnings"] == []
    y = test["y"]
    assert report["threshold"] == 0.5
    assert report["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(y, prob), abs=1e-9)
    assert report["metrics"]["f1"]["value"] == pytest.approx(
        f1_score(y, (prob >= 0.5).astype(int)), abs=1e-9)
    assert report["passed"] is True

    assert relgate(root, "promote") == 0
    release = json.loads((root / "models" / "core" / "v1.0.0" / "release.json").read_text())
    assert release["name"] == "v1.0.0"
    assert cli("verify", root / "models" / "core" / "v1.0.0").code == 0


def test_undeclared_averaged_probability_is_refused_before_anything_is_written(
        cli: Any, cancer: dict[str, Any], tmp_path: Path) -> None:
    """Seed 004's trap: without the declaration, the averaged p is not guessed to be a logit."""
    root = task_registry(tmp_path / "reg", _averaged(cancer["a"], cancer["b"]), cancer["splits"],
                         {"kind": "binary"})
    res = cli("calibrate", "--model", root / "models" / "model.onnx",
              "--data", root / "data" / "val.npz", "--params", root / "params.yaml",
              "--out", root / "analysis" / "calibration.json")
    assert res.code == 2
    assert "not declared and the graph does not prove it (produced by Mul" in res.err
    assert not (root / "analysis").exists()
    # the flag is a declaration too, and then the numbers are scikit-learn's
    res = cli("validate", "--model", root / "models" / "model.onnx",
              "--data", root / "data" / "test.npz", "--params", root / "params.yaml",
              "--out", root / "report.json", "--output-type", "probability", "--json")
    assert res.code in (0, 1), res.err
    from sklearn.metrics import f1_score

    prob = _positive_probability(_averaged(cancer["a"], cancer["b"]),
                                 cancer["splits"]["test"]["x"])
    got = json.loads(res.out)["metrics"]["f1"]["value"]
    assert got == pytest.approx(f1_score(cancer["splits"]["test"]["y"],
                                         (prob >= 0.5).astype(int)), abs=1e-9)


def test_a_binary_calibration_under_a_multiclass_task_is_refused_by_promote(
        cancer: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    root = task_registry(tmp_path / "reg", _skl2onnx(cancer["a"], False), cancer["splits"],
                         {"kind": "binary", "output": "probabilities"})
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                   "--out", "analysis/calibration.json") == 0
    assert relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--calibration", "analysis/calibration.json",
                   "--out", "analysis/validation_report.json") == 0
    params = (root / "params.yaml").read_text().replace("  kind: binary\n",
                                                        "  kind: multiclass\n")
    (root / "params.yaml").write_text(params)
    capsys.readouterr()
    assert relgate(root, "promote") == 2
    err = capsys.readouterr().err
    assert "a binary calibration, but the task is multi-class" in err
    assert not (root / "models" / "core" / "v1.0.0").exists()


def test_a_zipmap_maps_labels_through_its_class_keys(cli: Any, cancer: dict[str, Any],
                                                    tmp_path: Path) -> None:
    """positive: 0 names the ZipMap's key 0 (malignant): its column is read, and the labels are
    1 where y is that key. Reading column 0 against y as given would invert every number."""
    from sklearn.metrics import f1_score, roc_auc_score

    model = _skl2onnx(cancer["a"], True)
    root = task_registry(tmp_path / "reg", model, cancer["splits"],
                         {"kind": "binary", "output": "output_probability", "positive": 0})
    res = cli("validate", "--model", root / "models" / "model.onnx",
              "--data", root / "data" / "test.npz", "--params", root / "params.yaml",
              "--out", root / "report.json", "--json")
    assert res.code in (0, 1), res.err
    report = json.loads(res.out)
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    test = cancer["splits"]["test"]
    p0 = np.array([row[0] for row in sess.run(None, {"x": test["x"]})[1]], dtype=np.float64)
    positive = (test["y"] == 0).astype(int)
    assert report["model"]["contract"]["positive_index"] == 0
    assert report["data"]["n_pos"] == int(positive.sum())
    assert report["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(positive, p0),
                                                              abs=1e-9)
    assert report["metrics"]["f1"]["value"] == pytest.approx(
        f1_score(positive, (p0 >= 0.5).astype(int)), abs=1e-9)
    assert report["metrics"]["auc"]["value"] > 0.9  # not inverted
