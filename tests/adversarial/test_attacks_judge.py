"""Attacks on the pull-request judge (issue 13, break 3), with release-gate.yml's own steps.

A registry on ``main`` released v1.0.0, and its params say the next release, v1.1.0, may
drop at most 0.01 AUC from v1.0.0 (``gates.baseline.release: v1.0.0``, the natural
configuration). Commit A is that state; commit B is the same after v1.1.0 was released too.
Its splits are pinned by real DVC (``dvc.lock``) and, as DVC outputs and bundles are, absent
from a checkout. Pull requests then hand the judge files (the upload step's paths, built
in a PR working tree), and the judge job's steps run verbatim under ``bash -eo pipefail``
with the base checkout as ``$GITHUB_WORKSPACE``:

- a forged "previous release" in the upload (a weaker model, manifest rebuilt; or another
  release's genuine bundle renamed) used to become the yardstick a weaker candidate beat;
  now the baseline must verify against the root digest the base branch pins;
- with v1.1.0 released, every honest pull request used to fail ("deltas were computed
  against 'v1.1.0', params name 'v1.0.0'"); now the judge compares with the release the
  base gates name;
- a swapped test split, and a calibration that lies about the split it was fit on, used to
  be judged as given; now both must be the files the base branch's dvc.lock pins.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from relgate.jsonio import read_json
from relgate.manifest import write_manifest
from tests.e2e.conftest import Tools, tool_env
from tests.support.registry import DIM, W_TRUE, linear_model, make_registry, prepare, relgate

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "release-gate.yml"
IDX = np.arange(DIM)
#: v1.0.0: the true direction (AUC 0.877 on the test split); v1.1.0: the same, other bytes
V100, V110 = W_TRUE, 2.0 * W_TRUE
#: a weaker candidate: AUC 0.829, over the absolute bound 0.7, 0.048 under v1.0.0
WEAKER = W_TRUE * ((IDX < 3) | (IDX >= 13))
#: the forged "previous release": AUC 0.774, under the weaker candidate
FORGED = W_TRUE * (IDX >= 4)
BASELINE = "  baseline:\n    release: v1.0.0\n    max_drop:\n      auc: 0.01\n"


def workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def step(fragment: str) -> str:
    found = [s["run"] for job in workflow()["jobs"].values() for s in job["steps"]
             if fragment in str(s.get("name", ""))]
    assert len(found) == 1, fragment
    return str(found[0])


def uploaded_paths() -> list[str]:
    (upload,) = [s for s in workflow()["jobs"]["reproduce"]["steps"]
                 if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    return [p.rstrip("/") for p in upload["with"]["path"].split()]


def run_step(script: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """As Actions runs a ``shell: bash`` step: bash -eo pipefail, relgate's venv first on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          cwd=cwd, env={**os.environ, "PATH": path, **env}, capture_output=True,
                          text=True, timeout=300)


def write_params(root: Path, release: str) -> None:
    text = (root / "params.yaml").read_text()
    text = text.replace("name: v1.0.0", f"name: {release}")
    if "baseline:" not in text:
        text = text.replace("release:\n", BASELINE + "release:\n", 1)
    (root / "params.yaml").write_text(text)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """main at A (v1.0.0 released, v1.1.0 next) and B (v1.1.0 released too)."""
    base = tmp_path_factory.mktemp("judge")
    tools = Tools(env=tool_env(base / "home"))
    root = base / "registry"
    root.mkdir()
    tools.git("init", "-q", cwd=root)
    make_registry(root, weights=V100)
    (root / ".gitignore").write_text("/models/core/\n")  # bundles are DVC outputs, not in git
    tools.dvc("init", "-q", cwd=root)
    tools.dvc("stage", "add", "-q", "-n", "data", "-o", "data/val.npz", "-o", "data/test.npz",
              "python -c pass", cwd=root)
    tools.dvc("commit", "-q", "-f", "data", cwd=root)  # dvc.lock pins the splits' md5
    prepare(root)
    assert relgate(root, "promote") == 0
    write_params(root, "v1.1.0")
    tools.git("add", "-A", cwd=root)
    tools.git("commit", "-q", "-m", "v1.0.0 released; v1.1.0 may drop 0.01 AUC at most", cwd=root)
    commit_a = tools.git("rev-parse", "HEAD", cwd=root).stdout.strip()
    linear_model(root / "models" / "model.onnx", V110)
    prepare(root)
    assert relgate(root, "promote") == 0
    tools.git("add", "-A", cwd=root)
    tools.git("commit", "-q", "-m", "v1.1.0 released", cwd=root)
    commit_b = tools.git("rev-parse", "HEAD", cwd=root).stdout.strip()
    return {"tools": tools, "root": root, "A": commit_a, "B": commit_b}


def pull_request(history: dict[str, Any], tmp_path: Path, weights: np.ndarray) -> Path:
    """A PR's working tree after the pipeline ran: a new model, calibrated on val."""
    pr = tmp_path / "pr"
    shutil.copytree(history["root"], pr, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    linear_model(pr / "models" / "model.onnx", weights)
    assert relgate(pr, "calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                   "--out", "analysis/calibration.json") == 0
    return pr


def judge(history: dict[str, Any], pr: Path, tmp_path: Path, base: str) -> dict[str, Any]:
    """release-gate.yml's judge job on the upload of *pr*, with main at commit *base*."""
    temp = tmp_path / "runner-temp"
    for rel in uploaded_paths():  # "Upload the candidate" / "Download the candidate"
        src, dst = pr / rel, temp / "candidate" / rel
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True)
        elif src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    checkout = tmp_path / "base-checkout"
    tools: Tools = history["tools"]
    tools.git("clone", "-q", "--no-checkout", history["root"], checkout, cwd=tmp_path)
    tools.git("checkout", "-q", history[base], cwd=checkout)
    assert not (checkout / "data" / "test.npz").exists()  # a DVC output: not in a checkout
    env = {"RUNNER_TEMP": str(temp), "GITHUB_WORKSPACE": str(checkout),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), "GITHUB_ACTIONS": "true",
           "JUDGE": str(Path(sys.executable).parent / "relgate")}
    judged = run_step(step("Re-validate the candidate"), cwd=checkout, env=env)
    gate = run_step(step("Gate with"), cwd=checkout, env=env)
    report = temp / "judged-report.json"
    return {"judged": judged, "gate": gate, "log": judged.stdout + judged.stderr,
            "report": read_json(report) if report.exists() else None}


def writable(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def forge_weaker_previous_release(pr: Path) -> None:
    """v1.0.0 in the PR's tree: the FORGED model, recalibrated, release.json and manifest to
    match, so the bundle verifies against its own manifest."""
    from relgate.onnxmodel import model_digest

    bundle = pr / "models" / "core" / "v1.0.0"
    writable(bundle)
    linear_model(pr / "forged" / "model.onnx", FORGED)
    for name in ("model.onnx", "model.onnx.data"):
        shutil.copy(pr / "forged" / name, bundle / "models" / name)
    assert relgate(pr, "calibrate", "--model", bundle / "models" / "model.onnx", "--data",
                   "data/val.npz", "--out", bundle / "calibration.json") == 0
    record = read_json(bundle / "release.json")
    digest = model_digest(bundle / "models" / "model.onnx")
    record["artifacts"][0]["sha256"] = digest.sha256
    record["artifacts"][0]["files"] = [f.to_dict() for f in digest.files]
    (bundle / "release.json").write_text(json.dumps(record))
    write_manifest(bundle)


def another_release_renamed(pr: Path) -> None:
    """v1.0.0 in the PR's tree is v1.1.0's genuine bundle, renamed."""
    core = pr / "models" / "core"
    writable(core)
    shutil.rmtree(core / "v1.0.0")
    shutil.copytree(core / "v1.1.0", core / "v1.0.0")


FORGERIES = {"weaker-model-manifest-rebuilt": forge_weaker_previous_release,
             "another-release-renamed": another_release_renamed}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_previous_release_in_the_upload_is_refused(history: dict[str, Any],
                                                           tmp_path: Path, forgery: str) -> None:
    pr = pull_request(history, tmp_path, WEAKER)
    FORGERIES[forgery](pr)
    job = judge(history, pr, tmp_path, "A")
    assert job["judged"].returncode == 0, job["log"]  # a governed "no": exit 1 inside the step
    assert "differs from the pinned" in job["log"], job["log"]
    assert job["report"] is None
    assert job["gate"].returncode == 1
    assert "the judge could not re-validate the candidate" in job["gate"].stdout


def test_without_the_forgery_the_weaker_candidate_fails_its_baseline_gate(
        history: dict[str, Any], tmp_path: Path) -> None:
    """The control: against the real v1.0.0 the weaker candidate is refused on its numbers."""
    job = judge(history, pull_request(history, tmp_path, WEAKER), tmp_path, "A")
    assert job["judged"].returncode == 0, job["log"]
    assert job["report"]["baseline"]["name"] == "v1.0.0"
    assert job["report"]["baseline"]["deltas"]["auc"]["value"] < -0.01
    assert job["gate"].returncode == 1
    assert "auc vs baseline" in job["gate"].stdout


def test_a_missing_previous_release_is_refused(history: dict[str, Any], tmp_path: Path) -> None:
    pr = pull_request(history, tmp_path, WEAKER)
    writable(pr / "models" / "core")
    shutil.rmtree(pr / "models" / "core" / "v1.0.0")
    job = judge(history, pr, tmp_path, "A")
    assert job["judged"].returncode == 2, job["log"]
    assert "previous release bundle not found" in job["log"]
    assert job["report"] is None and job["gate"].returncode == 1


def test_an_honest_pr_passes_with_the_natural_baseline_configuration(
        history: dict[str, Any], tmp_path: Path) -> None:
    """main released v1.1.0 and its gates name v1.0.0: the judge compares with v1.0.0."""
    pr = pull_request(history, tmp_path, 3.0 * W_TRUE)
    write_params(pr, "v1.2.0")
    job = judge(history, pr, tmp_path, "B")
    assert job["judged"].returncode == 0, job["log"]
    assert job["report"]["baseline"]["name"] == "v1.0.0"
    assert job["gate"].returncode == 0, job["gate"].stdout + job["gate"].stderr


def test_a_swapped_test_split_is_refused(history: dict[str, Any], tmp_path: Path) -> None:
    """A split whose labels follow a weak candidate makes it look strong: not the pinned one."""
    weak = W_TRUE * (IDX < 2)
    pr = pull_request(history, tmp_path, weak)
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, (2000, DIM)).astype(np.float32)
    z = 1.5 * (x.astype(np.float64) @ weak)
    y = (rng.random(2000) < 1.0 / (1.0 + np.exp(-z))).astype(np.int8)
    (pr / "data" / "test.npz").unlink()
    np.savez(pr / "data" / "test.npz", x=x, y=y)
    job = judge(history, pr, tmp_path, "A")
    assert job["judged"].returncode == 0, job["log"]
    assert "data/test.npz (the test split) is not the file" in job["log"], job["log"]
    assert "dvc.lock pins" in job["log"]
    assert job["report"] is None and job["gate"].returncode == 1


def _fit_on_test(pr: Path, **fit_split: str) -> None:
    """The calibration is fit on the test split, then claims another fit split."""
    path = pr / "analysis" / "calibration.json"
    assert relgate(pr, "calibrate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--out", path) == 0
    record = read_json(path)
    record["fit_split"].update(fit_split)
    path.write_text(json.dumps(record))


LIES = {
    "val-path-made-up-sha": ({"path": "data/val.npz", "sha256": "0" * 64},
                             "claims it was fit on data/val.npz with sha256 000000000000"),
    "unpinned-split": ({"path": "models/holdout.npz"},
                       "models/holdout.npz (the split analysis/calibration.json claims it was "
                       "fit on): the trusted registry"),
    "path-outside": ({"path": "../../data/val.npz", "sha256": "1" * 64},
                     "not a path inside the registry"),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_calibration_that_lies_about_its_fit_split_is_refused(history: dict[str, Any],
                                                                tmp_path: Path, lie: str) -> None:
    fields, says = LIES[lie]
    pr = pull_request(history, tmp_path, 3.0 * W_TRUE)
    if lie == "unpinned-split":  # a real other split, with the sha256 the claim gives
        from relgate.hashing import sha256_file
        from tests.support.registry import dataset

        dataset(pr / "models" / "holdout.npz", 500, seed=5)  # uploaded with models/
        fields = {**fields, "sha256": sha256_file(pr / "models" / "holdout.npz")}
    _fit_on_test(pr, **fields)
    job = judge(history, pr, tmp_path, "A")
    assert job["judged"].returncode == 0, job["log"]
    assert says in job["log"], job["log"]
    assert job["report"] is None and job["gate"].returncode == 1
