"""A pull request that tries to pass the gate without a better model.

The PR-gate flow itself (loosened params + a degraded model, judged with the base branch's
params and code) is tests/acceptance/test_pr_gate.py. Here: a report that claims to have
passed, and a previous release rewritten to make "no worse than the previous release"
trivially true.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from relgate.jsonio import read_json, write_json
from relgate.manifest import write_manifest
from tests.adversarial.conftest import assert_clean_failure
from tests.support.registry import W_TRUE, linear_model

REPORT = "analysis/validation_report.json"


def test_a_report_that_claims_it_passed_is_judged_on_its_numbers(registry: Path, cli) -> None:
    """passed: true, every recorded gate result rewritten to pass, reasons emptied: the
    judge recomputes the verdict from the metrics with the params it is given."""
    report = read_json(registry / REPORT)
    report["passed"], report["reasons"] = True, []
    for result in report["gates"]["results"]:
        result["passed"] = True
    report["gates"]["passed"], report["gates"]["reasons"] = True, []
    write_json(registry / "claims.json", report)
    strict = (registry / "params.yaml").read_text().replace("value: 0.7", "value: 0.99")
    (registry / "base-params.yaml").write_text(strict)
    result = cli("gate", registry / "claims.json", "--params", registry / "base-params.yaml")
    assert_clean_failure(result, (1,))
    assert "auc" in result.out and "needs >= 0.99" in result.out
    md = cli("report", registry / "claims.json", "--format", "md", "--fail-on-gate",
             "--params", registry / "base-params.yaml")
    assert md.code == 1 and "0.99" in md.out


def _weaker_previous_release(registry: Path) -> Path:
    """Publish v1.0.0 for real, then rewrite its model with a weak one, refit its calibration
    and fix release.json's sha256 to match (the manifest is left alone)."""
    from relgate.onnxmodel import model_digest
    from tests.support.registry import relgate

    assert relgate(registry, "promote") == 0
    bundle = registry / "models/core/v1.0.0"
    for p in bundle.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    weak = np.zeros_like(W_TRUE)
    weak[0] = 0.01
    tmp = registry / "weak"
    linear_model(tmp / "model.onnx", weak)
    for name in ("model.onnx", "model.onnx.data"):
        shutil.copy(tmp / name, bundle / "models" / name)
    assert relgate(registry, "calibrate", "--model", bundle / "models/model.onnx",
                   "--data", "data/val.npz", "--out", bundle / "calibration.json") == 0
    record = read_json(bundle / "release.json")
    digest = model_digest(bundle / "models/model.onnx")
    record["artifacts"][0]["sha256"] = digest.sha256
    record["artifacts"][0]["files"] = [f.to_dict() for f in digest.files]
    (bundle / "release.json").write_text(json.dumps(record))
    return bundle


def test_a_rewritten_previous_release_is_not_used_as_the_baseline(registry: Path, cli,
                                                                  in_dir) -> None:
    bundle = _weaker_previous_release(registry)
    assert cli("verify", bundle).code == 1  # the rewrite is visible to verify
    with in_dir(registry):
        result = cli("validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                     "--calibration", "analysis/calibration.json", "--baseline", bundle,
                     "--out", "out/report.json")
    assert_clean_failure(result, (1,))  # a bundle that does not verify is a governed "no"
    assert "does not verify" in result.err


def test_validate_checks_a_baseline_against_the_pinned_root_digest(registry: Path, cli,
                                                                  in_dir) -> None:
    bundle = _weaker_previous_release(registry)
    pinned = read_json(registry / "analysis/release_v1.0.0.json")["bundle"]["root_digest"]
    write_manifest(bundle)  # self-consistent rewrite: only the pin outside the bundle catches it
    with in_dir(registry):
        result = cli("validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                     "--calibration", "analysis/calibration.json", "--baseline", bundle,
                     "--baseline-root-digest", pinned, "--out", "out/report.json")
    assert_clean_failure(result, (1,))
    assert "differs from the pinned" in result.err


def test_a_consistent_rewrite_of_the_previous_release_is_caught_by_the_base_pin(
        registry: Path, cli) -> None:
    """What release-gate.yml must do before comparing with the current release: verify the
    bundle against the root digest pinned in the BASE branch's analysis/release_<name>.json
    (a PR controls its own checkout, manifest included, but not the base branch)."""
    bundle = _weaker_previous_release(registry)
    pinned = read_json(registry / "analysis/release_v1.0.0.json")["bundle"]["root_digest"]
    write_manifest(bundle)  # the attacker makes the bundle self-consistent
    assert cli("verify", bundle).code == 0
    result = cli("verify", bundle, "--root-digest", pinned)
    assert_clean_failure(result, (1,))
    assert "differs from the pinned" in result.out
