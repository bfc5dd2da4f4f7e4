"""relgate report never trusts a recorded verdict: it re-judges the recorded rules on the numbers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "tests/examples/validation-report/positive/passing.json"


def test_an_edited_metric_fails_even_though_the_report_says_passed(cli, tmp_path: Path) -> None:
    report = json.loads(EXAMPLE.read_text())
    assert report["passed"] is True
    report["metrics"]["auc"] = {"value": 0.1}  # the verdict and stats still claim a pass
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(report))
    md = cli("report", edited, "--format", "md")
    assert md.code == 0
    assert "fails its gates" in md.out
    assert "the record is inconsistent" in md.out
    assert cli("report", edited, "--fail-on-gate").code == 1


def test_an_untouched_report_keeps_its_verdict(cli) -> None:
    result = cli("report", EXAMPLE, "--format", "md", "--fail-on-gate")
    assert result.code == 0 and "passes its gates" in result.out
    assert "inconsistent" not in result.out
