"""The pull-request gate, end to end on a real git repository, with release-gate.yml's own steps.

A registry (tests/support/registry.py) lives on ``main`` with gates ``auc >= 0.7`` and
``ece <= 0.2``, validated and promoted (release v1.0.0), and pushed to a bare ``origin``.
Pull-request branches then change the model and re-validate; the workflow's steps
("Fetch the base branch's params", "Write the Markdown summary", "Gate with the base
branch's thresholds") run verbatim under ``bash -eo pipefail`` as Actions runs them:

(a) a PR that loosens its own gates (auc >= 0.1) AND degrades the model passes its own
    gates, yet the gate step fails with main's thresholds and the summary names the gate;
(b) an honest improvement passes and shows positive, paired deltas against main's report.

The summaries are checked in as goldens (tests/golden/pr_summary*.md; README shows them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.golden.golden import assert_golden
from tests.support.registry import (
    DIM,
    W_TRUE,
    linear_model,
    make_registry,
    prepare,
    relgate,
    write_params,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "release-gate.yml"
#: main's model: the first half of the true weights (AUC about 0.75).
BASE_WEIGHTS = W_TRUE * (np.arange(DIM) < 8)
#: a degraded model: one feature left (AUC about 0.64, under main's 0.7).
DEGRADED_WEIGHTS = W_TRUE * (np.arange(DIM) < 1)
#: an honest improvement: the true weights (AUC about 0.88).
BETTER_WEIGHTS = W_TRUE


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=60).stdout


def stable_npz(path: Path) -> None:
    """Rewrite an .npz with fixed zip timestamps so its sha256 (shown in the summary) is stable."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(name + ".npy", date_time=(2024, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arrays[name], allow_pickle=False)


def step(name_fragment: str) -> str:
    """The ``run:`` script of the release-gate step whose name contains *name_fragment*."""
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    found = [s["run"] for job in workflow["jobs"].values() for s in job["steps"]
             if name_fragment in str(s.get("name", ""))]
    assert len(found) == 1, f"release-gate.yml: expected one step named like {name_fragment!r}"
    return str(found[0])


def run_step(script: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """As Actions runs a ``shell: bash`` step: bash -eo pipefail, relgate's venv first on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd, env={**os.environ, "PATH": path, **env}, capture_output=True, text=True,
        timeout=300,
    )


def validate(root: Path, *extra: str) -> None:
    """Calibrate on val, validate on test: the pipeline's last two stages."""
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                   "--out", "analysis/calibration.json") == 0
    assert relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--calibration", "analysis/calibration.json",
                   "--out", "analysis/validation_report.json", *extra) in (0, 1)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main: registry validated and promoted as v1.0.0, committed, pushed to a bare origin."""
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    make_registry(work, weights=BASE_WEIGHTS)
    for split in ("val", "test"):
        stable_npz(work / "data" / f"{split}.npz")
    # the splits are DVC-tracked on main: the judge accepts only the files main's dvc.lock pins
    dvc = [str(Path(sys.executable).parent / "dvc")]
    for args in (["init", "-q"], ["stage", "add", "-q", "-n", "data", "-o", "data/val.npz",
                                  "-o", "data/test.npz", "python -c pass"],
                 ["commit", "-q", "-f", "data"]):
        subprocess.run([*dvc, *args], cwd=work, check=True, capture_output=True, timeout=120)
    prepare(work)
    assert relgate(work, "promote") == 0
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "release v1.0.0", cwd=work)
    origin = tmp_path / "origin.git"
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=tmp_path)
    git("remote", "add", "origin", str(origin), cwd=work)
    git("push", "-q", "-u", "origin", "main", cwd=work)
    return work


CANDIDATE = ("models", "data/val.npz", "data/test.npz", "analysis/calibration.json",
             "analysis/validation_report.json")


def run_gate_job(work: Path, tmp_path: Path) -> dict[str, Any]:
    """release-gate.yml's judge job, step by step, with a runner's environment.

    The `reproduce` job's artifact is simulated by copying the same paths from the PR's
    working tree; the judge's workspace is a checkout of the base branch (main), never the PR.
    """
    temp = tmp_path / "runner-temp"
    candidate = temp / "candidate"
    for rel in CANDIDATE:  # what "Upload the candidate" sends to the judge
        src, dst = work / rel, candidate / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    base = tmp_path / "base-checkout"
    git("worktree", "add", "-q", "--detach", str(base), "main", cwd=work)
    summary = tmp_path / "step-summary.md"
    # "Install the judge" pip-installs the base branch (network, minutes); here the base
    # branch's relgate is this checkout's, so the judge is this venv's relgate.
    env = {"RUNNER_TEMP": str(temp), "GITHUB_WORKSPACE": str(base),
           "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_ACTIONS": "true",
           "JUDGE": str(Path(sys.executable).parent / "relgate")}
    judged = run_step(step("Re-validate the candidate"), cwd=base, env=env)
    assert judged.returncode == 0, judged.stdout + judged.stderr
    written = run_step(step("Write the Markdown summary"), cwd=base, env=env)
    gate = run_step(step("Gate with"), cwd=base, env=env)
    text = summary.read_text(encoding="utf-8")
    return {"temp": temp, "base": base, "summary": text.replace(str(temp), "$RUNNER_TEMP"),
            "summary_step": written, "gate_step": gate}


def test_pr_that_loosens_gates_and_degrades_the_model_fails_with_base_gates(
    repo: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    git("checkout", "-q", "-b", "pr/loosen-and-degrade", cwd=repo)
    write_params(repo, auc_bound=0.1)
    linear_model(repo / "models" / "model.onnx", DEGRADED_WEIGHTS)
    validate(repo)
    git("commit", "-q", "-am", "loosen the gates and swap the model", cwd=repo)

    pr_report = json.loads((repo / "analysis" / "validation_report.json").read_text())
    assert pr_report["passed"] is True, "with its own (loosened) gates the PR passes"
    auc = pr_report["metrics"]["auc"]["value"]
    assert 0.1 <= auc < 0.7
    assert relgate(repo, "gate", "analysis/validation_report.json", "--params", "params.yaml") == 0

    job = run_gate_job(repo, tmp_path)
    base_params = (job["base"] / "params.yaml").read_text()
    assert base_params == git("show", "main:params.yaml", cwd=repo)
    assert "value: 0.7" in base_params

    gate = job["gate_step"]
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert f"auc {auc:.6g} < 0.7, needs >= 0.7" in gate.stdout

    written = job["summary_step"]
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""  # the Markdown went to the summary file only
    assert written.stderr.splitlines() == [
        f"::error title=relgate gate::{job['temp']}/judged-report.json: "
        f"auc {auc:.6g} < 0.7, needs >= 0.7 (gates from params.yaml)"
    ]
    md = job["summary"]
    assert md.startswith("### ❌ relgate: `$RUNNER_TEMP/judged-report.json` fails its gates\n")
    assert f"| ❌ | `auc >= 0.7` | {auc:.4f} |" in md
    assert "gates from `params.yaml`, not the ones recorded in the report" in md
    assert "The report recorded passed with its own gates" not in md  # the judge re-validated
    judged = json.loads((job["temp"] / "judged-report.json").read_text())
    assert judged["baseline"]["name"] == "v1.0.0"  # paired against the current release
    d = judged["baseline"]["deltas"]["auc"]
    assert d["ci_high"] < 0, "the degradation is real"
    assert f"| {d['value']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | **worse** |" in md
    assert_golden("pr_summary.md", md, request.config)


def test_pr_with_an_honest_improvement_passes_with_positive_deltas(
    repo: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    git("checkout", "-q", "-b", "pr/improve", cwd=repo)
    write_params(repo, release="v1.1.0")
    linear_model(repo / "models" / "model.onnx", BETTER_WEIGHTS)
    validate(repo, "--baseline", "models/core/v1.0.0")
    git("commit", "-q", "-am", "a better model", cwd=repo)

    job = run_gate_job(repo, tmp_path)
    gate = job["gate_step"]
    assert gate.returncode == 0, gate.stdout + gate.stderr
    written = job["summary_step"]
    assert written.returncode == 0 and written.stderr == ""  # passed: no annotations

    md = job["summary"]
    assert md.startswith("### ✅ relgate: `$RUNNER_TEMP/judged-report.json` passes its gates\n")
    report = json.loads((job["temp"] / "judged-report.json").read_text())
    deltas = report["baseline"]["deltas"]
    assert report["baseline"]["name"] == "v1.0.0"
    for name in ("auc", "pr_auc", "f1"):
        d = deltas[name]
        assert d["ci_low"] > 0, f"{name}: the improvement is real"
        row = (f"| {d['value']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | better |")
        assert row in md, name
    assert "#### Metrics vs analysis/validation_report.json: partly paired" in md
    assert_golden("pr_summary_pass.md", md, request.config)
