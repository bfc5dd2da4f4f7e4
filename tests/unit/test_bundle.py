"""Bundle verification (adversarial cases) and atomic publication (crashes, races, locks)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relgate.bundle import (
    STEPS,
    PublishLock,
    VerifyResult,
    iter_staging,
    publish_bundle,
    rename_noreplace,
    verify_bundle,
)
from relgate.errors import InputError, JSONFormatError, PublishRefused, SchemaError
from relgate.hashing import CHUNK, copy_and_hash
from relgate.manifest import MANIFEST_NAME, FileDigest, compute_root_digest, write_manifest
from tests.support.timing import within

FILES = {
    "model.onnx": bytes(range(256)) * 40,
    "model.onnx.data": os.urandom(2 * CHUNK + 17),
    "README.md": b"# model card\n",
    "analysis/validation_report.json": b'{"passed": true}\n',
}




def fill(root: Path, files: dict[str, bytes] = FILES) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    fill(root)
    write_manifest(root)
    return root


def edit_manifest(root: Path, fn: Callable[[dict[str, Any]], None], *,
                  fix_root: bool = True) -> None:
    path = root / MANIFEST_NAME
    obj = json.loads(path.read_text())
    fn(obj)
    if fix_root:
        obj["root_digest"] = compute_root_digest(
            {p: FileDigest(**v) for p, v in obj["files"].items()})
    path.write_text(json.dumps(obj))


def named(result: VerifyResult, path: str) -> None:
    assert not result.ok
    reasons = result.reasons()
    assert any(r.startswith(path) or f"entry {path}" in r for r in reasons), reasons


# --------------------------------------------------------------------------- verify


def test_verifies_an_intact_bundle(bundle: Path) -> None:
    result = verify_bundle(bundle)
    assert result.ok and result.reasons() == []
    assert result.files == len(FILES) and result.bytes == sum(map(len, FILES.values()))
    assert result.root_digest == json.loads((bundle / MANIFEST_NAME).read_text())["root_digest"]
    json.dumps(result.to_dict())


@pytest.mark.parametrize("rel", sorted(FILES))
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_flipped_byte_in_any_file_is_named(bundle: Path, rel: str, where: str) -> None:
    p = bundle / rel
    data = bytearray(p.read_bytes())
    i = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[i] ^= 0x01
    p.write_bytes(bytes(data))
    result = verify_bundle(bundle)
    assert [m.path for m in result.hash_mismatch] == [rel]
    named(result, rel)


def test_added_removed_and_resized_files(bundle: Path) -> None:
    (bundle / "analysis" / "extra.txt").write_bytes(b"x")
    (bundle / "README.md").unlink()
    with open(bundle / "model.onnx", "ab") as fh:
        fh.write(b"!")
    result = verify_bundle(bundle)
    assert result.extra == ("analysis/extra.txt",)
    assert result.missing == ("README.md",)
    assert [(m.path, m.expected, m.actual) for m in result.size_mismatch] == [
        ("model.onnx", len(FILES["model.onnx"]), len(FILES["model.onnx"]) + 1)]
    for rel in ("analysis/extra.txt", "README.md", "model.onnx"):
        named(result, rel)


def test_a_symlink_replacing_a_file_is_not_followed(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "copy-of-readme"
    outside.write_bytes(FILES["README.md"])  # same bytes: following it would "verify"
    (bundle / "README.md").unlink()
    (bundle / "README.md").symlink_to(outside)
    result = verify_bundle(bundle)
    assert [(n.path, n.kind, n.listed) for n in result.not_regular] == [
        ("README.md", "symlink", True)]
    named(result, "README.md")


def test_a_symlinked_folder_is_not_entered(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside).mkdir()
    (outside / "validation_report.json").write_bytes(FILES["analysis/validation_report.json"])
    os.rename(bundle / "analysis", tmp_path / "moved-away")
    (bundle / "analysis").symlink_to(outside)
    result = verify_bundle(bundle)
    assert result.missing == ("analysis/validation_report.json",)
    assert [(n.path, n.kind) for n in result.not_regular] == [("analysis", "symlink")]


def test_an_added_symlink_to_dev_zero_listed_as_huge_is_never_opened(bundle: Path) -> None:
    (bundle / "zero.bin").symlink_to("/dev/zero")
    edit_manifest(bundle, lambda m: m["files"].update(
        {"zero.bin": {"size": 10**15, "sha256": "0" * 64}}))
    result = within(20, lambda: verify_bundle(bundle))
    assert [(n.path, n.kind, n.listed) for n in result.not_regular] == [
        ("zero.bin", "symlink", True)]


def test_a_fifo_does_not_hang_verification(bundle: Path) -> None:
    os.mkfifo(bundle / "pipe")
    edit_manifest(bundle, lambda m: m["files"].update({"pipe": {"size": 3, "sha256": "0" * 64}}))
    os.mkfifo(bundle / "analysis" / "unlisted-pipe")
    result = within(20, lambda: verify_bundle(bundle))
    assert {(n.path, n.kind, n.listed) for n in result.not_regular} == {
        ("pipe", "FIFO", True), ("analysis/unlisted-pipe", "FIFO", False)}


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_a_device_node_is_never_opened(bundle: Path) -> None:
    os.mknod(bundle / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # a /dev/zero twin
    edit_manifest(bundle, lambda m: m["files"].update(
        {"zero": {"size": 10**12, "sha256": "0" * 64}}))
    result = within(20, lambda: verify_bundle(bundle))
    assert [(n.path, n.kind) for n in result.not_regular] == [("zero", "character device")]


def test_a_hardlinked_file_is_reported(bundle: Path, tmp_path: Path) -> None:
    os.link(bundle / "model.onnx", tmp_path / "elsewhere.onnx")
    result = verify_bundle(bundle)
    assert [(h.path, h.links) for h in result.hardlinked] == [("model.onnx", 2)]
    assert result.hash_mismatch == ()
    named(result, "model.onnx")


def test_a_dotdot_entry_is_named_and_never_read(bundle: Path, tmp_path: Path) -> None:
    # If verification followed '../x' it would open this FIFO and hang.
    os.mkfifo(tmp_path / "x")
    edit_manifest(bundle, lambda m: m["files"].update({"../x": {"size": 1, "sha256": "0" * 64},
                                                       "/etc/hostname": {"size": 1,
                                                                         "sha256": "0" * 64}}))
    result = within(20, lambda: verify_bundle(bundle))
    assert {b.path for b in result.bad_entries} == {"../x", "/etc/hostname"}
    assert result.missing == () and result.not_regular == ()
    named(result, "../x")


@pytest.mark.parametrize(("a", "b"), [
    ("Model.onnx", "model.onnx"),
    (unicodedata.normalize("NFC", "modèle.onnx"), unicodedata.normalize("NFD", "modèle.onnx")),
])
def test_colliding_names_are_bad_entries(tmp_path: Path, a: str, b: str) -> None:
    root = tmp_path / "b"
    fill(root, {a: b"one", b: b"two"})
    (root / MANIFEST_NAME).write_bytes(b"{}")
    files = {a: {"size": 3, "sha256": hashlib.sha256(b"one").hexdigest()},
             b: {"size": 3, "sha256": hashlib.sha256(b"two").hexdigest()}}
    edit_manifest(root, lambda m: m.update(schema_version=1, kind="manifest", algorithm="sha256",
                                           files=files))
    result = verify_bundle(root)
    assert [e.path for e in result.bad_entries] == [max(a, b, key=lambda s: s.encode())]
    assert result.hash_mismatch == () and result.missing == ()
    assert not result.ok


def test_a_file_growing_while_it_is_hashed_is_a_mismatch(bundle: Path) -> None:
    grown: list[bool] = []

    def sink(n: int) -> None:  # called after each chunk is hashed: append behind the reader
        if not grown:
            grown.append(True)
            with open(bundle / "model.onnx.data", "ab") as fh:
                fh.write(b"more")

    result = verify_bundle(bundle, progress=sink, workers=1)
    assert grown
    [m] = result.size_mismatch
    assert m.path == "model.onnx.data" and "grew" in m.note
    named(result, "model.onnx.data")


def test_a_file_appended_to_continuously_is_a_mismatch(bundle: Path) -> None:
    stop = threading.Event()

    def writer() -> None:
        with open(bundle / "model.onnx.data", "ab") as fh:
            while not stop.is_set():
                fh.write(b"x" * 4096)
                fh.flush()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.05)
        result = verify_bundle(bundle)
    finally:
        stop.set()
        t.join()
    assert [m.path for m in result.size_mismatch] == ["model.onnx.data"]


def test_a_consistent_rewrite_is_caught_only_by_the_pinned_digest(bundle: Path) -> None:
    pinned = verify_bundle(bundle).root_digest
    (bundle / "model.onnx").write_bytes(b"evil weights")
    write_manifest(bundle)  # the attacker rewrites the manifest consistently
    assert verify_bundle(bundle).ok
    result = verify_bundle(bundle, expected_root_digest=pinned.upper())
    assert not result.ok
    assert any("differs from the pinned" in r for r in result.reasons())
    assert verify_bundle(bundle, expected_root_digest=result.root_digest).ok


def test_an_edited_root_digest_is_reported(bundle: Path) -> None:
    edit_manifest(bundle, lambda m: m.update(root_digest="0" * 64), fix_root=False)
    result = verify_bundle(bundle)
    assert any("does not match its entries" in r for r in result.reasons())


def test_entry_edited_without_fixing_root_is_reported_twice(bundle: Path) -> None:
    edit_manifest(bundle, lambda m: m["files"]["README.md"].update(sha256="f" * 64),
                  fix_root=False)
    result = verify_bundle(bundle)
    assert [m.path for m in result.hash_mismatch] == ["README.md"]
    assert len(result.digest_problems) == 1


@pytest.mark.parametrize(("damage", "error"), [
    (lambda m: m.unlink(), "no such file"),
    (lambda m: m.write_bytes(b'{"files": {}, "files": {}}'), "duplicate key"),
    (lambda m: m.write_bytes(b"[]"), "expected a JSON object"),
    (lambda m: m.write_bytes(b'{"schema_version": 1}'), "required"),
    (lambda m: (m.unlink(), m.symlink_to("/dev/zero")), "symlink"),
    (lambda m: (m.unlink(), os.mkfifo(m)), "FIFO"),
])
def test_an_unreadable_manifest_is_bad_input(bundle: Path, damage: Callable[[Path], Any],
                                             error: str) -> None:
    damage(bundle / MANIFEST_NAME)
    with pytest.raises((InputError, JSONFormatError, SchemaError), match=error) as info:
        within(20, lambda: verify_bundle(bundle))
    assert info.value.exit_code == 2


def test_a_bad_pinned_digest_is_bad_input(bundle: Path) -> None:
    with pytest.raises(InputError, match="not a sha256"):
        verify_bundle(bundle, expected_root_digest="abc")


def test_parallel_and_sequential_verification_agree(bundle: Path) -> None:
    (bundle / "README.md").write_bytes(b"# changed\n!!")
    a = verify_bundle(bundle, workers=1).to_dict()
    b = verify_bundle(bundle, workers=2).to_dict()
    assert a == b and not a["ok"]


# --------------------------------------------------------------------------- publish


def builder(files: dict[str, bytes]) -> Callable[[Path], None]:
    def build(staging: Path) -> None:
        fill(staging, files)
    return build


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != name)


def test_publish_creates_a_sealed_verified_bundle(tmp_path: Path) -> None:
    target = tmp_path / "models" / "core" / "v1"
    steps: list[str] = []
    out = publish_bundle(target, builder(FILES), on_step=steps.append)
    assert out.created and out.path == target
    assert steps == list(STEPS)
    result = verify_bundle(target)
    assert result.ok and result.root_digest == out.root_digest
    for dirpath, _dirnames, filenames in os.walk(target):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o755
        for f in filenames:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, f)).st_mode) == 0o444
    assert leftovers(target.parent, "v1") == []
    json.dumps(out.to_dict())


def test_identical_republish_is_a_no_op(tmp_path: Path) -> None:
    target = tmp_path / "v1"
    first = publish_bundle(target, builder(FILES))
    before = {p: p.stat().st_mtime_ns for p in target.rglob("*")}
    again = publish_bundle(target, builder(FILES))
    assert first.created and not again.created
    assert "already published, identical" in again.message
    assert again.root_digest == first.root_digest
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*")} == before
    assert leftovers(tmp_path, "v1") == []


def test_different_content_is_refused_and_the_bundle_is_untouched(tmp_path: Path) -> None:
    target = tmp_path / "v1"
    first = publish_bundle(target, builder(FILES))
    with pytest.raises(PublishRefused, match="different content") as info:
        publish_bundle(target, builder({**FILES, "README.md": b"# other\n", "extra.txt": b"x"}))
    assert info.value.exit_code == 1
    assert "README.md, extra.txt differ" in info.value.message  # the files, named
    assert verify_bundle(target, expected_root_digest=first.root_digest).ok
    assert leftovers(tmp_path, "v1") == []


@pytest.mark.parametrize("partial", ["empty", "no-manifest", "missing-file", "file", "symlink"])
def test_a_partial_target_is_refused_never_replaced(tmp_path: Path, partial: str) -> None:
    target = tmp_path / "v1"
    if partial == "file":
        target.write_bytes(b"not a folder")
    elif partial == "symlink":
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real")
    else:
        target.mkdir()
        if partial != "empty":
            fill(target)
        if partial == "missing-file":
            write_manifest(target)
            (target / "README.md").unlink()
    snapshot = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(PublishRefused, match="never replaced"):
        publish_bundle(target, builder(FILES))
    assert sorted(str(p) for p in tmp_path.rglob("*")) == snapshot


def test_a_failing_build_leaves_nothing(tmp_path: Path) -> None:
    def build(staging: Path) -> None:
        (staging / "half").write_bytes(b"x")
        raise InputError("the model is missing", hint="train it first")

    with pytest.raises(InputError, match="model is missing"):
        publish_bundle(tmp_path / "v1", build)
    assert list(tmp_path.iterdir()) == []


def test_a_build_that_plants_a_symlink_is_refused(tmp_path: Path) -> None:
    def build(staging: Path) -> None:
        fill(staging)
        (staging / "link").symlink_to("/etc/passwd")

    with pytest.raises(InputError, match="link: is a symlink"):
        publish_bundle(tmp_path / "v1", build)
    assert list(tmp_path.iterdir()) == []


def test_hash_while_copy_digests_are_used(tmp_path: Path) -> None:
    src = tmp_path / "src"
    fill(src)
    reads: list[str] = []

    def build(staging: Path) -> dict[str, FileDigest]:
        known = {}
        for rel in FILES:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            size, digest = copy_and_hash(src / rel, staging / rel)
            known[rel] = FileDigest(size=size, sha256=digest)
            reads.append(rel)
        return known

    out = publish_bundle(tmp_path / "core" / "v1", build)
    assert sorted(reads) == sorted(FILES)
    assert verify_bundle(tmp_path / "core" / "v1", expected_root_digest=out.root_digest).ok


def test_a_stale_lock_of_a_dead_process_is_removed_with_a_note(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / ".v1.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "hostname": os.uname().nodename,
                                "process_start": None, "boot_id": None}))
    out = publish_bundle(tmp_path / "v1", builder(FILES), lock_timeout=5)
    assert out.created
    assert any("stale lock" in n and str(dead.pid) in n for n in out.notes)
    assert not lock.exists()


def test_a_live_lock_is_waited_for_then_refused(tmp_path: Path) -> None:
    with PublishLock(tmp_path, "v1"):
        t0 = time.monotonic()
        with pytest.raises(PublishRefused, match=f"pid {os.getpid()} "):
            publish_bundle(tmp_path / "v1", builder(FILES), lock_timeout=0.5)
        assert time.monotonic() - t0 >= 0.5
    assert leftovers(tmp_path, "v1") == []  # our lock released, staging cleaned
    assert publish_bundle(tmp_path / "v1", builder(FILES), lock_timeout=0.5).created


def test_a_lock_from_another_host_is_not_broken(tmp_path: Path) -> None:
    (tmp_path / ".v1.lock").write_text(json.dumps({"pid": 1, "hostname": "elsewhere.invalid"}))
    with pytest.raises(PublishRefused, match=r"elsewhere\.invalid"):
        publish_bundle(tmp_path / "v1", builder(FILES), lock_timeout=0.2)
    assert (tmp_path / ".v1.lock").exists()


def test_an_empty_lock_is_stale_only_once_old(tmp_path: Path) -> None:
    lock = tmp_path / ".v1.lock"
    lock.write_bytes(b"")
    with pytest.raises(PublishRefused):
        publish_bundle(tmp_path / "v1", builder(FILES), lock_timeout=0.2)
    old = time.time() - 3600
    os.utime(lock, (old, old))
    out = publish_bundle(tmp_path / "v1", builder(FILES), lock_timeout=0.2)
    assert out.created and any("unreadable lock" in n for n in out.notes)


def test_stale_staging_of_dead_processes_is_cleaned_live_ones_kept(tmp_path: Path) -> None:
    from relgate.bundle import _host_tag

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".relgate-staging-v1.{_host_tag()}.{dead.pid}.00000000"
    live = tmp_path / f".relgate-staging-v1.{_host_tag()}.{os.getpid()}.11111111"
    for d in (stale, live):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "f").write_bytes(b"x")
        os.chmod(d / "sub" / "f", 0o444)
        os.chmod(d / "sub", 0o555)
    out = publish_bundle(tmp_path / "v1", builder(FILES))
    assert not stale.exists() and live.exists()
    assert any(str(dead.pid) in n for n in out.notes)


def test_rename_noreplace_refuses_an_existing_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    with pytest.raises(FileExistsError):
        rename_noreplace(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "src").is_dir()
    rename_noreplace(tmp_path / "src", tmp_path / "new")
    assert (tmp_path / "new").is_dir()


# --------------------------------------------------------------------------- crashes and races

CHILD = r"""
import json, os, signal, sys, time
from pathlib import Path
from relgate.bundle import publish_bundle
from relgate.errors import RelgateError
from relgate.hashing import copy_and_hash
from relgate.manifest import FileDigest

src, target, kill_at, barrier = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def build(staging):
    known = {}
    for i, f in enumerate(sorted(p for p in src.rglob("*") if p.is_file())):
        rel = f.relative_to(src).as_posix()
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        if kill_at == "during-copy" and i == 1:
            data = f.read_bytes()
            with open(staging / rel, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
            die()
        size, digest = copy_and_hash(f, staging / rel)
        known[rel] = FileDigest(size=size, sha256=digest)
    return known

def on_step(name):
    if name == kill_at:
        die()
    if barrier != "-" and name == "synced":
        Path(barrier, str(os.getpid())).touch()
        deadline = time.monotonic() + 30
        while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)

try:
    out = publish_bundle(target, build, on_step=on_step, lock_timeout=60)
except RelgateError as exc:
    print(json.dumps({"refused": exc.one_line(), "code": exc.exit_code}))
    sys.exit(exc.exit_code)
print(json.dumps(out.to_dict()))
"""


def spawn(src: Path, target: Path, kill_at: str = "-", barrier: str = "-") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(target), kill_at, barrier],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("kill_at", ["during-copy", *STEPS])
def test_sigkill_at_any_step_leaves_nothing_or_a_complete_bundle(tmp_path: Path,
                                                                 kill_at: str) -> None:
    src = tmp_path / "src"
    fill(src)
    target = tmp_path / "core" / "v1"
    proc = spawn(src, target, kill_at)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    renamed = kill_at in ("renamed", "unlocked")
    if renamed:
        assert verify_bundle(target).ok
    else:
        assert not os.path.lexists(target)
    # The next publication succeeds and cleans up after the dead one.
    out = publish_bundle(target, builder(FILES), lock_timeout=5)
    assert out.created is not renamed
    lock_was_held = kill_at in ("locked", "target-checked", "renamed")
    assert any("stale lock" in n for n in out.notes) is lock_was_held
    assert verify_bundle(target, expected_root_digest=out.root_digest).ok
    assert leftovers(target.parent, "v1") == []


@pytest.mark.parametrize("same", [True, False], ids=["same-content", "different-content"])
def test_two_publishers_started_together_exactly_one_publishes(tmp_path: Path, same: bool) -> None:
    srcs = [tmp_path / "src-a", tmp_path / "src-b"]
    fill(srcs[0])
    fill(srcs[1], FILES if same else {**FILES, "README.md": b"# b\n"})
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    target = tmp_path / "core" / "v1"
    procs = [spawn(s, target, barrier=str(barrier)) for s in srcs]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert len(os.listdir(barrier)) == 2  # both reached the race
    created = [r for r in results if r.get("created") is True]
    assert len(created) == 1, results
    winner = created[0]
    loser = next(r for r in results if r is not winner)
    if same:
        assert codes == [0, 0] and loser["created"] is False
        assert "already published, identical" in loser["message"]
    else:
        assert sorted(codes) == [0, 1] and "different content" in loser["refused"]
    assert verify_bundle(target, expected_root_digest=winner["root_digest"]).ok
    assert list(iter_staging(target.parent, "v1")) == []
    assert leftovers(target.parent, "v1") == []
