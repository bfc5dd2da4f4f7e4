"""`relgate gate REPORT.json`: re-apply gates from params; exit 0 pass, 1 fail, 2 bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from relgate import schemas
from relgate.jsonio import write_json
from tests.conftest import run_relgate

SHA = "ab" * 32


def make_report(metrics: dict[str, Any], *, passed: bool = True,
                gates: dict[str, Any] | None = None,
                baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    """A schema-valid validation report around *metrics* (built here, not from examples)."""
    metrics = copy.deepcopy(metrics)

    def value(name: str) -> Any:
        entry = metrics.get(name)
        return entry.get("value") if isinstance(entry, dict) else None

    report: dict[str, Any] = {
        "schema_version": 1,
        "kind": "validation-report",
        "passed": passed,
        "stats": {k: value(k) for k in ("auc", "mean_std", "high_corr_frac", "frac_sig")},
        "reasons": [],
        "model": {
            "path": "models/model.onnx",
            "sha256": SHA,
            "files": [{"path": "model.onnx", "size": 10, "sha256": SHA}],
            "contract": {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 1600]}],
                         "outputs": [{"name": "score", "dtype": "float32", "shape": ["batch"]}]},
        },
        "data": {"path": "data/test.npz", "sha256": SHA, "n": 100, "n_pos": 30, "n_neg": 70},
        "threshold": 0.5,
        "metrics": metrics,
        "gates": gates or {"mode": "all", "passed": passed, "results": [], "reasons": []},
        "environment": {"relgate": "0.1.0"},
    }
    if baseline is not None:
        report["baseline"] = baseline
    schemas.validate(report, "validation-report", source="test report")
    return report


PARAMS = """schema_version: 1
gates:
{gates}
release:
  name: v1
  promoted: {{path: models/model.onnx}}
"""


def write_params(tmp_path: Path, gates: str, name: str = "params.yaml") -> Path:
    p = tmp_path / name
    p.write_text(PARAMS.format(gates=gates), encoding="utf-8")
    return p


GOOD = {
    "auc": {"value": 0.91, "ci_low": 0.88, "ci_high": 0.94},
    "f1": {"value": 0.82, "ci_low": 0.79, "ci_high": 0.85},
    "precision": {"value": 0.0},
    "mean_std": {"value": 0.5579},
}
ALL_GATES = """  mode: all
  rules:
    - {metric: auc, op: ">=", value: 0.85}
    - {metric: f1, op: ">=", value: 0.8}"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    report = tmp_path / "validation_report.json"
    write_json(report, make_report(GOOD))
    return report, write_params(tmp_path, ALL_GATES)


def test_passing_report_exits_0_with_a_table(cli: Any, files: tuple[Path, Path]) -> None:
    report, params = files
    res = cli("gate", report, "--params", params)
    assert res.code == 0, res.err
    assert "PASSED (mode all): 2 of 2 rules passed" in res.out
    assert "auc 0.91 >= 0.85" in res.out and "f1 0.82 >= 0.8" in res.out
    assert res.err == ""


def test_failing_report_exits_1_with_seed_style_reasons(cli: Any, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    write_json(report, make_report({**GOOD, "auc": {"value": 0.160775}}))
    res = cli("gate", report, "--params", write_params(tmp_path, ALL_GATES))
    assert res.code == 1
    assert "FAILED (mode all): 1 of 2 rules passed" in res.out
    assert "auc 0.160775 < 0.85, needs >= 0.85" in res.out
    assert "note: the report recorded passed=true" in res.out  # thresholds from another branch


def test_json_output_is_a_schema_valid_verdict(cli: Any, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    write_json(report, make_report({**GOOD, "f1": {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}}))
    gates = ALL_GATES + "\n    - {metric: f1, op: \">=\", value: 0.75, on: ci_low}"
    res = cli("gate", report, "--params", write_params(tmp_path, gates), "--json")
    assert res.code == 1
    verdict = json.loads(res.out)
    assert verdict["passed"] is False and verdict["mode"] == "all"
    assert [r["passed"] for r in verdict["results"]] == [True, True, False]
    assert verdict["results"][1]["observed"] == 0.8  # exactly at the bound: passes
    assert verdict["results"][2]["observed"] == 0.7 and verdict["results"][2]["on"] == "ci_low"
    assert verdict["reasons"] == ["f1 ci_low 0.7 < 0.75, needs >= 0.75"]
    make_report(GOOD, gates=verdict)  # it slots into a report and validates


def test_default_params_is_the_working_directory_file(
    cli: Any, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    report, params = files
    monkeypatch.chdir(params.parent)
    assert cli("gate", report).code == 0


def test_undefined_auc_fails_with_its_reason(cli: Any, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    auc = {"value": None,
           "reason": "AUC undefined: labels contain one class (0 positives, 9 negatives)"}
    write_json(report, make_report({**GOOD, "auc": auc}, passed=False))
    res = cli("gate", report, "--params", write_params(tmp_path, ALL_GATES))
    assert res.code == 1
    assert "auc has no value (AUC undefined: labels contain one class" in res.out


def test_mode_any_with_every_rule_undefined_fails(cli: Any, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    write_json(report, make_report({"auc": {"value": None, "reason": "one class"}}))
    gates = """  mode: any
  rules:
    - {metric: auc, op: ">=", value: 0.85}
    - {metric: recall, op: ">=", value: 0.5}"""
    res = cli("gate", report, "--params", write_params(tmp_path, gates), "--json")
    assert res.code == 1
    verdict = json.loads(res.out)
    assert not any(r["passed"] for r in verdict["results"])
    assert "recall is missing from the metrics, needs >= 0.5" in verdict["reasons"]
    assert verdict["reasons"][-1] == "mode any: none of the 2 rules passed"


def test_baseline_rule_without_deltas_fails_closed(cli: Any, files: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    report, _ = files
    gates = ALL_GATES + "\n  baseline: {release: v0, max_drop: {auc: 0.01}}"
    res = cli("gate", report, "--params", write_params(tmp_path, gates, "p2.yaml"), "--json")
    assert res.code == 1
    assert json.loads(res.out)["reasons"] == [
        "auc vs baseline: no paired comparison with the previous release, may drop at most 0.01"]


def test_baseline_deltas_from_the_report_are_judged(cli: Any, tmp_path: Path) -> None:
    gates = ALL_GATES + "\n  baseline: {release: v0, max_drop: {auc: 0.01}, on: ci_low}"
    params = write_params(tmp_path, gates)
    for ci_low, code in ((-0.01, 0), (-0.0100001, 1)):
        report = tmp_path / "r.json"
        base = {"name": "v0", "model_sha256": SHA,
                "deltas": {"auc": {"value": 0.0, "ci_low": ci_low, "ci_high": 0.01}}}
        write_json(report, make_report(GOOD, baseline=base))
        res = cli("gate", report, "--params", params)
        assert res.code == code, res.out
    assert "auc vs baseline: delta ci_low -0.0100001 < -0.01, may drop at most 0.01" in res.out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"auc": NaN}', "NaN is not allowed"),
        (b"[]", "(root)"),
    ],
)
def test_unreadable_reports_exit_2_on_one_line(cli: Any, tmp_path: Path, content: bytes,
                                               message: str) -> None:
    report = tmp_path / "r.json"
    report.write_bytes(content)
    res = cli("gate", report, "--params", write_params(tmp_path, ALL_GATES))
    assert res.code == 2
    assert message in res.err
    assert res.err.count("\n") == 1 and "Traceback" not in res.err
    assert res.out == ""


def test_schema_invalid_metric_exits_2_naming_the_key(cli: Any, tmp_path: Path) -> None:
    doc = make_report(GOOD)
    doc["metrics"]["auc"]["value"] = "0.91"
    report = tmp_path / "r.json"
    write_json(report, doc)
    res = cli("gate", report, "--params", write_params(tmp_path, ALL_GATES))
    assert res.code == 2
    assert "metrics.auc.value" in res.err


def test_bad_params_and_missing_files_exit_2(cli: Any, files: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    report, params = files
    assert cli("gate", tmp_path / "nope.json", "--params", params).code == 2
    res = cli("gate", report, "--params", tmp_path / "missing.yaml")
    assert res.code == 2 and "no such file" in res.err
    bad = write_params(tmp_path, "  mode: most\n  rules: []", "bad.yaml")
    res = cli("gate", report, "--params", bad)
    assert res.code == 2 and "gates" in res.err and "Traceback" not in res.err


def test_real_process_exit_codes(files: tuple[Path, Path], tmp_path: Path) -> None:
    report, params = files
    ok = run_relgate("gate", report, "--params", params)
    assert ok.returncode == 0, ok.stderr
    failing = tmp_path / "f.json"
    write_json(failing, make_report({"auc": {"value": 0.5}}))
    bad = run_relgate("gate", failing, "--params", params)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "f1 is missing from the metrics" in bad.stdout
