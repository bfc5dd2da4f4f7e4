"""The binary task kind end to end on a real skl2onnx export (onnxruntime, the real CLI): the
report's new numbers are scikit-learn's and brute force's on the model's own probabilities.

* ``confusion`` is ``[[TN, FP], [FN, TP]]`` (sklearn's ``confusion_matrix``) at the threshold;
* ``macro_f1`` is sklearn's ``f1_score(average="macro")``, gateable, and promote reproduces it;
* with ``calibrate.inconclusive_band``, ``coverage`` and ``selective_precision`` are counted
  over the calibration's band ``[low, high)`` and gateable on their interval;
* a gate on ``coverage`` without a band fails closed (exit 1, value null and a reason);
* paired deltas against a previous release (its own calibration and band) are the point
  differences of the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.registry import relgate, task_registry

TASK = {"kind": "binary", "output": "probabilities"}
GATES = """\
gates:
  mode: all
  rules:
  - metric: macro_f1
    op: '>='
    value: 0.9
  - metric: coverage
    op: '>='
    value: 0.5
    on: ci_low
  - metric: selective_precision
    op: '>='
    value: 0.9
"""


@pytest.fixture(scope="module")
def cancer() -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    order = np.random.default_rng(2).permutation(len(y))
    train, val, test = order[:250], order[250:400], order[400:]
    models = {name: LogisticRegression(C=c, max_iter=5000).fit(x[train], y[train])
              for name, c in (("a", 0.05), ("b", 0.002))}
    split = {name: {"x": x[rows], "y": y[rows].astype(np.int8)}
             for name, rows in (("val", val), ("test", test))}
    return {**models, "splits": split}


def _export(model: Any) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(model, initial_types=[("x", FloatTensorType([None, 30]))],
                  options={id(model): {"zipmap": False}}, target_opset={"": 18, "ai.onnx.ml": 3})
    return onx.SerializeToString()


def _positive_probability(model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[-1], dtype=np.float64)[:, 1]


def _registry(tmp_path: Path, model: bytes, splits: dict[str, Any], *, band: float | None,
              gates: str = GATES) -> Path:
    root = task_registry(tmp_path / "reg", model, splits, TASK)
    params = (root / "params.yaml").read_text()
    head, rest = params.split("gates:\n", 1)
    rest = rest[rest.index("release:\n"):]
    if band is not None:
        head = head.replace("  ece_bins: 10\nvalidate:", f"  ece_bins: 10\n  inconclusive_band: {band}\n"
                            "validate:", 1)
    (root / "params.yaml").write_text(head + gates + rest)
    return root


def _selective(y: np.ndarray, p: np.ndarray, thr: float, low: float,
               high: float) -> tuple[float, float]:
    conclusive = ~((p >= low) & (p < high))
    flagged = conclusive & (p >= thr)
    return float(conclusive.mean()), float((y[flagged] == 1).mean())


def _validate(root: Path) -> tuple[int, dict[str, Any]]:
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                   "--out", "analysis/calibration.json") == 0
    code = relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--calibration", "analysis/calibration.json",
                   "--out", "analysis/validation_report.json")
    return code, json.loads((root / "analysis" / "validation_report.json").read_text())


def test_confusion_macro_f1_and_selective_metrics_are_sklearns_and_promote_reproduces_them(
        cancer: dict[str, Any], tmp_path: Path) -> None:
    from sklearn.metrics import confusion_matrix, f1_score

    model = _export(cancer["a"])
    root = _registry(tmp_path, model, cancer["splits"], band=0.1)
    code, report = _validate(root)
    test = cancer["splits"]["test"]
    y, prob = test["y"], _positive_probability(model, test["x"])
    assert report["threshold"] == 0.5
    assert report["confusion"] == confusion_matrix(y, prob >= 0.5, labels=[0, 1]).tolist()
    (tn, fp), (fn, tp) = report["confusion"]
    assert tn + fp == report["data"]["n_neg"] and fn + tp == report["data"]["n_pos"]
    m = report["metrics"]
    assert m["macro_f1"]["value"] == pytest.approx(f1_score(y, prob >= 0.5, average="macro"),
                                                   abs=1e-9)
    assert m["macro_f1"]["ci_low"] <= m["macro_f1"]["value"] <= m["macro_f1"]["ci_high"]
    calibration = json.loads((root / "analysis" / "calibration.json").read_text())
    band = calibration["inconclusive"]
    assert (band["low"], band["high"]) == pytest.approx((0.4, 0.6))
    coverage, precision = _selective(y, prob, 0.5, band["low"], band["high"])
    assert 0.5 < coverage < 1.0  # the band holds some of the test samples
    assert m["coverage"]["value"] == pytest.approx(coverage, abs=1e-12)
    assert m["selective_precision"]["value"] == pytest.approx(precision, abs=1e-12)
    for name in ("coverage", "selective_precision"):
        assert m[name]["ci_low"] <= m[name]["value"] <= m[name]["ci_high"]
    gated = {g["metric"]: g for g in report["gates"]["results"]}
    assert set(gated) == {"macro_f1", "coverage", "selective_precision"}
    assert gated["coverage"]["observed"] == m["coverage"]["ci_low"]
    assert code == 0 and report["passed"] is True, report["reasons"]

    assert relgate(root, "promote") == 0  # re-evaluation reproduces every new field
    bundle = root / "models" / "core" / "v1.0.0"
    shipped = json.loads((bundle / "validation_report.json").read_text())
    assert shipped["confusion"] == report["confusion"]
    assert shipped["metrics"]["coverage"] == m["coverage"]


def test_a_selective_gate_without_a_band_fails_closed(cancer: dict[str, Any],
                                                      tmp_path: Path) -> None:
    root = _registry(tmp_path, _export(cancer["a"]), cancer["splits"], band=None)
    code, report = _validate(root)
    assert code == 1 and report["passed"] is False
    for name in ("coverage", "selective_precision"):
        entry = report["metrics"][name]
        assert entry["value"] is None and "no inconclusive band" in entry["reason"]
    failed = {g["metric"] for g in report["gates"]["results"] if not g["passed"]}
    assert failed == {"coverage", "selective_precision"}
    assert report["metrics"]["macro_f1"]["value"] >= 0.9  # the only rule that can pass, passes


def test_paired_deltas_against_a_previous_release_are_the_point_differences(
        cancer: dict[str, Any], tmp_path: Path) -> None:
    from sklearn.metrics import f1_score

    from relgate.params import load_params
    from relgate.validation import Baseline, run_validation

    gates = GATES + ("  baseline:\n    release: v0.9.0\n    on: point\n    max_drop:\n"
                     "      macro_f1: 0.5\n      coverage: 0.5\n      selective_precision: 0.5\n")
    model, previous = _export(cancer["a"]), _export(cancer["b"])
    root = _registry(tmp_path, model, cancer["splits"], band=0.1, gates=gates)
    (root / "models" / "previous.onnx").write_bytes(previous)
    for name in ("model", "previous"):
        assert relgate(root, "calibrate", "--model", f"models/{name}.onnx", "--data",
                       "data/val.npz", "--out", f"analysis/calibration_{name}.json") == 0
    outcome = run_validation(root / "models" / "model.onnx", root / "data" / "test.npz",
                             params=load_params(root / "params.yaml"),
                             calibration_path=root / "analysis" / "calibration_model.json",
                             baseline=Baseline(name="v0.9.0",
                                               model_path=root / "models" / "previous.onnx",
                                               calibration_path=root / "analysis"
                                               / "calibration_previous.json"))
    test = cancer["splits"]["test"]
    y = test["y"]
    pa, pb = (_positive_probability(m, test["x"]) for m in (model, previous))
    assert not np.array_equal(pa >= 0.5, pb >= 0.5)  # two different models
    deltas = outcome.report["baseline"]["deltas"]
    assert deltas["macro_f1"]["value"] == pytest.approx(
        f1_score(y, pa >= 0.5, average="macro") - f1_score(y, pb >= 0.5, average="macro"),
        abs=1e-9)
    sa, sb = _selective(y, pa, 0.5, 0.4, 0.6), _selective(y, pb, 0.5, 0.4, 0.6)
    assert deltas["coverage"]["value"] == pytest.approx(sa[0] - sb[0], abs=1e-9)
    assert deltas["selective_precision"]["value"] == pytest.approx(sa[1] - sb[1], abs=1e-9)
    for entry in deltas.values():
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    guards = [g for g in outcome.report["gates"]["results"] if "baseline" in g["reason"]
              or g["metric"] in deltas]
    assert guards and outcome.passed, outcome.report["reasons"]
