"""Attacks on verification (issue 13): extra empty folders, names that cannot coexist on
common filesystems, and bytes rewritten after they were hashed within one verify run.

The promise (SECURITY.md G1, manifest.py): a verified bundle holds exactly the files of its
manifest, under names that every common filesystem (Linux, macOS, Windows) can hold side by
side, and a file that changes while verify reads it is reported, not verified.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from relgate.bundle import verify_bundle
from relgate.errors import InputError, SchemaError
from relgate.manifest import (
    MANIFEST_NAME,
    FileDigest,
    Manifest,
    build_manifest,
    compute_root_digest,
    write_manifest,
)
from tests.adversarial.conftest import assert_clean_failure

FILES = {
    "models/model.onnx.data": os.urandom(3 * 1024 * 1024 + 5),
    "models/model.onnx": os.urandom(4096),
    "README.md": b"# card\n",
}


def fill(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = fill(tmp_path / "bundle", FILES)
    write_manifest(root)
    return root


# --------------------------------------------------------------------------- extra folders


@pytest.mark.parametrize("folder", [".git", "__pycache__", "models/empty", ".dvc/tmp"])
def test_an_extra_empty_folder_is_refused_naming_it(bundle: Path, folder: str, cli) -> None:
    (bundle / folder).mkdir(parents=True)
    result = verify_bundle(bundle)
    assert not result.ok
    top = folder.split("/")[0] if not folder.startswith("models/") else folder
    assert any(r.startswith(f"{top}/") for r in result.reasons()), result.reasons()
    out = cli("verify", bundle, "--json")
    assert out.code == 1
    assert top in json.loads(out.out)["extra_folders"]
    assert_clean_failure(cli("verify", bundle), (1,))


def test_building_a_manifest_refuses_an_empty_folder(tmp_path: Path, cli) -> None:
    root = fill(tmp_path / "out", FILES)
    (root / "__pycache__").mkdir()
    res = cli("manifest", root)
    line = assert_clean_failure(res, (2,))
    assert "__pycache__" in line, line
    assert not (root / MANIFEST_NAME).exists()


# --------------------------------------------------------------------------- portable names

#: name -> files that cannot all exist side by side on macOS or Windows (or not at all there)
UNPORTABLE: dict[str, tuple[str, ...]] = {
    "file-beside-folder-by-case": ("A", "a/b"),
    "folder-spelled-two-ways": ("Models/x.onnx", "models/y.onnx"),
    "trailing-dot": ("x", "x."),
    "trailing-dot-alone": ("notes.",),
    "trailing-space": ("x ",),
    "folder-trailing-dot": ("dir./x",),
    "alternate-data-stream": ("README.md:evil",),
    "reserved-con": ("CON",),
    "reserved-nul-extension": ("NUL.tar.gz",),
    "reserved-lower-case": ("models/aux.onnx",),
    "reserved-com1": ("COM1",),
    "reserved-lpt9": ("lpt9.txt",),
    "reserved-folder": ("prn/model.onnx",),
    "reserved-with-space": ("CON .txt",),
    "windows-forbidden-char": ("a<b>",),
    "question-mark": ("what?",),
    "pipe": ("a|b",),
    "control-char": ("a\x01b",),
}


def _named(text: str, names: tuple[str, ...]) -> bool:
    return any(n in text or ascii(n)[1:-1] in text for n in names[-1:])


@pytest.mark.parametrize("case", sorted(UNPORTABLE))
def test_unportable_names_are_refused_when_building(tmp_path: Path, case: str, cli) -> None:
    names = UNPORTABLE[case]
    root = fill(tmp_path / "out", {n: n.encode() for n in names})
    with pytest.raises(InputError) as info:
        build_manifest(root)
    assert _named(info.value.message, names), info.value.message
    line = assert_clean_failure(cli("manifest", root), (2,))
    assert _named(line, names), line
    assert not (root / MANIFEST_NAME).exists()
    with pytest.raises(SchemaError):
        Manifest(files={n: FileDigest(size=1, sha256="0" * 64) for n in names})


@pytest.mark.parametrize("case", sorted(UNPORTABLE))
def test_unportable_names_are_refused_when_verifying(tmp_path: Path, case: str, cli) -> None:
    names = UNPORTABLE[case]
    root = fill(tmp_path / "b", {n: n.encode() for n in names})
    files = {n: {"size": len(n.encode()), "sha256": hashlib.sha256(n.encode()).hexdigest()}
             for n in names}
    obj = {"schema_version": 1, "kind": "manifest", "algorithm": "sha256", "files": files,
           "root_digest": compute_root_digest({p: FileDigest(**v) for p, v in files.items()})}
    (root / MANIFEST_NAME).write_text(json.dumps(obj))
    result = verify_bundle(root)
    assert not result.ok
    assert result.bad_entries, result.reasons()
    assert _named(" ".join(result.reasons()), names), result.reasons()
    assert cli("verify", root).code == 1
    from relgate import schemas

    collision = case in ("file-beside-folder-by-case", "folder-spelled-two-ways")
    assert bool(schemas.errors(obj, "manifest")) != collision  # the schema holds every name rule


# --------------------------------------------------------------------------- changed while read


def _rewrite_in_place(path: Path, *, keep_mtime: bool) -> None:
    st = os.stat(path)
    path.chmod(0o644)
    with open(path, "r+b") as fh:  # same inode, same size, other bytes
        fh.write(b"\x00" * 64)
    path.chmod(st.st_mode & 0o777)
    if keep_mtime:  # an attacker can put mtime back; ctime still moves
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["plain", "mtime-restored"])
def test_bytes_rewritten_after_they_were_hashed_are_reported(bundle: Path, keep_mtime: bool) -> None:
    """The biggest file is hashed first (and matches); while the next file is hashed it is
    rewritten in place. Its hash was right when computed, but the bundle no longer holds
    those bytes: verify must not say "verified"."""
    big = bundle / "models/model.onnx.data"
    size = big.stat().st_size
    seen = [0]

    def sink(n: int) -> None:  # called after each hashed chunk, in order (one worker)
        seen[0] += n
        if seen[0] > size and seen[0] - n <= size:  # the first chunk of the second file
            _rewrite_in_place(big, keep_mtime=keep_mtime)

    result = verify_bundle(bundle, progress=sink, workers=1)
    assert seen[0] > size  # the second file was hashed after the first
    assert not result.ok
    assert any("models/model.onnx.data" in r and "changed while" in r for r in result.reasons()), \
        result.reasons()
    assert result.hash_mismatch == ()  # the bytes it hashed did match: this is another finding


def test_a_manifest_rewritten_during_verification_is_reported(bundle: Path) -> None:
    done = [False]

    def sink(n: int) -> None:
        if not done[0]:
            done[0] = True
            m = bundle / MANIFEST_NAME
            m.write_bytes(m.read_bytes().replace(b'"algorithm"', b' "algorithm"'))

    result = verify_bundle(bundle, progress=sink, workers=1)
    assert done[0] and not result.ok
    assert any(r.startswith(MANIFEST_NAME) and "changed while" in r for r in result.reasons())


def test_an_untouched_bundle_still_verifies(bundle: Path, cli) -> None:
    """The re-checks do not turn an honest bundle into a refusal (no false alarm)."""
    assert verify_bundle(bundle, workers=1).ok
    assert cli("verify", bundle).code == 0
