"""The threshold is part of the release (issue 15.4): the one validation used survives promote, the
release record and card show it with the recommended calibration, and a baseline is judged at its
own released threshold in paired deltas.

Real registries (tests/support/registry.py), real onnxruntime; the oracle scores the models with
onnxruntime directly, applies each calibration's ``sigmoid(a * s + b)`` and takes F1 with sklearn.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import f1_score

from relgate.jsonio import read_json, write_json
from tests.support.registry import W_TRUE, linear_model, make_registry

BUNDLE = Path("models/core/v1.0.0")
THRESHOLD = 0.4239


def calibrate(cli: Any) -> None:
    assert cli("calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
               "--out", "analysis/calibration.json").code == 0


def validate(cli: Any, *extra: object) -> None:
    result = cli("validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                 "--calibration", "analysis/calibration.json",
                 "--out", "analysis/validation_report.json", *extra)
    assert result.code in (0, 1), result.err


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose model is calibrated once for the module (validation is per test)."""
    import os

    from relgate.cli import main

    root = make_registry(tmp_path_factory.mktemp("threshold") / "reg")
    here = Path.cwd()
    os.chdir(root)
    try:
        assert main(["calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                     "--out", "analysis/calibration.json"]) == 0
    finally:
        os.chdir(here)
    return root


@pytest.fixture
def registry(calibrated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "reg"
    shutil.copytree(calibrated, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


def oracle_prob(root: Path, model: str, calibration: str, data: str = "data/test.npz"
                ) -> tuple[np.ndarray, np.ndarray]:
    """(y, calibrated probability) computed without relgate: onnxruntime, then sigmoid(a*s+b)."""
    arrays = np.load(root / data)
    session = ort.InferenceSession(str(root / model), providers=["CPUExecutionProvider"])
    scores = session.run(None, {"x": arrays["x"]})[0].astype(np.float64).ravel()
    cal = json.loads((root / calibration).read_text())
    a, b = cal["probability"]["a"], cal["probability"]["b"]
    return arrays["y"].astype(int), 1.0 / (1.0 + np.exp(-(a * scores + b)))


def test_a_command_line_threshold_survives_promote_and_shows_in_record_and_card(
        registry: Path, cli: Any) -> None:
    validate(cli, "--threshold", THRESHOLD)
    report = read_json(registry / "analysis/validation_report.json")
    assert report["threshold"] == THRESHOLD and report["threshold_source"] == "command line"
    result = cli("promote")
    assert result.code == 0, result.err
    record = read_json(registry / BUNDLE / "release.json")
    assert record["threshold"] == THRESHOLD
    y, prob = oracle_prob(registry, "models/model.onnx", "analysis/calibration.json")
    assert record["metrics"]["f1"]["value"] == pytest.approx(
        f1_score(y, (prob >= THRESHOLD).astype(int)), abs=1e-12)
    # the recommended calibration, from the file promote checked (by sha256)
    cal_bytes = (registry / "analysis/calibration.json").read_bytes()
    cal = json.loads(cal_bytes)
    assert record["calibration"] == {
        "sha256": hashlib.sha256(cal_bytes).hexdigest(), "method": "temperature",
        "temperature": cal["probability"]["temperature"],
        "input": {"scale": 1.0, "offset": 0.0}, "threshold": cal["threshold"]["value"]}
    card = (registry / BUNDLE / "README.md").read_text()
    assert f"| threshold | {THRESHOLD:.6g} on the calibrated probability" in card
    assert "## Calibration (recommended)" in card
    assert f"temperature {cal['probability']['temperature']:.6g}" in card
    assert f"| threshold | {cal['threshold']['value']:.6g} |" in card


def test_the_calibration_threshold_is_recorded_as_such(registry: Path, cli: Any) -> None:
    validate(cli)
    report = read_json(registry / "analysis/validation_report.json")
    cal = read_json(registry / "analysis/calibration.json")
    assert report["threshold_source"] == "calibration"
    assert report["threshold"] == cal["threshold"]["value"]
    assert cli("promote").code == 0
    assert read_json(registry / BUNDLE / "release.json")["threshold"] == cal["threshold"]["value"]


def test_an_edited_threshold_is_not_reproduced(registry: Path, cli: Any) -> None:
    """promote re-evaluates at the report's threshold: an edited one moves the metrics."""
    validate(cli, "--threshold", THRESHOLD)
    path = registry / "analysis/validation_report.json"
    report = read_json(path)
    report["threshold"] = 0.2
    write_json(path, report)
    result = cli("promote")
    assert result.code == 1
    assert "does not reproduce" in result.err and "confusion" in result.err
    assert not (registry / BUNDLE).exists()


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_a_threshold_that_is_no_probability_is_bad_input(registry: Path, cli: Any,
                                                         bad: float) -> None:
    validate(cli, "--threshold", THRESHOLD)
    path = registry / "analysis/validation_report.json"
    report = read_json(path)
    report["threshold"] = bad
    write_json(path, report)
    result = cli("promote")
    assert result.code == 2 and "is not a probability" in result.err, result.err
    assert not (registry / BUNDLE).exists()


def test_a_report_from_before_the_threshold_source_still_promotes(registry: Path,
                                                                  cli: Any) -> None:
    validate(cli)
    path = registry / "analysis/validation_report.json"
    report = read_json(path)
    del report["threshold_source"]
    write_json(path, report)
    result = cli("promote")
    assert result.code == 0, result.err


def test_a_baseline_is_judged_at_its_own_released_threshold(registry: Path, cli: Any) -> None:
    """Two thresholds that differ: the paired F1 delta at the point is sklearn's
    f1(candidate at its threshold) - f1(baseline at its threshold)."""
    base_thr, cand_thr = 0.7, 0.3
    validate(cli, "--threshold", base_thr)
    assert cli("promote").code == 0
    assert read_json(registry / BUNDLE / "release.json")["threshold"] == base_thr
    # a different candidate (other weights), with its own calibration, judged against v1.0.0
    weights = 2.0 * W_TRUE
    weights[:4] = 0.0
    linear_model(registry / "models/model.onnx", weights)
    text = (registry / "params.yaml").read_text().replace("name: v1.0.0", "name: v1.1.0")
    text = text.replace("release:\n", "  baseline:\n    release: v1.0.0\n    max_drop:\n"
                        "      f1: 1.0\nrelease:\n", 1)
    (registry / "params.yaml").write_text(text)
    calibrate(cli)
    validate(cli, "--threshold", cand_thr)
    report = read_json(registry / "analysis/validation_report.json")
    y, prob_c = oracle_prob(registry, "models/model.onnx", "analysis/calibration.json")
    _, prob_b = oracle_prob(registry, str(BUNDLE / "models/model.onnx"),
                            str(BUNDLE / "calibration.json"))
    honest = (f1_score(y, (prob_c >= cand_thr).astype(int))
              - f1_score(y, (prob_b >= base_thr).astype(int)))
    at_half = (f1_score(y, (prob_c >= cand_thr).astype(int))
               - f1_score(y, (prob_b >= read_json(registry / BUNDLE / "calibration.json")
                                  ["threshold"]["value"]).astype(int)))
    assert abs(honest - at_half) > 0.005  # the two thresholds really give different deltas
    assert report["baseline"]["deltas"]["f1"]["value"] == pytest.approx(honest, abs=1e-12)
    result = cli("promote")
    assert result.code == 0, result.err
