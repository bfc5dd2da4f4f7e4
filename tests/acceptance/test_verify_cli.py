"""`relgate manifest` and `relgate verify` on real folders, through the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_relgate

FILES = {
    "model.onnx": b"\x08\x07" * 3000,
    "model.onnx.data": os.urandom(1_500_000),
    "calibration.json": b'{"temperature": 1.5}\n',
    "release.json": b'{"release": "v1"}\n',
    "README.md": "# Modèle v1\n".encode(),
    "variants/readout.onnx": b"\x01" * 999,
}


def openssl_sha256(path: Path) -> str:
    out = subprocess.run(["openssl", "dgst", "-sha256", "-r", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[0]


@pytest.fixture
def bundle(tmp_path: Path, cli: Any) -> Path:
    root = tmp_path / "core" / "v1"
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    res = cli("manifest", root)
    assert res.code == 0, res.err
    return root


def edit_manifest(root: Path, fn: Any) -> None:
    path = root / "manifest.json"
    obj = json.loads(path.read_text())
    fn(obj["files"])
    lines = "".join(f"{v['sha256']} {v['size']} {p}\n"
                    for p, v in sorted(obj["files"].items(), key=lambda kv: kv[0].encode()))
    obj["root_digest"] = hashlib.sha256(lines.encode("utf-8", "surrogatepass")).hexdigest()
    path.write_text(json.dumps(obj))


def no_trace(err: str) -> None:
    assert "Traceback" not in err and "internal error" not in err


def test_manifest_then_verify(bundle: Path, cli: Any) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    for rel in FILES:  # openssl is the oracle
        assert manifest["files"][rel] == {"size": len(FILES[rel]),
                                          "sha256": openssl_sha256(bundle / rel)}
    assert cli("schema", "check", bundle / "manifest.json", "--kind", "manifest").code == 0
    res = cli("verify", bundle)
    assert res.code == 0 and "verified" in res.out
    assert manifest["root_digest"] in res.out
    res = cli("verify", bundle, "--json")
    data = json.loads(res.out)
    assert res.code == 0 and data["ok"] is True and data["reasons"] == []
    assert data["root_digest"] == manifest["root_digest"]


def test_manifest_json_summary(tmp_path: Path, cli: Any) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    res = cli("manifest", tmp_path, "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["files"] == 1 and data["bytes"] == 3
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert data["root_digest"] == written["root_digest"]


def test_manifest_refuses_a_symlink_naming_it(tmp_path: Path, cli: Any) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    res = cli("manifest", tmp_path)
    assert res.code == 2 and "link: is a symlink" in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "manifest.json").exists()
    no_trace(res.err)


def test_manifest_of_a_missing_folder(tmp_path: Path, cli: Any) -> None:
    res = cli("manifest", tmp_path / "absent")
    assert res.code == 2 and "no such folder" in res.err


@pytest.mark.parametrize("rel", sorted(FILES))
def test_a_flipped_byte_names_the_file(bundle: Path, cli: Any, rel: str) -> None:
    p = bundle / rel
    data = bytearray(p.read_bytes())
    data[len(data) // 3] ^= 0x80
    p.write_bytes(bytes(data))
    res = cli("verify", bundle)
    assert res.code == 1 and "NOT verified" in res.out
    assert f"- {rel}: sha256" in res.out
    data_json = json.loads(cli("verify", bundle, "--json").out)
    assert [m["path"] for m in data_json["hash_mismatch"]] == [rel]


def test_added_removed_and_symlinked_files_are_each_named(bundle: Path, cli: Any,
                                                          tmp_path: Path) -> None:
    (bundle / "variants" / "new.onnx").write_bytes(b"added")
    (bundle / "calibration.json").unlink()
    shutil.copy(bundle / "README.md", tmp_path / "readme-copy")
    (bundle / "README.md").unlink()
    (bundle / "README.md").symlink_to(tmp_path / "readme-copy")
    res = cli("verify", bundle)
    assert res.code == 1
    assert "variants/new.onnx: in the bundle but not listed" in res.out
    assert "calibration.json: listed in the manifest but missing" in res.out
    assert "README.md: is a symlink" in res.out
    assert "3 problems" in res.out


def test_a_dotdot_entry_is_named(bundle: Path, cli: Any) -> None:
    edit_manifest(bundle, lambda f: f.update({"../x": {"size": 1, "sha256": "0" * 64}}))
    res = cli("verify", bundle)
    assert res.code == 1 and "manifest entry ../x: has a '..' component" in res.out


def test_a_duplicate_key_in_the_manifest_is_bad_input(bundle: Path, cli: Any) -> None:
    text = (bundle / "manifest.json").read_text()
    entry = json.dumps({"size": 1, "sha256": "0" * 64})
    (bundle / "manifest.json").write_text(
        text.replace('"files": {', f'"files": {{"model.onnx": {entry},', 1))
    res = cli("verify", bundle)
    assert res.code == 2 and "duplicate key 'model.onnx'" in res.err
    assert len(res.err.strip().splitlines()) == 1
    no_trace(res.err)


def test_a_missing_manifest_is_bad_input(bundle: Path, cli: Any) -> None:
    (bundle / "manifest.json").unlink()
    res = cli("verify", bundle)
    assert res.code == 2 and "manifest.json: no such file" in res.err


def test_fifo_and_dev_zero_link_do_not_hang_the_cli(bundle: Path) -> None:
    os.mkfifo(bundle / "pipe")
    (bundle / "zero.bin").symlink_to("/dev/zero")
    edit_manifest(bundle, lambda f: f.update({"pipe": {"size": 5, "sha256": "0" * 64},
                                              "zero.bin": {"size": 10**12, "sha256": "0" * 64}}))
    proc = run_relgate("verify", bundle, "--json", timeout=60)
    assert proc.returncode == 1, proc.stderr
    kinds = {n["path"]: n["kind"] for n in json.loads(proc.stdout)["not_regular"]}
    assert kinds == {"pipe": "FIFO", "zero.bin": "symlink"}


def test_hardlink_and_collisions_are_reported(tmp_path: Path, cli: Any) -> None:
    root = tmp_path / "b"
    root.mkdir()
    (root / "a.txt").write_bytes(b"a")
    assert cli("manifest", root).code == 0
    os.link(root / "a.txt", tmp_path / "outside")
    (root / "A.TXT").write_bytes(b"a")
    edit_manifest(root, lambda f: f.update({"A.TXT": f["a.txt"]}))
    res = cli("verify", root)
    assert res.code == 1
    assert "a.txt: is hardlinked (2 links)" in res.out
    assert "manifest entry a.txt: differs from A.TXT only by case" in res.out


def test_a_consistent_rewrite_is_caught_by_root_digest(bundle: Path, cli: Any) -> None:
    pinned = json.loads((bundle / "manifest.json").read_text())["root_digest"]
    (bundle / "model.onnx").write_bytes(b"tampered")
    assert cli("manifest", bundle).code == 0
    assert cli("verify", bundle).code == 0  # consistent: only the pin can tell
    res = cli("verify", bundle, "--root-digest", pinned)
    assert res.code == 1 and "differs from the pinned" in res.out
    res = cli("verify", bundle, "--root-digest", "not-hex")
    assert res.code == 2 and "not a sha256" in res.err


def test_verify_of_a_moved_bundle(bundle: Path, cli: Any, tmp_path: Path) -> None:
    moved = tmp_path / "consumer" / "models" / "v1"
    moved.parent.mkdir(parents=True)
    shutil.move(bundle, moved)
    assert cli("verify", moved).code == 0


def test_verify_of_a_published_read_only_bundle_in_a_child_process(tmp_path: Path) -> None:
    from relgate.bundle import publish_bundle

    def build(staging: Path) -> None:
        for rel, data in FILES.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)

    out = publish_bundle(tmp_path / "core" / "v1", build)
    proc = run_relgate("verify", out.path, "--root-digest", out.root_digest, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.root_digest in proc.stdout
