"""relgate sign: an OpenSSF model signature (model-signing format) over a verified bundle."""

from __future__ import annotations

import argparse

from relgate.errors import EXIT_OK

HELP = ("sign a bundle with OpenSSF model signing (a key, a certificate, or Sigstore keyless); "
        "the bundle is verified first, and the signature is written outside it")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE_DIR", help="the bundle folder (holds manifest.json)")
    parser.add_argument("-o", "--out", required=True, metavar="SIG",
                        help="where the signature goes, outside the bundle (promote writes "
                             "analysis/release_<name>.sig)")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--key", metavar="KEY.pem",
                     help="EC private key (P-256, P-384 or P-521), PEM")
    how.add_argument("--sigstore", action="store_true",
                     help="keyless Sigstore signing with the CI's OIDC identity (GitHub Actions "
                          "with id-token: write, or SIGSTORE_ID_TOKEN)")
    parser.add_argument("--certificate", metavar="CERT.pem",
                        help="with --key: the key's signing certificate (certificate signing)")
    parser.add_argument("--certificate-chain", metavar="CHAIN.pem", action="append", default=[],
                        help="with --certificate: the certificates up to the root (repeatable)")
    parser.add_argument("--password-env", metavar="VAR",
                        help="environment variable holding the passphrase of an encrypted --key")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def run(args: argparse.Namespace) -> int:
    from relgate.errors import UsageError
    from relgate.params import SigningSpec
    from relgate.report import print_json
    from relgate.report.verify import emit
    from relgate.signing import load_signer, sign_bundle

    if args.sigstore and (args.certificate or args.certificate_chain or args.password_env):
        raise UsageError("--sigstore takes no --certificate, --certificate-chain or --password-env",
                         hint="keyless signing uses the CI's identity, not a key")
    if args.certificate_chain and not args.certificate:
        raise UsageError("--certificate-chain needs --certificate",
                         hint="give the key's signing certificate too")
    if args.sigstore:
        spec = SigningSpec(method="sigstore")
    else:
        spec = SigningSpec(method="certificate" if args.certificate else "key", key=args.key,
                           certificate=args.certificate,
                           certificate_chain=tuple(args.certificate_chain),
                           password_env=args.password_env)
    signer = load_signer(spec, where="--key" if not args.sigstore else "--sigstore")
    result, info = sign_bundle(args.bundle, signer, args.out, progress=not args.json)
    if args.json:
        print_json({"bundle": args.bundle, "root_digest": result.root_digest, **info.to_record()})
    else:
        emit([("green", f"signed: {args.bundle}: {result.files} files and manifest.json -> "
                        f"{args.out}"),
              ("", f"signer {info.signer}; subject digest {info.subject_digest}")])
    return EXIT_OK
