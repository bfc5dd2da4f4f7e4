"""Golden files: exact expected bytes of rendered output, with an explicit update switch.

Update after an intended change of the output, then review the diff like code:

    RELGATE_UPDATE_GOLDENS=1 .venv/bin/python -m pytest tests/unit/test_report.py \
        tests/acceptance/test_pr_gate.py

(``--update-goldens`` works too once tests/conftest.py registers it.)
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parent
INPUTS = GOLDEN_DIR / "inputs"


def update_requested(config: pytest.Config) -> bool:
    """True with ``--update-goldens`` (when registered) or RELGATE_UPDATE_GOLDENS=1."""
    flag = bool(config.getoption("--update-goldens", default=False))
    return flag or os.environ.get("RELGATE_UPDATE_GOLDENS") == "1"


def assert_golden(name: str, actual: str, config: pytest.Config) -> None:
    """Compare *actual* with ``tests/golden/<name>`` byte for byte (or rewrite it when asked)."""
    path = GOLDEN_DIR / name
    data = actual.encode("utf-8")
    if update_requested(config):
        path.write_bytes(data)
        return
    if not path.is_file():
        pytest.fail(f"{path} does not exist; create it with RELGATE_UPDATE_GOLDENS=1")
    expected = path.read_bytes()
    if data != expected:
        diff = "".join(difflib.unified_diff(
            expected.decode("utf-8", "replace").splitlines(keepends=True),
            actual.splitlines(keepends=True), fromfile=f"golden/{name}", tofile="actual"))
        pytest.fail(f"output differs from golden file {name} (if intended, rerun with "
                    f"RELGATE_UPDATE_GOLDENS=1 and review the diff):\n{diff}")
