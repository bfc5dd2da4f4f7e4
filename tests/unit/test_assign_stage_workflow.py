"""The README's manual "assign stage" workflow: schema-valid, zizmor-clean, and it really assigns.

The block is checked where users copy it from (README.md), with the tools and rules the
repository's own workflows are held to (tests/unit/test_workflows.py), and its script is run
for real against a temp registry and its bare origin: the tag it pushes is GTO's, and relgate
then reads the stage from it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from relgate.lifecycle import read_lifecycle
from tests.conftest import REPO_ROOT
from tests.unit.test_workflows import (
    EXPRESSION,
    PINNED_USES,
    above_informational,
    offline_env,
    run_step,
    tool,
    zizmor,
)

pytest.importorskip("gto")

MARKER = "# .github/workflows/assign-stage.yml\n"


def workflow_text() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
              if b.startswith(MARKER)]
    assert len(blocks) == 1, "README.md shows the assign-stage workflow once"
    return blocks[0]


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / ".github" / "workflows" / "assign-stage.yml"
    path.parent.mkdir(parents=True)
    path.write_text(workflow_text(), encoding="utf-8")
    return path


def test_it_matches_githubs_schema_and_zizmor_finds_nothing(workflow_file: Path) -> None:
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
         str(workflow_file)], capture_output=True, text=True, timeout=120, env=offline_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert above_informational(zizmor(workflow_file)) == []


def test_it_keeps_the_projects_workflow_rules() -> None:
    data: dict[Any, Any] = yaml.safe_load(workflow_text())
    on = data.get("on", data.get(True))
    assert set(on) == {"workflow_dispatch"}  # a person runs it; nothing a PR controls
    assert data["permissions"] == {}
    assert data["defaults"]["run"]["shell"] == "bash"
    (job,) = data["jobs"].values()
    assert job["permissions"] == {"contents": "write"}
    assert job["environment"] == "release"
    for step in job["steps"]:
        if "uses" in step:
            assert PINNED_USES.match(step["uses"]), step["uses"]
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False
            assert step["with"]["fetch-depth"] == 0
        if "run" in step:
            assert "${{" not in step["run"]
    assert not [e for e in EXPRESSION.findall(workflow_text()) if "secrets" in e]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_its_script_assigns_the_stage_with_gto_and_pushes_the_tag(tmp_path: Path) -> None:
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=tmp_path)
    git("clone", "-q", str(origin), str(work), cwd=tmp_path)
    (work / "README.md").write_text("registry\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "release v1.0.0", cwd=work)
    git("tag", "-a", "core@v1.0.0", "-m", "Release v1.0.0", cwd=work)
    git("push", "-q", "origin", "main", "--tags", cwd=work)
    runner = tmp_path / "runner"  # the checkout: every tag, as fetch-depth: 0 gives
    git("clone", "-q", str(origin), str(runner), cwd=tmp_path)

    (job,) = yaml.safe_load(workflow_text())["jobs"].values()
    script = next(s["run"] for s in job["steps"] if "gto assign" in s.get("run", ""))
    env = {"VERSION": "v1.0.0", "STAGE": "prod", "GITHUB_TOKEN": "not-a-real-token",
           "GITHUB_SERVER_URL": "https://github.com", "PIP_NO_INDEX": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = run_step(script, cwd=runner, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "core#prod#1" in git("tag", "-l", cwd=origin).split()
    tagger = git("for-each-ref", "--format=%(taggername)", "refs/tags/core#prod#1", cwd=origin)
    assert tagger == "github-actions[bot]"
    head = git("rev-parse", "HEAD", cwd=origin)
    life = read_lifecycle(origin, "core", head=head)
    assert life.stages["prod"].version == "v1.0.0"

    refused = run_step(script, cwd=runner, env={**env, "VERSION": "v9.9.9"})
    assert refused.returncode != 0  # GTO refuses a version no tag registers; nothing pushed
    assert git("tag", "-l", cwd=origin).split() == ["core#prod#1", "core@v1.0.0"]
