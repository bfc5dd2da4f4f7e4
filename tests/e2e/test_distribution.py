"""Consumers get released bundles with real git and real DVC, and verify every byte.

Flows (issue 7): (1) a fresh clone pulls one release and verifies it; (2) a new
project imports a release at its tag, updates, and moves to a newer release;
(3) objects damaged in the DVC remote are caught, by relgate verify or by DVC's
own check, and ``relgate fetch`` leaves nothing behind. The producer registry
(conftest.py) has released v1.0.0 then v1.1.0 to a local-folder DVC remote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from relgate.distribution import dvc_command
from relgate.jsonio import dumps
from tests.e2e.conftest import Producer, Tools

pytestmark = pytest.mark.e2e


def tree_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under *folder* by relative path (hashlib: independent of relgate)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def dvc_file(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".relgate-fetch-"))


# --------------------------------------------------------------------------- (1) dvc pull


def test_fresh_clone_pulls_one_release_and_it_verifies(producer: Producer, e2e_tools: Tools,
                                                       tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    e2e_tools.git("clone", "-q", producer.origin, clone, cwd=tmp_path)
    e2e_tools.dvc("pull", "-q", "models/core/v1.0.0", cwd=clone)

    bundle = clone / "models" / "core" / "v1.0.0"
    assert not (clone / "models" / "core" / "v1.1.0").exists()  # only what was asked for
    record = json.loads((clone / "analysis" / "release_v1.0.0.json").read_text())
    pinned = record["bundle"]["root_digest"]
    assert pinned == producer.digests["v1.0.0"]
    verified = e2e_tools.relgate("verify", bundle, "--root-digest", pinned, "--json", cwd=clone)
    assert json.loads(verified.stdout)["ok"] is True
    # the oracle: the very bytes the producer published
    assert tree_digests(bundle) == tree_digests(producer.root / "models" / "core" / "v1.0.0")

    # the pulled copy is plain writable files: a change after the pull is caught, file named
    target = bundle / "models" / "model.onnx.data"
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    refused = e2e_tools.relgate("verify", bundle, "--root-digest", pinned, cwd=clone, check=False)
    assert refused.returncode == 1
    assert "models/model.onnx.data" in refused.stdout


def test_dvc_artifacts_get_finds_a_release_by_its_gto_tag(producer: Producer, e2e_tools: Tools,
                                                          tmp_path: Path) -> None:
    """The annotated tag core@v1.0.0 registers version v1.0.0 of the dvc.yaml artifact `core`."""
    out = tmp_path / "vendor"
    e2e_tools.dvc("artifacts", "get", producer.origin, "core", "--rev", "v1.0.0", "-o", out,
                  cwd=tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["v1.0.0"]  # models/core as of that release
    pinned = producer.digests["v1.0.0"]
    verified = e2e_tools.relgate("verify", out / "v1.0.0", "--root-digest", pinned, cwd=tmp_path)
    assert verified.returncode == 0
    assert tree_digests(out / "v1.0.0") == tree_digests(producer.root / "models/core/v1.0.0")


# --------------------------------------------------------------------------- (2) dvc import


def test_new_project_imports_a_release_at_its_tag_then_updates(producer: Producer,
                                                               e2e_tools: Tools,
                                                               tmp_path: Path) -> None:
    proj = tmp_path / "consumer"
    proj.mkdir()
    e2e_tools.git("init", "-q", cwd=proj)
    e2e_tools.dvc("init", "-q", cwd=proj)
    e2e_tools.dvc("import", "-q", producer.origin, "models/core/v1.0.0", "--rev", "core@v1.0.0",
                  "-o", "core", cwd=proj)
    e2e_tools.relgate("verify", "core", "--root-digest", producer.digests["v1.0.0"], cwd=proj)
    dep = dvc_file(proj / "core.dvc")["deps"][0]
    assert dep["path"] == "models/core/v1.0.0"
    assert dep["repo"]["rev"] == "core@v1.0.0"
    assert dep["repo"]["rev_lock"] == producer.commits["v1.0.0"]
    e2e_tools.git("add", "-A", cwd=proj)
    e2e_tools.git("commit", "-q", "-m", "use core v1.0.0", cwd=proj)
    before = tree_digests(proj / "core")

    # re-pin the same release at the registry's newer tag: it moves the lock, never the bytes
    e2e_tools.dvc("update", "-q", "--rev", "core@v1.1.0", "core.dvc", cwd=proj)
    dep = dvc_file(proj / "core.dvc")["deps"][0]
    assert dep["repo"]["rev_lock"] == producer.commits["v1.1.0"]
    assert tree_digests(proj / "core") == before
    e2e_tools.relgate("verify", "core", "--root-digest", producer.digests["v1.0.0"], cwd=proj)

    # move to the newer release: import its folder in place of the old one
    # (dvc import --force -o core would nest it inside the existing folder: remove first)
    e2e_tools.dvc("remove", "-q", "--outs", "core.dvc", cwd=proj)
    e2e_tools.dvc("import", "-q", producer.origin, "models/core/v1.1.0",
                  "--rev", "core@v1.1.0", "-o", "core", cwd=proj)
    assert dvc_file(proj / "core.dvc")["deps"][0]["path"] == "models/core/v1.1.0"
    e2e_tools.relgate("verify", "core", "--root-digest", producer.digests["v1.1.0"], cwd=proj)
    assert json.loads((proj / "core" / "release.json").read_text())["name"] == "v1.1.0"
    assert tree_digests(proj / "core") != before
    old = e2e_tools.relgate("verify", "core", "--root-digest", producer.digests["v1.0.0"],
                            cwd=proj, check=False)
    assert old.returncode == 1 and "pinned" in old.stdout


def test_importing_the_release_folder_lets_dvc_update_bring_new_releases(
        producer: Producer, e2e_tools: Tools, tmp_path: Path) -> None:
    proj = tmp_path / "consumer"
    proj.mkdir()
    e2e_tools.git("init", "-q", cwd=proj)
    e2e_tools.dvc("init", "-q", cwd=proj)
    (proj / "vendor").mkdir()  # dvc import needs the output's parent
    e2e_tools.dvc("import", "-q", producer.origin, "models/core", "--rev", "core@v1.0.0",
                  "-o", "vendor/releases", cwd=proj)
    releases = proj / "vendor" / "releases"
    assert sorted(p.name for p in releases.iterdir() if p.is_dir()) == ["v1.0.0"]

    e2e_tools.dvc("update", "-q", "--rev", "core@v1.1.0", "vendor/releases.dvc", cwd=proj)
    assert sorted(p.name for p in releases.iterdir() if p.is_dir()) == ["v1.0.0", "v1.1.0"]
    for name in ("v1.0.0", "v1.1.0"):
        e2e_tools.relgate("verify", releases / name, "--root-digest", producer.digests[name],
                          cwd=proj)


# --------------------------------------------------------------------------- relgate fetch


def test_fetch_verifies_against_the_pinned_digest_and_never_overwrites(
        producer: Producer, cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "deps" / "core"
    result = cli("fetch", producer.origin, "v1.0.0", "--rev", "core@v1.0.0", "-o", out, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["ok"] and report["placed"]
    assert report["commit"] == producer.commits["v1.0.0"]
    assert report["pin"]["root_digest"] == producer.digests["v1.0.0"] == report["root_digest"]
    assert tree_digests(out) == tree_digests(producer.root / "models" / "core" / "v1.0.0")
    assert leftovers(out.parent) == []
    # sealed like the published bundle
    assert not os.stat(out / "manifest.json").st_mode & 0o222

    again = cli("fetch", producer.origin, "v1.1.0", "-o", out)
    assert again.code == 2 and "already exists" in again.err
    assert tree_digests(out) == tree_digests(producer.root / "models" / "core" / "v1.0.0")

    # the default branch has the newest release; the text output names the pin
    newest = cli("fetch", producer.origin, "v1.1.0", "-o", tmp_path / "newest")
    assert newest.code == 0, newest.err
    assert producer.digests["v1.1.0"] in newest.out
    assert "analysis/release_v1.1.0.json" in newest.out


def test_fetch_of_an_unknown_release_or_revision_is_bad_input(producer: Producer, cli: Any,
                                                            tmp_path: Path) -> None:
    for args in (("v9.9.9",), ("v1.0.0", "--rev", "core@v9.9.9"), ("../v1.0.0",)):
        result = cli("fetch", producer.origin, *args, "-o", tmp_path / "x")
        assert result.code == 2, (args, result.err)
        assert len(result.err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()
        assert leftovers(tmp_path) == []
    # v1.1.0 did not exist yet at core@v1.0.0
    result = cli("fetch", producer.origin, "v1.1.0", "--rev", "core@v1.0.0", "-o", tmp_path / "x")
    assert result.code == 2 and "v1.1.0" in result.err


def test_releases_lists_records_tags_and_local_bundles(producer: Producer, cli: Any) -> None:
    remote = cli("releases", producer.origin, "--json")
    assert remote.code == 0, remote.err
    listing = json.loads(remote.out)
    names = [r["name"] for r in listing["releases"]]
    assert names == ["v1.1.0", "v1.0.0"]  # newest first
    for rel in listing["releases"]:
        record = json.loads(producer.record(rel["name"]).read_text())
        assert rel["tag"] == f"core@{rel['name']}"
        assert rel["tag_commit"] == producer.commits[rel["name"]]
        assert rel["root_digest"] == producer.digests[rel["name"]]
        assert rel["metrics"]["auc"] == record["metrics"]["auc"]["value"]
        assert rel["metrics"]["f1"] == record["metrics"]["f1"]["value"]
        assert rel["promoted"]["path"] == "models/model.onnx"
        assert rel["created"] == record["created"]
        assert rel["present"] is None  # a clone has no bundles checked out

    local = cli("releases", producer.root, "--json")
    assert local.code == 0, local.err
    assert [r["present"] for r in json.loads(local.out)["releases"]] == [True, True]

    text = cli("releases", producer.root)
    assert text.code == 0
    assert "core@v1.0.0" in text.out and producer.digests["v1.1.0"] in text.out


# --------------------------------------------------------------------------- (3) damaged remote


def _object(remote: Path, md5: str) -> Path:
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def _bundle_objects(producer: Producer, remote: Path, name: str) -> dict[str, Path]:
    """relpath -> the remote object holding that file of the bundle (from DVC's .dir listing)."""
    outs = dvc_file(producer.root / "dvc.lock")["stages"]["promote"]["outs"]
    md5 = next(o["md5"] for o in outs if o["path"] == "models/core")
    listing = json.loads(_object(remote, md5).read_text())
    prefix = f"{name}/"
    return {e["relpath"].removeprefix(prefix): _object(remote, e["md5"]) for e in listing
            if e["relpath"].startswith(prefix)}


def _rewrite(path: Path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


@pytest.fixture
def tampered(producer: Producer, e2e_tools: Tools, tmp_path: Path) -> dict[str, Any]:
    """A copy of the DVC remote with one byte of v1.0.0's model.onnx.data flipped, and a
    registry clone (git) whose DVC remote is that copy."""
    remote = tmp_path / "remote-tampered"
    shutil.copytree(producer.dvc_remote, remote)
    objects = _bundle_objects(producer, remote, "v1.0.0")
    victim = objects["models/model.onnx.data"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    _rewrite(victim, bytes(data))
    repo = tmp_path / "registry-tampered"
    e2e_tools.git("clone", "-q", producer.origin, repo, cwd=tmp_path)
    e2e_tools.dvc("remote", "modify", "store", "url", remote, cwd=repo)
    e2e_tools.git("commit", "-q", "-am", "point at the tampered remote", cwd=repo)
    return {"remote": remote, "repo": repo, "objects": objects, "data": bytes(data)}


def test_damaged_object_is_caught_by_relgate_verify_or_dvc_naming_the_file(
        producer: Producer, e2e_tools: Tools, tampered: dict[str, Any], tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    e2e_tools.git("clone", "-q", producer.origin, clone, cwd=tmp_path)
    e2e_tools.dvc("remote", "modify", "--local", "store", "url", tampered["remote"], cwd=clone)

    # DVC's default: no hash check on download, exit 0 ...
    e2e_tools.dvc("pull", "-q", "models/core/v1.0.0", cwd=clone)
    bundle = clone / "models" / "core" / "v1.0.0"
    # ... and relgate verify names the damaged file
    refused = e2e_tools.relgate("verify", bundle, cwd=clone, check=False)
    assert refused.returncode == 1
    assert "models/model.onnx.data" in refused.stdout and "sha256" in refused.stdout

    # with the remote's `verify` option DVC checks md5s itself and checks out nothing
    e2e_tools.dvc("remote", "modify", "--local", "store", "verify", "true", cwd=clone)
    shutil.rmtree(clone / ".dvc" / "cache")
    e2e_tools.run(["chmod", "-R", "u+w", bundle], clone)
    shutil.rmtree(bundle)
    pulled = e2e_tools.dvc("pull", "models/core/v1.0.0", cwd=clone, check=False)
    assert pulled.returncode != 0
    assert "models/core" in pulled.stderr + pulled.stdout  # DVC names the output, not the file
    assert not bundle.exists()


def test_fetch_from_a_tampered_remote_exits_1_names_the_file_and_leaves_nothing(
        tampered: dict[str, Any], cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "deps" / "core"
    result = cli("fetch", tampered["repo"], "v1.0.0", "-o", out)  # HEAD: the tampered remote
    assert result.code == 1, result.err
    assert "models/model.onnx.data" in result.out
    assert "nothing was written" in result.out
    assert not os.path.lexists(out)
    assert leftovers(out.parent) == []

    as_json = cli("fetch", tampered["repo"], "v1.0.0", "-o", out, "--json")
    assert as_json.code == 1
    report = json.loads(as_json.out)
    assert report["ok"] is False and report["placed"] is False
    assert [m["path"] for m in report["verify"]["hash_mismatch"]] == ["models/model.onnx.data"]
    assert not os.path.lexists(out)


def test_fetch_catches_a_consistent_rewrite_only_the_pin_can_see(
        tampered: dict[str, Any], cli: Any, tmp_path: Path) -> None:
    """Files and manifest rewritten together verify on their own; the digest in git does not."""
    objects = tampered["objects"]
    manifest = json.loads(objects["manifest.json"].read_text())
    entry = manifest["files"]["models/model.onnx.data"]
    entry["sha256"] = hashlib.sha256(tampered["data"]).hexdigest()
    lines = b"".join(f"{e['sha256']} {e['size']} {p}\n".encode()
                     for p, e in sorted(manifest["files"].items(), key=lambda kv: kv[0].encode()))
    manifest["root_digest"] = hashlib.sha256(lines).hexdigest()
    _rewrite(objects["manifest.json"], dumps(manifest))

    out = tmp_path / "core"
    result = cli("fetch", tampered["repo"], "v1.0.0", "-o", out, "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["verify"]["hash_mismatch"] == []  # consistent with its own manifest ...
    assert any("manifest.json" in r and "pinned" in r for r in report["reasons"])  # ... not git's
    assert not os.path.lexists(out) and leftovers(tmp_path) == []


def test_fetch_when_the_remote_lost_an_object_exits_1_naming_it(
        tampered: dict[str, Any], cli: Any, tmp_path: Path) -> None:
    tampered["objects"]["README.md"].unlink()
    out = tmp_path / "core"
    result = cli("fetch", tampered["repo"], "v1.0.0", "-o", out)
    assert result.code == 1
    assert "README.md" in result.err and "dvc get" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not os.path.lexists(out) and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- without root


def test_fetch_works_without_the_power_to_ignore_permissions(producer: Producer,
                                                             e2e_tools: Tools,
                                                             tmp_path: Path) -> None:
    """CI runners are not root: permission bits on the sealed download must not stop fetch.

    As root (this machine), drop CAP_DAC_OVERRIDE & co. with setpriv so read-only folders
    bind as they do for everyone else; as a normal user, just run it.
    """
    e2e_tools.run(_as_normal_user([sys.executable, "-m", "relgate", "fetch", producer.origin,
                                   "v1.1.0", "-o", tmp_path / "deps" / "core"]), tmp_path)
    assert tree_digests(tmp_path / "deps" / "core") == tree_digests(
        producer.root / "models" / "core" / "v1.1.0")
    assert leftovers(tmp_path / "deps") == []


def _as_normal_user(cmd: list[object]) -> list[object]:
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
    caps = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, "--bounding-set", caps, "--inh-caps", caps, *cmd]


def test_dvc_checkout_of_an_older_release_with_sealed_bundles(producer: Producer,
                                                              e2e_tools: Tools,
                                                              tmp_path: Path) -> None:
    """A release manager goes back to core@v1.0.0 in a workspace whose bundles are sealed
    as promote leaves them (a clone whose pulled bundles are sealed the same way, so the
    session's producer is not touched)."""
    from relgate.bundle import seal_tree

    work = tmp_path / "producer"
    e2e_tools.git("clone", "-q", producer.origin, work, cwd=tmp_path)
    e2e_tools.dvc("pull", "-q", cwd=work)
    newest = work / "models" / "core" / "v1.1.0"
    for name in ("v1.0.0", "v1.1.0"):
        seal_tree(work / "models" / "core" / name)
    e2e_tools.git("checkout", "-q", "core@v1.0.0", cwd=work)
    try:
        checkout = e2e_tools.run(_as_normal_user([*dvc_command(), "checkout"]), work,
                                 check=False)
        assert checkout.returncode == 0, checkout.stderr
        assert not newest.exists()
    finally:
        e2e_tools.run(["chmod", "-R", "u+w", work], tmp_path)
