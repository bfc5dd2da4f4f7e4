"""A declared memory budget under an inherited ``ulimit -v`` (issue 16, points 1 and 2).

* A model that fits its ``resources.max_memory_mb`` passes under the inherited limit, and
  the recorded peak RSS is real (above the weights it keeps resident, below the budget).
* One that does not fit fails (exit 1) with a reason naming the budget; the report says so.
* The budget sizes the batch: a model whose activations grow 1 MiB a sample, asked for a
  batch of 2000, runs out of the inherited limit without a budget (exit 2, naming the limit
  and the budget to declare); with ``max_memory_mb: 500`` the batch is chosen on a probe,
  the evaluation fits both, and its AUC is numpy's on the same scores.

Peak RSS is what relgate measures itself (VmHWM); no timing is asserted.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.adversarial.conftest import assert_clean_failure
from tests.support.ballast import MIB, ballast_model, python_vmsize_mb, wide_model
from tests.support.registry import W_TRUE, make_registry, prepare

MODEL_MB = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry (test split of 2000 rows) with ``big/ext.onnx`` (64 MiB of resident
    weights, external) and ``wide/wide.onnx`` (1 MiB of activations a sample)."""
    reg = make_registry(tmp_path_factory.mktemp("budgets"))
    ballast_model(reg / "big" / "ext.onnx", MODEL_MB, external=True)
    wide_model(reg / "wide" / "wide.onnx")
    return reg


@pytest.fixture(scope="module")
def base_mb() -> int:
    return python_vmsize_mb()


def _limited(mb: int) -> Callable[[], None]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mb * MIB, mb * MIB))
    return lower


def _params(root: Path, name: str, *, batch: int = 256, budget: str = "") -> Path:
    text = (root / "params.yaml").read_text().replace("batch_size: 256", f"batch_size: {batch}")
    path = root / f"{name}.yaml"
    path.write_text(text + budget)
    return path


def _validate(root: Path, model: str, params: Path, out: Path, limit_mb: int
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relgate", "validate", "--model", model,
                           "--data", "data/test.npz", "--params", str(params), "--out", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited(limit_mb))


def test_a_model_inside_its_budget_passes_under_the_inherited_limit(
        root: Path, base_mb: int, tmp_path: Path) -> None:
    params = _params(root, "fits", budget="resources:\n  max_memory_mb: 2000\n")
    done = _validate(root, "big/ext.onnx", params, tmp_path / "r.json",
                     base_mb + 2 * MODEL_MB + 256)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    peak = report["resources"]["measured"]["peak_rss_mb"]
    assert MODEL_MB < peak <= 2000  # the weights were resident in the evaluating process
    gate = next(g for g in report["gates"]["results"] if g["metric"] == "resources.max_memory_mb")
    assert gate["passed"] and gate["observed"] == peak
    assert report["resources"]["batch"]["chosen"] == 256  # a small model: the batch asked for


def test_a_model_over_its_budget_fails_naming_the_budget(root: Path, base_mb: int,
                                                        tmp_path: Path) -> None:
    """Its 64 MiB of weights alone exceed a 64 MiB budget: exit 1, the budget named."""
    params = _params(root, "over", budget=f"resources:\n  max_memory_mb: {MODEL_MB}\n")
    done = _validate(root, "big/ext.onnx", params, tmp_path / "r.json",
                     base_mb + 2 * MODEL_MB + 256)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert not report["passed"]
    assert any(r.startswith("resources.max_memory_mb:") and f"> the budget {MODEL_MB} MiB" in r
               for r in report["reasons"]), report["reasons"]
    assert "max_memory_mb" in done.stdout


def test_the_memory_budget_sizes_the_batch_to_fit(root: Path, base_mb: int,
                                                 tmp_path: Path) -> None:
    limit = base_mb + 1024  # a batch of 2000 needs 2 GiB of activations; 500 rows fit
    unsized = _params(root, "unsized", batch=2048)
    out = tmp_path / "out"
    out.mkdir()
    done = _validate(root, "wide/wide.onnx", unsized, out / "r.json", limit)
    line = assert_clean_failure(done)
    assert "ulimit -v" in line and "resources.max_memory_mb" in line, line
    assert not any(out.iterdir()), "nothing half-written"

    sized = _params(root, "sized", batch=2048, budget="resources:\n  max_memory_mb: 500\n")
    done = _validate(root, "wide/wide.onnx", sized, out / "r.json", limit)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "r.json").read_text())
    batch = report["resources"]["batch"]
    assert batch["requested"] == 2048 and 1 <= batch["chosen"] < 2000
    assert batch["per_sample_bytes"] >= 1024 * 1024  # the activations, measured on the probe
    assert report["resources"]["measured"]["peak_rss_mb"] <= 500
    assert report["checks"]["batch"]["batch_size"] == batch["chosen"]
    with np.load(root / "data" / "test.npz") as npz:
        score = npz["x"].astype(np.float64) @ (3 * W_TRUE)
        y = npz["y"].astype(bool)
    pos, neg = score[y], score[~y]
    auc = (np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])) \
        / (pos.size * neg.size)
    assert report["metrics"]["auc"]["value"] == pytest.approx(auc, abs=1e-9)


def test_a_calibrated_binary_release_with_every_budget_is_promoted(tmp_path: Path, cli: Any,
                                                                  monkeypatch: Any) -> None:
    """The binary path end to end (calibrate, validate, promote in-process): every budget
    measured, gated and recorded; promote re-evaluates at the report's batch and records its
    fresh measurement beside the reported one."""
    reg = make_registry(tmp_path / "reg")
    budgets = ("resources:\n  max_memory_mb: 1000000\n  max_load_seconds: 1000000\n"
               "  max_latency_ms: 1000000\n  latency: {batch_size: 8, runs: 3}\n"
               "  max_model_bytes: 1000000000\n")
    (reg / "params.yaml").write_text((reg / "params.yaml").read_text() + budgets)
    monkeypatch.chdir(reg)
    prepare(reg)
    report = json.loads((reg / "analysis" / "validation_report.json").read_text())
    assert report["passed"], report["reasons"]
    assert report["resources"]["measured"]["latency_ms"] is not None
    assert report["resources"]["batch"] == {
        "requested": 256, "chosen": 256, "per_sample_bytes": report["resources"]["batch"][
            "per_sample_bytes"], "reason": "batch 256 fits the memory budget"}
    done = cli("promote", "--json")
    assert done.code == 0, done.err
    outcome = json.loads(done.out)
    assert outcome["resources"]["reported"] == report["resources"]
    assert outcome["resources"]["fresh"]["machine"] == report["resources"]["machine"]
    record = json.loads((reg / "models" / "core" / "v1.0.0" / "release.json").read_text())
    assert record["resources"] == {"reported": report["resources"]}
    assert [g["metric"] for g in record["gates"]["results"]][-4:] == [
        "resources.max_memory_mb", "resources.max_model_bytes", "resources.max_load_seconds",
        "resources.max_latency_ms"]
