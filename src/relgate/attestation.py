"""A release's provenance: an in-toto Statement with an SLSA Provenance v1 predicate.

Promotion writes one per release beside the git-tracked release record
(``analysis/provenance_<name>.json``): its subject is every file of the bundle
(manifest.json included) with its sha256; its resolved dependencies are what the bundle
was built from (the registry's git commit, the ``dvc.lock`` digest, the params digest,
the evaluation data's sha256, the relgate version); its builder is relgate, or the
GitHub Actions workflow run when promote runs in one. With signing on, the same signer
signs it (a DSSE envelope in a Sigstore bundle, the library's format) into
``analysis/provenance_<name>.sig``.

``verify_attestation`` checks a Statement against the bundle it claims: schema
``provenance``, then subject = the bundle's files exactly, then, given a trust, the
signature over exactly this Statement.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relgate import schemas
from relgate.errors import InputError
from relgate.jsonio import dumps, loads_strict, read_capped
from relgate.manifest import show_path, sort_paths

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://relgate.dev/buildtypes/promote/v1"
LOCAL_BUILDER = "https://relgate.dev/builders/relgate"
MAX_ATTESTATION_BYTES = 64 * 1024 * 1024


def attestation_path(name: str) -> str:
    """Beside the record, outside the ``release_*.json`` names that ``releases`` lists."""
    return f"analysis/provenance_{name}.json"


def attestation_signature_path(name: str) -> str:
    return f"analysis/provenance_{name}.sig"


def params_digest(params: Any) -> str:
    """sha256 of the params as the release record holds them (relgate's canonical JSON)."""
    return hashlib.sha256(dumps(params)).hexdigest()


def _builder(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(builder, metadata): the GitHub Actions workflow run in CI, else relgate itself."""
    import relgate

    version = {"relgate": relgate.__version__}
    server, repo, run = (env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"),
                         env.get("GITHUB_RUN_ID"))
    if env.get("GITHUB_ACTIONS") == "true" and server and repo and run:
        workflow = env.get("GITHUB_WORKFLOW_REF")
        builder = {"id": f"{server}/{workflow}" if workflow else f"{server}/{repo}/actions",
                   "version": version}
        attempt = env.get("GITHUB_RUN_ATTEMPT", "1")
        return builder, {"invocationId": f"{server}/{repo}/actions/runs/{run}/attempts/{attempt}"}
    return {"id": LOCAL_BUILDER, "version": version}, {}


def build_statement(*, name: str, digests: Mapping[str, str], record: Mapping[str, Any],
                    env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Statement of the bundle whose files are *digests*, from its pinned release
    *record* (``_mirror``'s: provenance, evidence and created)."""
    import relgate

    env = os.environ if env is None else env
    prov = record["provenance"]
    deps: list[dict[str, Any]] = []
    if prov.get("git_commit"):
        dep: dict[str, Any] = {"name": "git", "digest": {"gitCommit": prov["git_commit"]}}
        if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_SERVER_URL") \
                and env.get("GITHUB_REPOSITORY"):
            dep["uri"] = f"git+{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}"
        deps.append(dep)
    if prov.get("dvc_lock_sha256"):
        deps.append({"name": "dvc.lock", "digest": {"sha256": prov["dvc_lock_sha256"]}})
    deps.append({"name": "params", "digest": {"sha256": params_digest(prov.get("params", {}))},
                 "annotations": {"note": "canonical JSON of the release record's "
                                         "provenance.params"}})
    deps.append({"name": record["evidence"]["data"]["path"],
                 "digest": {"sha256": record["evidence"]["data"]["sha256"]},
                 "annotations": {"role": "evaluation data"}})
    deps.append({"name": "relgate", "uri": f"pkg:pypi/relgate@{relgate.__version__}"})
    builder, metadata = _builder(env)
    if record.get("created"):
        metadata["startedOn"] = record["created"]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": path, "digest": {"sha256": digests[path]}}
                    for path in sort_paths(digests)],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"release": name, "tag": str(record.get("tag") or ""),
                                       "bundle": str((record.get("bundle") or {}).get("path", ""))},
                "resolvedDependencies": deps,
            },
            "runDetails": {"builder": builder, "metadata": metadata},
        },
    }


class _StatementPayload:
    """What the library's signers sign: ``.statement.pb``, an in-toto Statement."""

    def __init__(self, statement: Mapping[str, Any]) -> None:
        from in_toto_attestation.v1 import resource_descriptor
        from in_toto_attestation.v1 import statement as ito_statement

        subjects = [resource_descriptor.ResourceDescriptor(
            name=s["name"], digest=dict(s["digest"])).pb for s in statement["subject"]]
        self.statement = ito_statement.Statement(
            subjects=subjects, predicate_type=statement["predicateType"],
            predicate=json.loads(json.dumps(statement["predicate"])))


def sign_statement(statement: Mapping[str, Any], signer: Any, out: Path) -> None:
    """Sign the Statement with the release's signer (relgate.signing.Signer) into *out*."""
    from relgate.jsonio import atomic_write_bytes, write_error
    from relgate.signing import _sign, signature_bytes

    data = signature_bytes(_sign(signer, _StatementPayload(statement)))
    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise write_error(out, exc) from None


def read_statement(path: Path, *, label: str | None = None) -> dict[str, Any]:
    """A schema-valid provenance Statement; InputError/SchemaError (exit 2) otherwise."""
    shown = label or str(path)
    data = read_capped(path, max_bytes=MAX_ATTESTATION_BYTES, what="provenance attestation")
    statement = loads_strict(data, source=shown)
    schemas.validate(statement, "provenance", source=shown)
    assert isinstance(statement, dict)
    return statement


@dataclass(frozen=True, kw_only=True)
class AttestationCheck:
    """A provenance Statement checked against a bundle (and its signature, when asked)."""

    ok: bool
    attestation: str
    signature: str | None
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "attestation": self.attestation, "signature": self.signature,
                "reasons": list(self.reasons), "notes": list(self.notes)}


def verify_attestation(path: Path, digests: Mapping[str, str], *, trust: Any = None,
                       signature: Path | None = None) -> AttestationCheck:
    """Check the Statement at *path* against the bundle files *digests* (relgate.signing.
    bundle_digests of a verified bundle): schema, subject = those files exactly, and with
    *trust* (relgate.signing.Trust) its signature (*signature*, default the ``.sig`` beside
    it), which must sign exactly this Statement."""
    from relgate.signing import file_differences

    statement = read_statement(path)
    subject = {}
    for s in statement["subject"]:
        if s["name"] in subject:
            raise InputError(f"{path}: subject {show_path(s['name'])} is listed twice",
                             hint="a provenance subject names each bundle file once")
        subject[s["name"]] = s["digest"]["sha256"]
    reasons = file_differences(subject, digests, what=str(path), verb="attested")
    sig_path = signature or path.with_name(path.name.removesuffix(".json") + ".sig")
    if trust is None:
        note = (f"{sig_path}: not checked (give --public-key, --certificate-chain or --identity "
                "to check who signed the attestation)") if sig_path.exists() else \
               f"{path}: unsigned; nothing says who made it"
        return AttestationCheck(ok=not reasons, attestation=str(path), signature=None,
                                reasons=tuple(reasons), notes=(note,))
    if not sig_path.exists():
        reasons.append(f"{path}: no signature ({sig_path} is missing), so nothing proves who "
                       "made it")
        return AttestationCheck(ok=False, attestation=str(path), signature=str(sig_path),
                                reasons=tuple(reasons))
    reasons += _signature_problems(statement, sig_path, trust)
    return AttestationCheck(ok=not reasons, attestation=str(path), signature=str(sig_path),
                            reasons=tuple(reasons))


def _signature_problems(statement: Mapping[str, Any], sig_path: Path, trust: Any) -> list[str]:
    import tempfile

    from relgate.signing import _crypto_reason, _verifier, read_signature

    _, sig = read_signature(sig_path, trust)
    with tempfile.TemporaryDirectory(prefix="relgate-attest-") as tmp:
        verifier = _verifier(trust, Path(tmp))
        try:
            payload_type, payload = verifier._verify_signed_content(sig)
        except Exception as exc:  # a failed cryptographic check is a "no", with its reason
            return [_crypto_reason(exc, trust, str(sig_path))]
    try:
        signed = json.loads(payload)
    except ValueError:
        return [f"{sig_path}: its signed payload ({payload_type}) is not JSON"]
    if not _same(signed, statement):
        return [f"{sig_path}: signs another Statement than the attestation (the attestation "
                "was edited after signing, or the signature is another release's)"]
    return []


def _same(a: Any, b: Any) -> bool:
    """JSON equality across the protobuf round trip (which writes every number as a float)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return bool(a == b)


def write_attestation(*, root: Path, name: str, digests: Mapping[str, str],
                      record: Mapping[str, Any], signer: Any = None) -> dict[str, Any]:
    """Write (and with *signer*, sign) the release's Statement beside its record; the
    record's ``attestation`` note."""
    from relgate.jsonio import atomic_write_bytes, write_error

    statement = build_statement(name=name, digests=digests, record=record)
    schemas.validate(statement, "provenance", source="provenance attestation")
    rel = attestation_path(name)
    data = dumps(statement)
    try:
        atomic_write_bytes(root / rel, data)
    except OSError as exc:
        raise write_error(root / rel, exc) from None
    sig_rel = None
    if signer is not None:
        sig_rel = attestation_signature_path(name)
        sign_statement(statement, signer, root / sig_rel)
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "signature": sig_rel}


__all__ = ["BUILD_TYPE", "PREDICATE_TYPE", "STATEMENT_TYPE", "AttestationCheck",
           "attestation_path", "attestation_signature_path", "build_statement",
           "read_statement", "verify_attestation", "write_attestation"]
