"""Seed 001's model, released like any other (issue 16, point 4 "Done when").

A registry with real git and real DVC whose promoted model has no classifier score: a
feature extractor of seed 001's form (``audio_codes`` int64 [1, 16, 128] in, features
[1, 128, 512] out, its table in ``codec.onnx.data``), gated on its contract, its resource
budgets and its output health (task kind none). ``dvc repro`` validates and promotes it;
the release is tagged and pushed; a consumer fetches it by name from the git remote and
verifies every byte against the pinned root digest (hashlib is the oracle for the bytes).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_task_none import codec_registry
from tests.e2e.conftest import Tools

pytestmark = pytest.mark.e2e

DVC_YAML = """\
stages:
  validate:
    cmd: relgate validate --model models/codec.onnx --data data/test.npz
      --out analysis/validation_report.json
    deps: [models/codec.onnx, models/codec.onnx.data, data/test.npz]
    params: [task, contract, resources, gates]
    outs:
    - analysis/validation_report.json:
        cache: false
  promote:
    cmd: relgate promote
    deps: [models/codec.onnx, models/codec.onnx.data, data/test.npz,
           analysis/validation_report.json]
    params: [release, resources, gates]
    outs:
    - models/core:
        persist: true
    - analysis/release_${release.name}.json:
        cache: false
        persist: true
"""


def tree_digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_model_without_a_score_is_released_fetched_and_verified(
        e2e_tools: Tools, cli: Any, tmp_path: Path) -> None:
    root, origin = tmp_path / "registry", tmp_path / "origin.git"
    root.mkdir()
    e2e_tools.git("init", "-q", "--bare", origin, cwd=tmp_path)
    e2e_tools.git("init", "-q", cwd=root)
    e2e_tools.dvc("init", "-q", cwd=root)
    e2e_tools.dvc("remote", "add", "-d", "store", tmp_path / "dvc-remote", cwd=root)
    e2e_tools.git("remote", "add", "origin", origin, cwd=root)
    codec_registry(root)
    (root / "dvc.yaml").write_text(DVC_YAML)
    e2e_tools.dvc("add", "-q", "models/codec.onnx", "models/codec.onnx.data", "data/test.npz",
                  cwd=root)
    e2e_tools.dvc("repro", "-q", cwd=root)
    e2e_tools.git("add", "-A", cwd=root)
    e2e_tools.git("commit", "-q", "-m", "release v0.1.0", cwd=root)
    e2e_tools.git("tag", "-a", "core@v0.1.0", "-m", "Registering artifact core version v0.1.0",
                  cwd=root)
    e2e_tools.dvc("push", "-q", cwd=root)
    e2e_tools.git("push", "-q", "origin", "HEAD", "--tags", cwd=root)

    report = json.loads((root / "analysis" / "validation_report.json").read_text())
    assert report["passed"] and report["task"]["kind"] == "none"
    assert {g["metric"] for g in report["gates"]["results"]} == {
        "mean_std", "resources.max_memory_mb", "resources.max_model_bytes",
        "resources.max_load_seconds", "resources.max_latency_ms"}
    record = json.loads((root / "analysis" / "release_v0.1.0.json").read_text())
    pinned = record["bundle"]["root_digest"]
    assert record["task"]["kind"] == "none" and "fresh" in record["resources"]
    published = root / "models" / "core" / "v0.1.0"
    assert (published / "models" / "codec.onnx.data").stat().st_size == 2 * 1024 * 1024

    out = tmp_path / "consumer" / "codec"
    fetched = cli("fetch", origin, "v0.1.0", "--rev", "core@v0.1.0", "-o", out, "--json")
    assert fetched.code == 0, fetched.err
    outcome = json.loads(fetched.out)
    assert outcome["ok"] and outcome["root_digest"] == pinned
    assert tree_digests(out) == tree_digests(published)
    verified = cli("verify", out, "--root-digest", pinned, "--json")
    assert verified.code == 0 and json.loads(verified.out)["ok"] is True
