"""relgate.remotes reads the default remote from config files DVC itself wrote; DVC's own
``dvc remote default`` is the oracle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relgate.remotes import fetch_problem, read_remotes

ENV = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                             os.environ.get("PATH", "")])}


def _dvc(root: Path, *args: str) -> str:
    proc = subprocess.run(["dvc", *args], cwd=root, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _configs(root: Path) -> list[bytes | None]:
    return [(root / ".dvc" / name).read_bytes() if (root / ".dvc" / name).exists() else None
            for name in ("config", "config.local")]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc(tmp_path, "init", "-q")
    return tmp_path


def test_the_default_remote_as_dvc_sees_it(repo: Path) -> None:
    assert fetch_problem(_configs(repo)) == "not fetchable: no DVC remote configured"
    _dvc(repo, "remote", "add", "backup", str(repo / "backup"))
    assert read_remotes(_configs(repo)) == ({"backup"}, None)
    assert "no default DVC remote" in str(fetch_problem(_configs(repo)))
    _dvc(repo, "remote", "add", "-d", "storage", "s3://bucket/path")
    assert read_remotes(_configs(repo)) == ({"backup", "storage"}, _dvc(repo, "remote", "default"))
    assert fetch_problem(_configs(repo)) is None


def test_a_local_config_overrides_the_committed_one(repo: Path) -> None:
    _dvc(repo, "remote", "add", "-d", "--local", "mine", str(repo / "mine"))
    assert read_remotes(_configs(repo)) == ({"mine"}, _dvc(repo, "remote", "default"))
    assert fetch_problem(_configs(repo)) is None
    assert fetch_problem(_configs(repo)[:1]) == "not fetchable: no DVC remote configured"


def test_a_default_that_names_no_remote(repo: Path) -> None:
    (repo / ".dvc" / "config").write_text("[core]\n    remote = gone\n['remote \"other\"']\n"
                                          "    url = /x\n")
    assert fetch_problem(_configs(repo)) == ("not fetchable: the default DVC remote 'gone' "
                                             "is not defined")
