"""``relgate fetch`` of a signed release, with real git and real DVC: the signature beside the
release record is checked automatically, and a fetch fails closed (exit 1, nothing placed)
when the registry has a signature that does not verify, or notes one it does not hold."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Producer, Tools, make_producer
from tests.support.keys import ec_key_pair
from tests.support.registry import make_registry

pytestmark = pytest.mark.e2e

SIG = "analysis/release_v1.0.0.sig"


@pytest.fixture(scope="module")
def signed_producer(tmp_path_factory: pytest.TempPathFactory,
                    e2e_tools: Tools) -> tuple[Producer, Path, Path]:
    """A registry whose v1.0.0 was signed at promote (release.signing): (producer, key, pub)."""
    base = tmp_path_factory.mktemp("signed-registry")
    key, pub = ec_key_pair(base / "keys")
    producer = make_producer(base, e2e_tools, dvc_remote=str(base / "dvc-remote"), releases=())
    root = producer.root
    make_registry(root, release="v1.0.0")
    params = root / "params.yaml"
    params.write_text(params.read_text() + f"  signing:\n    key: {key}\n")
    tools = producer.tools
    tools.dvc("repro", "-q", cwd=root)
    tools.git("add", "-A", cwd=root)
    tools.git("commit", "-q", "-m", "release v1.0.0, signed", cwd=root)
    tools.git("tag", "-a", "core@v1.0.0", "-m", "Registering artifact core version v1.0.0", cwd=root)
    tools.dvc("push", "-q", cwd=root)
    tools.git("push", "-q", "origin", "main", "--tags", cwd=root)
    assert (root / SIG).is_file()
    return producer, key, pub


def push_branch(producer: Producer, branch: str, change: Any) -> None:
    """Commit *change(root)* on a new branch of the registry and push it (main is left alone)."""
    root, tools = producer.root, producer.tools
    tools.git("checkout", "-q", "-b", branch, cwd=root)
    try:
        change(root)
        tools.git("add", "-A", cwd=root)
        tools.git("commit", "-q", "-m", f"{branch}: tampered", cwd=root)
        tools.git("push", "-q", "origin", branch, cwd=root)
    finally:
        tools.git("checkout", "-q", "main", cwd=root)


def test_fetch_checks_the_signature_automatically_and_names_the_signer(
        signed_producer: tuple[Producer, Path, Path], cli: Any, tmp_path: Path) -> None:
    producer, _, pub = signed_producer
    out = tmp_path / "core"
    result = cli("fetch", producer.origin, "v1.0.0", "-o", out, "--json")
    assert result.code == 0, result.err + result.out
    report = json.loads(result.out)
    assert report["ok"] and report["placed"]
    import hashlib

    hint = hashlib.sha256(pub.read_bytes()).hexdigest()
    assert report["signature"]["ok"] and report["signature"]["signer"] == f"key sha256:{hint}"
    assert any("the release record names" in n for n in report["notes"])
    chosen = cli("fetch", producer.origin, "v1.0.0", "-o", tmp_path / "pinned", "--public-key", pub)
    assert chosen.code == 0, chosen.err + chosen.out
    assert f"signed by key sha256:{hint}" in chosen.out


def test_fetch_with_another_key_fails_closed(signed_producer: tuple[Producer, Path, Path],
                                             cli: Any, tmp_path: Path) -> None:
    producer, _, _ = signed_producer
    _, other = ec_key_pair(tmp_path / "other")
    out = tmp_path / "core"
    result = cli("fetch", producer.origin, "v1.0.0", "-o", out, "--public-key", other)
    assert result.code == 1
    assert "signed with another key" in result.out and not out.exists()


def test_fetch_refuses_a_swapped_signature_or_a_missing_one(
        signed_producer: tuple[Producer, Path, Path], cli: Any, tmp_path: Path) -> None:
    producer, key, _ = signed_producer
    other = tmp_path / "other-bundle"
    (other / "models").mkdir(parents=True)
    (other / "models" / "model.onnx").write_bytes(b"not the release")
    assert cli("manifest", other).code == 0
    swapped = tmp_path / "swapped.sig"
    assert cli("sign", other, "--key", key, "-o", swapped).code == 0

    def swap(root: Path) -> None:
        os.chmod(root / SIG, 0o644)
        shutil.copyfile(swapped, root / SIG)

    push_branch(producer, "swapped-signature", swap)
    out = tmp_path / "core"
    result = cli("fetch", producer.origin, "v1.0.0", "--rev", "swapped-signature", "-o", out)
    assert result.code == 1, result.err + result.out
    assert "signs another bundle" in result.out and not out.exists()
    assert "nothing was written" in result.out

    push_branch(producer, "no-signature", lambda root: os.unlink(root / SIG))
    result = cli("fetch", producer.origin, "v1.0.0", "--rev", "no-signature", "-o", out)
    assert result.code == 1, result.err + result.out
    assert "notes a signature, but the registry holds none" in result.out and not out.exists()
