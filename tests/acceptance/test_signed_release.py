"""Signing at promote (``release.signing``) and the provenance attestation on a real registry:
the signature and the in-toto Statement land beside the release record, the record notes
them, and ``relgate verify`` checks both; a bad key is refused before anything is written."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relgate import schemas
from relgate.bundle import verify_bundle
from relgate.jsonio import read_json
from tests.adversarial.conftest import assert_clean_failure
from tests.support.keys import ec_key_pair
from tests.support.registry import make_registry, prepare

BUNDLE = Path("models/core/v1.0.0")
RECORD = Path("analysis/release_v1.0.0.json")
SIG = Path("analysis/release_v1.0.0.sig")
PROVENANCE = Path("analysis/provenance_v1.0.0.json")
PROVENANCE_SIG = Path("analysis/provenance_v1.0.0.sig")


def promote(root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relgate", "promote"], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def with_signing(root: Path, block: str) -> None:
    params = root / "params.yaml"
    params.write_text(params.read_text() + "  signing:\n" + block)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with its evidence prepared once (calibrate, validate); tests promote copies."""
    root = make_registry(tmp_path_factory.mktemp("template") / "reg")
    prepare(root)
    return root


def copy_of(template: Path, where: Path) -> Path:
    return Path(shutil.copytree(template, where / "reg", symlinks=True))


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, template: Path) -> tuple[Path, Path]:
    """A registry promoted with release.signing (a key outside the repository): (root, pub)."""
    base = tmp_path_factory.mktemp("signed")
    key, pub = ec_key_pair(base / "keys")
    root = copy_of(template, base)
    with_signing(root, f"    key: {key}\n")
    proc = promote(root)
    assert proc.returncode == 0, proc.stderr
    return root, pub


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_promote_signs_and_the_record_notes_signature_and_attestation(
        signed: tuple[Path, Path]) -> None:
    root, pub = signed
    record = read_json(root / RECORD)
    schemas.validate(record, "release")
    note = record["signature"]
    assert note["path"] == str(SIG) and note["method"] == "key"
    assert note["signer"] == f"key sha256:{sha256(pub)}" and note["public_key"] == pub.read_text()
    payload = json.loads(base64.b64decode(json.loads((root / SIG).read_text())
                                          ["dsseEnvelope"]["payload"]))
    assert note["subject_digest"] == payload["subject"][0]["digest"]["sha256"]
    assert record["attestation"] == {"path": str(PROVENANCE), "sha256": sha256(root / PROVENANCE),
                                     "signature": str(PROVENANCE_SIG)}
    # never inside the bundle, whose own record knows nothing of them
    bundle = root / BUNDLE
    assert not any(p.suffix == ".sig" for p in bundle.rglob("*"))
    inside = read_json(bundle / "release.json")
    assert "signature" not in inside and "attestation" not in inside
    assert verify_bundle(bundle).ok


def test_the_signed_release_verifies_and_the_real_model_signing_cli_agrees(
        signed: tuple[Path, Path], cli) -> None:
    root, pub = signed
    bundle = root / BUNDLE
    result = cli("verify", bundle, "--signature", root / SIG, "--public-key", pub,
                 "--attestation", root / PROVENANCE, "--json")
    assert result.code == 0, result.out
    report = json.loads(result.out)
    assert report["signature"]["ok"] and report["attestation"]["ok"]
    assert report["attestation"]["signature"] == str(root / PROVENANCE_SIG)
    ms = subprocess.run([str(Path(sys.executable).parent / "model_signing"), "verify", "key",
                         bundle, "--signature", root / SIG, "--public_key", pub],
                        capture_output=True, text=True, timeout=120)
    assert ms.returncode == 0, ms.stdout + ms.stderr


def test_attestation_is_schema_valid_and_its_subject_is_the_manifest(
        signed: tuple[Path, Path]) -> None:
    root, _ = signed
    statement = read_json(root / PROVENANCE)
    schemas.validate(statement, "provenance")
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    bundle = root / BUNDLE
    manifest = read_json(bundle / "manifest.json")
    expected = {path: e["sha256"] for path, e in manifest["files"].items()}
    expected["manifest.json"] = sha256(bundle / "manifest.json")
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == expected
    on_disk = {str(p.relative_to(bundle)): sha256(p) for p in bundle.rglob("*") if p.is_file()}
    assert expected == on_disk
    record = read_json(root / RECORD)
    deps = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["data/test.npz"]["digest"]["sha256"] == record["evidence"]["data"]["sha256"] \
        == sha256(root / "data/test.npz")
    assert deps["relgate"]["uri"].startswith("pkg:pypi/relgate@")
    params_sha = hashlib.sha256(json.dumps(record["provenance"]["params"], sort_keys=True,
                                           indent=2, ensure_ascii=False).encode() + b"\n")
    assert deps["params"]["digest"]["sha256"] == params_sha.hexdigest()
    builder = statement["predicate"]["runDetails"]["builder"]
    assert builder["id"] and builder["version"]["relgate"]


def test_releases_shows_who_signed(signed: tuple[Path, Path], cli) -> None:
    root, pub = signed
    listing = json.loads(cli("releases", root, "--json").out)
    assert listing["releases"][0]["signer"] == f"key sha256:{sha256(pub)}"
    text = cli("releases", root)
    assert f"key sha256:{sha256(pub)}" in text.out and "signed by" in text.out


def test_attacks_on_the_attestation_are_refused(signed: tuple[Path, Path], tmp_path: Path,
                                                cli) -> None:
    root, pub = signed
    bundle = root / BUNDLE
    statement = read_json(root / PROVENANCE)
    edited = tmp_path / "provenance_v1.0.0.json"
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    edited.write_text(json.dumps(statement))
    # the subject no longer matches the bundle: exit 1, naming the file
    result = cli("verify", bundle, "--attestation", edited)
    assert_clean_failure(result, codes=(1,))
    assert f"{statement['subject'][0]['name']}: sha256" in result.out
    # a correct subject, but the signature beside it is of the original Statement
    statement = read_json(root / PROVENANCE)
    statement["predicate"]["runDetails"]["builder"]["id"] = "https://evil.example/builder"
    edited.write_text(json.dumps(statement))
    (tmp_path / "provenance_v1.0.0.sig").write_bytes((root / PROVENANCE_SIG).read_bytes())
    result = cli("verify", bundle, "--attestation", edited, "--public-key", pub)
    assert_clean_failure(result, codes=(1,))
    assert "signs another Statement" in result.out
    # with a key, an attestation with no signature beside it is not trusted
    os.unlink(tmp_path / "provenance_v1.0.0.sig")
    unsigned = cli("verify", bundle, "--attestation", edited, "--public-key", pub)
    assert_clean_failure(unsigned, codes=(1,))
    assert "no signature" in unsigned.out


@pytest.mark.parametrize("case", ["not-json", "schema", "duplicate-subject"])
def test_malformed_attestation_is_bad_input(case: str, signed: tuple[Path, Path],
                                            tmp_path: Path, cli) -> None:
    root, _ = signed
    bad = tmp_path / "bad.provenance.json"
    statement = read_json(root / PROVENANCE)
    if case == "not-json":
        bad.write_text('{"_type": ')
    elif case == "schema":
        statement["predicateType"] = "https://example.com/other"
        bad.write_text(json.dumps(statement))
    else:
        statement["subject"].append(statement["subject"][0])
        bad.write_text(json.dumps(statement))
    line = assert_clean_failure(cli("verify", root / BUNDLE, "--attestation", bad))
    assert "bad.provenance.json" in line


def test_promote_without_signing_writes_an_unsigned_attestation(tmp_path: Path, template: Path,
                                                                cli) -> None:
    root = copy_of(template, tmp_path)
    assert promote(root).returncode == 0
    record = read_json(root / RECORD)
    assert "signature" not in record and not (root / SIG).exists()
    assert record["attestation"]["signature"] is None and not (root / PROVENANCE_SIG).exists()
    result = cli("verify", root / BUNDLE, "--attestation", root / PROVENANCE)
    assert result.code == 0, result.out
    assert "unsigned" in result.out
    # promoting again is a no-op that leaves the pin and its attestation alone
    before = (root / PROVENANCE).read_bytes()
    assert promote(root).returncode == 0
    assert (root / PROVENANCE).read_bytes() == before


@pytest.mark.parametrize("case", ["missing-key", "encrypted-no-passphrase", "passphrase-unset",
                                  "unknown-key"])
def test_a_bad_signing_key_is_refused_before_anything_is_written(
        case: str, tmp_path: Path, template: Path) -> None:
    root = copy_of(template, tmp_path)
    key, _ = ec_key_pair(tmp_path / "keys", password=b"pw" if case != "missing-key" else None)
    block = {"missing-key": f"    key: {tmp_path / 'absent.pem'}\n",
             "encrypted-no-passphrase": f"    key: {key}\n",
             "passphrase-unset": f"    key: {key}\n    password_env: RELGATE_TEST_UNSET_PW\n",
             "unknown-key": f"    key: {key}\n    colour: blue\n"}[case]
    with_signing(root, block)
    proc = promote(root)
    line = assert_clean_failure(proc)
    expect = {"missing-key": "no such file", "encrypted-no-passphrase": "no passphrase",
              "passphrase-unset": "RELGATE_TEST_UNSET_PW", "unknown-key": "release.signing"}[case]
    assert expect in line, line
    assert not (root / BUNDLE).exists() and not (root / RECORD).exists()
    assert not (root / SIG).exists() and not (root / PROVENANCE).exists()


def test_encrypted_key_with_its_passphrase_signs_at_promote(tmp_path: Path, template: Path,
                                                            cli) -> None:
    root = copy_of(template, tmp_path)
    key, pub = ec_key_pair(tmp_path / "keys", password=b"pw")
    with_signing(root, f"    key: {key}\n    password_env: RELGATE_TEST_PW\n")
    proc = promote(root, env={"RELGATE_TEST_PW": "pw"})
    assert proc.returncode == 0, proc.stderr
    assert cli("verify", root / BUNDLE, "--signature", root / SIG, "--public-key", pub).code == 0
