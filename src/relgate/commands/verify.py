"""relgate verify: check every byte of a bundle against its manifest.json (and, asked, its
OpenSSF model signature and provenance attestation)."""

from __future__ import annotations

import argparse

from relgate.commands._options import add_signature_trust, signature_trust
from relgate.errors import EXIT_OK, EXIT_REFUSED

HELP = "check a bundle against its manifest.json (exit 0 verified, 1 not, 2 unreadable manifest)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE_DIR",
                        help="the bundle folder (holds manifest.json)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON (every problem, with the files named)")
    parser.add_argument("--root-digest", metavar="HEX", default=None,
                        help="the root digest pinned outside the bundle (release record, tag); "
                             "a consistent rewrite of files and manifest is caught only with it")
    parser.add_argument("--allow-dvc-cache-links", action="store_true",
                        help="accept files that are links into the DVC cache of the repository "
                             "holding the bundle (cache.type hardlink or symlink), each to the "
                             "entry DVC's metadata names for it; their bytes are still hashed")
    parser.add_argument("--signature", metavar="SIG",
                        help="also check this OpenSSF model signature (relgate sign, "
                             "model_signing sign): it must verify and sign exactly the bundle's "
                             "files; needs --public-key, --certificate-chain or --identity")
    parser.add_argument("--attestation", metavar="PROVENANCE.json",
                        help="also check this provenance attestation (in-toto SLSA v1, "
                             "analysis/provenance_<name>.json): schema, subject = the "
                             "bundle's files; with a key option, its .sig beside it too")
    add_signature_trust(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from relgate.bundle import verify_bundle
    from relgate.errors import UsageError
    from relgate.report import print_json
    from relgate.report.verify import emit, verify_lines

    trust = signature_trust(args)
    if args.signature and trust is None:
        raise UsageError("--signature needs --public-key, --certificate-chain or --identity "
                         "with --issuer", hint="say what the signature is checked against")
    if trust is not None and not (args.signature or args.attestation):
        raise UsageError("a key option without --signature or --attestation checks nothing",
                         hint="add --signature SIG")
    links = None
    if args.allow_dvc_cache_links:
        from relgate.dvclinks import DvcCacheLinks

        links = DvcCacheLinks.for_folder(args.bundle)
    result = verify_bundle(args.bundle, expected_root_digest=args.root_digest,
                           progress=not args.json, dvc_links=links)
    signature = attestation = None
    if result.ok and args.signature:
        from relgate.signing import verify_signature

        signature = verify_signature(args.bundle, result, Path(args.signature), trust)
    if result.ok and args.attestation:
        from relgate.attestation import verify_attestation
        from relgate.signing import bundle_digests

        attestation = verify_attestation(Path(args.attestation),
                                         bundle_digests(args.bundle, result), trust=trust)
    ok = result.ok and all(c is None or c.ok for c in (signature, attestation))
    if args.json:
        out = {**result.to_dict(), "ok": ok}  # the keys below only when asked for
        if args.signature:
            out["signature"] = None if signature is None else signature.to_dict()
        if args.attestation:
            out["attestation"] = None if attestation is None else attestation.to_dict()
        print_json(out)
    else:
        lines = verify_lines(result)
        if signature is not None:
            lines += _lines(signature.ok, f"signature verified: {signature.signature}: signed by "
                            f"{signature.signer} (checked with {signature.trust}); subject digest "
                            f"{signature.subject_digest}" if signature.ok else
                            f"signature NOT verified: {signature.signature}",
                            signature.reasons, signature.notes)
        if attestation is not None:
            signed = f", signature {attestation.signature} verified" if attestation.signature else ""
            lines += _lines(attestation.ok, f"attestation verified: {attestation.attestation}: "
                            f"its subject is the bundle's files{signed}" if attestation.ok else
                            f"attestation NOT verified: {attestation.attestation}",
                            attestation.reasons, attestation.notes)
        emit(lines)
    return EXIT_OK if ok else EXIT_REFUSED


def _lines(ok: bool, head: str, reasons: tuple[str, ...],
           notes: tuple[str, ...]) -> list[tuple[str, str]]:
    return [("green" if ok else "red", head), *(("", f"  - {r}") for r in reasons),
            *(("yellow", f"note: {n}") for n in notes)]
