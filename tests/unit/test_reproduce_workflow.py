"""The scheduled reproduce workflow: runs relgate reproduce on the latest release tag, read-only."""

from __future__ import annotations

import yaml

from tests.conftest import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github/workflows/reproduce.yml"


def test_the_workflow_is_scheduled_and_manual_and_reads_only() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc[True]  # YAML 1.1 reads the key `on` as True
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    assert doc["permissions"] == {}
    job = doc["jobs"]["reproduce"]
    assert job["permissions"] == {"contents": "read"}
    checkout = job["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0  # tags and history: the release tag must resolve
    assert checkout["with"]["persist-credentials"] is False


def test_the_workflow_reproduces_the_newest_non_deprecated_release_tag() -> None:
    steps = {s["name"]: s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["reproduce"]["steps"]}
    pick = steps["Pick the revision"]["run"]
    assert "git tag --list 'core@v*' --sort=-v:refname" in pick and "grep -v '!'" in pick
    run = steps["relgate reproduce"]
    assert run["run"] == 'relgate reproduce "$REV" --summary "$GITHUB_STEP_SUMMARY"'
    # inputs reach the shell through env, never interpolated into the script
    assert "${{" not in pick and "${{" not in run["run"]
    assert 'pip install -e ".[pipeline]"' in steps["Install relgate with the reference pipeline's "
                                                 "pinned extras"]["run"]
