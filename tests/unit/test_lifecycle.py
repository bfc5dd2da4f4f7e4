"""relgate.lifecycle reads GTO's tags as GTO does: gto itself makes the tags and is the oracle.

Every registry here is a real git repository tagged by GTO 1.10.1 (``gto.api``, the code
behind the ``gto`` CLI, in-process for speed; one test runs the ``gto`` CLI itself). What
relgate reads (the version holding each stage, deprecated versions, a deprecated artifact)
is compared with what ``gto show`` reports, on hand-picked histories (rollback,
unassignment, artifact deprecation, a stage on a bare commit) and on seeded random ones.

GTO dates a tag to the second, and ties are broken by its own rules, so the tags are made on
a test clock (``clock``: dulwich's tagger time, which GTO writes through): the hand-picked
histories one second apart, the random ones with many tags in the same second, so that both
the intended order and GTO's tie-breaking are compared, the same on every run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relgate.errors import InputError
from relgate.lifecycle import (
    TAG_RE,
    artifact_of_tag,
    artifact_of_template,
    check_stage,
    parse_tag,
    read_lifecycle,
    release_in_stage,
)

gto_api = pytest.importorskip("gto.api")
gto_exceptions = pytest.importorskip("gto.exceptions")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@dataclass
class Clock:
    """The tagger time of the next tag GTO (or ``tag``) makes; after every commit here."""

    now: int

    def tick(self, seconds: int = 1) -> None:
        self.now += seconds

    def tag(self, name: str, rev: str, cwd: Path) -> None:
        """An annotated tag as publish.yml makes it (plain git), dated by this clock."""
        subprocess.run(["git", "tag", "-a", name, "-m", f"Release {name}", rev], cwd=cwd,
                       check=True, capture_output=True,
                       env={**os.environ, "GIT_COMMITTER_DATE": f"@{self.now} +0000"})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    import dulwich.porcelain

    real = dulwich.porcelain.tag_create
    clock = Clock(now=int(time.time()) + 600)

    def tag_create(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("tag_time", clock.now)
        return real(*args, **kwargs)

    def elsewhere(*_args: Any, **_kwargs: Any) -> None:
        raise NotImplementedError  # scmrepo then tries its next backend: dulwich

    # GTO tags through scmrepo, whose pygit2 and GitPython backends take the time from the
    # system clock; its dulwich backend imports tag_create from dulwich.porcelain at each call
    from scmrepo.git.backend.gitpython import GitPythonBackend
    from scmrepo.git.backend.pygit2 import Pygit2Backend

    monkeypatch.setattr(Pygit2Backend, "tag", elsewhere)
    monkeypatch.setattr(GitPythonBackend, "tag", elsewhere)
    monkeypatch.setattr(dulwich.porcelain, "tag_create", tag_create)
    yield clock


def repo_with_commits(root: Path, n: int) -> list[str]:
    """A git repository at *root* with *n* commits; their shas, oldest first."""
    root.mkdir(parents=True, exist_ok=True)
    git("init", "-q", cwd=root)
    shas = []
    for i in range(n):
        (root / "model.txt").write_text(f"model {i}\n")
        git("add", "-A", cwd=root)
        git("commit", "-q", "-m", f"commit {i}", cwd=root)
        shas.append(git("rev-parse", "HEAD", cwd=root))
    return shas


def gto_view(repo: Path, artifact: str = "core") -> dict[str, Any]:
    """What ``gto show`` says: the version per stage, deregistered versions, artifact active."""
    state = gto_api.show(str(repo), deprecated=True).get(artifact)
    if state is None:
        return {"stages": {}, "deregistered": [], "active": None}
    versions = gto_api.show(str(repo), artifact, deprecated=True)
    registered: dict[str, bool] = {}
    for v in versions:
        if v["registrations"]:
            registered[v["version"]] = registered.get(v["version"], False) or v["is_active"]
    return {"stages": {s: v for s, v in state["stage"].items() if v},
            "deregistered": sorted(n for n, active in registered.items() if not active),
            "active": state["active"]}


def relgate_view(repo: Path, artifact: str = "core") -> dict[str, Any]:
    head = git("rev-parse", "HEAD", cwd=repo)
    life = read_lifecycle(repo, artifact, head=head)
    known = bool(life.known or life.stages or life.deprecated_by)
    return {"stages": {s: h.version for s, h in life.stages.items()},
            "deregistered": sorted(life.deregistered),
            "active": (life.deprecated_by is None) if known else None}


# --------------------------------------------------------------------------- grammar


def test_the_tag_grammar_is_gtos_own() -> None:
    from gto.constants import tag_re
    from gto.tag import parse_name

    assert TAG_RE.pattern == tag_re.pattern
    names = ["core@v1.0.0", "core@v1.0.0!", "core#prod#1", "core#prod!#2", "core@deprecated",
             "core@v1.2.3-rc.1+build.5", "dir=core@v1.0.0", "core@v1.0.0#2", "core#a/b#3",
             "core@1.0.0", "core/v1.0.0", "core#prod", "-core@v1.0.0", "core@v01.0.0",
             "core@v1.0.0!!", "a@v1.0.0", "core#-prod#1"]
    for name in names:
        gto = parse_name(name, raise_on_fail=False)
        ours = parse_tag(name)
        if not gto:
            assert ours is None, name
            continue
        assert ours is not None, name
        assert ours.artifact == gto["name"], name
        assert ours.action == gto["action"].value, name
        assert ours.version == gto.get("version", ""), name
        assert ours.stage == gto.get("stage", ""), name


def test_artifacts_of_tags_and_templates() -> None:
    assert artifact_of_tag("core@v1.0.0", "v1.0.0") == "core"
    assert artifact_of_tag("core@v1.0.0", "v1.1.0") is None  # the tag registers another one
    assert artifact_of_tag("core@v1.0.0!", "v1.0.0") is None  # a deregistration registers none
    assert artifact_of_tag("core/v1.0.0", "v1.0.0") is None  # not GTO's grammar
    assert artifact_of_tag(None, "v1.0.0") is None
    assert artifact_of_template("core@{name}") == "core"
    assert artifact_of_template("models=core@{name}") == "models:core"
    assert artifact_of_template("core/{name}") is None
    assert artifact_of_template("core@{name}-x") is None
    assert check_stage("prod") == "prod"
    for bad in ("-prod", "prod!", "pr od", "", "prod#1", "x" * 101):
        with pytest.raises(InputError):
            check_stage(bad)


# --------------------------------------------------------------------------- against gto show


def test_the_issue_history_rollback_unassignment_and_artifact_deprecation(
        tmp_path: Path, clock: Clock) -> None:
    repo = tmp_path / "registry"
    c = repo_with_commits(repo, 3)
    # registered as publish.yml does (plain annotated tags), then managed with GTO
    clock.tag("core@v1.0.0", c[0], repo)
    clock.tick()
    clock.tag("core@v1.1.0", c[1], repo)
    for stage, version in (("prod", "v1.0.0"), ("staging", "v1.1.0"), ("prod", "v1.1.0")):
        clock.tick()
        gto_api.assign(str(repo), "core", stage, version=version)
    view = relgate_view(repo)
    assert view == gto_view(repo)
    assert view["stages"] == {"prod": "v1.1.0", "staging": "v1.1.0"}

    clock.tick()
    gto_api.deregister(str(repo), "core", version="v1.1.0")  # core@v1.1.0!
    view = relgate_view(repo)
    assert view == gto_view(repo)
    # GTO hands prod back to the version assigned before the deprecated one
    assert view == {"stages": {"prod": "v1.0.0"}, "deregistered": ["v1.1.0"], "active": True}
    head = git("rev-parse", "HEAD", cwd=repo)
    life = read_lifecycle(repo, "core", head=head)
    assert life.deprecation("v1.1.0") == "core@v1.1.0!"
    assert life.deprecation("v1.0.0") is None
    assert life.stages["prod"].tag == "core#prod#1"
    assert life.stages["prod"].registration == "core@v1.0.0"
    assert life.stages["prod"].commit == c[0]

    clock.tick()
    gto_api.unassign(str(repo), "core", version="v1.0.0", stage="prod")  # core#prod!#4
    assert "core#prod!#4" in git("tag", "-l", cwd=repo).split()
    view = relgate_view(repo)
    assert view == gto_view(repo) == {"stages": {}, "deregistered": ["v1.1.0"], "active": True}

    clock.tick()
    gto_api.assign(str(repo), "core", "prod", version="v1.0.0", force=True)
    clock.tick()
    gto_api.deprecate(str(repo), "core")  # core@deprecated
    life = read_lifecycle(repo, "core", head=head)
    assert relgate_view(repo) == gto_view(repo)
    assert life.deprecated_by == "core@deprecated"
    assert life.deprecation("v1.0.0") == "core@deprecated"
    assert life.deprecation("v9.9.9") is None  # a version GTO never saw


def test_gto_cli_show_json_agrees(tmp_path: Path, clock: Clock) -> None:
    """The ``gto`` command a user runs, not just its library, names the same holders."""
    gto = shutil.which("gto", path=str(Path(sys.executable).parent)) or shutil.which("gto")
    if gto is None:
        pytest.skip("the gto command is not installed")
    repo = tmp_path / "registry"
    c = repo_with_commits(repo, 2)
    gto_api.register(str(repo), "core", c[0], version="v1.0.0")
    gto_api.register(str(repo), "core", c[1], version="v1.1.0")
    for stage, version in (("prod", "v1.1.0"), ("dev", "v1.0.0"), ("prod", "v1.0.0")):
        clock.tick()
        gto_api.assign(str(repo), "core", stage, version=version, force=True)
    clock.tick()
    gto_api.deregister(str(repo), "core", version="v1.0.0")

    def run(*args: str) -> str:
        return subprocess.run([gto, *args], cwd=repo, check=True, capture_output=True,
                              text=True).stdout

    shown = json.loads(run("show", "--json"))
    view = relgate_view(repo)
    assert view["stages"] == {s: v for s, v in shown["core"]["stage"].items() if v}
    # prod went back to v1.1.0 and dev went with v1.0.0, deregistered
    assert view["stages"] == {"prod": "v1.1.0"}
    assert run("show", "core#prod", "--ref").split() == ["core@v1.1.0"]
    assert run("show", "core#dev", "--ref").split() == []
    assert view["deregistered"] == ["v1.0.0"]


def test_a_stage_on_a_commit_no_tag_registers(tmp_path: Path, clock: Clock) -> None:
    repo = tmp_path / "registry"
    c = repo_with_commits(repo, 2)
    gto_api.register(str(repo), "core", c[0], version="v1.0.0")
    clock.tick()
    gto_api.assign(str(repo), "core", "prod", ref=c[1], skip_registration=True)
    view = relgate_view(repo)
    assert view == gto_view(repo)
    assert view["stages"] == {"prod": c[1]}
    head = git("rev-parse", "HEAD", cwd=repo)
    with pytest.raises(InputError, match="no tag registers"):
        release_in_stage(repo, "prod", template="core@{name}", head=head)
    with pytest.raises(InputError, match=r"stage 'staging'.*stages held: prod"):
        release_in_stage(repo, "staging", template="core@{name}", head=head)
    with pytest.raises(InputError, match="not GTO's"):
        release_in_stage(repo, "prod", template="core/{name}", head=head)


def test_lightweight_tags_and_other_artifacts_do_not_count(tmp_path: Path, clock: Clock) -> None:
    repo = tmp_path / "registry"
    c = repo_with_commits(repo, 2)
    gto_api.register(str(repo), "core", c[0], version="v1.0.0")
    gto_api.register(str(repo), "other", c[1], version="v1.0.0")
    gto_api.assign(str(repo), "other", "prod", version="v1.0.0")
    git("tag", "core#prod#9", c[0], cwd=repo)  # lightweight: GTO ignores it
    git("tag", "core@v1.1.0!", c[1], cwd=repo)
    assert relgate_view(repo) == gto_view(repo) == {"stages": {}, "deregistered": [],
                                                    "active": True}
    assert relgate_view(repo, "other") == gto_view(repo, "other")


def _random_history(repo: Path, commits: list[str], rng: random.Random, steps: int,
                    clock: Clock) -> None:
    versions = ["v1.0.0", "v1.1.0", "v1.2.0", "v2.0.0"]
    for _ in range(steps):
        clock.tick(rng.choice([0, 0, 1]))  # two steps in three share a second with the last
        op = rng.choice(["register", "register", "assign", "assign", "assign", "unassign",
                         "deregister", "deprecate", "bare"])
        version, stage = rng.choice(versions), rng.choice(["prod", "staging"])
        try:
            if op == "register":
                gto_api.register(str(repo), "core", rng.choice(commits), version=version)
            elif op == "assign":
                gto_api.assign(str(repo), "core", stage, version=version,
                               force=rng.random() < 0.5)
            elif op == "unassign":
                gto_api.unassign(str(repo), "core", version=version, stage=stage)
            elif op == "deregister":
                gto_api.deregister(str(repo), "core", version=version)
            elif op == "deprecate":
                gto_api.deprecate(str(repo), "core")
            else:
                gto_api.assign(str(repo), "core", stage, ref=rng.choice(commits),
                               skip_registration=True, force=True)
        except gto_exceptions.GTOException:
            continue  # GTO refused the step: no tag was made


@pytest.mark.parametrize("seed", range(8))
def test_random_histories_read_as_gto_shows_them(tmp_path: Path, seed: int, clock: Clock) -> None:
    rng = random.Random(seed)
    repo = tmp_path / "registry"
    commits = repo_with_commits(repo, 3)
    for _ in range(3):
        _random_history(repo, commits, rng, steps=5, clock=clock)
        try:
            expected = gto_view(repo)
        except gto_exceptions.ManyVersions:
            with pytest.raises(InputError, match="registered at commit"):
                relgate_view(repo)
            return
        assert relgate_view(repo) == expected, git("tag", "-l", cwd=repo)


def test_ties_within_one_second_break_as_gto_breaks_them(tmp_path: Path, clock: Clock) -> None:
    """Tags made in the same second: GTO orders them by name, then by its own sort order."""
    repo = tmp_path / "registry"
    c = repo_with_commits(repo, 3)
    for i, version in enumerate(("v1.0.0", "v1.1.0", "v2.0.0")):
        gto_api.register(str(repo), "core", c[i], version=version)
    for version in ("v2.0.0", "v1.0.0", "v1.1.0"):
        gto_api.assign(str(repo), "core", "prod", version=version)
    gto_api.assign(str(repo), "core", "dev", version="v1.1.0")
    gto_api.unassign(str(repo), "core", version="v1.1.0", stage="dev")
    expected = gto_view(repo)
    assert relgate_view(repo) == expected
    # neither the newest version nor the last assignment made: the tie rules
    assert expected["stages"] == {"prod": "v1.0.0"}


def test_a_deprecation_in_the_second_of_a_commit_or_before_a_declared_head(
        tmp_path: Path, clock: Clock) -> None:
    """GTO dates each version's commit too: a deprecation tied with it, or older than a HEAD
    whose artifacts.yaml declares the artifact, leaves the artifact active."""
    repo = tmp_path / "registry"
    c = repo_with_commits(repo, 1)
    clock.now = int(git("log", "-1", "--format=%ct", cwd=repo)) - 1  # a tag dated before
    gto_api.register(str(repo), "core", c[0], version="v1.0.0")
    clock.tick()  # the commit's second
    gto_api.deprecate(str(repo), "core")
    assert relgate_view(repo) == gto_view(repo)
    assert relgate_view(repo)["active"] is True

    other = tmp_path / "other"
    c = repo_with_commits(other, 1)
    clock.now = int(git("log", "-1", "--format=%ct", cwd=other)) + 1
    gto_api.register(str(other), "core", c[0], version="v1.0.0")
    clock.tick()
    gto_api.deprecate(str(other), "core")
    assert relgate_view(other) == gto_view(other)
    assert relgate_view(other)["active"] is False
    time.sleep(max(0.0, clock.now + 1 - time.time()))  # the next commit is newer than the tag
    (other / "artifacts.yaml").write_text("core:\n  type: model\n  path: models/core\n")
    git("add", "-A", cwd=other)
    git("commit", "-q", "-m", "declare core", cwd=other)
    assert relgate_view(other) == gto_view(other)
    assert relgate_view(other)["active"] is True


def test_releases_of_a_registry_lists_stages_deprecation_and_what_it_cannot_place(
        tmp_path: Path, clock: Clock, cli: Any) -> None:
    """``relgate releases`` (records in git, no DVC): stages and deprecation per release, the
    stage map, and a note for a stage on a bare commit or on a version without a record."""
    from tests.unit.test_distribution import record, write_record

    repo = tmp_path / "registry"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "step.txt").write_text("registry")
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "registry", cwd=repo)
    bare_commit = git("rev-parse", "HEAD", cwd=repo)  # no tag registers it
    for name in ("v1.0.0", "v1.1.0", "v2.0.0"):
        if name != "v2.0.0":  # v2.0.0 is registered with GTO but never released by relgate
            write_record(repo, record(name))
        (repo / "step.txt").write_text(name)
        git("add", "-A", cwd=repo)
        git("commit", "-q", "-m", name, cwd=repo)
        clock.tick()
        clock.tag(f"core@{name}", "HEAD", repo)
    for stage, version in (("prod", "v1.0.0"), ("staging", "v1.1.0"), ("dev", "v2.0.0")):
        clock.tick()
        gto_api.assign(str(repo), "core", stage, version=version)
    clock.tick()
    gto_api.assign(str(repo), "core", "qa", ref=bare_commit, skip_registration=True)
    clock.tick()
    gto_api.deregister(str(repo), "core", version="v1.1.0")

    bare = tmp_path / "registry.git"
    git("clone", "-q", "--bare", str(repo), str(bare), cwd=tmp_path)
    for source in (repo, bare):
        result = cli("releases", source, "--json")
        assert result.code == 0, result.err
        listing = json.loads(result.out)
        got = {r["name"]: (r["stages"], r["deprecated_by"]) for r in listing["releases"]}
        assert got == {"v1.1.0": ([], "core@v1.1.0!"), "v1.0.0": (["prod"], None)}
        expected = gto_view(repo)["stages"]
        assert listing["stages"] == {"core": expected}
        assert set(expected) == {"prod", "dev", "qa"}  # staging went with v1.1.0
        assert any("stage qa" in n and "no tag registers" in n for n in listing["notes"])
        assert any("stage dev" in n and "v2.0.0" in n and "no release record" in n
                   for n in listing["notes"])
