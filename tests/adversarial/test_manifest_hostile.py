"""Hostile manifest entries through ``relgate verify``: named, never followed out of the bundle.

Each case is a real bundle whose manifest was edited by an attacker *consistently* (the
root digest recomputed), so the only thing wrong is the entry under test. Outside the
bundle sits a FIFO: opening it would block, and an audit hook records every path relgate
opens or lists, so a test that passes proves nothing outside the bundle was touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from relgate.manifest import FileDigest, compute_root_digest, write_manifest
from tests.adversarial.conftest import assert_clean_failure

H = "ab" * 32
_SEEN: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _SEEN is not None and event in ("open", "os.scandir", "os.listdir") and args:
        target = args[0]
        if isinstance(target, (str, bytes, os.PathLike)):
            _SEEN.append(os.fsdecode(target))


sys.addaudithook(_audit)


def bundle_with(tmp_path: Path, extra: dict[str, Any], files: dict[str, bytes] | None = None,
                consistent: bool = True) -> Path:
    """A bundle of a.txt and sub/b.txt (plus *files*), its manifest plus the *extra* entries."""
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "secret")
    bundle = tmp_path / "bundle"
    (bundle / "sub").mkdir(parents=True)
    (bundle / "a.txt").write_bytes(b"a\n")
    (bundle / "sub/b.txt").write_bytes(b"b\n")
    write_manifest(bundle)
    for rel, data in (files or {}).items():  # after the manifest: write_manifest refuses them
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_bytes(data)
    doc = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    doc["files"].update(extra)
    if consistent:
        # structurally broken entries: any root digest will do
        with contextlib.suppress(TypeError, KeyError, ValueError):
            doc["root_digest"] = compute_root_digest(
                {p: FileDigest(size=e["size"], sha256=e["sha256"]) for p, e in doc["files"].items()})
    (bundle / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
    return bundle


def verify_watched(cli, bundle: Path, *args: str) -> tuple[Any, list[str]]:
    global _SEEN
    _SEEN = []
    try:
        result = cli("verify", bundle, *args)
        seen = list(_SEEN)
    finally:
        _SEEN = None
    return result, seen


def outside_touched(seen: list[str], bundle: Path) -> list[str]:
    """Opened or listed paths in the test's folder but outside the bundle (relative names
    are dir_fd-relative opens during the walk: '..' or 'outside' there would be escapes)."""
    root, scratch = str(bundle), str(bundle.parent)
    bad = []
    for p in seen:
        if os.path.isabs(p):
            inside = p == root or p.startswith(root + os.sep)
            if p.startswith(scratch) and not inside:
                bad.append(p)
        elif p.split("/")[0] in ("..", "outside") or "secret" in p or p.startswith("/ABS"):
            bad.append(p)
    return bad


NFC = unicodedata.normalize("NFC", "café.txt")
NFD = unicodedata.normalize("NFD", "café.txt")

# name -> (extra entries, files to create, fragment of the reason)
PATH_CASES: dict[str, tuple[dict[str, Any], dict[str, bytes], str]] = {
    "dotdot": ({"../outside/secret": {"size": 0, "sha256": H}}, {}, "'..' component"),
    "dotdot-inner": ({"sub/../../outside/secret": {"size": 0, "sha256": H}}, {},
                     "'..' component"),
    "absolute": ({"/ABS/outside/secret": {"size": 0, "sha256": H}}, {}, "absolute path"),
    "double-slash": ({"sub//b.txt": {"size": 2, "sha256": H}}, {}, "empty component"),
    "backslash": ({"sub\\b.txt": {"size": 2, "sha256": H}}, {}, "backslash"),
    "nul": ({"a.txt\x00.png": {"size": 2, "sha256": H}}, {}, "NUL"),
    "newline": ({"a.txt\nb": {"size": 2, "sha256": H}}, {}, "line break"),
    "dot": ({"./a.txt": {"size": 2, "sha256": H}}, {}, "'.' component"),
    "trailing-slash": ({"sub/": {"size": 0, "sha256": H}}, {}, "ends with '/'"),
    "lone-surrogate": ({"a\udcff.txt": {"size": 0, "sha256": H}}, {}, "lone surrogate"),
    "case-only": ({"A.txt": None}, {"A.txt": b"A\n"}, "only by case"),
    "nfc-nfd": ({NFC: None, NFD: None}, {NFC: b"c\n", NFD: b"d\n"}, "Unicode normalisation"),
    "under-a-file": ({"a.txt/x": {"size": 0, "sha256": H}}, {}, "lies under"),
}


@pytest.mark.parametrize("case", sorted(PATH_CASES))
def test_bad_entry_paths_are_named_and_never_followed(tmp_path: Path, cli, case: str) -> None:
    extra, files, fragment = PATH_CASES[case]
    bundle = bundle_with(tmp_path, {}, files)
    doc = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    for path, entry in extra.items():
        if entry is None:  # a real file: list it with its true digest
            data = files[path]
            entry = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        doc["files"][path] = entry
    doc["root_digest"] = compute_root_digest(
        {p: FileDigest(size=e["size"], sha256=e["sha256"]) for p, e in doc["files"].items()})
    (bundle / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")

    result, seen = verify_watched(cli, bundle)
    assert_clean_failure(result, (1,))
    assert fragment in result.out, result.out
    assert "root_digest" not in result.out  # consistent: the entry is the only problem
    assert outside_touched(seen, bundle) == []
    as_json, _ = verify_watched(cli, bundle, "--json")
    bad = json.loads(as_json.out)["bad_entries"]
    assert as_json.code == 1 and any(fragment in b["reason"] for b in bad), bad


STRUCTURE_CASES: dict[str, tuple[Any, str]] = {
    "negative-size": ({"size": -1, "sha256": H}, "size"),
    "float-size": ({"size": 2.0, "sha256": H}, "size"),
    "bool-size": ({"size": True, "sha256": H}, "size"),
    "string-size": ({"size": "2", "sha256": H}, "size"),
    "huge-size": ({"size": 2**53, "sha256": H}, "size"),
    "huger-size": ({"size": 10**30, "sha256": H}, "size"),
    "null-size": ({"size": None, "sha256": H}, "size"),
    "short-hex": ({"size": 2, "sha256": H[:63]}, "sha256"),
    "long-hex": ({"size": 2, "sha256": H + "a"}, "sha256"),
    "upper-hex": ({"size": 2, "sha256": H.upper()}, "sha256"),
    "not-hex": ({"size": 2, "sha256": "g" * 64}, "sha256"),
    "extra-key": ({"size": 2, "sha256": H, "mode": 420}, "unexpected key"),
    "missing-hash": ({"size": 2}, "missing"),
    "entry-is-list": ([2, H], "expected an object"),
}


@pytest.mark.parametrize("case", sorted(STRUCTURE_CASES))
def test_malformed_entries_are_bad_input_naming_the_entry(tmp_path: Path, cli, case: str) -> None:
    entry, fragment = STRUCTURE_CASES[case]
    bundle = bundle_with(tmp_path, {"a.txt": entry})
    result, seen = verify_watched(cli, bundle)
    line = assert_clean_failure(result, (2,))
    assert "files[a.txt]" in line and fragment in line, line
    assert outside_touched(seen, bundle) == []


@pytest.mark.parametrize(("change", "fragment"), [
    ({"algorithm": "md5"}, "algorithm"),
    ({"algorithm": "SHA256"}, "algorithm"),
    ({"algorithm": "sha256 "}, "algorithm"),
    ({"root_digest": H[:63]}, "root_digest"),
    ({"root_digest": H.upper()}, "root_digest"),
    ({"schema_version": 2}, "schema_version"),
    ({"schema_version": 1.0}, "schema_version"),
    ({"files": [["a.txt", 2, H]]}, "files"),
    ({"kind": "release"}, "kind"),
    ({"signature": "trust me"}, "not allowed"),
])
def test_malformed_top_level_is_bad_input(tmp_path: Path, cli, change: dict[str, Any],
                                          fragment: str) -> None:
    bundle = bundle_with(tmp_path, {})
    doc = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    doc.update(change)
    (bundle / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
    line = assert_clean_failure(cli("verify", bundle), (2,))
    assert fragment in line, line


def test_a_missing_algorithm_key_is_bad_input(tmp_path: Path, cli) -> None:
    bundle = bundle_with(tmp_path, {})
    doc = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    del doc["algorithm"]
    (bundle / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
    assert "'algorithm' is missing" in assert_clean_failure(cli("verify", bundle), (2,))


def test_a_manifest_entry_that_is_the_manifest_itself_is_not_trusted(tmp_path: Path,
                                                                    cli) -> None:
    """Listing manifest.json in its own files cannot make an edit to it pass."""
    bundle = bundle_with(tmp_path, {"manifest.json": {"size": 1, "sha256": H}})
    result = cli("verify", bundle)
    assert result.code == 1, (result.out, result.err)


def test_a_symlinked_bundle_subfolder_pointing_outside_is_never_entered(tmp_path: Path,
                                                                        cli) -> None:
    """sub/ swapped for a link to a folder outside with the same file names and bytes."""
    bundle = bundle_with(tmp_path, {})
    twin = tmp_path / "outside" / "twin"
    twin.mkdir()
    (twin / "b.txt").write_bytes(b"b\n")
    (bundle / "sub/b.txt").unlink()
    (bundle / "sub").rmdir()
    (bundle / "sub").symlink_to(twin, target_is_directory=True)
    result, seen = verify_watched(cli, bundle)
    assert_clean_failure(result, (1,))
    assert "sub: is a symlink" in result.out and "sub/b.txt" in result.out
    assert outside_touched(seen, bundle) == []
