"""`relgate releases` says which releases no DVC remote can serve (issue 18, point 4), and
`relgate fetch` agrees: a release marked fetchable is fetched, one marked not fetchable is
not (real git, real DVC, the session's producer registry and a copy without its remote)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Producer

pytestmark = pytest.mark.e2e


def _listing(producer: Producer, repo: object) -> dict:
    proc = producer.tools.relgate("releases", repo, "--json", cwd=producer.root)
    return json.loads(proc.stdout)


def test_a_registry_with_a_default_remote_serves_every_release(producer: Producer,
                                                                 tmp_path: Path) -> None:
    listing = _listing(producer, producer.origin)
    assert {r["name"] for r in listing["releases"]} == {"v1.0.0", "v1.1.0"}
    assert all(r["fetchable"] and r["not_fetchable"] is None for r in listing["releases"])
    assert not any("Running a registry" in n for n in listing["notes"])
    producer.tools.relgate("fetch", producer.origin, "v1.0.0", "-o", tmp_path / "got",
                           cwd=tmp_path)
    assert (tmp_path / "got" / "manifest.json").is_file()


def test_a_registry_without_a_remote_is_marked_and_fetch_agrees(producer: Producer,
                                                                  tmp_path: Path) -> None:
    tools = producer.tools
    copy = tmp_path / "no-remote"
    tools.git("clone", "-q", producer.origin, copy, cwd=tmp_path)
    tools.dvc("remote", "remove", "store", cwd=copy)
    tools.git("commit", "-q", "-am", "drop the DVC remote", cwd=copy)
    for name in ("v1.0.0", "v1.1.0"):  # the tags too: fetch resolves the tagged commit
        tools.git("tag", "-f", "-a", f"core@{name}", "-m", f"core {name}", cwd=copy)
    listing = _listing(producer, copy)
    assert [r["not_fetchable"] for r in listing["releases"]] == [
        "not fetchable: no DVC remote configured"] * 2
    (note,) = [n for n in listing["notes"] if "Running a registry" in n]
    assert "dvc remote add -d" in note and "v1.0.0" in note
    text = tools.relgate("releases", copy, cwd=tmp_path).stdout
    assert "no DVC remote configured" in text
    fetch = tools.relgate("fetch", copy, "v1.0.0", "-o", tmp_path / "got", cwd=tmp_path,
                          check=False)
    assert fetch.returncode == 1 and not (tmp_path / "got").exists()
