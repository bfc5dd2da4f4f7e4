"""Crashes mid-write: a full disk or a file size limit, and a kill between publish and record.

EFBIG is produced for real with ``RLIMIT_FSIZE`` in a child process (``ulimit -f``) with
SIGXFSZ ignored, so the write system call fails mid-file exactly as it does on a full
disk (ENOSPC takes the same code paths: an OSError from write/fsync). The contract: exit
2 with one line naming the file, the previous file (if any) intact, no temp file left, no
partial bundle, and the next run without the limit succeeds.

SIGKILL at every step of a publication, two racing publishers and stale locks are in
tests/unit/test_bundle.py and tests/acceptance/test_promote.py (see SECURITY.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from relgate.bundle import iter_staging, verify_bundle
from relgate.hashing import sha256_file
from relgate.jsonio import read_json
from tests.adversarial.conftest import assert_clean_failure

LIMITED = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from relgate.cli import main
sys.exit(main(sys.argv[2:]))
"""


def relgate_limited(limit: int, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """relgate in a child whose files may not grow past *limit* bytes (writes fail: EFBIG)."""
    return subprocess.run([sys.executable, "-B", "-c", LIMITED, str(limit), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


WRITERS = {
    "validate --out": (["validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                        "--calibration", "analysis/calibration.json", "--out", "out/report.json"],
                       "out/report.json"),
    "calibrate --out": (["calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                         "--out", "out/calibration.json"], "out/calibration.json"),
    "evaluate --out": (["evaluate", "--model", "models/model.onnx", "--data", "data/test.npz",
                        "--out", "out/scores.npz"], "out/scores.npz"),
    "manifest DIR": (["manifest", "out"], "out/manifest.json"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_write_that_hits_the_file_size_limit_is_one_clean_error(registry: Path,
                                                                  writer: str) -> None:
    argv, target = WRITERS[writer]
    out = registry / "out"
    out.mkdir()
    old = b'{"old": "kept"}\n'
    (registry / target).write_bytes(old)
    if writer == "manifest DIR":
        (out / "weights.bin").write_bytes(os.urandom(100))
        (registry / target).unlink()
    before = listing(out)
    proc = relgate_limited(200, *argv, cwd=registry)
    line = assert_clean_failure(proc, (2,))
    assert "File too large" in line and Path(target).name in line, line
    assert listing(out) == before  # no temp file, nothing half-written
    if (registry / target).exists():
        assert (registry / target).read_bytes() == old


def test_promote_out_of_space_leaves_no_bundle_then_succeeds(registry: Path) -> None:
    proc = relgate_limited(4096, "promote", cwd=registry)
    line = assert_clean_failure(proc, (2,))
    assert "not published" in line and "File too large" in line, line
    core = registry / "models/core"
    assert listing(core) == []  # no bundle, no staging folder, no lock
    assert not (registry / "analysis/release_v1.0.0.json").exists()
    again = subprocess.run([sys.executable, "-m", "relgate", "promote"], cwd=registry,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert verify_bundle(core / "v1.0.0").ok
    assert listing(core) == ["v1.0.0"]


KILL_AT = r"""
import os, signal, sys
import relgate.bundle as bundle
where = sys.argv[1]
orig = bundle.publish_bundle
def publish(target, build, **kw):
    def step(name):
        if name == where:
            os.kill(os.getpid(), signal.SIGKILL)
    return orig(target, build, on_step=step, **kw)
bundle.publish_bundle = publish
from relgate.cli import main
sys.exit(main(["promote"]))
"""


@pytest.mark.parametrize("where", ["renamed", "unlocked"])
def test_a_promoter_killed_after_the_rename_leaves_a_release_the_next_run_pins(
        registry: Path, where: str) -> None:
    """Killed between publishing the bundle and writing analysis/release_<name>.json (the
    git-tracked pin): the next promote is a no-op for the bundle and restores the pin."""
    proc = subprocess.run([sys.executable, "-c", KILL_AT, where], cwd=registry,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    bundle = registry / "models/core/v1.0.0"
    mirror = registry / "analysis/release_v1.0.0.json"
    assert verify_bundle(bundle).ok and not mirror.exists()
    again = subprocess.run([sys.executable, "-m", "relgate", "promote"], cwd=registry,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "already published" in again.stdout
    record = read_json(mirror)
    root = record.pop("bundle")
    assert root == {"path": "models/core/v1.0.0",
                    "root_digest": verify_bundle(bundle).root_digest}
    # the mirror is the bundle's record plus the publication facts (time, git state, the
    # provenance attestation written beside it)
    record.pop("created")
    attestation = record.pop("attestation")
    assert sha256_file(registry / attestation["path"]) == attestation["sha256"]
    for fact in ("git_commit", "git_dirty", "dvc_lock_sha256", "environment"):
        record["provenance"].pop(fact)
    assert record == read_json(bundle / "release.json")
    assert verify_bundle(bundle, expected_root_digest=root["root_digest"]).ok
    assert list(iter_staging(bundle.parent, "v1.0.0")) == []


def test_a_lock_file_that_is_garbage_and_old_is_stale_not_a_wedge(registry: Path) -> None:
    """A lock holding bytes nobody can parse (a crash mid-write of the lock itself, or a
    hostile file) blocks only while fresh; once old it is removed with a note."""
    core = registry / "models/core"
    core.mkdir(parents=True)
    lock = core / ".v1.0.0.lock"
    lock.write_bytes(b"\x00\xff{garbage")
    os.utime(lock, (1, 1))
    proc = subprocess.run([sys.executable, "-m", "relgate", "promote", "--json"], cwd=registry,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["created"] is True
    assert not lock.exists()
    assert verify_bundle(core / "v1.0.0").ok


@pytest.mark.parametrize("points_to", ["/dev/zero", "outside-file", "dangling"])
def test_a_lock_planted_as_a_symlink_is_never_followed(tmp_path: Path, points_to: str) -> None:
    """A symlink at the lock path (someone with write access to models/core): publication
    waits, then refuses; the link's target is never opened, written or removed."""
    import time

    from relgate.bundle import publish_bundle
    from relgate.errors import PublishRefused

    core = tmp_path / "core"
    core.mkdir()
    outside = tmp_path / "outside-file"
    outside.write_bytes(b"precious\n")
    os.utime(outside, (1, 1))
    target = {"/dev/zero": "/dev/zero", "outside-file": str(outside),
              "dangling": str(tmp_path / "nowhere")}[points_to]
    (core / ".v1.lock").symlink_to(target)

    def build(staging: Path) -> None:
        (staging / "model.onnx").write_bytes(b"model")

    started = time.monotonic()
    with pytest.raises(PublishRefused, match="lock"):
        publish_bundle(core / "v1", build, lock_timeout=1)
    assert time.monotonic() - started < 30
    assert os.readlink(core / ".v1.lock") == target
    assert outside.read_bytes() == b"precious\n" and outside.stat().st_mtime == 1
    assert not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in core.iterdir()) == [".v1.lock"]  # no bundle, no staging
