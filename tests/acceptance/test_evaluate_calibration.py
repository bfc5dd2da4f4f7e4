"""relgate evaluate --calibration: calibrated probabilities from the one apply formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from relgate.calibration import apply_calibration, load_calibration
from tests.support.registry import make_registry, prepare


def test_evaluate_applies_the_calibration(tmp_path: Path, cli, monkeypatch) -> None:
    root = make_registry(tmp_path)
    prepare(root)
    monkeypatch.chdir(root)
    result = cli("evaluate", "--model", "models/model.onnx", "--data", "data/test.npz",
                 "--calibration", "analysis/calibration.json", "--out", "scores.npz")
    assert result.code == 0, result.err
    out = np.load(root / "scores.npz")
    cal = load_calibration(root / "analysis/calibration.json")
    # oracle: onnxruntime run directly, then sigmoid(a * s + b) written out by hand
    with np.load(root / "data/test.npz") as data:
        x = data["x"] * np.float32(cal["input"]["scale"]) + np.float32(cal["input"]["offset"])
    raw = ort.InferenceSession(str(root / "models/model.onnx")).run(["score"], {"x": x})[0][:, 0]
    a, b = cal["probability"]["a"], cal["probability"]["b"]
    expected = 1.0 / (1.0 + np.exp(-(a * raw.astype(np.float64) + b)))
    np.testing.assert_allclose(out["prob"], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["prob"], apply_calibration(out["score"], cal))
    assert set(np.unique(out["decision"])) <= {-1, 0, 1}
    np.testing.assert_array_equal(out["decision"] == 1, out["prob"] >= cal["threshold"]["value"])


def test_evaluate_refuses_a_calibration_of_another_model(tmp_path: Path, cli, monkeypatch) -> None:
    root = make_registry(tmp_path)
    prepare(root)
    monkeypatch.chdir(root)
    result = cli("evaluate", "--model", "models/readout.onnx", "--data", "data/test.npz",
                 "--calibration", "analysis/calibration.json", "--out", "scores.npz")
    assert result.code == 2
    assert "calibration was fit for another model" in result.err
    assert not (root / "scores.npz").exists()
    both = cli("evaluate", "--model", "models/model.onnx", "--data", "data/test.npz",
               "--calibration", "analysis/calibration.json", "--scale", "2", "--out", "s.npz")
    assert both.code == 2 and "--calibration sets the input scale/offset" in both.err
