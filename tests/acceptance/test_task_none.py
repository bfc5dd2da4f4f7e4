"""Task kind none (issue 16, point 4): seed 001's model, without a classifier score.

``audio_codes`` int64 [1, 16, 128] in, a feature tensor [1, 128, 512] out, its table as
external data: the release is gated on the contract, the resource budgets and the output's
health (finite, the declared shape, its spread), with no AUC or F1. The oracle for the
health numbers is numpy on the embedding table the factory wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relgate import schemas
from tests.adversarial.conftest import assert_clean_failure
from tests.support.onnx_factory import audio_codes, codec_features_model, codec_table

N = 24

PARAMS = """\
schema_version: 1
seed: 0
task: {{kind: none, output: features}}
evaluate: {{threads: 1}}
contract:
  inputs: [{{name: audio_codes, dtype: int64, shape: [1, 16, 128]}}]
  outputs: [{{name: features, dtype: float32, shape: [1, 128, {dims}]}}]
resources:
  max_memory_mb: {memory}
  max_load_seconds: {load}
  max_latency_ms: {latency}
  latency: {{batch_size: 1, percentile: 95, runs: 5, warmup: 1}}
  max_model_bytes: {size}
gates:
  mode: all
  rules:
  - {{metric: mean_std, op: '>', value: 0.01}}
release:
  name: v0.1.0
  promoted: {{path: models/codec.onnx, description: codec features (seed 001's form)}}
  data: data/test.npz
"""

GENEROUS = {"memory": 1e6, "load": 1e6, "latency": 1e6, "size": 10**12}


def write_params(root: Path, *, dims: int = 512, **budgets: float) -> None:
    (root / "params.yaml").write_text(PARAMS.format(dims=dims, **{**GENEROUS, **budgets}))


def codec_registry(root: Path, *, scale: float = 1.0) -> Path:
    codec_features_model(root / "models", scale=scale)
    (root / "data").mkdir(parents=True, exist_ok=True)
    np.savez(root / "data" / "test.npz", audio_codes=audio_codes(N, seed=1))
    write_params(root)
    return root


_CLI: list[Any] = []


@pytest.fixture(autouse=True)
def _in_process(cli: Any) -> Iterator[None]:
    """The CLI runs in-process (fast); its peak RSS is then pytest's, which the generous
    budgets hold and the impossible ones do not."""
    _CLI.append(cli)
    yield
    _CLI.pop()


def relgate(root: Path, *args: object) -> Any:
    here = Path.cwd()
    os.chdir(root)
    try:
        return _CLI[-1](*args)
    finally:
        os.chdir(here)


def validate(root: Path, out: str = "analysis/validation_report.json"
             ) -> tuple[Any, dict[str, Any] | None]:
    done = relgate(root, "validate", "--model", "models/codec.onnx", "--data", "data/test.npz",
                   "--out", out)
    path = root / out
    return done, json.loads(path.read_text()) if path.is_file() else None


def oracle_health(scale: float = 1.0) -> float:
    """mean_std of the features: numpy from the table and the codes, no onnxruntime."""
    feats = codec_table(scale=scale)[audio_codes(N, seed=1)].mean(axis=1, dtype=np.float64)
    return float(feats.reshape(-1, feats.shape[-1]).std(axis=0).mean())


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return codec_registry(tmp_path_factory.mktemp("codec"))


def test_a_features_model_is_validated_on_contract_budgets_and_health(codec: Path) -> None:
    done, report = validate(codec)
    assert done.code == 0, done.err
    assert report is not None
    schemas.validate(report, "validation-report")
    assert report["task"]["kind"] == "none" and report["passed"]
    assert set(report["metrics"]) == {"mean_std", "high_corr_frac"}  # no AUC, no F1
    assert report["stats"]["auc"] is None and report["data"]["n_pos"] is None
    assert report["metrics"]["mean_std"]["value"] == pytest.approx(oracle_health(), rel=1e-5)
    checks = report["checks"]
    assert checks["finite"] == {"outputs": N * 128 * 512, "nan": 0, "inf": 0, "passed": True}
    assert checks["shape"] == {"output": "features", "declared": [1, 128, 512],
                               "observed": [N, 128, 512], "passed": True}
    res = report["resources"]
    assert res["measured"]["model_bytes"] == sum(
        p.stat().st_size for p in (codec / "models").glob("codec.onnx*"))
    assert res["measured"]["peak_rss_mb"] > 2  # the model's table, at least, was resident
    assert res["machine"]["threads"] == 1 and res["machine"]["cores"] >= 1
    budgets = [g for g in report["gates"]["results"] if g["metric"].startswith("resources.")]
    assert [g["metric"] for g in budgets] == [
        "resources.max_memory_mb", "resources.max_model_bytes", "resources.max_load_seconds",
        "resources.max_latency_ms"]
    assert all(g["passed"] and g["observed"] is not None for g in budgets)


def test_impossible_budgets_fail_each_naming_itself(codec: Path, tmp_path: Path) -> None:
    root = codec_registry(tmp_path / "reg")
    write_params(root, memory=1e-6, load=1e-6, latency=1e-6, size=1)
    done, report = validate(root)
    assert done.code == 1, done.err
    assert report is not None and not report["passed"]
    for name in ("max_memory_mb", "max_model_bytes", "max_load_seconds", "max_latency_ms"):
        assert any(f"resources.{name}:" in r and "> the budget" in r for r in report["reasons"]), \
            (name, report["reasons"])
    assert report["metrics"]["mean_std"]["value"] > 0.01  # the health gate itself passed


def test_a_collapsed_model_fails_its_spread_gate(tmp_path: Path) -> None:
    root = codec_registry(tmp_path, scale=0.0)
    done, report = validate(root)
    assert done.code == 1, done.err
    assert report is not None and report["metrics"]["mean_std"]["value"] == 0.0
    assert len(report["reasons"]) == 1 and report["reasons"][0].startswith("mean_std 0")


def test_non_finite_features_fail_the_report(tmp_path: Path) -> None:
    root = codec_registry(tmp_path, scale=float("inf"))
    done, report = validate(root)
    assert done.code == 1, done.err
    assert report is not None and not report["checks"]["finite"]["passed"]
    assert "non-finite" in report["reasons"][0]
    assert report["metrics"]["mean_std"]["value"] is None


def test_a_changed_contract_is_refused_in_one_line(tmp_path: Path) -> None:
    root = codec_registry(tmp_path)
    write_params(root, dims=256)
    done, report = validate(root)
    line = assert_clean_failure(done)
    assert "does not keep the declared contract" in line and "[1, 128, 256]" in line
    assert report is None


def test_what_kind_none_cannot_have_is_bad_input(tmp_path: Path) -> None:
    root = codec_registry(tmp_path)
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(text.replace("metric: mean_std, op: '>', value: 0.01",
                                                   "metric: auc, op: '>=', value: 0.8"))
    line = assert_clean_failure(validate(root)[0])
    assert "task kind none has no 'auc'" in line
    write_params(root)
    (root / "cal.json").write_text("{}")
    line = assert_clean_failure(relgate(root, "validate", "--model", "models/codec.onnx",
                                        "--data", "data/test.npz", "--calibration", "cal.json",
                                        "--out", "r.json"))
    assert "calibration" in line and not (root / "r.json").exists()


@pytest.mark.parametrize("fmt", ["text", "md", "json"])
def test_reports_render_without_auc_or_f1(codec: Path, fmt: str) -> None:
    validate(codec, out="analysis/rendered.json")
    done = relgate(codec, "report", "analysis/rendered.json", "--format", fmt)
    assert done.code == 0, done.err
    assert "resources.max_memory_mb" in done.out
    gated = relgate(codec, "gate", "analysis/rendered.json")
    assert gated.code == 0, gated.err


def test_promote_records_the_reported_and_a_fresh_measurement(tmp_path: Path) -> None:
    root = codec_registry(tmp_path)
    assert validate(root)[0].code == 0
    done = relgate(root, "promote", "--json")
    assert done.code == 0, done.err
    outcome = json.loads(done.out)
    reported = json.loads((root / "analysis" / "validation_report.json").read_text())["resources"]
    assert outcome["resources"]["reported"] == reported
    fresh = outcome["resources"]["fresh"]["measured"]
    assert fresh["model_bytes"] == reported["measured"]["model_bytes"]
    assert fresh["peak_rss_mb"] == pytest.approx(reported["measured"]["peak_rss_mb"], rel=0.25)
    bundle = root / "models" / "core" / "v0.1.0"
    record = json.loads((bundle / "release.json").read_text())
    assert record["task"]["kind"] == "none"
    assert record["resources"] == {"reported": reported}  # the bundle: the evidence's numbers
    mirror = json.loads((root / "analysis" / "release_v0.1.0.json").read_text())
    assert mirror["resources"]["fresh"] == outcome["resources"]["fresh"]
    card = (bundle / "README.md").read_text()
    assert "## Resources" in card and "no classifier score" in card and "auc" not in card
    assert relgate(root, "verify", bundle, "--root-digest",
                   mirror["bundle"]["root_digest"]).code == 0
    again = relgate(root, "promote")  # timings moved; the bundle is rebuilt byte for byte
    assert again.code == 0, again.err
    assert "already published" in again.out


def _edit_report(root: Path, edit: Any) -> None:
    path = root / "analysis" / "validation_report.json"
    report = json.loads(path.read_text())
    edit(report)
    path.write_text(json.dumps(report))


def test_a_report_that_understates_its_memory_is_not_promoted(tmp_path: Path) -> None:
    """Attack: the report claims a tenth of the peak RSS it had (still schema-valid, its
    verdict unchanged): promote re-measures and refuses, naming peak_rss_mb."""
    root = codec_registry(tmp_path)
    assert validate(root)[0].code == 0

    def understate(report: dict[str, Any]) -> None:
        report["resources"]["measured"]["peak_rss_mb"] /= 10
        for g in report["gates"]["results"]:
            if g["metric"] == "resources.max_memory_mb":
                g["observed"] = report["resources"]["measured"]["peak_rss_mb"]
    _edit_report(root, understate)
    done = relgate(root, "promote")
    assert_clean_failure(done, codes=(1,))
    assert "peak_rss_mb" in done.err and "relative tolerance 0.25" in done.err
    assert not (root / "models" / "core" / "v0.1.0").exists()


def test_a_report_without_its_budgets_is_not_promoted(tmp_path: Path) -> None:
    """Attack: the resources section and the budget results are dropped from the report
    (it still passes its rules): the budgets in force fail closed at promote."""
    root = codec_registry(tmp_path)
    assert validate(root)[0].code == 0

    def drop(report: dict[str, Any]) -> None:
        del report["resources"]
        report["gates"]["results"] = [g for g in report["gates"]["results"]
                                      if not g["metric"].startswith("resources.")]
    _edit_report(root, drop)
    done = relgate(root, "promote")
    assert_clean_failure(done, codes=(1,))
    assert "no resources section" in done.err
    assert not (root / "models" / "core" / "v0.1.0").exists()


def test_a_budget_the_params_tightened_after_validation_fails_promote(tmp_path: Path) -> None:
    root = codec_registry(tmp_path)
    assert validate(root)[0].code == 0
    write_params(root, size=1000)  # the model's 2 MiB no longer fit
    done = relgate(root, "promote")
    assert_clean_failure(done, codes=(1,))
    assert "resources.max_model_bytes" in done.err
    assert not (root / "models" / "core" / "v0.1.0").exists()


def test_inspect_reads_the_health_output_of_a_kind_none_model(codec: Path) -> None:
    """Without params no output looks like a score (exit 2); with task kind none declared,
    inspect shows the output it judges and checks the contract."""
    assert_clean_failure(relgate(codec, "inspect", "models/codec.onnx"))
    done = relgate(codec, "inspect", "models/codec.onnx", "--params", "params.yaml", "--json")
    assert done.code == 0, done.err
    info = json.loads(done.out)
    assert info["task"]["kind"] == "none" and info["task"]["output"] == "features"
    assert info["contract"]["positive_index"] is None
    assert [f["path"] for f in info["files"]] == ["codec.onnx", "codec.onnx.data"]


def test_latency_at_a_batch_the_model_cannot_take_fails_closed(tmp_path: Path) -> None:
    """The model takes a fixed batch of 1; a latency budget declared at batch 4 cannot be
    measured, so it fails with that reason however generous the bound."""
    root = codec_registry(tmp_path)
    text = (root / "params.yaml").read_text().replace("batch_size: 1, percentile", "batch_size: 4,"
                                                      " percentile")
    (root / "params.yaml").write_text(text)
    done, report = validate(root)
    assert done.code == 1, done.err
    assert report is not None and report["resources"]["measured"]["latency_ms"] is None
    assert report["reasons"] == ["resources.max_latency_ms: not measured (the model takes a fixed "
                                 "batch of 1, the latency budget is declared at batch_size 4); "
                                 "fails closed"]


@pytest.mark.parametrize("argv", [
    ("calibrate", "--model", "models/codec.onnx", "--data", "data/test.npz", "--out", "c.json"),
    ("evaluate", "--model", "models/codec.onnx", "--data", "data/test.npz", "--out", "s.npz",
     "--params", "params.yaml"),
    ("compare", "a=models/codec.onnx", "--data", "data/test.npz")], ids=lambda a: a[0])
def test_commands_that_read_a_score_refuse_kind_none_in_one_line(codec: Path,
                                                                 argv: tuple[str, ...]) -> None:
    line = assert_clean_failure(relgate(codec, *argv))
    assert "task kind none has no classifier score" in line
    assert not (codec / "c.json").exists() and not (codec / "s.npz").exists()
