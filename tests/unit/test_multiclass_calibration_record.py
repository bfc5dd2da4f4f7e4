"""The multi-class calibration record: its schema (binary records unchanged), the checks
validate applies before trusting it, the one formula that turns outputs into calibrated
probabilities, and the selective choice that fails closed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relgate import schemas
from relgate.errors import DataError, SchemaError
from relgate.tasks import multiclass_calibration as mcal

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "calibration" / "positive"


@pytest.fixture
def record() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (EXAMPLES / "multiclass-temperature-selective.json").read_text())
    return data


def _invalid(rec: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        schemas.validate(rec, "calibration", source="record")


def test_the_multiclass_example_is_valid_and_the_binary_one_still_is(record: dict[str, Any]
                                                                     ) -> None:
    schemas.validate(record, "calibration", source="record")
    binary = json.loads((EXAMPLES / "temperature.json").read_text())
    schemas.validate(binary, "calibration", source="binary")
    assert record["task"]["kind"] == "multiclass" and "task" not in binary
    _invalid({**binary, "selective": None})  # a binary record carries no selective block
    no_input = {k: v for k, v in binary.items() if k != "input"}
    _invalid(no_input)  # binary records still need their input transform


@pytest.mark.parametrize("edit", ["binary_part", "platt", "no_selective", "no_nll",
                                  "zero_temperature", "threshold_above_one", "three_columns"])
def test_malformed_multiclass_records_are_refused(record: dict[str, Any], edit: str) -> None:
    bad = copy.deepcopy(record)
    if edit == "binary_part":
        bad["input"] = {"scale": 1.0, "offset": 0.0}
    elif edit == "platt":
        bad["probability"]["method"] = "platt"
    elif edit == "no_selective":
        del bad["selective"]
    elif edit == "no_nll":
        del bad["nll"]
    elif edit == "zero_temperature":
        bad["probability"]["temperature"] = 0.0
    elif edit == "threshold_above_one":
        bad["selective"]["threshold"] = 1.5
    else:
        bad["task"]["n_classes"] = 1
    _invalid(bad)


def test_load_and_check_refuse_another_task_width_or_output(record: dict[str, Any],
                                                            tmp_path: Path) -> None:
    from relgate.calibration import load_calibration

    path = tmp_path / "cal.json"
    path.write_text(json.dumps(record))
    cal = load_calibration(path)
    mcal.check_multiclass_calibration(cal, n_classes=10, output_type="probabilities",
                                      source="cal.json")
    with pytest.raises(DataError, match="10-class probabilities"):
        mcal.check_multiclass_calibration(cal, n_classes=9, output_type="probabilities",
                                          source="cal.json")
    with pytest.raises(DataError, match="10-class probabilities"):
        mcal.check_multiclass_calibration(cal, n_classes=10, output_type="logits",
                                          source="cal.json")
    binary = json.loads((EXAMPLES / "temperature.json").read_text())
    with pytest.raises(DataError, match="binary calibration"):
        mcal.check_multiclass_calibration(binary, n_classes=10, output_type="logits",
                                          source="b.json")
    forged = copy.deepcopy(cal)
    forged["probability"]["temperature"] = float("nan")
    with pytest.raises(SchemaError, match="finite number > 0"):
        mcal.check_multiclass_calibration(forged, n_classes=10, output_type="probabilities",
                                          source="cal.json")
    # a temperature edited without its slope: load_calibration's consistency check
    forged = copy.deepcopy(record)
    forged["probability"]["temperature"] *= 2
    path.write_text(json.dumps(forged))
    with pytest.raises(SchemaError, match="a = 1/temperature"):
        load_calibration(path)


def test_calibrated_probabilities_are_softmax_of_z_over_t() -> None:
    from scipy.special import softmax

    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 7)) * 3
    cal = {"probability": {"method": "temperature", "temperature": 0.7}}
    got = mcal.calibrated_probabilities(z, "logits", cal)
    np.testing.assert_allclose(got, softmax(z / 0.7, axis=1), rtol=0, atol=1e-12)
    p = softmax(z, axis=1)
    np.testing.assert_allclose(mcal.calibrated_probabilities(p, "probabilities", cal),
                               softmax(np.log(p) / 0.7, axis=1), rtol=0, atol=1e-12)
    # method none and no calibration: the model's own probabilities
    none = {"probability": {"method": "none", "temperature": None}}
    np.testing.assert_allclose(mcal.calibrated_probabilities(z, "logits", none),
                               softmax(z, axis=1), rtol=0, atol=1e-12)
    assert np.array_equal(mcal.calibrated_probabilities(p, "probabilities", None), p)
    # an exact zero probability is floored before its log, and counted
    p0 = np.array([[1.0, 0.0], [0.25, 0.75]])
    logs, zeros = mcal.log_scores(p0, "probabilities")
    assert zeros == 1 and np.all(np.isfinite(logs))
    assert mcal.calibrated_probabilities(p0, "probabilities", cal)[0, 1] == 0.0


def test_the_selective_choice_fails_closed_without_a_made_up_threshold() -> None:
    from relgate.params import SelectiveSpec

    y = np.array([0, 1, 0, 1, 0, 1])
    prob = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.55, 0.45],
                     [0.35, 0.65]])
    # conf sorted: 0.9 ok, 0.8 ok, 0.7 wrong, 0.65 ok, 0.6 wrong, 0.55 ok
    ok = mcal._choose(y, prob, SelectiveSpec(target_accuracy=0.75, min_coverage=0.5))
    assert ok is not None and ok["threshold"] == 0.65
    assert ok["coverage"] == pytest.approx(4 / 6) and ok["selective_accuracy"] == 0.75
    low = mcal._choose(y, prob, SelectiveSpec(target_accuracy=0.75, min_coverage=0.7))
    assert low is not None and low["threshold"] is None and "below min_coverage" in low["reason"]
    wrong = np.array([[0.1, 0.9]] * 2)
    never = mcal._choose(np.array([0, 0]), wrong, SelectiveSpec(target_accuracy=0.5))
    assert never is not None and never["threshold"] is None
    assert "at any coverage" in never["reason"]
    assert mcal._choose(y, prob, None) is None
    assert mcal.selective_threshold(None) == (False, None)
    assert mcal.selective_threshold({"selective": {"threshold": None}}) == (True, None)
