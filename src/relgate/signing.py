"""OpenSSF model signatures over relgate bundles, through the ``model-signing`` library.

A signature is a model-signing file (a Sigstore bundle holding a DSSE envelope over an
in-toto Statement whose predicate lists every file's sha256). relgate builds that payload
from the bundle's own manifest rather than hashing the files a second time: the per-file
sha256 are the ones model-signing computes, and the manifest itself is one of the signed
files, so the signature covers the exact file set ``relgate verify`` checks (``.git*``
paths included, which model-signing's own CLI skips unless told ``--no-ignore-git-paths``).
The formats, the signers and the verifiers are the library's; only the comparison of the
signed files with the bundle's is relgate's, and it is a diff with a reason per file.

The signature never sits inside the bundle (it would be a file the manifest does not list):
promote writes it beside the git-tracked release record, ``analysis/release_<name>.sig``.

Exit codes: an unusable key, certificate or signature file is bad input (InputError, 2);
a signature that does not verify, or that signs other files, is a governed "no" (1).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relgate.errors import InputError, UsageError, VerificationFailed
from relgate.jsonio import atomic_write_bytes, loads_strict, read_capped
from relgate.manifest import MANIFEST_NAME, show_path, sort_paths

if TYPE_CHECKING:
    from relgate.bundle import VerifyResult
    from relgate.params import SigningSpec

#: the largest signature file read (a Sigstore bundle with a certificate chain is a few KiB;
#: the payload lists every file, so a bundle of many files makes it larger)
MAX_SIGNATURE_BYTES = 64 * 1024 * 1024
#: the x509 extension Fulcio writes the OIDC issuer into (sigstore's OIDC issuer v2)
_FULCIO_ISSUER_OIDS = ("1.3.6.1.4.1.57264.1.8", "1.3.6.1.4.1.57264.1.1")
METHODS = ("key", "certificate", "sigstore")


# --------------------------------------------------------------------------- payload


def bundle_digests(folder: str | os.PathLike[str], result: VerifyResult | None = None,
                   ) -> dict[str, str]:
    """sha256 by path of every file of the bundle at *folder*, manifest.json included,
    from its manifest (nothing is hashed again).

    With *result* (the bundle's verification), the manifest read now must be the very bytes
    verification checked; without it the manifest is trusted as written (promote, which
    has just built it from the digests of the bytes it copied).
    """
    from relgate.manifest import Manifest, open_root, read_manifest_bytes

    source = str(Path(folder) / MANIFEST_NAME)
    root_fd = open_root(folder)
    try:
        data = read_manifest_bytes(MANIFEST_NAME, dir_fd=root_fd, source=source)
    finally:
        os.close(root_fd)
    digest = hashlib.sha256(data).hexdigest()
    if result is not None and digest != result.manifest_sha256:
        raise VerificationFailed(f"{source}: changed after it was verified",
                                 hint="sign or verify again once nothing writes to the bundle")
    manifest = Manifest.from_dict(loads_strict(data, source=source), source=source)
    out = {path: fd.sha256 for path, fd in manifest.files.items()}
    out[MANIFEST_NAME] = digest
    return out


def _library_manifest(name: str, digests: Mapping[str, str]) -> Any:
    """model-signing's in-memory manifest of the files (file serialization, sha256)."""
    from model_signing import manifest as ms_manifest
    from model_signing._hashing import hashing as ms_hashing

    items = [ms_manifest.FileManifestItem(path=pathlib.PurePosixPath(path),
                                          digest=ms_hashing.Digest("sha256", bytes.fromhex(sha)))
             for path, sha in sorted(digests.items())]
    serialization = ms_manifest._FileSerialization("sha256", allow_symlinks=False)
    return ms_manifest.Manifest(name, items, serialization)


def payload_for(name: str, digests: Mapping[str, str]) -> Any:
    """The model-signing payload (an in-toto Statement) over *digests*."""
    from model_signing._signing import signing as ms_signing

    return ms_signing.Payload(_library_manifest(name, digests))


def subject_digest(name: str, digests: Mapping[str, str]) -> str:
    """The payload's subject digest: model-signing's sha256 over the files' digests."""
    statement = payload_for(name, digests).statement.pb
    return str(statement.subject[0].digest["sha256"])


# --------------------------------------------------------------------------- signing


@dataclass(frozen=True, kw_only=True)
class Signer:
    """A loaded, usable signing identity: the library's signer and how to name it."""

    method: str
    library: Any
    #: PEM of the public key (key and certificate methods), recorded so a fetch can verify
    public_key: str | None = None


def _resolve(path: str, root: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or root is None else root / p


def _read_small(path: Path, what: str, flag: str) -> bytes:
    try:
        return read_capped(path, max_bytes=1024 * 1024, what=what)
    except InputError as exc:
        raise InputError(f"{flag} {exc.message}", hint=f"give the path of the {what}") from None


def load_signer(spec: SigningSpec, *, root: Path | None = None, where: str = "release.signing",
                ) -> Signer:
    """Check the key material of *spec* and build the library signer, before anything is
    signed or published: a missing, unreadable, encrypted-without-passphrase or unsupported
    key, or a certificate that is not the key's, is an InputError (exit 2)."""
    if spec.method == "sigstore":
        return _sigstore_signer(where)
    assert spec.key is not None
    key_path = _resolve(spec.key, root)
    key_pem = _read_small(key_path, "private key (PEM)",
                          f"{where}: key" if where.startswith("release") else where)
    password = _password(spec, key_path, where)
    private_key = _private_key(key_pem, password, key_path, where)
    from cryptography.hazmat.primitives import serialization

    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    if spec.method == "key":
        from model_signing._signing import sign_ec_key

        # the library passes the passphrase to cryptography, which takes bytes
        library = _library_call(lambda: sign_ec_key.Signer(key_path, password),  # type: ignore[arg-type]
                                key_path, where)
        return Signer(method="key", library=library, public_key=public_pem)
    if password is not None:
        raise InputError(f"{where}: {key_path} is encrypted; model-signing signs with a "
                         "certificate only from an unencrypted key",
                         hint="keep the key in a secret store and give it unencrypted to the "
                              "signing step, or sign with the key alone (drop certificate:)")
    assert spec.certificate is not None
    cert_path = _resolve(spec.certificate, root)
    _read_small(cert_path, "signing certificate (PEM)",
                f"{where}: certificate" if where.startswith("release") else "--certificate")
    chain = [_resolve(c, root) for c in spec.certificate_chain]
    for c in chain:
        _read_small(c, "certificate chain (PEM)", f"{where}: certificate_chain"
                    if where.startswith("release") else "--certificate-chain")
    from model_signing._signing import sign_certificate

    library = _library_call(lambda: sign_certificate.Signer(key_path, cert_path, chain),
                            cert_path, where)
    return Signer(method="certificate", library=library, public_key=public_pem)


def _library_call(build: Any, path: Path, where: str) -> Any:
    try:
        return build()
    except (ValueError, TypeError) as exc:
        raise InputError(f"{where}: {path}: {_first_line(exc)}",
                         hint="give an EC private key (P-256, P-384 or P-521) in PEM and, for "
                              "certificate signing, the certificate of that key") from None


def _password(spec: SigningSpec, key_path: Path, where: str) -> bytes | None:
    if spec.password_env is None:
        return None
    value = os.environ.get(spec.password_env)
    if value is None:
        raise InputError(f"{where}: the passphrase of {key_path} is read from "
                         f"${spec.password_env}, which is not set",
                         hint=f"export {spec.password_env} (from a secret), then run again")
    return value.encode()


def _private_key(pem: bytes, password: bytes | None, key_path: Path, where: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(pem, password)
    except TypeError:
        if password is None:
            raise InputError(f"{where}: {key_path} is an encrypted private key and no "
                             "passphrase was given",
                             hint="name the environment variable that holds it with "
                                  "password_env: (release.signing) or --password-env") from None
        raise InputError(f"{where}: {key_path} is not encrypted, but a passphrase was given",
                         hint="drop password_env / --password-env") from None
    except ValueError as exc:
        bad_pass = password is not None and "decrypt" in str(exc).lower()
        raise InputError(f"{where}: {key_path}: " + ("the passphrase does not decrypt it"
                                                     if bad_pass else "not a PEM private key"),
                         hint="give the PEM file of an EC private key (P-256, P-384 or P-521)"
                         ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in (
            "secp256r1", "secp384r1", "secp521r1"):
        kind = type(key).__name__.lstrip("_").replace("PrivateKey", "")
        raise InputError(f"{where}: {key_path} is a {kind} key; model-signing signs with EC keys "
                         "on P-256, P-384 or P-521",
                         hint="openssl ecparam -name prime256v1 -genkey -noout -out key.pem")
    return key


def _sigstore_signer(where: str) -> Signer:
    """Keyless signing: an OIDC token from the environment (GitHub Actions with
    ``id-token: write``, or SIGSTORE_ID_TOKEN); never an interactive browser flow."""
    token = os.environ.get("SIGSTORE_ID_TOKEN")
    ambient = bool(os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
                   and os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))
    if not token and not ambient:
        raise InputError(f"{where}: sigstore signing needs an OIDC identity, and none is "
                         "available here",
                         hint="run it in GitHub Actions in a job with 'permissions: id-token: "
                              "write' (publish.yml's sign job), or set SIGSTORE_ID_TOKEN")
    from model_signing._signing import sign_sigstore

    try:
        library = sign_sigstore.Signer(use_ambient_credentials=not token, identity_token=token)
    except Exception as exc:  # the library reaches Sigstore's trust root over the network
        raise InputError(f"{where}: cannot set up Sigstore signing: {_first_line(exc)}",
                         hint="Sigstore keyless signing needs network access to Fulcio and "
                              "Rekor") from None
    return Signer(method="sigstore", library=library)


@dataclass(frozen=True, kw_only=True)
class SignatureInfo:
    """What a signature says, once written or verified: who, how, over which subject."""

    path: str
    method: str
    signer: str
    subject_digest: str
    public_key: str | None = None
    identity: str | None = None
    issuer: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The release record's ``signature`` note."""
        out: dict[str, Any] = {"path": self.path, "method": self.method, "signer": self.signer,
                               "subject_digest": self.subject_digest}
        for key in ("public_key", "identity", "issuer"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def sign_digests(name: str, digests: Mapping[str, str], signer: Signer, out: Path, *,
                 label: str | None = None) -> SignatureInfo:
    """Sign the files *digests* describe (bundle *name*) and write the signature to *out*."""
    payload = payload_for(name, digests)
    signature = _sign(signer, payload)
    data = signature_bytes(signature)
    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        from relgate.jsonio import write_error

        raise write_error(out, exc) from None
    who = signer_of(json.loads(data))
    return SignatureInfo(path=label or str(out), method=signer.method, signer=who.signer,
                         subject_digest=str(payload.statement.pb.subject[0].digest["sha256"]),
                         public_key=signer.public_key, identity=who.identity, issuer=who.issuer)


def _sign(signer: Signer, payload: Any) -> Any:
    try:
        return signer.library.sign(payload)
    except Exception as exc:  # network, token or HSM trouble: say it in one line
        if signer.method != "sigstore":
            raise
        raise InputError(f"sigstore signing failed: {_first_line(exc)}",
                         hint="check the job's id-token: write permission and network access"
                         ) from None


def signature_bytes(signature: Any) -> bytes:
    """The signature file's bytes, as the library writes them."""
    bundle = signature.bundle
    text = bundle.to_json()
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def sign_bundle(folder: str | os.PathLike[str], signer: Signer, out: str | os.PathLike[str], *,
                workers: int = 2, progress: bool = False) -> tuple[VerifyResult, SignatureInfo]:
    """Verify the bundle at *folder* (a damaged bundle is never signed), then sign its files.

    *out* must lie outside the bundle: inside, it would be a file its manifest does not list.
    """
    from relgate.bundle import verify_bundle

    out_path = Path(out)
    if _inside(out_path, Path(folder)):
        raise InputError(f"-o {out}: inside the bundle {folder}; the signature is kept beside it",
                         hint="write it next to the release record, e.g. "
                              "analysis/release_<name>.sig")
    result = verify_bundle(folder, workers=workers, progress=progress)
    if not result.ok:
        reasons = result.reasons()
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        raise VerificationFailed(f"{folder}: does not verify, so it is not signed: "
                                 f"{reasons[0]}{more}", hint=f"run 'relgate verify {folder}'")
    digests = bundle_digests(folder, result)
    return result, sign_digests(Path(folder).resolve().name, digests, signer, out_path)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return False
    return True


# --------------------------------------------------------------------------- who signed


@dataclass(frozen=True, kw_only=True)
class Who:
    signer: str
    identity: str | None = None
    issuer: str | None = None


def signer_of(bundle: Mapping[str, Any]) -> Who:
    """Who a Sigstore bundle says signed it (proven only once it verified): the public key's
    sha256 hint, or the signing certificate's identity (Sigstore: SAN and OIDC issuer)."""
    material = bundle.get("verificationMaterial") if isinstance(bundle, Mapping) else None
    if not isinstance(material, Mapping):
        return Who(signer="unknown")
    key = material.get("publicKey")
    if isinstance(key, Mapping) and isinstance(key.get("hint"), str) and key["hint"]:
        return Who(signer=f"key sha256:{key['hint']}")
    chain = material.get("x509CertificateChain")
    raw = None
    if isinstance(chain, Mapping) and chain.get("certificates"):
        raw = chain["certificates"][0].get("rawBytes")
    elif isinstance(material.get("certificate"), Mapping):
        raw = material["certificate"].get("rawBytes")
    if not isinstance(raw, str):
        return Who(signer="unknown")
    return _certificate_identity(base64.b64decode(raw))


def _certificate_identity(der: bytes) -> Who:
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return Who(signer="unreadable certificate")
    identity: str | None = None
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.UniformResourceIdentifier),
                 *san.get_values_for_type(x509.RFC822Name)]
        identity = names[0] if names else None
    issuer: str | None = None
    for dotted in _FULCIO_ISSUER_OIDS:
        with contextlib.suppress(x509.ExtensionNotFound):
            ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(dotted)).value
            issuer = _extension_text(getattr(ext, "value", b""))
            if issuer:
                break
    if identity is not None:
        shown = f"{identity} ({issuer})" if issuer else identity
        return Who(signer=shown, identity=identity, issuer=issuer)
    return Who(signer=cert.subject.rfc4514_string() or "certificate without a subject")


def _extension_text(value: bytes) -> str | None:
    """Fulcio's issuer extension: a DER UTF8String (v2, 1.1.8) or raw UTF-8 bytes (v1, 1.1.1)."""
    if len(value) >= 2 and value[0] == 0x0C:
        length, start = value[1], 2
        if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
            count = length & 0x7F
            length, start = int.from_bytes(value[2:2 + count], "big"), 2 + count
        value = value[start:start + length]
    text = value.decode("utf-8", "replace").strip()
    return text or None


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, kw_only=True)
class Trust:
    """What a signature is checked against: a public key, a certificate chain (empty: the
    system's roots), or a Sigstore identity and its OIDC issuer."""

    method: str
    public_key: Path | None = None
    public_key_pem: bytes | None = None
    certificate_chain: tuple[Path, ...] = ()
    identity: str | None = None
    issuer: str | None = None

    def describe(self) -> str:
        if self.method == "key":
            return f"public key {self.public_key or '(from the release record)'}"
        if self.method == "certificate":
            chain = ", ".join(str(c) for c in self.certificate_chain) or "the system's roots"
            return f"certificate chain {chain}"
        return f"Sigstore identity {self.identity} ({self.issuer})"


def trust_from_options(*, public_key: str | None, certificate_chain: list[str] | None,
                       identity: str | None, issuer: str | None,
                       use_system_roots: bool = False) -> Trust | None:
    """The --public-key / --certificate-chain / --identity --issuer choice (None: none given);
    two kinds at once, or --identity without --issuer, is a UsageError."""
    given = [name for name, value in (("--public-key", public_key),
                                      ("--certificate-chain", certificate_chain),
                                      ("--identity", identity or issuer)) if value]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)}: give one way to check the signature",
                         hint="a public key, a certificate chain, or a Sigstore identity")
    if public_key:
        return Trust(method="key", public_key=Path(public_key))
    if certificate_chain:
        return Trust(method="certificate", certificate_chain=tuple(Path(c) for c in
                                                                   certificate_chain))
    if identity or issuer:
        if not (identity and issuer):
            raise UsageError("--identity and --issuer go together",
                             hint="e.g. --identity https://github.com/ORG/REPO/.github/workflows/"
                                  "publish.yml@refs/heads/main --issuer "
                                  "https://token.actions.githubusercontent.com")
        return Trust(method="sigstore", identity=identity, issuer=issuer)
    if use_system_roots:
        return Trust(method="certificate")
    return None


def trust_from_record(note: Mapping[str, Any]) -> Trust:
    """The trust a release record's ``signature`` note names (what fetch uses by default)."""
    method = note.get("method")
    if method == "key" and isinstance(note.get("public_key"), str):
        return Trust(method="key", public_key_pem=note["public_key"].encode())
    if method == "sigstore" and note.get("identity") and note.get("issuer"):
        return Trust(method="sigstore", identity=str(note["identity"]), issuer=str(note["issuer"]))
    return Trust(method="certificate")


@dataclass(frozen=True, kw_only=True)
class SignatureCheck:
    """A signature checked against a bundle: verified, or every reason it is not."""

    ok: bool
    signature: str
    trust: str
    signer: str | None
    subject_digest: str | None
    bundle_subject_digest: str
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "signature": self.signature, "trust": self.trust,
                "signer": self.signer, "subject_digest": self.subject_digest,
                "bundle_subject_digest": self.bundle_subject_digest,
                "reasons": list(self.reasons), "notes": list(self.notes)}


def read_signature(path: Path, trust: Trust, *, label: str | None = None) -> tuple[Any, Any]:
    """(the parsed JSON, the library's signature object) of a signature file; InputError when
    it is not a model-signing signature."""
    shown = label or str(path)
    data = read_capped(path, max_bytes=MAX_SIGNATURE_BYTES, what="signature file")
    doc = loads_strict(data, source=shown)
    if not isinstance(doc, dict) or "dsseEnvelope" not in doc:
        raise InputError(f"{shown}: not a model-signing signature (a Sigstore bundle with a "
                         "DSSE envelope)", hint="give the .sig file relgate sign or "
                                                "model_signing sign wrote")
    if trust.method == "sigstore":
        from model_signing._signing import sign_sigstore as reader
    else:
        from model_signing._signing import sign_sigstore_pb as reader  # type: ignore[no-redef]
    try:
        signature = reader.Signature.read(path)
    except Exception as exc:  # the library's parsers raise what their models raise
        raise InputError(f"{shown}: not a readable model-signing signature: {_first_line(exc)}",
                         hint="give the .sig file relgate sign or model_signing sign wrote"
                         ) from None
    return doc, signature


def _verifier(trust: Trust, work: Path | None) -> Any:
    """The library verifier for *trust*; InputError (exit 2) when the key or chain is unusable."""
    if trust.method == "key":
        from model_signing._signing import sign_ec_key

        key_path = trust.public_key
        if key_path is None:
            assert trust.public_key_pem is not None and work is not None
            key_path = work / "public_key.pem"
            key_path.write_bytes(trust.public_key_pem)
        else:
            _read_small(key_path, "public key (PEM)", "--public-key")
        try:
            return sign_ec_key.Verifier(key_path)
        except (ValueError, TypeError) as exc:
            raise InputError(f"--public-key {trust.public_key or 'of the release record'}: "
                             f"{_first_line(exc)}",
                             hint="give the PEM public key of the EC key that signed") from None
    if trust.method == "certificate":
        from model_signing._signing import sign_certificate

        for c in trust.certificate_chain:
            _read_small(c, "certificate chain (PEM)", "--certificate-chain")
        try:
            return sign_certificate.Verifier(list(trust.certificate_chain))
        except (ValueError, TypeError) as exc:
            raise InputError(f"--certificate-chain: {_first_line(exc)}",
                             hint="give PEM certificates: the CA that issued the signer's") \
                from None
    from model_signing._signing import sign_sigstore

    try:
        return sign_sigstore.Verifier(identity=str(trust.identity), oidc_issuer=str(trust.issuer))
    except Exception as exc:  # the trust root comes from Sigstore's TUF repository
        raise InputError(f"cannot load Sigstore's trust root: {_first_line(exc)}",
                         hint="Sigstore verification needs network access to its TUF "
                              "repository once (then it is cached)") from None


def verify_signature(folder: str | os.PathLike[str], result: VerifyResult, signature: Path,
                     trust: Trust, *, label: str | None = None,
                     expected_subject: str | None = None) -> SignatureCheck:
    """Check *signature* against the bundle *result* verified: the signature must verify
    with *trust* and sign exactly the bundle's files (manifest.json included) with their
    sha256. *expected_subject* (a release record's note) must then be its subject digest."""
    import tempfile

    shown = label or str(signature)
    digests = bundle_digests(folder, result)
    ours = subject_digest(Path(folder).resolve().name, digests)
    doc, sig = read_signature(signature, trust, label=shown)
    base: dict[str, Any] = {"signature": shown, "trust": trust.describe(),
                            "bundle_subject_digest": ours}
    with tempfile.TemporaryDirectory(prefix="relgate-verify-") as tmp:
        verifier = _verifier(trust, Path(tmp))
        noise = io.StringIO()
        try:
            # the library prints format warnings, and logs certificate ones: notes, not noise
            with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
                signed = verifier.verify(sig)
        except Exception as exc:  # every failure of the cryptographic check is a "no"
            return SignatureCheck(ok=False, signer=None, subject_digest=None, **base,
                                  reasons=(_crypto_reason(exc, trust, shown),))
    notes = tuple(" ".join(line.split()) for line in noise.getvalue().splitlines() if line.strip())
    claimed = signed.serialization_type
    signed_subject = subject_of_signed(signed)
    reasons = _serialization_problems(claimed, shown)
    if not reasons:
        reasons = file_differences(
            {rd.identifier: rd.digest.digest_hex for rd in signed.resource_descriptors()},
            digests, what=shown)
    if reasons and signed_subject != ours:
        reasons.insert(0, f"{shown}: signs another bundle (signed subject digest "
                          f"{signed_subject[:16]}..., this bundle's {ours[:16]}...)")
    if not reasons and expected_subject is not None and expected_subject != signed_subject:
        reasons.append(f"{shown}: its subject digest {signed_subject[:16]}... is not the "
                       f"{expected_subject[:16]}... the release record notes")
    who = signer_of(doc)
    return SignatureCheck(ok=not reasons, signer=who.signer, subject_digest=signed_subject,
                          reasons=tuple(reasons), notes=notes, **base)


def subject_of_signed(signed: Any) -> str:
    """The subject digest of a verified library manifest (recomputed by the library)."""
    from model_signing._signing import signing as ms_signing

    return str(ms_signing.Payload(signed).statement.pb.subject[0].digest["sha256"])


def _serialization_problems(claimed: Mapping[str, Any], shown: str) -> list[str]:
    method, hash_type = claimed.get("method"), claimed.get("hash_type")
    if method == "files" and hash_type == "sha256":
        return []
    return [f"{shown}: signs {hash_type} digests of {method} (relgate compares each file's "
            "sha256 with its manifest; sign with model-signing's default file serialization)"]


def file_differences(signed: Mapping[str, str], bundle: Mapping[str, str], *,
                     what: str, verb: str = "signed") -> list[str]:
    """One reason per file in which the signed (*verb*: or attested) list and the bundle's
    files differ."""
    out: list[str] = []
    for path in sort_paths({*signed, *bundle}):
        if path not in signed:
            why = (" (signed with ignored paths? model_signing sign needs --no-ignore-git-paths "
                   "for .git* files)") if verb == "signed" else ""
            out.append(f"{show_path(path)}: in the bundle but not {verb} in {what}{why}")
        elif path not in bundle:
            out.append(f"{show_path(path)}: {verb} in {what} but not in the bundle")
        elif signed[path] != bundle[path]:
            cause = ("the manifest was rewritten after signing" if path == MANIFEST_NAME
                     else f"the file differs from the one {verb}")
            out.append(f"{show_path(path)}: sha256 {bundle[path][:16]}... is not the {verb} "
                       f"{signed[path][:16]}... ({cause})")
    return out


def _crypto_reason(exc: BaseException, trust: Trust, shown: str) -> str:
    from cryptography.exceptions import InvalidSignature

    text = _first_line(exc)
    if "Key mismatch" in text:
        return f"{shown}: signed with another key than {trust.describe()}"
    if isinstance(exc, InvalidSignature) or not text:
        return (f"{shown}: the signature does not verify with {trust.describe()} (the "
                "signature or its signed payload was altered)")
    return f"{shown}: does not verify with {trust.describe()}: {text}"


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text


__all__ = ["METHODS", "SignatureCheck", "SignatureInfo", "Signer", "Trust", "bundle_digests",
           "file_differences", "load_signer", "payload_for", "read_signature", "sign_bundle",
           "sign_digests", "signer_of", "subject_digest", "trust_from_options",
           "trust_from_record", "verify_signature"]


def check_release_signature(folder: Path, result: VerifyResult, *, note: Mapping[str, Any] | None,
                            signature: bytes | None, trust: Trust | None, work: Path,
                            label: str) -> SignatureCheck | None:
    """A fetched release's signature, when the registry has one (*signature*: the bytes of
    ``analysis/release_<name>.sig`` at the fetched commit; *note*: its record's ``signature``).
    None when it has neither; a refusal, never a pass, when one is there and does not verify,
    or when the record notes a signature the registry does not hold. Without *trust*, the
    key or Sigstore identity the record notes is used (a consistent registry, not a key you
    chose: pass --public-key or --identity to pin the signer yourself)."""
    if note is None and signature is None:
        return None
    if signature is None:
        return SignatureCheck(ok=False, signature=label, trust="-", signer=None,
                              subject_digest=None, bundle_subject_digest="",
                              reasons=(f"{label}: the release record notes a signature, but the "
                                       "registry holds none at this commit",))
    if trust is None and note is None:
        return SignatureCheck(ok=False, signature=label, trust="-", signer=None,
                              subject_digest=None, bundle_subject_digest="",
                              reasons=(f"{label}: a signature with no signer noted in a release "
                                       "record; pass --public-key, --certificate-chain or "
                                       "--identity/--issuer to check it",))
    path = work / "release.sig"
    path.write_bytes(signature)
    used = trust or trust_from_record(note or {})
    check = verify_signature(folder, result, path, used, label=label,
                             expected_subject=None if note is None
                             else str(note.get("subject_digest")))
    if trust is None:
        from dataclasses import replace

        check = replace(check, notes=(*check.notes, f"{label}: checked with the "
                                      f"{used.describe()} the release record names; pass "
                                      "--public-key or --identity to choose the signer"))
    return check
