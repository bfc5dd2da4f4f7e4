"""Attacks on ``relgate fetch`` (issue 13): no pin, a shared DVC site cache, killed fetches.

A small registry with real git and real DVC (a local-folder remote) released v1.0.0: its
bundle is tracked with ``dvc add models/core``, the commit is tagged ``core@v1.0.0`` the
way publish.yml tags (annotated, with a ``relgate-root-digest:`` line), the objects are
pushed, and then the release record is lost (``git rm``) on main. Consumers fetch from the
bare ``origin``, or from clones whose DVC remote is a copy the test rewrites: the hostile
answer.

1. Without a record, fetch verifies against the tag's digest, so a remote that rewrote
   files and manifest consistently is refused; with neither a record nor a tag digest it
   refuses before downloading (it used to accept the bundle's own manifest).
2. DVC's site cache is private to each fetch: a hostile answer (a rewritten ``.dir``
   listing) cannot make a later fetch from the honest remote fail.
3. A fetch killed with SIGKILL leaves its temp folders (a git clone each); the next fetch
   into the same folder removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from relgate.jsonio import dumps
from tests.adversarial.conftest import assert_clean_failure
from tests.e2e.conftest import Tools, tool_env
from tests.support.registry import make_registry, prepare, relgate

RELEASE = "v1.0.0"
TAG = f"core@{RELEASE}"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".relgate-fetch-"))


@pytest.fixture(scope="module")
def producer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Release v1.0.0 (tagged with its digest, pushed), then lose its record on main."""
    base = tmp_path_factory.mktemp("fetch-attacks")
    tools = Tools(env=tool_env(base / "home"))
    root, origin, remote = base / "producer", base / "origin.git", base / "dvc-remote"
    root.mkdir()
    tools.git("init", "-q", "--bare", origin, cwd=base)
    tools.git("init", "-q", cwd=root)
    tools.dvc("init", "-q", cwd=root)
    tools.dvc("remote", "add", "-d", "store", remote, cwd=root)
    make_registry(root)
    prepare(root)
    assert relgate(root, "promote") == 0
    digest = json.loads((root / "analysis" / f"release_{RELEASE}.json").read_text())[
        "bundle"]["root_digest"]
    tools.dvc("add", "-q", "models/core", cwd=root)
    tools.git("add", "-A", cwd=root)
    tools.git("commit", "-q", "-m", f"release {RELEASE}", cwd=root)
    release_commit = tools.git("rev-parse", "HEAD", cwd=root).stdout.strip()
    # as publish.yml's tag job writes it
    tools.git("tag", "-a", TAG, "-m", f"Release {RELEASE}", "-m",
              f"relgate-root-digest: {digest}", cwd=root)
    tools.dvc("push", "-q", cwd=root)
    tools.git("rm", "-q", f"analysis/release_{RELEASE}.json", cwd=root)
    tools.git("commit", "-q", "-m", "the release record is lost", cwd=root)
    tools.git("remote", "add", "origin", origin, cwd=root)
    tools.git("push", "-q", "origin", "HEAD:main", "--tags", cwd=root)
    listing = json.loads(yaml_out(root / "models" / "core.dvc", remote).read_text())
    objects = {e["relpath"].removeprefix(f"{RELEASE}/"): _object(remote, e["md5"])
               for e in listing if e["relpath"].startswith(f"{RELEASE}/")}
    return {"tools": tools, "root": root, "origin": origin, "remote": remote, "digest": digest,
            "commit": release_commit, "objects": objects,
            "dir_object": yaml_out(root / "models" / "core.dvc", remote)}


def _object(remote: Path, md5: str) -> Path:
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def yaml_out(dvc_file: Path, remote: Path) -> Path:
    """The remote object holding the ``.dir`` listing a .dvc file names."""
    import yaml

    md5 = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
    return _object(remote, md5)


def served_by(producer: dict[str, Any], tmp_path: Path, name: str = "served",
              at: str | None = None) -> dict[str, Path]:
    """A clone of the registry (at commit *at*, default main) whose DVC remote is a private
    copy of the real one."""
    tools: Tools = producer["tools"]
    served = tmp_path / f"{name}-remote"
    shutil.copytree(producer["remote"], served)
    repo = tmp_path / f"{name}-registry"
    tools.git("clone", "-q", producer["origin"], repo, cwd=tmp_path)
    if at is not None:
        tools.git("checkout", "-q", "-B", "main", at, cwd=repo)
    tools.dvc("remote", "modify", "store", "url", served, cwd=repo)
    tools.git("commit", "-q", "-am", "serve from a copy of the remote", cwd=repo)
    return {"remote": served, "repo": repo}


def in_copy(producer: dict[str, Any], copy: Path, original: Path) -> Path:
    return copy / original.relative_to(producer["remote"])


def rewrite(path: Path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


# --------------------------------------------------------------------------- 1. no record


def test_without_a_record_fetch_pins_the_tag_digest(producer: dict[str, Any], cli: Any,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "deps" / "core"
    result = cli("fetch", producer["origin"], RELEASE, "-o", out, "--json")  # HEAD: no record
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["pin"]["root_digest"] == producer["digest"] == report["root_digest"]
    assert report["pin"]["source"] == f"annotated tag {TAG}"
    assert leftovers(out.parent) == []


def test_a_consistent_rewrite_without_a_record_is_refused(producer: dict[str, Any], cli: Any,
                                                          tmp_path: Path) -> None:
    """README.md says "approved for production" and the manifest is rebuilt to match: it
    verifies against itself; only the tag's digest can see it."""
    hostile = served_by(producer, tmp_path, "hostile")
    objects = {k: in_copy(producer, hostile["remote"], v) for k, v in producer["objects"].items()}
    readme = objects["README.md"].read_bytes() + b"\nApproved for production.\n"
    rewrite(objects["README.md"], readme)
    manifest = json.loads(objects["manifest.json"].read_text())
    manifest["files"]["README.md"] = {"size": len(readme),
                                      "sha256": hashlib.sha256(readme).hexdigest()}
    lines = b"".join(f"{e['sha256']} {e['size']} {p}\n".encode()
                     for p, e in sorted(manifest["files"].items(), key=lambda kv: kv[0].encode()))
    manifest["root_digest"] = hashlib.sha256(lines).hexdigest()
    rewrite(objects["manifest.json"], dumps(manifest))

    out = tmp_path / "core"
    result = cli("fetch", hostile["repo"], RELEASE, "-o", out, "--json")
    assert result.code == 1, result.out + result.err
    report = json.loads(result.out)
    assert report["verify"]["hash_mismatch"] == []  # consistent with its own manifest ...
    assert report["pin"]["source"] == f"annotated tag {TAG}"
    assert any("pinned" in r for r in report["reasons"])  # ... not with the tag's digest
    assert not os.path.lexists(out) and leftovers(tmp_path) == []


def _retag(repo: Path, tools: Tools, commit: str, *options: str) -> None:
    tools.git("tag", "-d", TAG, cwd=repo)
    tools.git("tag", *options, TAG, commit, cwd=repo)


@pytest.mark.parametrize(("tag", "says"), [
    ("lightweight", f"tag {TAG} records no root digest"),
    ("annotated-without-digest", f"tag {TAG} records no root digest"),
    ("no-tag", f"no tag {TAG}"),
])
def test_no_record_and_no_tag_digest_is_refused_before_downloading(
        producer: dict[str, Any], cli: Any, tmp_path: Path, tag: str, says: str) -> None:
    """The bundle exists on the remote, inside the models/core output: but nothing in git pins
    it at HEAD, so relgate says so and downloads nothing (it used to verify the download
    against its own manifest and exit 0)."""
    tools: Tools = producer["tools"]
    repo = tmp_path / "registry"
    tools.git("clone", "-q", producer["origin"], repo, cwd=tmp_path)
    if tag == "lightweight":
        _retag(repo, tools, producer["commit"])
    elif tag == "annotated-without-digest":
        _retag(repo, tools, producer["commit"], "-a", "-m", "Release v1.0.0")
    else:
        tools.git("tag", "-d", TAG, cwd=repo)
    out = tmp_path / "core"
    result = cli("fetch", repo, RELEASE, "-o", out)
    line = assert_clean_failure(result, (2,))
    assert f"no release '{RELEASE}' at HEAD: no analysis/release_{RELEASE}.json, {says}" in line
    assert not os.path.lexists(out) and leftovers(tmp_path) == []


def test_a_tag_that_contradicts_the_record_is_refused(producer: dict[str, Any], cli: Any,
                                                      tmp_path: Path) -> None:
    tools: Tools = producer["tools"]
    repo = tmp_path / "registry"
    tools.git("clone", "-q", producer["origin"], repo, cwd=tmp_path)
    _retag(repo, tools, producer["commit"], "-a", "-m", "Release v1.0.0", "-m",
           f"relgate-root-digest: {'0' * 64}")
    out = tmp_path / "core"
    result = cli("fetch", repo, RELEASE, "--rev", producer["commit"], "-o", out)  # has a record
    line = assert_clean_failure(result, (1,))
    assert "pins root digest" in line and "0" * 64 in line
    _retag(repo, tools, producer["commit"], "-a", "-m", "Release v1.0.0", "-m",
           f"relgate-root-digest: {'0' * 64}", "-m", f"relgate-root-digest: {'1' * 64}")
    result = cli("fetch", repo, RELEASE, "-o", out)
    assert "2 different root digests" in assert_clean_failure(result, (2,))
    assert not os.path.lexists(out) and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- 2. site cache


def test_a_hostile_answer_cannot_poison_later_fetches(producer: dict[str, Any], cli: Any,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's DVC_SITE_CACHE_DIR stands for DVC's shared /var/tmp/dvc: a remote that once
    answered with a rewritten .dir listing must not decide what the honest remote serves."""
    shared = tmp_path / "shared-site-cache"
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(shared))
    served = served_by(producer, tmp_path, at=producer["commit"])  # with its release record
    honest = tmp_path / "honest-copy"
    shutil.copytree(served["remote"], honest)
    rewrite(in_copy(producer, served["remote"], producer["dir_object"]), b"[]")

    hostile = cli("fetch", served["repo"], RELEASE, "-o", tmp_path / "a")
    assert_clean_failure(hostile, (1,))
    assert "dvc get" in hostile.err
    shutil.rmtree(served["remote"])
    shutil.copytree(honest, served["remote"])  # the remote answers honestly again
    again = cli("fetch", served["repo"], RELEASE, "-o", tmp_path / "b", "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["root_digest"] == producer["digest"]
    assert not shared.exists()  # DVC never used the shared site cache
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- 3. killed fetches


def test_fetches_killed_with_sigkill_are_cleaned_by_the_next(producer: dict[str, Any],
                                                             tmp_path: Path) -> None:
    parent = tmp_path / "deps"
    parent.mkdir()
    cmd = [sys.executable, "-m", "relgate", "fetch", str(producer["origin"]), RELEASE]
    rng = random.Random(13)
    landed = 0
    for attempt in range(4):
        proc = subprocess.Popen([*cmd, "-o", str(parent / f"core{attempt}")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        mine = f".{proc.pid}."
        deadline = time.monotonic() + 60
        while (not any(mine in name for name in leftovers(parent)) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.8))  # somewhere in the clone or the download
        with contextlib.suppress(ProcessLookupError):  # (unless it already finished)
            os.killpg(proc.pid, signal.SIGKILL)  # the fetch and its git/dvc children
        proc.wait(timeout=30)
        landed += any(mine in name for name in leftovers(parent))
        for stray in parent.glob("core*"):  # a kill after the rename leaves a verified bundle
            subprocess.run(["chmod", "-R", "u+w", str(stray)], check=True)
            shutil.rmtree(stray)
    assert landed > 0, "no kill landed while a fetch had its temp folders"
    before = leftovers(parent)
    done = subprocess.run([*cmd, "-o", str(parent / "core"), "--json"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    notes = json.loads(done.stdout)["notes"]
    assert len([n for n in notes if "which is gone" in n]) == len(before), (before, notes)
    assert leftovers(parent) == []
    assert sorted(p.name for p in parent.iterdir()) == ["core"]
