"""OpenSSF model signatures over bundles: relgate sign / verify --signature, and the real
``model_signing`` CLI both ways. Keys are generated in the test; every attack on the
signature is a test that must exit 1 naming its cause, every unusable input exit 2 in one line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relgate.signing import bundle_digests, subject_digest
from tests.adversarial.conftest import assert_clean_failure
from tests.support.keys import certificate_chain, ec_key_pair, rsa_key

MODEL_SIGNING = Path(sys.executable).parent / "model_signing"


def make_bundle(folder: Path, cli, *, seed: bytes = b"weights") -> Path:
    """A small bundle (a subfolder, a .git* file) with its relgate manifest."""
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "model.onnx").write_bytes(seed * 1000)
    (folder / "release.json").write_text('{"name": "v1.0.0"}\n')
    (folder / ".gitattributes").write_text("*.onnx binary\n")
    assert cli("manifest", folder).code == 0
    return folder


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return ec_key_pair(tmp_path / "keys")


@pytest.fixture
def bundle(tmp_path: Path, cli) -> Path:
    return make_bundle(tmp_path / "v1.0.0", cli)


def model_signing(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODEL_SIGNING), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path: Path, offset: int = 10) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_sign_then_verify_names_the_signer_and_covers_every_file(
        bundle: Path, keys: tuple[Path, Path], tmp_path: Path, cli) -> None:
    key, pub = keys
    sig = tmp_path / "release_v1.0.0.sig"
    signed = cli("sign", bundle, "--key", key, "-o", sig, "--json")
    assert signed.code == 0, signed.err
    info = json.loads(signed.out)
    hint = hashlib.sha256(pub.read_bytes()).hexdigest()  # model-signing's key identifier
    assert info["signer"] == f"key sha256:{hint}" and info["method"] == "key"
    assert info["public_key"] == pub.read_text()
    # the signed payload lists every file with its sha256: .gitattributes and manifest.json too
    doc = json.loads(sig.read_text())
    payload = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    listed = {r["name"]: r["digest"] for r in payload["predicate"]["resources"]}
    on_disk = {str(p.relative_to(bundle)): sha256(p) for p in bundle.rglob("*") if p.is_file()}
    assert listed == on_disk and ".gitattributes" in listed and "manifest.json" in listed
    assert payload["subject"][0]["digest"]["sha256"] == info["subject_digest"]
    # model-signing's subject digest: sha256 over the digests in path order (independent oracle)
    oracle = hashlib.sha256(b"".join(bytes.fromhex(on_disk[p]) for p in sorted(on_disk)))
    assert info["subject_digest"] == oracle.hexdigest()

    verified = cli("verify", bundle, "--signature", sig, "--public-key", pub, "--json")
    assert verified.code == 0, verified.out
    report = json.loads(verified.out)
    assert report["ok"] and report["signature"]["ok"]
    assert report["signature"]["signer"] == f"key sha256:{hint}"
    text = cli("verify", bundle, "--signature", sig, "--public-key", pub)
    assert "signature verified" in text.out and hint in text.out


def test_payload_is_built_from_the_manifest_without_hashing_again(bundle: Path) -> None:
    """The digests relgate signs come from manifest.json (plus its own sha256), and equal
    what the model-signing library computes by hashing the folder itself."""
    from model_signing import hashing

    ours = bundle_digests(bundle)
    theirs = hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=False).hash(bundle)
    assert ours == {rd.identifier: rd.digest.digest_hex for rd in theirs.resource_descriptors()}
    from model_signing._signing import signing as ms_signing

    lib_subject = ms_signing.Payload(theirs).statement.pb.subject[0].digest["sha256"]
    assert subject_digest("v1.0.0", ours) == lib_subject


def test_wrong_key_is_refused_naming_the_key(bundle: Path, keys: tuple[Path, Path],
                                             tmp_path: Path, cli) -> None:
    key, _ = keys
    _, other_pub = ec_key_pair(tmp_path / "other")
    sig = tmp_path / "b.sig"
    assert cli("sign", bundle, "--key", key, "-o", sig).code == 0
    result = cli("verify", bundle, "--signature", sig, "--public-key", other_pub)
    assert_clean_failure(result, codes=(1,))
    assert "signed with another key" in result.out and str(other_pub) in result.out


def test_flipped_byte_in_a_file_is_refused_naming_the_file(
        bundle: Path, keys: tuple[Path, Path], tmp_path: Path, cli) -> None:
    key, pub = keys
    sig = tmp_path / "b.sig"
    assert cli("sign", bundle, "--key", key, "-o", sig).code == 0
    flip_byte(bundle / "models" / "model.onnx")
    result = cli("verify", bundle, "--signature", sig, "--public-key", pub)
    assert_clean_failure(result, codes=(1,))
    assert "models/model.onnx: sha256" in result.out


def test_flipped_byte_in_the_signature_is_refused(bundle: Path, keys: tuple[Path, Path],
                                                  tmp_path: Path, cli) -> None:
    key, pub = keys
    sig = tmp_path / "b.sig"
    assert cli("sign", bundle, "--key", key, "-o", sig).code == 0
    doc = json.loads(sig.read_text())
    raw = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[-1] ^= 0x01
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(doc))
    result = cli("verify", bundle, "--signature", sig, "--public-key", pub)
    assert_clean_failure(result, codes=(1,))
    assert "does not verify with public key" in result.out


def test_signed_payload_edited_is_refused(bundle: Path, keys: tuple[Path, Path],
                                          tmp_path: Path, cli) -> None:
    """An attacker who rewrites a file lists its new digest in the payload: the signature
    over the payload no longer verifies."""
    key, pub = keys
    sig = tmp_path / "b.sig"
    assert cli("sign", bundle, "--key", key, "-o", sig).code == 0
    doc = json.loads(sig.read_text())
    payload = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "0" * 64
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    sig.write_text(json.dumps(doc))
    result = cli("verify", bundle, "--signature", sig, "--public-key", pub)
    assert_clean_failure(result, codes=(1,))
    assert "does not verify" in result.out


def test_rewritten_manifest_is_refused_naming_it(bundle: Path, keys: tuple[Path, Path],
                                                 tmp_path: Path, cli) -> None:
    """A file changed and the manifest rewritten to match: the bundle verifies against its own
    manifest, and only the signature (or the pin) can tell."""
    key, pub = keys
    sig = tmp_path / "b.sig"
    assert cli("sign", bundle, "--key", key, "-o", sig).code == 0
    (bundle / "models" / "model.onnx").write_bytes(b"backdoor" * 1000)
    os.unlink(bundle / "manifest.json")
    assert cli("manifest", bundle).code == 0
    assert cli("verify", bundle).code == 0  # consistent rewrite: the manifest alone is fooled
    result = cli("verify", bundle, "--signature", sig, "--public-key", pub)
    assert_clean_failure(result, codes=(1,))
    assert "manifest.json: sha256" in result.out and "manifest was rewritten" in result.out
    assert "models/model.onnx: sha256" in result.out


def test_swapped_signature_of_another_bundle_is_refused(
        bundle: Path, keys: tuple[Path, Path], tmp_path: Path, cli) -> None:
    key, pub = keys
    other = make_bundle(tmp_path / "v2.0.0", cli, seed=b"other")
    sig = tmp_path / "other.sig"
    assert cli("sign", other, "--key", key, "-o", sig).code == 0
    result = cli("verify", bundle, "--signature", sig, "--public-key", pub, "--json")
    assert_clean_failure(result, codes=(1,))
    report = json.loads(result.out)
    assert not report["ok"] and not report["signature"]["ok"]
    assert "signs another bundle" in report["signature"]["reasons"][0]


def test_git_paths_are_signed_and_model_signing_needs_its_flag_for_them(
        bundle: Path, keys: tuple[Path, Path], tmp_path: Path, cli) -> None:
    """relgate signs .gitattributes (its exact-set check covers it); model_signing skips .git*
    by default, so its own verification needs --no-ignore-git-paths."""
    key, pub = keys
    sig = tmp_path / "b.sig"
    assert cli("sign", bundle, "--key", key, "-o", sig).code == 0
    default = model_signing("verify", "key", bundle, "--signature", sig, "--public_key", pub)
    assert default.returncode != 0 and ".gitattributes" in default.stdout + default.stderr
    flagged = model_signing("verify", "key", bundle, "--signature", sig, "--public_key", pub,
                            "--no-ignore-git-paths")
    assert flagged.returncode == 0, flagged.stdout + flagged.stderr


def test_model_signing_cli_accepts_what_relgate_signed_and_refuses_a_flipped_byte(
        tmp_path: Path, keys: tuple[Path, Path], cli) -> None:
    key, pub = keys
    folder = tmp_path / "plain"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "model.onnx").write_bytes(b"w" * 4096)
    assert cli("manifest", folder).code == 0
    sig = tmp_path / "plain.sig"
    assert cli("sign", folder, "--key", key, "-o", sig).code == 0
    ok = model_signing("verify", "key", folder, "--signature", sig, "--public_key", pub)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Verification succeeded" in ok.stdout + ok.stderr
    flip_byte(folder / "models" / "model.onnx")
    bad = model_signing("verify", "key", folder, "--signature", sig, "--public_key", pub)
    assert bad.returncode != 0 and "models/model.onnx" in bad.stdout + bad.stderr


def test_relgate_accepts_what_model_signing_signed_and_refuses_a_flipped_byte(
        bundle: Path, keys: tuple[Path, Path], tmp_path: Path, cli) -> None:
    key, pub = keys
    sig = tmp_path / "ms.sig"
    made = model_signing("sign", "key", bundle, "--signature", sig, "--private_key", key,
                         "--no-ignore-git-paths")
    assert made.returncode == 0, made.stdout + made.stderr
    result = cli("verify", bundle, "--signature", sig, "--public-key", pub)
    assert result.code == 0, result.out
    flip_byte(bundle / "release.json", offset=3)
    refused = cli("verify", bundle, "--signature", sig, "--public-key", pub)
    assert_clean_failure(refused, codes=(1,))
    assert "release.json: sha256" in refused.out


def test_model_signing_signature_that_skipped_git_paths_does_not_cover_the_bundle(
        bundle: Path, keys: tuple[Path, Path], tmp_path: Path, cli) -> None:
    key, pub = keys
    sig = tmp_path / "ms.sig"
    assert model_signing("sign", "key", bundle, "--signature", sig,
                         "--private_key", key).returncode == 0
    result = cli("verify", bundle, "--signature", sig, "--public-key", pub)
    assert_clean_failure(result, codes=(1,))
    assert ".gitattributes: in the bundle but not signed" in result.out
    assert "--no-ignore-git-paths" in result.out


def test_certificate_signing_verifies_up_to_the_ca_and_names_the_subject(
        bundle: Path, tmp_path: Path, cli) -> None:
    leaf_key, leaf, ca = certificate_chain(tmp_path / "pki")
    sig = tmp_path / "cert.sig"
    signed = cli("sign", bundle, "--key", leaf_key, "--certificate", leaf,
                 "--certificate-chain", ca, "-o", sig, "--json")
    assert signed.code == 0, signed.err
    assert "CN=release signer" in json.loads(signed.out)["signer"]
    result = cli("verify", bundle, "--signature", sig, "--certificate-chain", ca)
    assert result.code == 0, result.out
    assert "CN=release signer" in result.out
    _, _, other_ca = certificate_chain(tmp_path / "other-pki")
    refused = cli("verify", bundle, "--signature", sig, "--certificate-chain", other_ca)
    assert_clean_failure(refused, codes=(1,))
    assert "does not verify with certificate chain" in refused.out


def test_encrypted_key_signs_with_its_passphrase_from_the_environment(
        bundle: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    key, pub = ec_key_pair(tmp_path / "enc", password=b"s3cret")
    sig = tmp_path / "b.sig"
    missing = cli("sign", bundle, "--key", key, "-o", sig)
    line = assert_clean_failure(missing)
    assert "encrypted private key and no passphrase" in line and not sig.exists()
    unset = cli("sign", bundle, "--key", key, "--password-env", "RELGATE_TEST_PW", "-o", sig)
    assert "RELGATE_TEST_PW" in assert_clean_failure(unset) and not sig.exists()
    monkeypatch.setenv("RELGATE_TEST_PW", "wrong")
    wrong = cli("sign", bundle, "--key", key, "--password-env", "RELGATE_TEST_PW", "-o", sig)
    assert "does not decrypt" in assert_clean_failure(wrong) and not sig.exists()
    monkeypatch.setenv("RELGATE_TEST_PW", "s3cret")
    assert cli("sign", bundle, "--key", key, "--password-env", "RELGATE_TEST_PW",
               "-o", sig).code == 0
    assert cli("verify", bundle, "--signature", sig, "--public-key", pub).code == 0


@pytest.mark.parametrize("case", ["missing-key", "rsa-key", "not-a-key", "sig-inside-bundle",
                                  "damaged-bundle", "sigstore-offline"])
def test_signing_bad_input_is_one_line_and_writes_nothing(
        case: str, bundle: Path, keys: tuple[Path, Path], tmp_path: Path, cli,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SIGSTORE_ID_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL",
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    key, _ = keys
    sig = tmp_path / "out.sig"
    args: list[object] = [bundle, "--key", key, "-o", sig]
    code, expect = 2, ""
    if case == "missing-key":
        args[2], expect = tmp_path / "nope.pem", "no such file"
    elif case == "rsa-key":
        args[2], expect = rsa_key(tmp_path), "RSA key; model-signing signs with EC keys"
    elif case == "not-a-key":
        (tmp_path / "junk.pem").write_text("hello")
        args[2], expect = tmp_path / "junk.pem", "not a PEM private key"
    elif case == "sig-inside-bundle":
        sig = bundle / "release.sig"
        args[4], expect = sig, "inside the bundle"
    elif case == "damaged-bundle":
        flip_byte(bundle / "models" / "model.onnx")
        code, expect = 1, "does not verify, so it is not signed"
    else:
        args, expect = [bundle, "--sigstore", "-o", sig], "needs an OIDC identity"
    line = assert_clean_failure(cli("sign", *args), codes=(code,))
    assert expect in line
    assert not sig.exists()


@pytest.mark.parametrize("case", ["missing-signature", "not-json", "not-a-signature",
                                  "truncated-bundle", "missing-public-key", "bad-public-key",
                                  "no-trust", "two-trusts", "identity-without-issuer"])
def test_verification_bad_input_is_one_line_exit_2(case: str, bundle: Path,
                                                   keys: tuple[Path, Path], tmp_path: Path,
                                                   cli) -> None:
    key, pub = keys
    sig = tmp_path / "b.sig"
    assert cli("sign", bundle, "--key", key, "-o", sig).code == 0
    args: list[object] = [bundle, "--signature", sig, "--public-key", pub]
    expect = ""
    if case == "missing-signature":
        args[2], expect = tmp_path / "none.sig", "no such file"
    elif case == "not-json":
        sig.write_text("not json {")
        expect = "b.sig"
    elif case == "not-a-signature":
        sig.write_text('{"mediaType": "x"}')
        expect = "not a model-signing signature"
    elif case == "truncated-bundle":
        doc = json.loads(sig.read_text())
        del doc["verificationMaterial"]
        sig.write_text(json.dumps(doc))
        expect = "not a readable model-signing signature"
    elif case == "missing-public-key":
        args[4], expect = tmp_path / "none.pub", "no such file"
    elif case == "bad-public-key":
        (tmp_path / "bad.pub").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        args[4], expect = tmp_path / "bad.pub", "--public-key"
    elif case == "no-trust":
        args, expect = [bundle, "--signature", sig], "needs --public-key"
    elif case == "two-trusts":
        args += ["--identity", "me", "--issuer", "https://issuer"]
        expect = "give one way"
    else:
        args = [bundle, "--signature", sig, "--identity", "me"]
        expect = "--identity and --issuer go together"
    line = assert_clean_failure(cli("verify", *args))
    assert expect in line, line


def test_release_signing_params_are_typed() -> None:
    from relgate.params import SigningSpec, params_from_dict

    base = {"schema_version": 1, "gates": {"mode": "all", "rules": [
        {"metric": "auc", "op": ">=", "value": 0.8}]},
        "release": {"name": "v1.0.0", "promoted": {"path": "models/model.onnx"}}}
    assert params_from_dict(base).release.signing is None
    keyless = {**base, "release": {**base["release"], "signing": "sigstore"}}
    assert params_from_dict(keyless).release.signing == SigningSpec(method="sigstore")
    cert = {**base, "release": {**base["release"], "signing": {
        "key": "k.pem", "certificate": "c.pem", "certificate_chain": ["ca.pem"]}}}
    assert params_from_dict(cert).release.signing == SigningSpec(
        method="certificate", key="k.pem", certificate="c.pem", certificate_chain=("ca.pem",))
