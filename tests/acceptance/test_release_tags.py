"""Release tags from ``release.tag`` (issue 15.6): the record's tag, ``relgate releases`` and
``relgate fetch`` use the template; seed 000's ``core/{name}`` instead of ``core@{name}``.

A real registry: git, DVC (``dvc repro`` runs calibrate, validate and promote), a local-folder DVC
remote and a bare git origin, tagged as publish.yml tags (annotated, with the root digest line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relgate.distribution import name_from_tag, tag_of, tag_template
from relgate.errors import InputError
from tests.e2e.conftest import DVC_YAML, Tools, tool_env
from tests.support.registry import make_registry

NAME = "v1.1-Omega-Calibrated"
TAG = f"core/{NAME}"


@dataclass
class Seed000:
    tools: Tools
    root: Path
    origin: Path
    digest: str
    commit: str


@pytest.fixture(scope="module")
def seed000(tmp_path_factory: pytest.TempPathFactory) -> Seed000:
    """A registry whose params say ``release.tag: core/{name}``, released and tagged once."""
    base = tmp_path_factory.mktemp("tags")
    tools = Tools(env=tool_env(base / "home"))
    root, origin = base / "producer", base / "origin.git"
    root.mkdir()
    tools.git("init", "-q", "--bare", origin, cwd=base)
    tools.git("init", "-q", cwd=root)
    tools.dvc("init", "-q", cwd=root)
    (root / "dvc.yaml").write_text(DVC_YAML)
    tools.dvc("remote", "add", "-d", "store", base / "dvc-remote", cwd=root)
    tools.git("remote", "add", "origin", origin, cwd=root)
    make_registry(root, release=NAME)
    with open(root / "params.yaml", "a", encoding="utf-8") as fh:
        fh.write('  tag: "core/{name}"\n')
    tools.dvc("repro", "-q", cwd=root)
    tools.git("add", "-A", cwd=root)
    tools.git("commit", "-q", "-m", f"release {NAME}", cwd=root)
    record = json.loads((root / "analysis" / f"release_{NAME}.json").read_text())
    digest = record["bundle"]["root_digest"]
    tools.git("tag", "-a", TAG, "-m", f"Release {NAME}", "-m", f"relgate-root-digest: {digest}",
              cwd=root)
    tools.dvc("push", "-q", cwd=root)
    tools.git("push", "-q", "origin", "main", "--tags", cwd=root)
    commit = tools.git("rev-parse", "HEAD", cwd=root).stdout.strip()
    return Seed000(tools=tools, root=root, origin=origin, digest=digest, commit=commit)


def test_the_release_record_and_card_carry_the_templated_tag(seed000: Seed000) -> None:
    bundle = seed000.root / "models" / "core" / NAME
    assert json.loads((bundle / "release.json").read_text())["tag"] == TAG
    assert f"(git tag `{TAG}`)" in (bundle / "README.md").read_text()


@pytest.mark.parametrize("where", ["working tree", "clone"])
def test_releases_shows_the_core_slash_tag(seed000: Seed000, cli: Any, where: str) -> None:
    repo = seed000.root if where == "working tree" else seed000.origin
    result = cli("releases", repo, "--json")
    assert result.code == 0, result.err
    (info,) = json.loads(result.out)["releases"]
    assert (info["name"], info["tag"], info["tag_commit"]) == (NAME, TAG, seed000.commit)
    text = cli("releases", repo)
    assert text.code == 0 and TAG in text.out


def test_fetch_resolves_the_annotated_tag_from_the_template(seed000: Seed000, cli: Any,
                                                            tmp_path: Path) -> None:
    """With no release record at the revision, only the ``core/<name>`` tag pins the bundle:
    fetch must find it from params.yaml's template (``core@<name>`` does not exist)."""
    clone = tmp_path / "clone"
    tools = seed000.tools
    tools.git("clone", "-q", seed000.origin, clone, cwd=tmp_path)
    tools.git("rm", "-q", f"analysis/release_{NAME}.json", cwd=clone)
    tools.git("commit", "-q", "-m", "drop the record (the tag still pins the release)", cwd=clone)
    out = tmp_path / "deps" / NAME
    result = cli("fetch", clone, NAME, "-o", out, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["ok"] and report["placed"]
    assert report["pin"]["root_digest"] == seed000.digest == report["root_digest"]
    assert TAG in report["pin"]["source"]
    # and at the tag itself, where record and tag agree
    at_tag = cli("fetch", seed000.origin, NAME, "--rev", TAG, "-o", tmp_path / "at-tag", "--json")
    assert at_tag.code == 0, at_tag.err
    assert json.loads(at_tag.out)["root_digest"] == seed000.digest


def test_a_tag_recording_another_digest_is_refused(seed000: Seed000, cli: Any,
                                                   tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    tools = seed000.tools
    tools.git("clone", "-q", seed000.origin, clone, cwd=tmp_path)
    tools.git("tag", "-d", TAG, cwd=clone)
    tools.git("tag", "-a", TAG, "-m", "forged", "-m", "relgate-root-digest: " + "0" * 64,
              cwd=clone)
    out = tmp_path / "out"
    result = cli("fetch", clone, NAME, "--rev", TAG, "-o", out)
    assert result.code == 1, result.err
    assert "0" * 16 in result.err and TAG in result.err
    assert not out.exists()


def test_tag_templates_of_params() -> None:
    assert tag_template(None, source="p") == "core@{name}"  # no params.yaml: the default
    assert tag_template(b"release: {name: v1}\n", source="p") == "core@{name}"  # old registries
    assert tag_template(b'release: {tag: "core/{name}"}\n', source="p") == "core/{name}"
    for bad in (b'release: {tag: "core"}\n', b'release: {tag: "{name}/{name}"}\n',
                b'release: {tag: "a b {name}"}\n', b'release: {tag: "../{name}"}\n',
                b"release: {tag: 7}\n", b"release: [\n"):
        with pytest.raises(InputError):
            tag_template(bad, source="p")
    assert tag_of({"tag": "core/v1"}, "v1", "x@{name}") == "core/v1"  # the record's wins
    assert tag_of({}, "v1", "core/{name}") == "core/v1"
    assert tag_of({"tag": "--upload-pack=x y"}, "v1", "core@{name}") == "core@v1"
    assert name_from_tag("core/v1.2", "core/{name}") == "v1.2"
    assert name_from_tag("core@v1.2", "core/{name}") is None
    assert name_from_tag("core/", "core/{name}") is None
