"""The two traps of issue 14, in every combination of declared and undeclared output type.

* **A probability read as a logit**: an averaged probability ``p`` [N] (its last node a Mul,
  not a Sigmoid) was passed through a sigmoid again (F1 0.54 instead of 0.95).
* **Logits read as probabilities**: a column of [N, K] logits read as a probability (clipped).

Each model is a real ONNX graph over scikit-learn's breast-cancer data (logistic regression
weights), validated with the real ``relgate validate``. The attack wins when relgate reports a
number computed on the wrong reading without refusing or warning; every case must instead be
refused (exit 2, one line naming why), warned about (stderr and report), or read correctly
(auc and f1 at the threshold equal scikit-learn's on the model's own probabilities).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.adversarial.conftest import assert_clean_failure

PARAMS = """\
schema_version: 1
seed: 0
task:
{task}validate:
  bootstrap:
    resamples: 20
    confidence: 0.9
    seed: 3
gates:
  mode: all
  rules:
  - metric: auc
    op: '>='
    value: 0.9
release:
  name: v1.0.0
  promoted:
    path: model.onnx
"""


@pytest.fixture(scope="module")
def cancer() -> dict[str, Any]:
    """Standardised breast-cancer features, a seeded split and two fitted logistic regressions."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:300], order[300:]
    a = LogisticRegression(C=0.05, max_iter=5000).fit(x[train], y[train])
    b = LogisticRegression(C=1.0, max_iter=5000).fit(x[train], y[train])
    return {"x": x[test].astype(np.float32), "y": y[test].astype(np.int8),
            "w1": a.coef_[0], "b1": a.intercept_[0], "w2": b.coef_[0], "b2": b.intercept_[0]}


def _model(nodes: list[Any], inits: list[Any], out: str, shape: list[Any]) -> bytes:
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 30])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _t(name: str, value: Any) -> Any:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def build(kind: str, c: dict[str, Any]) -> bytes:
    """logit: x@w+b; sigmoid: Sigmoid of it; averaged: (Sigmoid(z1) + Sigmoid(z2)) * 0.5 (seed
    004's p_defect); logits2: two-class logits [-z/2, z/2]; logits5: five-class logits."""
    w1, b1, w2, b2 = c["w1"], c["b1"], c["w2"], c["b2"]
    if kind == "logit":
        return _model([helper.make_node("MatMul", ["x", "w"], ["m"]),
                       helper.make_node("Add", ["m", "b"], ["score"])],
                      [_t("w", w1), _t("b", [b1])], "score", ["batch"])
    if kind == "sigmoid":
        return _model([helper.make_node("MatMul", ["x", "w"], ["m"]),
                       helper.make_node("Add", ["m", "b"], ["z"]),
                       helper.make_node("Sigmoid", ["z"], ["p"])],
                      [_t("w", w1), _t("b", [b1])], "p", ["batch"])
    if kind == "averaged":
        return _model([helper.make_node("MatMul", ["x", "w1"], ["m1"]),
                       helper.make_node("Add", ["m1", "b1"], ["z1"]),
                       helper.make_node("Sigmoid", ["z1"], ["p1"]),
                       helper.make_node("MatMul", ["x", "w2"], ["m2"]),
                       helper.make_node("Add", ["m2", "b2"], ["z2"]),
                       helper.make_node("Sigmoid", ["z2"], ["p2"]),
                       helper.make_node("Add", ["p1", "p2"], ["s"]),
                       helper.make_node("Mul", ["s", "half"], ["p"])],
                      [_t("w1", w1), _t("b1", [b1]), _t("w2", w2), _t("b2", [b2]),
                       _t("half", [0.5])], "p", ["batch"])
    if kind == "logits2":
        w = np.stack([-w1 / 2, w1 / 2], axis=1)
        return _model([helper.make_node("MatMul", ["x", "w"], ["m"]),
                       helper.make_node("Add", ["m", "b"], ["logits"])],
                      [_t("w", w), _t("b", [-b1 / 2, b1 / 2])], "logits", ["batch", 2])
    assert kind == "logits5"
    w = np.stack([w1, -w1, 0.3 * w2, -0.3 * w2, 0 * w1], axis=1)
    return _model([helper.make_node("MatMul", ["x", "w"], ["m"]),
                   helper.make_node("Add", ["m", "b"], ["logits"])],
                  [_t("w", w), _t("b", [b1, -b1, 0.0, 0.0, 0.0])], "logits", ["batch", 5])


def ort_output(model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0], dtype=np.float64)


def sigmoid(z: np.ndarray) -> np.ndarray:
    from relgate.calibration import sigmoid as relgate_sigmoid

    return relgate_sigmoid(z)


#: the five-class logits' column 0 named as the seed named column 7 (--output logits ...)
L5 = "  output: logits\n  positive: 0\n"
#: (model, declared output_type or None, extra task lines) -> the outcome that is right
MATRIX = [
    # a logit output
    ("logit", None, "", "refuse:not declared and the graph does not prove it"),
    ("logit", "logit", "", "read:sigmoid"),
    ("logit", "probability", "", "refuse:values lie outside [0, 1]"),
    # a probability a Sigmoid makes: the graph proves it
    ("sigmoid", None, "", "read:as_is"),
    ("sigmoid", "probability", "", "read:as_is"),
    ("sigmoid", "logit", "", "refuse:the graph proves it is a probability"),
    # seed 004's averaged probability: nothing proves it, so it must be declared
    ("averaged", None, "", "refuse:not declared and the graph does not prove it"),
    ("averaged", "probability", "", "read:as_is"),
    ("averaged", "logit", "", "warn:every one of its"),
    # two-class logits [N, 2]
    ("logits2", None, "", "refuse:not declared and the graph does not prove it"),
    ("logits2", "logit", "", "read:diff"),
    ("logits2", "probability", "", "refuse:rows do not sum to 1"),
    # one column of five-class logits (the multi-class trap: --positive-index 7 of logits)
    ("logits5", None, L5, "refuse:not declared and the graph does not prove it"),
    ("logits5", "logit", L5, "refuse:multi-class logits is not a log-odds"),
    ("logits5", "probability", L5, "refuse:rows do not sum to 1"),
]


@pytest.mark.parametrize(("kind", "declared", "extra", "expect"), MATRIX,
                         ids=[f"{k}-{d or 'undeclared'}" for k, d, _, _ in MATRIX])
def test_output_type_traps(cli: Any, cancer: dict[str, Any], tmp_path: Path, kind: str,
                           declared: str | None, extra: str, expect: str) -> None:
    from sklearn.metrics import f1_score, roc_auc_score

    model = build(kind, cancer)
    (tmp_path / "model.onnx").write_bytes(model)
    np.savez(tmp_path / "test.npz", x=cancer["x"], y=cancer["y"])
    task = "  kind: binary\n" + (f"  output_type: {declared}\n" if declared else "") + extra
    (tmp_path / "params.yaml").write_text(PARAMS.format(task=task))
    res = cli("validate", "--model", tmp_path / "model.onnx", "--data", tmp_path / "test.npz",
              "--params", tmp_path / "params.yaml", "--out", tmp_path / "report.json", "--json")
    outcome, _, detail = expect.partition(":")
    raw = ort_output(model, cancer["x"])
    if outcome == "refuse":
        line = assert_clean_failure(res, codes=(2,))
        assert detail in line, line
        assert not (tmp_path / "report.json").exists()
        if "outside [0, 1]" in detail:  # the count is named, and it is the true count
            assert f"{int(np.sum((raw < 0) | (raw > 1)))} of {raw.size} values" in line
        if "rows do not sum" in detail:
            bad = (np.abs(raw.sum(axis=1) - 1) > 1e-4) | ((raw < 0) | (raw > 1)).any(axis=1)
            assert f"{int(bad.sum())} of {raw.shape[0]} rows" in line
        if "not declared" in detail:  # the choices to declare are listed
            assert "logit | probability | features" in line and "outputs:" in line
        return
    assert res.code in (0, 1), res.err
    report = json.loads(res.out)
    if outcome == "warn":
        assert detail in res.err and "relgate: warning:" in res.err
        assert any(detail in w for w in report["task"]["warnings"])
        return
    assert report["task"]["warnings"] == [] and "warning" not in res.err
    prob = {"as_is": lambda: raw, "sigmoid": lambda: sigmoid(raw),
            "diff": lambda: sigmoid(raw[:, 1] - raw[:, 0])}[detail]()
    y = cancer["y"]
    assert report["task"]["output_type"] == ("logit" if detail != "as_is" else "probability")
    assert report["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(y, prob), abs=1e-9)
    assert report["threshold"] == 0.5
    assert report["metrics"]["f1"]["value"] == pytest.approx(
        f1_score(y, (prob >= 0.5).astype(int)), abs=1e-9)


def test_an_output_type_flag_cannot_contradict_the_graph(cli: Any, cancer: dict[str, Any],
                                                         tmp_path: Path) -> None:
    """--output-type overrides params, but not what the graph proves (a Sigmoid's output)."""
    (tmp_path / "model.onnx").write_bytes(build("sigmoid", cancer))
    np.savez(tmp_path / "test.npz", x=cancer["x"], y=cancer["y"])
    (tmp_path / "params.yaml").write_text(PARAMS.format(task="  kind: binary\n"))
    res = cli("validate", "--model", tmp_path / "model.onnx", "--data", tmp_path / "test.npz",
              "--params", tmp_path / "params.yaml", "--out", tmp_path / "r.json",
              "--output-type", "logit")
    assert "produced by Sigmoid" in assert_clean_failure(res, codes=(2,))


@pytest.mark.parametrize("command", ["calibrate", "evaluate"])  # validate: test_multiclass_validate.py
def test_a_binary_reading_of_multiclass_logits_is_refused(cli: Any, cancer: dict[str, Any],
                                                          tmp_path: Path, command: str) -> None:
    """[N, 5] logits declared as a binary logit (the first trap, reversed) are refused before
    anything is written; declared multi-class, the same model evaluates."""
    (tmp_path / "model.onnx").write_bytes(build("logits5", cancer))
    np.savez(tmp_path / "data.npz", x=cancer["x"], y=cancer["y"])
    out = tmp_path / ("out.json" if command == "calibrate" else "out.npz")
    (tmp_path / "params.yaml").write_text(PARAMS.format(task="  kind: binary\n"
                                                        "  output_type: logit\n"))
    res = cli(command, "--model", tmp_path / "model.onnx", "--data", tmp_path / "data.npz",
              "--params", tmp_path / "params.yaml", "--out", out)
    assert_clean_failure(res, codes=(2,))
    assert not out.exists()
    if command == "calibrate":  # multi-class calibrate: tests/acceptance/test_multiclass_calibrate.py
        return
    task = "  kind: multiclass\n  output_type: logits\n  top_k: [3]\n"
    (tmp_path / "params.yaml").write_text(PARAMS.format(task=task))
    res = cli(command, "--model", tmp_path / "model.onnx", "--data", tmp_path / "data.npz",
              "--params", tmp_path / "params.yaml", "--out", out)
    assert res.code == 0, res.err
    assert out.exists()


@pytest.mark.parametrize(("task", "why"), [
    ({"kind": "binary", "output_type": "logits"}, "output_type"),
    ({"kind": "multiclass", "output_type": "logit"}, "output_type"),
    ({"kind": "binary", "output_type": "features"}, "reducer"),
    ({"kind": "binary", "output_type": "logit", "reducer": "mean"}, "reducer"),
    ({"kind": "binary", "top_k": [3]}, "top_k"),
    ({"kind": "binary", "positive": "dog", "classes": ["cat", "cow"]}, "not one of task.classes"),
    ({"kind": "binary", "output_type": "features", "reducer": "column"}, "needs task.positive"),
    ({"kind": "multiclass", "positive": 1}, "binary tasks only"),
    ({"kind": "regression"}, "kind"),
    ({"kind": "binary", "output_typ": "logit"}, "output_typ"),
])
def test_a_task_that_cannot_mean_one_thing_is_refused(task: dict[str, Any], why: str) -> None:
    from relgate.errors import ParamsError
    from relgate.params import params_from_dict

    doc = {"schema_version": 1, "task": task,
           "gates": {"mode": "all", "rules": [{"metric": "auc", "op": ">=", "value": 0.5}]},
           "release": {"name": "v1", "promoted": {"path": "m.onnx"}}}
    with pytest.raises(ParamsError) as err:
        params_from_dict(doc)
    assert why in err.value.message


def test_a_declared_task_is_typed() -> None:
    from relgate.params import TaskSpec, params_from_dict

    doc = {"schema_version": 1,
           "task": {"kind": "binary", "output": "p", "output_type": "probability", "positive": 1,
                    "classes": ["benign", "malignant"]},
           "gates": {"mode": "all", "rules": [{"metric": "auc", "op": ">=", "value": 0.5}]},
           "release": {"name": "v1", "promoted": {"path": "m.onnx"}}}
    assert params_from_dict(doc).task == TaskSpec(kind="binary", output="p",
                                                  output_type="probability", positive=1,
                                                  classes=("benign", "malignant"))
    del doc["task"]
    assert params_from_dict(doc).task is None


@pytest.mark.parametrize("reducer", [None, "mean", "max", "max_abs", "l2", "column"])
def test_a_features_output_is_reduced_as_declared_never_by_a_fixed_mean(
        cli: Any, cancer: dict[str, Any], tmp_path: Path, reducer: str | None) -> None:
    """Seed 000's features [N, D]: undeclared, refused; declared, reduced by that reducer."""
    from sklearn.metrics import roc_auc_score

    w = np.stack([cancer["w1"], cancer["w2"], -cancer["w1"], 0.5 * cancer["w2"]], axis=1)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["features"])], [_t("w", w)],
                   "features", ["batch", 4])
    (tmp_path / "model.onnx").write_bytes(model)
    np.savez(tmp_path / "test.npz", x=cancer["x"], y=cancer["y"])
    task = "  kind: binary\n" + ("" if reducer is None else
                                 f"  output_type: features\n  reducer: {reducer}\n")
    task += "  positive: 1\n" if reducer == "column" else ""
    (tmp_path / "params.yaml").write_text(PARAMS.format(task=task))
    res = cli("validate", "--model", tmp_path / "model.onnx", "--data", tmp_path / "test.npz",
              "--params", tmp_path / "params.yaml", "--out", tmp_path / "r.json", "--json")
    if reducer is None:
        assert "not declared" in assert_clean_failure(res, codes=(2,))
        return
    assert res.code in (0, 1), res.err
    raw = ort_output(model, cancer["x"])
    score = {"mean": raw.mean(axis=1), "max": raw.max(axis=1), "max_abs": np.abs(raw).max(axis=1),
             "l2": np.sqrt((raw * raw).sum(axis=1)), "column": raw[:, 1]}[reducer]
    report = json.loads(res.out)
    assert report["task"]["reducer"] == reducer and report["task"]["output_type"] == "features"
    assert report["metrics"]["auc"]["value"] == pytest.approx(
        roc_auc_score(cancer["y"], sigmoid(score)), abs=1e-9)
