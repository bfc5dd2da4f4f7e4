"""Sidecar files (``release.files``, issue 15.2): shipped in the bundle as bytes, hashed, listed in
the manifest, the release record and the card; confined to the registry like artifacts.

Real registries (tests/support/registry.py: real calibrate and validate, real onnxruntime),
real promote in-process; digests are checked with hashlib, not with relgate.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from relgate.bundle import verify_bundle
from relgate.jsonio import read_json
from tests.support.registry import make_registry, prepare, write_params

BUNDLE = Path("models/core/v1.0.0")
#: not ONNX, not a pickle anyone should load: bytes relgate must ship without parsing
DEPLOY_PT = b"PK\x03\x04 torchscript archive stand-in \x00\xff" * 64
CONFIG = b'{"threshold": 0.42, "window": 256}\n'


def with_files(root: Path, entries: list[dict[str, str]]) -> None:
    """Rewrite params.yaml with *entries* as ``release.files``."""
    write_params(root)
    lines = "  files:\n" + "".join(
        f"  - path: {json.dumps(e['path'])}\n" + (
            f"    description: {json.dumps(e['description'])}\n" if "description" in e else "")
        for e in entries)
    with open(root / "params.yaml", "a", encoding="utf-8") as fh:
        fh.write(lines)


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One registry with genuine evidence (calibrate + validate run once for the module)."""
    root = make_registry(tmp_path_factory.mktemp("sidecars") / "reg")
    (root / "models" / "deploy.pt").write_bytes(DEPLOY_PT)
    (root / "config.json").write_bytes(CONFIG)
    prepare(root)
    return root


@pytest.fixture
def registry(evidence: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the evidence registry, as the current folder."""
    import shutil

    root = tmp_path / "reg"
    shutil.copytree(evidence, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def nothing_under_core(root: Path) -> bool:
    core = root / "models" / "core"
    return not core.exists() or not any(core.iterdir())


def test_sidecars_are_shipped_hashed_listed_and_never_parsed(registry: Path, cli: Any) -> None:
    with_files(registry, [{"path": "models/deploy.pt", "description": "TorchScript deploy model"},
                          {"path": "config.json", "description": "serving config"}])
    result = cli("promote")
    assert result.code == 0, result.err
    bundle = registry / BUNDLE
    assert (bundle / "models" / "deploy.pt").read_bytes() == DEPLOY_PT
    assert (bundle / "config.json").read_bytes() == CONFIG
    manifest = read_json(bundle / "manifest.json")
    listed = {path: f["sha256"] for path, f in manifest["files"].items()}
    assert listed["models/deploy.pt"] == sha(DEPLOY_PT) and listed["config.json"] == sha(CONFIG)
    record = read_json(bundle / "release.json")
    files = [a for a in record["artifacts"] if a["role"] == "file"]
    assert [(a["path"], a["sha256"], a["size"], a["description"]) for a in files] == [
        ("models/deploy.pt", sha(DEPLOY_PT), len(DEPLOY_PT), "TorchScript deploy model"),
        ("config.json", sha(CONFIG), len(CONFIG), "serving config")]
    assert all("contract" not in a for a in files)  # bytes, not a model
    card = (bundle / "README.md").read_text()
    assert f"| `models/deploy.pt` | file | `{sha(DEPLOY_PT)[:16]}…` | {len(DEPLOY_PT)} |" in card
    assert "| `config.json` | file |" in card and "sidecars" in card
    assert verify_bundle(bundle).ok
    # relgate verify needs no change: sidecars are ordinary manifest entries, tampering is seen
    assert cli("verify", bundle).code == 0
    os.chmod(bundle / "config.json", 0o644)
    os.chmod(bundle, 0o755)
    (bundle / "config.json").write_bytes(b'{"threshold": 0.1}\n')
    bad = cli("verify", bundle)
    assert bad.code == 1 and "config.json" in bad.out + bad.err


def test_promoting_again_with_the_same_sidecars_is_a_noop(registry: Path, cli: Any) -> None:
    with_files(registry, [{"path": "config.json"}])
    assert cli("promote").code == 0
    again = cli("promote")
    assert again.code == 0, again.err
    assert "already published with identical content" in again.out


def test_a_sidecar_changed_after_the_first_publication_is_refused(registry: Path,
                                                                  cli: Any) -> None:
    with_files(registry, [{"path": "config.json"}])
    assert cli("promote").code == 0
    before = (registry / BUNDLE / "manifest.json").read_bytes()
    (registry / "config.json").write_bytes(b'{"threshold": 0.9}\n')
    result = cli("promote")
    assert result.code == 1, result.err
    assert "already published" in result.err and "config.json" in result.err
    assert (registry / BUNDLE / "manifest.json").read_bytes() == before
    assert (registry / BUNDLE / "config.json").read_bytes() == CONFIG


def _outside(root: Path) -> str:
    (root.parent / "secret.txt").write_text("outside the registry\n")
    return "../secret.txt"


def _absolute(root: Path) -> str:
    (root.parent / "secret.txt").write_text("outside the registry\n")
    return str(root.parent / "secret.txt")


def _symlink_in(root: Path) -> str:
    (root / "link.json").symlink_to(root / "config.json")
    return "link.json"


def _symlink_out(root: Path) -> str:
    (root.parent / "secret.txt").write_text("outside the registry\n")
    (root / "link.txt").symlink_to(root.parent / "secret.txt")
    return "link.txt"


def _symlinked_folder(root: Path) -> str:
    (root.parent / "elsewhere").mkdir()
    (root.parent / "elsewhere" / "x.bin").write_bytes(b"x")
    (root / "side").symlink_to(root.parent / "elsewhere")
    return "side/x.bin"


def _hard_link(root: Path) -> str:
    (root.parent / "secret.txt").write_text("outside the registry\n")
    os.link(root.parent / "secret.txt", root / "linked.txt")
    return "linked.txt"


def _folder(root: Path) -> str:
    (root / "somedir").mkdir()
    return "somedir"


def _fifo(root: Path) -> str:
    os.mkfifo(root / "pipe")
    return "pipe"


def _missing(root: Path) -> str:
    return "not-there.json"


def _named(name: str) -> Any:
    def make(root: Path) -> str:
        target = root / name
        if not target.exists() and not target.parent.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"a file of the registry\n")
        return name
    make.__name__ = f"clash with {name}"
    return make


ATTACKS = {
    # refused first by params.schema.json (a relative POSIX path), then by promote itself
    "outside ../": (_outside, "relative POSIX path"),
    "absolute": (_absolute, "relative POSIX path"),
    "symlink inside": (_symlink_in, "symlink"),
    "symlink out": (_symlink_out, "symlink"),
    "through a symlinked folder": (_symlinked_folder, "symlink"),
    "hard link": (_hard_link, "hard-linked"),
    "folder": (_folder, "not a regular file"),
    "fifo": (_fifo, "not a regular file"),
    "missing": (_missing, "does not exist"),
    **{f"clash {n}": (_named(n), "clashes with") for n in (
        "release.json", "manifest.json", "README.md", "readme.md", "calibration.json",
        "validation_report.json", "models/model.onnx", "models/readout.onnx", "models",
        "models/model.onnx/x")},
    "relgate's staging folder": (_named(".relgate-evidence/test.npz"), "private staging"),
    "clash with an artifact's data file": (_named("models/model.onnx.data"), "clashes with"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_hostile_sidecar_is_bad_input_and_nothing_is_written(registry: Path, cli: Any,
                                                               attack: str) -> None:
    make, why = ATTACKS[attack]
    rel = make(registry)
    with_files(registry, [{"path": "config.json"}, {"path": rel}])
    result = cli("promote")
    assert result.code == 2, (result.out, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines and why in lines[0], result.err
    assert "Traceback" not in result.err
    assert len([line for line in lines if not line.lstrip().startswith("hint")]) <= 1, result.err
    assert nothing_under_core(registry)
    assert not (registry / "analysis" / "release_v1.0.0.json").exists()


def test_two_sidecars_with_one_name_are_refused(registry: Path, cli: Any) -> None:
    with_files(registry, [{"path": "config.json"}, {"path": "config.json"}])
    result = cli("promote")
    assert result.code == 2 and "clashes with sidecar config.json" in result.err
    assert nothing_under_core(registry)
