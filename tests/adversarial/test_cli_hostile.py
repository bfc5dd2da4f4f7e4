"""Every relgate command on hostile input, through the CLI: exit 2 (or 1 for a governed
refusal), one line on stderr, no traceback, no "internal error" (exit 3 is a bug).

Hostile records and params files are tried in every reader by test_records.py; here each
command gets the inputs only it takes (models, eval sets, folders, repositories, names),
and a guard makes sure a new command cannot be added without a row in this table.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from relgate.cli import command_modules
from tests.adversarial.conftest import assert_clean_failure, make_hostile

Case = Callable[[Path], tuple[list[object], tuple[int, ...]]]
SPARSE = f"sparse:{256 * 1024**2}"  # models and eval sets are hashed whole: 256 MiB is plenty


def _npz(root: Path, name: str, **arrays: np.ndarray) -> Path:
    path = root / "hostile" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def _object_npz(root: Path) -> Path:
    """An eval set whose x is a pickled object array (loading it would run code)."""
    path = root / "hostile" / "pickle.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    return path


def _lying_header_npz(root: Path) -> Path:
    """y's .npy header claims 10^12 labels; the member holds two bytes."""
    path = root / "hostile" / "lying.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = b"{'descr': '|i1', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += b" " * (118 - len(header)) + b"\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("y.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
                    + b"\x00\x01")
        x = np.zeros((2, 16), np.float32)
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00" + b"v\x00" + (
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 16), }".ljust(117) + b"\n")
            + x.tobytes())
    return path


def _data_cases(cmd: str, split: str) -> dict[str, Case]:
    """Hostile --data for evaluate / calibrate / validate."""
    def case(make: Callable[[Path], Path]) -> Case:
        def build(root: Path) -> tuple[list[object], tuple[int, ...]]:
            out = ["--out", root / "out" / ("s.npz" if cmd == "evaluate" else "r.json")]
            return [cmd, "--model", root / "models/model.onnx", "--data", make(root), *out], (2,)
        return build

    nan = {} if cmd == "evaluate" else {  # evaluate scores NaN as NaN; judging refuses it
        f"{cmd}-nan-inputs": case(lambda r: _npz(r, "nan.npz", x=np.full((4, 16), np.nan,
                                                 np.float32), y=np.array([0, 1, 0, 1]))),
    }
    return {
        **nan,
        f"{cmd}-pickle": case(_object_npz),
        f"{cmd}-lying-header": case(_lying_header_npz),
        f"{cmd}-labels-not-binary": case(lambda r: _npz(r, "y2.npz", x=np.zeros((4, 16),
                                                        np.float32), y=np.array([0, 1, 2, 1]))),
        f"{cmd}-wrong-width": case(lambda r: _npz(r, "w.npz", x=np.zeros((4, 15), np.float32),
                                                  y=np.array([0, 1, 0, 1]))),
        f"{cmd}-sparse": case(lambda r: make_hostile(r / "hostile/big.npz", SPARSE)),
        f"{cmd}-fifo": case(lambda r: make_hostile(r / "hostile/fifo.npz", "fifo")),
        f"{cmd}-dev-zero": case(lambda r: make_hostile(r / "hostile/zero.npz", "devzero")),
        f"{cmd}-truncated": case(lambda r: _truncated(r / f"data/{split}.npz")),
    }


def _truncated(src: Path) -> Path:
    dst = src.parent.parent / "hostile" / "truncated.npz"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dst


def _model_file(make: Callable[[Path], Path], *extra: object) -> Case:
    def build(root: Path) -> tuple[list[object], tuple[int, ...]]:
        return ["inspect", make(root), *extra], (2,)
    return build


def _hostile_dir(kind: str) -> Case:
    """manifest DIR over a folder holding something a bundle must not."""
    def build(root: Path) -> tuple[list[object], tuple[int, ...]]:
        d = root / "hostile" / kind
        d.mkdir(parents=True)
        (d / "ok.txt").write_bytes(b"ok\n")
        if kind == "fifo":
            os.mkfifo(d / "pipe")
        elif kind == "dev-zero":
            (d / "zero").symlink_to("/dev/zero")
        elif kind == "link-out":
            (d / "passwd").symlink_to("/etc/passwd")
        elif kind == "newline-name":
            (d / "a\nb").write_bytes(b"x")
        elif kind == "not-utf8-name":
            (d / os.fsdecode(b"caf\xe9")).write_bytes(b"x")
        elif kind == "case-twins":
            (d / "Ok.txt").write_bytes(b"OK\n")
        elif kind == "hardlink":
            os.link(d / "ok.txt", d / "twin.txt")
        return ["manifest", d], (2,)
    return build


def _git_registry(root: Path, record: bytes | None, *, dvc_lock: bytes | None = None) -> Path:
    repo = root / "hostile" / "git-registry"
    (repo / "analysis").mkdir(parents=True)
    if record is not None:
        (repo / "analysis" / "release_v1.0.0.json").write_bytes(record)
    else:
        (repo / "analysis" / "README").write_bytes(b"no records\n")
    if dvc_lock is not None:
        (repo / "dvc.lock").write_bytes(dvc_lock)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "hostile record"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return repo


CASES: dict[str, Case] = {
    # inspect: hostile model files (the full external-data set is in test_onnx_hostile.py)
    "inspect-sparse": _model_file(lambda r: make_hostile(r / "hostile/m.onnx", SPARSE)),
    "inspect-fifo": _model_file(lambda r: make_hostile(r / "hostile/m.onnx", "fifo")),
    "inspect-dev-zero": _model_file(lambda r: make_hostile(r / "hostile/m.onnx", "devzero")),
    "inspect-json-not-onnx": _model_file(lambda r: r / "analysis/validation_report.json"),
    "inspect-unknown-output": _model_file(lambda r: r / "models/model.onnx", "--output", "nope"),
    "inspect-negative-index": _model_file(lambda r: r / "models/model.onnx",
                                          "--positive-index", "-1"),
    **_data_cases("evaluate", "test"),
    **_data_cases("calibrate", "val"),
    **_data_cases("validate", "test"),
    "evaluate-threads-zero": lambda r: (["evaluate", "--model", r / "models/model.onnx", "--data",
                                         r / "data/test.npz", "--out", r / "out/s.npz",
                                         "--threads", "0"], (2,)),
    "evaluate-scale-nan": lambda r: (["evaluate", "--model", r / "models/model.onnx", "--data",
                                      r / "data/test.npz", "--out", r / "out/s.npz",
                                      "--scale", "nan"], (2,)),
    "evaluate-out-is-a-folder": lambda r: (["evaluate", "--model", r / "models/model.onnx",
                                            "--data", r / "data/test.npz", "--out", r / "data"],
                                           (2,)),
    "validate-threshold-above-one": lambda r: (["validate", "--model", r / "models/model.onnx",
                                                "--data", r / "data/test.npz", "--threshold",
                                                "1.5", "--out", r / "out/r.json"], (2,)),
    "validate-baseline-not-a-bundle": lambda r: (["validate", "--model", r / "models/model.onnx",
                                                  "--data", r / "data/test.npz", "--baseline",
                                                  r / "analysis", "--out", r / "out/r.json"], (2,)),
    "validate-out-in-a-file": lambda r: (["validate", "--model", r / "models/model.onnx",
                                          "--data", r / "data/test.npz", "--out",
                                          r / "params.yaml" / "r.json"], (2,)),
    "gate-model-instead-of-report": lambda r: (["gate", r / "models/model.onnx"], (2,)),
    "report-fifo": lambda r: (["report", make_hostile(r / "hostile/r.json", "fifo")], (2,)),
    "report-empty-folder": lambda r: (["report", make_hostile(r / "hostile/empty", "dir")],
                                      (2,)),
    "promote-release-traversal": lambda r: (["promote", "--root", r, "--params",
                                             r / "params.yaml", "--release", "../../x"], (2,)),
    "promote-root-missing": lambda r: (["promote", "--root", r / "nope", "--params",
                                        r / "params.yaml"], (2,)),
    "promote-target-is-a-file": lambda r: _promote_over_a_file(r),
    "manifest-fifo": _hostile_dir("fifo"),
    "manifest-dev-zero-link": _hostile_dir("dev-zero"),
    "manifest-link-out": _hostile_dir("link-out"),
    "manifest-newline-name": _hostile_dir("newline-name"),
    "manifest-not-utf8-name": _hostile_dir("not-utf8-name"),
    "manifest-case-twins": _hostile_dir("case-twins"),
    "manifest-hardlink": _hostile_dir("hardlink"),
    "manifest-of-a-file": lambda r: (["manifest", r / "params.yaml"], (2,)),
    "verify-a-file": lambda r: (["verify", r / "params.yaml"], (2,)),
    "verify-bad-pin": lambda r: (["verify", r / "analysis", "--root-digest", "xyz"], (2,)),
    "schema-check-fifo": lambda r: (["schema", "check", make_hostile(r / "hostile/s.json",
                                                                      "fifo"), "--kind",
                                     "release"], (2,)),
    "fetch-name-traversal": lambda r: (["fetch", r, "../../etc", "-o", r / "out/x"], (2,)),
    "fetch-out-exists": lambda r: (["fetch", r, "v1.0.0", "-o", r / "models"], (2,)),
    "fetch-not-a-repo": lambda r: (["fetch", r / "hostile-nope", "v1.0.0", "-o", r / "o"], (2,)),
    "fetch-rev-option": lambda r: (["fetch", _git_registry(r, b"{}"), "v1.0.0", "-o", r / "o",
                                    "--rev=--upload-pack=touch pwned"], (2,)),
    "fetch-hostile-record": lambda r: (["fetch", _git_registry(r, b'{"a": 1, "a": 2}'),
                                        "v1.0.0", "-o", r / "o"], (2,)),
    "fetch-record-deep": lambda r: (["fetch", _git_registry(r, b"[" * 100_000 + b"]" * 100_000),
                                     "v1.0.0", "-o", r / "o"], (2,)),
    "fetch-deep-dvc-lock": lambda r: (["fetch", _git_registry(
        r, None, dvc_lock=b"stages: " + b"[" * 5000 + b"]" * 5000 + b"\n"), "v1.0.0", "-o",
        r / "o"], (2,)),
    "fetch-stage-and-release": lambda r: (["fetch", r, "v1.0.0", "--stage", "prod", "-o",
                                           r / "o"], (2,)),
    "fetch-neither-release-nor-stage": lambda r: (["fetch", r, "-o", r / "o"], (2,)),
    "fetch-stage-traversal": lambda r: (["fetch", r, "--stage", "../../etc", "-o", r / "o"],
                                        (2,)),
    "fetch-stage-option": lambda r: (["fetch", _git_registry(r, b"{}"), "--stage=--all", "-o",
                                      r / "o"], (2,)),
    "fetch-stage-nobody-holds": lambda r: (["fetch", _git_registry(r, b"{}"), "--stage", "prod",
                                            "-o", r / "o"], (2,)),
    "reproduce-not-a-repo": lambda r: (["reproduce", "--registry", r], (2,)),
    "reproduce-registry-is-a-file": lambda r: (["reproduce", "--registry", r / "params.yaml"],
                                               (2,)),
    "reproduce-rev-option": lambda r: (["reproduce", "--registry", _git_registry(r, b"{}"), "--",
                                        "--upload-pack=touch pwned"], (2,)),
    "reproduce-no-dvc-lock": lambda r: (["reproduce", "--registry", _git_registry(r, b"{}")],
                                        (2,)),
    "reproduce-deep-dvc-lock": lambda r: (["reproduce", "--registry", _git_registry(
        r, None, dvc_lock=b"stages: " + b"[" * 5000 + b"]" * 5000 + b"\n")], (2,)),
    "compare-one-candidate": lambda r: (["compare", f"a={r / 'models/model.onnx'}", "--data",
                                         r / "data/test.npz"], (2,)),
    "compare-data-fifo": lambda r: (["compare", f"a={r / 'models/model.onnx'}",
                                     f"b={r / 'models/model.onnx'}", "--data",
                                     make_hostile(r / "hostile/d.npz", "fifo")], (2,)),
    "compare-pickled-data": lambda r: (["compare", f"a={r / 'models/model.onnx'}",
                                        f"b={r / 'models/model.onnx'}", "--data",
                                        _object_npz(r)], (2,)),
    "compare-model-traversal": lambda r: (["compare", "a=../../etc/passwd.onnx",
                                           f"b={r / 'models/model.onnx'}", "--data",
                                           r / "data/test.npz"], (2,)),
    "parity-reference-fifo": lambda r: (["parity", "--reference",
                                         make_hostile(r / "hostile/deploy.pt", "fifo"),
                                         "--model", r / "models/model.onnx", "--data",
                                         r / "data/test.npz", "--params", r / "params.yaml"],
                                        (2,)),
    "parity-reference-garbage": lambda r: (["parity", "--reference",
                                            make_hostile(r / "hostile/x.pt", b"PK\x03\x04junk"),
                                            "--model", r / "models/model.onnx", "--data",
                                            r / "data/test.npz", "--params", r / "params.yaml"],
                                           (2,)),
    "parity-reference-is-yaml": lambda r: (["parity", "--reference", r / "params.yaml",
                                            "--model", r / "models/model.onnx", "--data",
                                            r / "data/test.npz", "--params", r / "params.yaml"],
                                           (2,)),
    "init-model-fifo": lambda r: (["init", "--root", r, "--model",
                                   make_hostile(r / "hostile/m.onnx", "fifo"), "--val",
                                   r / "data/val.npz", "--test", r / "data/test.npz"], (2,)),
    "init-model-dev-zero": lambda r: (["init", "--root", r, "--model",
                                       make_hostile(r / "hostile/m.onnx", "devzero"), "--val",
                                       r / "data/val.npz", "--test", r / "data/test.npz"], (2,)),
    "init-model-is-json": lambda r: (["init", "--root", r, "--model",
                                      r / "analysis/validation_report.json", "--val",
                                      r / "data/val.npz", "--test", r / "data/test.npz"], (2,)),
    "init-val-fifo": lambda r: (["init", "--root", r, "--model", r / "models/model.onnx",
                                 "--val", make_hostile(r / "hostile/v.npz", "fifo"), "--test",
                                 r / "data/test.npz"], (2,)),
    "init-model-outside": lambda r: (["init", "--root", r / "data", "--model",
                                      r / "models/model.onnx", "--val", r / "data/val.npz",
                                      "--test", r / "data/test.npz"], (2,)),
    "releases-fifo": lambda r: (["releases", make_hostile(r / "hostile/fifo", "fifo")], (2,)),
    "releases-hostile-git-record": lambda r: (["releases", _git_registry(r, b"NaN")], (2,)),
}


def _signed_bundle(root: Path) -> tuple[Path, Path, Path]:
    """A small bundle with its manifest, and a key pair: (bundle, private key, public key)."""
    from relgate.cli import main
    from tests.support.keys import ec_key_pair

    bundle = root / "hostile" / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "model.onnx").write_bytes(b"weights")
    assert main(["manifest", str(bundle)]) == 0
    return (bundle, *ec_key_pair(root / "hostile" / "keys"))


def _sign_case(key: str) -> Case:
    return lambda r: (["sign", _signed_bundle(r)[0], "--key",
                       make_hostile(r / "hostile" / "key.pem", key), "-o", r / "out" / "b.sig"],
                      (2,))


def _verify_signature_case(sig: str) -> Case:
    def case(r: Path) -> tuple[list[object], tuple[int, ...]]:
        bundle, _, pub = _signed_bundle(r)
        return (["verify", bundle, "--signature", make_hostile(r / "hostile" / "b.sig", sig),
                 "--public-key", pub], (2,))
    return case


CASES.update({
    "sign-key-fifo": _sign_case("fifo"),
    "sign-key-devzero": _sign_case("devzero"),
    "sign-key-huge": _sign_case("sparse:67108864"),
    "sign-key-is-a-folder": _sign_case("dir"),
    "sign-bundle-is-a-file": lambda r: (["sign", r / "params.yaml", "--key",
                                         _signed_bundle(r)[1], "-o", r / "out" / "b.sig"], (2,)),
    "sign-out-is-a-folder": lambda r: (["sign", _signed_bundle(r)[0], "--key",
                                        _signed_bundle(r)[1], "-o", r / "models"], (2,)),
    "verify-signature-fifo": _verify_signature_case("fifo"),
    "verify-signature-devzero": _verify_signature_case("devzero"),
    "verify-signature-huge": _verify_signature_case("sparse:100000000"),
    "verify-signature-truncated": _verify_signature_case("sparse:1"),
})


def _promote_over_a_file(root: Path) -> tuple[list[object], tuple[int, ...]]:
    """A plain file where the release folder goes: refused (exit 1), never replaced."""
    target = root / "models/core/v1.0.0"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"not a bundle")
    return ["promote", "--root", root, "--params", root / "params.yaml"], (1,)


def test_every_command_has_hostile_cases() -> None:
    names = {m.__name__.rsplit(".", 1)[-1] for m in command_modules()}
    covered = {case.split("-", 1)[0] for case in CASES}
    assert names <= covered, f"commands without hostile cases: {sorted(names - covered)}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input(registry: Path, cli, in_dir, case: str) -> None:
    argv, codes = CASES[case](registry)
    with in_dir(registry):
        assert_clean_failure(cli(*argv), codes)
    assert not (registry / "out").exists() or not any((registry / "out").iterdir())
    assert not (registry / "o").exists() and not (registry / "pwned").exists()
    if case == "promote-target-is-a-file":
        assert (registry / "models/core/v1.0.0").read_bytes() == b"not a bundle"
    else:
        assert not (registry / "models/core").exists()


def test_verify_json_names_a_file_whose_name_is_not_utf8(tmp_path: Path, cli) -> None:
    """An extra file with a non-UTF-8 name in a bundle: refused, and --json still writes
    valid JSON (escaped) instead of failing to encode it."""
    import json

    from relgate.manifest import write_manifest

    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "a.txt").write_bytes(b"a")
    write_manifest(bundle)
    (bundle / os.fsdecode(b"x\xff")).write_bytes(b"planted")
    result = cli("verify", bundle, "--json")
    assert_clean_failure(result, (1,))
    assert json.loads(result.out)["extra"] == ["x\udcff"]
    text = cli("verify", bundle)
    assert text.code == 1 and "x\\udcff" in text.out
