"""The model card: the task, the classes and the threshold a release record carries, and the
cards of records published before relgate recorded the task (no Task section, same text)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from relgate import schemas
from relgate.card import class_rows, lowest_recall, model_card, threshold_text
from relgate.release import task_record

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "release" / "positive"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return data


def test_an_old_record_has_no_task_section_and_still_validates() -> None:
    old = _load("in-bundle.json")
    assert "task" not in old
    schemas.validate(old, "release", source="old record")
    card = model_card(old)
    assert "## Task" not in card
    assert "## Per class" not in card
    assert all(f"| {k} |" in card for k in old["metrics"])  # every metric in the flat table


def test_a_binary_card_shows_kind_output_positive_and_threshold() -> None:
    record = _load("in-bundle.json")
    record["task"] = {"kind": "binary", "output": "logit", "output_type": "logit",
                      "positive": 1}
    record["threshold"] = 0.375
    schemas.validate(record, "release", source="binary record")
    card = model_card(record)
    assert "| kind | binary |" in card
    assert "| output | `logit` (logit) |" in card
    assert "| positive class | column 1 |" in card
    assert "| threshold | 0.375 on the calibrated probability of the positive class |" in card
    assert "classes" not in card.split("## Metrics")[0].split("## Task")[1]


def test_a_multiclass_card_lists_classes_argmax_selective_and_per_class_rows() -> None:
    record = _load("multiclass-task.json")
    card = model_card(record)
    names = record["task"]["classes"]
    assert "| classes | " + ", ".join(f"{i} {n}" for i, n in enumerate(names)) + " |" in card
    assert ("| threshold | argmax (the class with the largest probability); no conclusive answer "
            f"when the largest calibrated probability is below {record['selective_threshold']:.6g} "
            "(selective threshold) |") in card
    flat = card.split("## Metrics")[1].split("## Per class")[0]
    assert "class_0_recall" not in flat  # per-class numbers are in their own table
    per_class = card.split("## Per class")[1].split("## Gates")[0]
    for k, name in enumerate(names):
        rec = record["metrics"][f"class_{k}_recall"]
        assert f"| {k} | {name} |" in per_class
        row = next(line for line in per_class.splitlines() if line.startswith(f"| {k} | "))
        assert f"{rec['value']:.4f} [{rec['ci_low']:.4f}, {rec['ci_high']:.4f}]" in row
    worst = min(range(len(names)), key=lambda k: record["metrics"][f"class_{k}_recall"]["value"])
    assert f"Lowest recall: {names[worst]} (" in per_class


def test_unnamed_classes_are_shown_by_index_and_table_text_is_escaped() -> None:
    record = _load("multiclass-task.json")
    del record["task"]["classes"]
    card = model_card(record)
    assert "| classes | labels 0..9, no names declared |" in card
    record = _load("multiclass-task.json")
    record["task"]["classes"][0] = "a|b <i>"
    card = model_card(record)
    assert "| 0 | a\\|b &lt;i> |" in card


def test_task_record_takes_the_reports_task_block_and_threshold() -> None:
    report: dict[str, Any] = {
        "threshold": 0.0, "model": {"contract": {"positive_index": None}},
        "task": {"kind": "multiclass", "output": "p", "output_type": "probabilities",
                 "reason": "declared", "warnings": ["w"], "n_classes": 3,
                 "classes": ["a", "b", "c"], "class_keys": [0, 1, 2]},
        "calibration": {"selective": {"threshold": 0.7, "target_accuracy": 0.95,
                                      "min_coverage": 0.8}},
    }
    out = task_record(report)
    assert out == {"threshold": 0.0, "selective_threshold": 0.7,
                   "task": {"kind": "multiclass", "output": "p",
                            "output_type": "probabilities", "n_classes": 3,
                            "classes": ["a", "b", "c"]}}
    binary = copy.deepcopy(report)
    binary["task"] = {"kind": "binary", "output": "prob", "output_type": "probability",
                      "reason": "declared", "warnings": []}
    binary["model"]["contract"]["positive_index"] = 1
    binary["threshold"] = 0.42
    binary["calibration"] = None
    assert task_record(binary) == {"threshold": 0.42, "task": {
        "kind": "binary", "output": "prob", "output_type": "probability", "positive": 1}}
    old = {"threshold": 0.5, "model": {"contract": {}}, "calibration": None}
    assert task_record(old) == {"threshold": 0.5}


def test_a_selective_threshold_without_value_is_not_recorded() -> None:
    report = {"threshold": 0.0, "model": {"contract": {}},
              "task": {"kind": "multiclass", "output": "p", "output_type": "logits",
                       "reason": "r", "warnings": [], "n_classes": 2},
              "calibration": {"selective": {"threshold": None, "target_accuracy": 0.9,
                                            "min_coverage": 0.5, "reason": "not met"}}}
    assert "selective_threshold" not in task_record(report)
    assert threshold_text({"task": report["task"]}) == \
        "argmax (the class with the largest probability)"


@pytest.mark.parametrize("bad", [{"kind": "regression", "output": "y", "output_type": "logit"},
                                 {"kind": "binary", "output_type": "logit"},
                                 {"kind": "binary", "output": "y", "output_type": "logit",
                                  "extra": 1}])
def test_the_schema_refuses_a_malformed_task(bad: dict[str, Any]) -> None:
    from relgate.errors import InputError

    record = _load("in-bundle.json")
    record["task"] = bad
    with pytest.raises(InputError):
        schemas.validate(record, "release", source="bad record")


def test_class_rows_and_lowest_recall_follow_the_metrics() -> None:
    metrics = {"class_0_recall": {"value": 0.9}, "class_1_recall": {"value": 0.5},
               "class_2_recall": {"value": 0.5}, "class_1_precision": {"value": 1.0}}
    rows = class_rows(metrics, classes=["x", "y"], support=[3, 4, 5])
    assert [(r.index, r.label, r.support) for r in rows] == [(0, "x", 3), (1, "y", 4),
                                                             (2, "2", 5)]
    assert [r.index for r in lowest_recall(rows)] == [1, 2]
    assert rows[1].value("precision") == 1.0 and rows[0].value("f1") is None


# --------------------------------------------------------------------------- issue 15


def test_sidecars_and_the_recommended_calibration_are_on_the_card() -> None:
    record = _load("sidecars-calibration-tag.json")
    schemas.validate(record, "release", source="record with sidecars")
    card = model_card(record)
    assert f"(git tag `core/{record['name']}`)" in card
    assert f"| `models/deploy.pt` | file | `{'1f' * 8}…` | 4096 | TorchScript deploy model" in card
    assert "| `config.json` | file |" in card and "never loaded or evaluated" in card
    assert "## Calibration (recommended)" in card
    assert "| method | temperature (temperature 0.9515) |" in card
    assert "| input | scale 1, offset 0" in card
    assert "| threshold | 0.312 |" in card
    assert "| inconclusive band | 0.262 <= probability < 0.362 |" in card
    assert f"| sha256 | `{'3d' * 8}…` (calibration.json) |" in card


def test_a_platt_and_a_selective_calibration_render_their_parameters() -> None:
    record = _load("sidecars-calibration-tag.json")
    record["calibration"] = {"sha256": "3d" * 32, "method": "platt", "a": 1.25, "b": -0.5}
    schemas.validate(record, "release", source="platt")
    assert "| method | platt (a 1.25, b -0.5) |" in model_card(record)
    record["calibration"] = {"sha256": "3d" * 32, "method": "temperature", "temperature": 1.5,
                             "selective_threshold": 0.62}
    schemas.validate(record, "release", source="selective")
    card = model_card(record)
    assert "| selective threshold | 0.62 |" in card and "| input | scale" not in card


def test_a_record_without_a_calibration_summary_has_no_calibration_section() -> None:
    assert "## Calibration" not in model_card(_load("in-bundle.json"))


@pytest.mark.parametrize("bad", [
    {"method": "temperature"},  # no sha256
    {"sha256": "3d" * 32, "method": "isotonic"},
    {"sha256": "3d" * 32, "method": "none", "extra": 1},
    {"sha256": "3d" * 32, "method": "none", "selective_threshold": 1.5},
])
def test_the_schema_refuses_a_malformed_calibration_summary(bad: dict[str, Any]) -> None:
    record = _load("sidecars-calibration-tag.json")
    record["calibration"] = bad
    with pytest.raises(schemas.SchemaError):
        schemas.validate(record, "release", source="bad calibration")


def test_the_calibration_summary_comes_from_the_calibration_record() -> None:
    from relgate.release import calibration_summary

    binary = {"probability": {"method": "platt", "a": 2.0, "b": 0.25, "temperature": None},
              "input": {"scale": 0.5, "offset": 1.0}, "threshold": {"value": 0.4},
              "inconclusive": {"low": 0.3, "high": 0.5}}
    assert calibration_summary(binary, sha256="ab" * 32) == {
        "sha256": "ab" * 32, "method": "platt", "a": 2.0, "b": 0.25,
        "input": {"scale": 0.5, "offset": 1.0}, "threshold": 0.4,
        "inconclusive": {"low": 0.3, "high": 0.5}}
    multiclass = {"task": {"kind": "multiclass"},
                  "probability": {"method": "temperature", "a": 0.5, "b": 0.0, "temperature": 2.0},
                  "selective": {"threshold": 0.7}}
    assert calibration_summary(multiclass, sha256="cd" * 32) == {
        "sha256": "cd" * 32, "method": "temperature", "temperature": 2.0,
        "selective_threshold": 0.7}
