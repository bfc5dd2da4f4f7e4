"""A registry's lifecycle from GTO's tags, with real git, real DVC and the real ``gto`` CLI.

The module's registry is a copy of the session producer (v1.0.0 then v1.1.0, both
published and pushed to its DVC remote) that a release manager then managed with GTO:
prod to v1.0.0, then prod to v1.1.0 (``core#prod#1``, ``core#prod#2``), staging to
v1.0.0, then ``gto deprecate core v1.0.0`` (``core@v1.0.0!``), all pushed. ``gto show`` is
the oracle for which release holds which stage; the bundles' own bytes (hashlib) are the
oracle for what ``fetch --stage`` placed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.conftest import assert_clean_failure
from tests.e2e.conftest import Producer, Tools
from tests.e2e.test_distribution import leftovers, tree_digests

pytestmark = pytest.mark.e2e


@dataclass
class Managed:
    """The module's registry: its bare origin, a working clone, and the gto command."""

    origin: Path
    work: Path
    gto: list[str]


def _gto_command() -> list[str]:
    beside = Path(sys.executable).parent / "gto"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("gto")
    if found is None:
        pytest.skip("the gto command is not installed (pip install gto)")
    return [found]


def _next_second() -> None:
    """GTO orders tags by their tagger time, to the second: the next tag comes later."""
    time.sleep(1.05 - time.time() % 1)


@pytest.fixture(scope="module")
def managed(producer: Producer, e2e_tools: Tools,
            tmp_path_factory: pytest.TempPathFactory) -> Managed:
    base = tmp_path_factory.mktemp("lifecycle")
    origin, work = base / "origin.git", base / "work"
    e2e_tools.git("clone", "-q", "--bare", producer.origin, origin, cwd=base)
    e2e_tools.git("clone", "-q", origin, work, cwd=base)
    gto = _gto_command()
    for args in (["assign", "core", "--version", "v1.0.0", "--stage", "prod"],
                 ["assign", "core", "--version", "v1.1.0", "--stage", "prod"],
                 ["assign", "core", "--version", "v1.0.0", "--stage", "staging"],
                 ["deprecate", "core", "v1.0.0"]):
        _next_second()
        e2e_tools.run([*gto, *args], work)
    e2e_tools.git("push", "-q", "origin", "--tags", cwd=work)
    return Managed(origin=origin, work=work, gto=gto)


def test_the_tags_are_gtos_own(managed: Managed, e2e_tools: Tools) -> None:
    tags = e2e_tools.git("tag", "-l", cwd=managed.work).stdout.split()
    assert sorted(tags) == sorted(["core@v1.0.0", "core@v1.1.0", "core#prod#1", "core#prod#2",
                                   "core#staging#3", "core@v1.0.0!"])


def test_releases_shows_stages_and_deprecation_as_gto_show_does(
        managed: Managed, e2e_tools: Tools, cli: Any) -> None:
    shown = json.loads(e2e_tools.run([*managed.gto, "show", "--json"], managed.work).stdout)
    in_prod = e2e_tools.run([*managed.gto, "show", "core#prod", "--ref"], managed.work)
    assert in_prod.stdout.split() == ["core@v1.1.0"]

    for source in (managed.origin, managed.work):  # a clone of a repository, a local folder
        result = cli("releases", source, "--json")
        assert result.code == 0, result.err
        listing = json.loads(result.out)
        got = {r["name"]: (r["stages"], r["deprecated"], r["deprecated_by"])
               for r in listing["releases"]}
        assert got == {"v1.1.0": (["prod"], False, None),
                       "v1.0.0": ([], True, "core@v1.0.0!")}
        assert listing["stages"] == {"core": {s: v for s, v in shown["core"]["stage"].items()
                                              if v}} == {"core": {"prod": "v1.1.0"}}

    text = cli("releases", managed.origin)
    assert text.code == 0
    header, *rows = text.out.splitlines()[1:]
    columns = header.split("\t")
    by_name = {row.split("\t")[0]: dict(zip(columns, row.split("\t"), strict=True))
               for row in rows}
    assert by_name["v1.1.0"]["stage"] == "prod" and by_name["v1.1.0"]["deprecated"] == "no"
    assert by_name["v1.0.0"]["stage"] == "-"
    assert by_name["v1.0.0"]["deprecated"] == "core@v1.0.0!"


def test_fetch_stage_prod_places_the_release_gto_puts_there(
        managed: Managed, producer: Producer, cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "deps" / "core"
    result = cli("fetch", managed.origin, "--stage", "prod", "-o", out, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert (report["release"], report["stage"], report["rev"]) == ("v1.1.0", "prod",
                                                                   "core@v1.1.0")
    assert report["commit"] == producer.commits["v1.1.0"]
    assert report["pin"]["root_digest"] == producer.digests["v1.1.0"] == report["root_digest"]
    assert tree_digests(out) == tree_digests(producer.root / "models" / "core" / "v1.1.0")
    assert json.loads((out / "release.json").read_text())["name"] == "v1.1.0"
    assert leftovers(out.parent) == []

    text = cli("fetch", managed.origin, "--stage", "prod", "-o", tmp_path / "again")
    assert text.code == 0 and "release v1.1.0 (stage prod)" in text.out


def test_a_deprecated_release_is_refused_unless_allowed(
        managed: Managed, producer: Producer, cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "core"
    refused = cli("fetch", managed.origin, "v1.0.0", "-o", out)
    line = assert_clean_failure(refused, (1,))
    assert "deprecated" in line and "core@v1.0.0!" in line and "--allow-deprecated" in line
    assert not os.path.lexists(out) and leftovers(tmp_path) == []

    allowed = cli("fetch", managed.origin, "v1.0.0", "-o", out, "--allow-deprecated", "--json")
    assert allowed.code == 0, allowed.err
    report = json.loads(allowed.out)
    assert report["root_digest"] == producer.digests["v1.0.0"]
    assert any("deprecated" in n and "core@v1.0.0!" in n for n in report["notes"])
    assert tree_digests(out) == tree_digests(producer.root / "models" / "core" / "v1.0.0")


def test_a_stage_with_no_release_and_a_stage_with_a_name_are_bad_input(
        managed: Managed, cli: Any, tmp_path: Path) -> None:
    # staging went with v1.0.0 when it was deregistered: GTO shows nobody there
    for stage in ("staging", "qa"):
        result = cli("fetch", managed.origin, "--stage", stage, "-o", tmp_path / "x")
        line = assert_clean_failure(result, (2,))
        assert f"stage {stage!r}" in line and "stages held: prod" in line
    both = cli("fetch", managed.origin, "v1.1.0", "--stage", "prod", "-o", tmp_path / "x")
    assert "not both" in assert_clean_failure(both, (2,))
    assert not (tmp_path / "x").exists() and leftovers(tmp_path) == []


def test_a_deprecated_artifact_refuses_its_stage_unless_allowed(
        managed: Managed, producer: Producer, e2e_tools: Tools, cli: Any,
        tmp_path: Path) -> None:
    """``gto deprecate core`` (``core@deprecated``): every release of it is deprecated."""
    origin, work = tmp_path / "origin.git", tmp_path / "work"
    e2e_tools.git("clone", "-q", "--bare", managed.origin, origin, cwd=tmp_path)
    e2e_tools.git("clone", "-q", origin, work, cwd=tmp_path)
    _next_second()
    e2e_tools.run([*managed.gto, "deprecate", "core"], work)
    e2e_tools.git("push", "-q", "origin", "--tags", cwd=work)

    listing = json.loads(cli("releases", origin, "--json").out)
    assert {r["name"]: r["deprecated_by"] for r in listing["releases"]} == {
        "v1.1.0": "core@deprecated", "v1.0.0": "core@v1.0.0!"}
    refused = cli("fetch", origin, "--stage", "prod", "-o", tmp_path / "core")
    line = assert_clean_failure(refused, (1,))
    assert "v1.1.0" in line and "core@deprecated" in line
    allowed = cli("fetch", origin, "--stage", "prod", "-o", tmp_path / "core",
                  "--allow-deprecated")
    assert allowed.code == 0, allowed.err
    assert tree_digests(tmp_path / "core") == tree_digests(
        producer.root / "models" / "core" / "v1.1.0")
