"""Manifest records, path rules, strict reading and building from real folders."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relgate import schemas
from relgate.errors import InputError, JSONFormatError, RelgateError, SchemaError
from relgate.manifest import (
    MANIFEST_NAME,
    FileDigest,
    Manifest,
    build_manifest,
    compute_root_digest,
    duplicate_problems,
    inspect_manifest,
    path_problem,
    read_manifest,
    show_path,
    write_manifest,
)

H1 = "a" * 64
H2 = "b" * 64


def openssl_sha256(path: Path) -> str:
    out = subprocess.run(["openssl", "dgst", "-sha256", "-r", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[0]


def openssl_root_digest(lines: bytes, tmp: Path) -> str:
    p = tmp / "root-lines.txt"
    p.write_bytes(lines)
    return openssl_sha256(p)


def make_tree(root: Path) -> dict[str, bytes]:
    content = {
        "model.onnx": os.urandom(5000),
        "model.onnx.data": os.urandom(1024 * 1024 + 3),
        "README.md": "# Modèle\n".encode(),
        "analysis/validation_report.json": b"{}\n",
        "analysis/deep/er/x.bin": b"",
        "é-nfc.txt": b"accent",
        "sp ace.txt": b"space",
    }
    for rel, data in content.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return content


def manifest_dict(files: dict[str, Any], root: str | None = None) -> dict[str, Any]:
    entries = {p: FileDigest(size=v["size"], sha256=v["sha256"]) for p, v in files.items()
               if isinstance(v, dict) and type(v.get("size")) is int
               and isinstance(v.get("sha256"), str)}
    return {"schema_version": 1, "kind": "manifest", "algorithm": "sha256", "files": files,
            "root_digest": root or compute_root_digest(entries)}


# --------------------------------------------------------------------------- building


def test_build_manifest_matches_openssl_and_schema(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    content = make_tree(root)
    manifest = build_manifest(root)
    assert list(manifest.files) == sorted(content, key=lambda p: p.encode())
    for rel, entry in manifest.files.items():
        assert entry.size == len(content[rel])
        assert entry.sha256 == openssl_sha256(root / rel)
    lines = b"".join(f"{openssl_sha256(root / rel)} {len(content[rel])} ".encode() + rel.encode()
                     + b"\n" for rel in sorted(content, key=lambda p: p.encode()))
    assert manifest.root_digest == openssl_root_digest(lines, tmp_path)
    schemas.validate(json.loads(manifest.dumps()), "manifest")


def test_write_manifest_is_deterministic_and_excludes_itself(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    make_tree(root)
    first = write_manifest(root)
    data = (root / MANIFEST_NAME).read_bytes()
    second = write_manifest(root)  # manifest.json now exists and must not list itself
    assert MANIFEST_NAME not in second.files
    assert (root / MANIFEST_NAME).read_bytes() == data
    assert first == second
    assert read_manifest(root / MANIFEST_NAME) == first
    assert data.endswith(b"\n") and data == first.dumps()


def test_manifest_invariant_under_moving_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "a" / "bundle"
    make_tree(root)
    before = build_manifest(root).dumps()
    moved = tmp_path / "elsewhere" / "deeper" / "renamed"
    moved.parent.mkdir(parents=True)
    shutil.move(root, moved)
    assert build_manifest(moved).dumps() == before
    monkeypatch.chdir(moved)
    assert build_manifest(".").dumps() == before


_NAME = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/\\\x00\n\r"),
                min_size=1, max_size=8).filter(lambda s: s not in (".", "..", MANIFEST_NAME))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(st.lists(_NAME, min_size=1, max_size=3).map(tuple),
                            st.binary(max_size=64), min_size=1, max_size=6))
def test_property_manifest_invariant_under_move(tmp_path_factory: pytest.TempPathFactory,
                                                tree: dict[tuple[str, ...], bytes]) -> None:
    base = tmp_path_factory.mktemp("prop")
    root = base / "one"
    written: dict[str, bytes] = {}
    for parts, data in tree.items():
        p = root.joinpath(*parts)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.exists():
                continue
            p.write_bytes(data)
        except (OSError, UnicodeEncodeError):
            continue  # a file where a folder is wanted, or the reverse
        written["/".join(parts)] = data
    rels = [r for r in written]
    folders = {str(Path(d).relative_to(root)) for d, sub, files in os.walk(root) if Path(d) != root}
    empty = folders - {"/".join(r.split("/")[:i]) for r in rels for i in range(1, r.count("/") + 1)}
    if duplicate_problems(rels) or any(path_problem(r) for r in rels) or empty or not rels:
        with pytest.raises(InputError):
            if rels:
                build_manifest(root)
            else:
                raise InputError("nothing written")
        return
    first = build_manifest(root)
    assert {r: e.sha256 for r, e in first.files.items()} == {
        r: hashlib.sha256(d).hexdigest() for r, d in written.items()}
    moved = base / "two" / "moved"
    moved.parent.mkdir()
    root.rename(moved)
    assert build_manifest(moved).dumps() == first.dumps()


def test_build_refuses_a_symlink_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "b"
    make_tree(root)
    (root / "analysis" / "link").symlink_to(root / "README.md")
    with pytest.raises(InputError, match=r"analysis/link: is a symlink") as info:
        build_manifest(root)
    assert info.value.exit_code == 2


def test_build_refuses_a_symlinked_folder(tmp_path: Path) -> None:
    root = tmp_path / "b"
    make_tree(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (root / "sub").symlink_to(outside)
    with pytest.raises(InputError, match=r"/sub: is a symlink"):
        build_manifest(root)


def test_build_refuses_a_fifo_without_hanging(tmp_path: Path) -> None:
    root = tmp_path / "b"
    make_tree(root)
    os.mkfifo(root / "pipe")
    with pytest.raises(InputError, match=r"pipe: is a FIFO"):
        build_manifest(root)


def test_build_refuses_a_hardlink(tmp_path: Path) -> None:
    root = tmp_path / "b"
    make_tree(root)
    os.link(root / "README.md", tmp_path / "outside-link")
    with pytest.raises(InputError, match=r"README.md: is hardlinked \(2 links\)"):
        build_manifest(root)


@pytest.mark.parametrize(("a", "b", "kind"), [
    ("Model.onnx", "model.onnx", "case"),
    (unicodedata.normalize("NFC", "café.txt"), unicodedata.normalize("NFD", "café.txt"),
     "normalisation"),
])
def test_build_refuses_colliding_names(tmp_path: Path, a: str, b: str, kind: str) -> None:
    root = tmp_path / "b"
    root.mkdir()
    (root / a).write_bytes(b"1")
    (root / b).write_bytes(b"2")
    assert len(os.listdir(root)) == 2
    with pytest.raises(InputError, match=kind):
        build_manifest(root)


def test_build_refuses_unportable_names(tmp_path: Path) -> None:
    root = tmp_path / "b"
    root.mkdir()
    (root / "a\\b").write_bytes(b"1")
    with pytest.raises(InputError, match="backslash"):
        build_manifest(root)
    (root / "a\\b").unlink()
    (root / "line\nbreak").write_bytes(b"1")
    with pytest.raises(InputError, match="line break"):
        build_manifest(root)


def test_build_uses_known_digests_only_when_sizes_match(tmp_path: Path) -> None:
    root = tmp_path / "b"
    root.mkdir()
    (root / "x").write_bytes(b"12345")
    fake = FileDigest(size=5, sha256=H1)
    assert build_manifest(root, known={"x": fake}).files["x"] == fake  # trusted, not re-read
    stale = FileDigest(size=4, sha256=H1)
    assert build_manifest(root, known={"x": stale}).files["x"].sha256 == openssl_sha256(root / "x")


def test_build_on_missing_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        build_manifest(tmp_path / "absent")
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(InputError, match="not a folder"):
        build_manifest(tmp_path / "f")


# --------------------------------------------------------------------------- records


def test_manifest_round_trip_and_sorted_keys() -> None:
    m = Manifest(files={"b/z": FileDigest(size=1, sha256=H1), "a": FileDigest(size=0, sha256=H2),
                        "é": FileDigest(size=2, sha256=H1), "Z": FileDigest(size=3, sha256=H2)})
    assert list(m.files) == ["Z", "a", "b/z", "é"]  # UTF-8 byte order
    assert Manifest.from_dict(m.to_dict()) == m
    assert Manifest.from_dict(json.loads(m.dumps())) == m
    lines = "".join(f"{e.sha256} {e.size} {p}\n" for p, e in m.files.items()).encode()
    assert m.root_digest == hashlib.sha256(lines).hexdigest()


def test_manifest_record_refuses_bad_paths() -> None:
    with pytest.raises(SchemaError, match=r"\.\./x"):
        Manifest(files={"../x": FileDigest(size=1, sha256=H1)})


BAD_PATHS = {
    "../x": "'..' component",
    "a/../../x": "'..' component",
    "/etc/passwd": "absolute",
    "a//b": "empty component",
    "a\\b": "backslash",
    "a\x00b": "NUL",
    "a\nb": "line break",
    "a\rb": "line break",
    "./a": "'.' component",
    "a/": "ends with '/'",
    "": "empty path",
    "\ud800x": "surrogate",
}


@pytest.mark.parametrize("path", list(BAD_PATHS))
def test_path_rules(path: str) -> None:
    problem = path_problem(path)
    assert problem is not None and BAD_PATHS[path] in problem


@pytest.mark.parametrize("path", ["a", "a/b/c.onnx", "..a", ".hidden", "é/ü", "a b", "a.b.c",
                                  "CONFIG", "console.txt", "COM10", "nul_x", "lpt.txt", "a-b_c+d"])
def test_path_rules_accept_portable_paths(path: str) -> None:
    assert path_problem(path) is None


@pytest.mark.parametrize(("path", "why"), [
    ("...", "ends with a dot"), ("a..", "ends with a dot"), ("x.", "ends with a dot"),
    ("d./x", "ends with a dot"), ("x ", "ends with a space"), ("README.md:evil", "alternate data stream"),
    ("a<b", "Windows does not allow"), ('a"b', "Windows does not allow"), ("a\x1fb", "control character"),
    ("CON", "device name"), ("con.txt", "device name"), ("models/Nul.tar.gz", "device name"),
    ("COM1", "device name"), ("lpt9.onnx", "device name"), ("CONIN$", "device name"),
    ("COM\u00b9", "device name"), ("aux/x", "device name"),
])
def test_path_rules_refuse_names_other_filesystems_cannot_hold(path: str, why: str) -> None:
    problem = path_problem(path)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize("path", [p for p in BAD_PATHS if p != "\ud800x"])
def test_our_path_rules_agree_with_the_schema(path: str) -> None:
    obj = manifest_dict({path: {"size": 1, "sha256": H1}})
    assert schemas.errors(obj, "manifest"), "the schema accepts what we refuse"


def _read(tmp_path: Path, text: str | bytes) -> Manifest:
    p = tmp_path / "manifest.json"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return read_manifest(p)


@pytest.mark.parametrize("path", list(BAD_PATHS))
def test_read_manifest_rejects_bad_paths_naming_them(tmp_path: Path, path: str) -> None:
    text = json.dumps(manifest_dict({path: {"size": 1, "sha256": H1}}))  # ascii escapes
    with pytest.raises(SchemaError) as info:
        _read(tmp_path, text)
    assert info.value.exit_code == 2
    assert f"files[{show_path(path)}]" in info.value.message
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize(("a", "b"), [
    ("Model.onnx", "model.onnx"),
    (unicodedata.normalize("NFC", "é.txt"), unicodedata.normalize("NFD", "é.txt")),
    ("a", "a/b"),
])
def test_read_manifest_rejects_colliding_entries(tmp_path: Path, a: str, b: str) -> None:
    text = json.dumps(manifest_dict({a: {"size": 1, "sha256": H1}, b: {"size": 1, "sha256": H2}}))
    with pytest.raises(SchemaError, match=r"only by|lies under"):
        _read(tmp_path, text)


ENTRY_PROBLEMS = [
    ({"size": True, "sha256": H1}, "size"),
    ({"size": 1.0, "sha256": H1}, "size"),
    ({"size": -1, "sha256": H1}, "size"),
    ({"size": 2**53, "sha256": H1}, "size"),
    ({"size": "1", "sha256": H1}, "size"),
    ({"size": 1, "sha256": H1[:-1]}, "sha256"),
    ({"size": 1, "sha256": H1.upper()}, "sha256"),
    ({"size": 1, "sha256": "z" * 64}, "sha256"),
    ({"size": 1}, "missing 'sha256'"),
    ({"size": 1, "sha256": H1, "md5": "x"}, "unexpected key 'md5'"),
    ([1, H1], "expected an object"),
]


@pytest.mark.parametrize(("entry", "fragment"), ENTRY_PROBLEMS)
def test_read_manifest_rejects_bad_entries_naming_the_file(tmp_path: Path, entry: Any,
                                                           fragment: str) -> None:
    text = json.dumps(manifest_dict({"model.onnx": entry}, root=H1))
    with pytest.raises(SchemaError, match=fragment) as info:
        _read(tmp_path, text)
    assert "model.onnx" in info.value.message


@pytest.mark.parametrize(("change", "fragment"), [
    ({"algorithm": "md5"}, "algorithm"),
    ({"schema_version": 2}, "schema_version"),
    ({"schema_version": 1.0}, "schema_version"),
    ({"schema_version": True}, "schema_version"),
    ({"kind": "release"}, "kind"),
    ({"root_digest": "0" * 63}, "root_digest"),
    ({"extra": 1}, "extra"),
    ({"files": []}, "files"),
])
def test_read_manifest_rejects_bad_top_level(tmp_path: Path, change: dict[str, Any],
                                             fragment: str) -> None:
    obj = {**manifest_dict({"a": {"size": 1, "sha256": H1}}), **change}
    with pytest.raises(SchemaError, match=fragment):
        _read(tmp_path, json.dumps(obj))


def test_read_manifest_rejects_duplicate_keys(tmp_path: Path) -> None:
    good = manifest_dict({"a": {"size": 1, "sha256": H1}})
    dup = f'"files": {{"a": {{"size": 2, "sha256": "{H2}"}}, '
    text = json.dumps(good).replace('"files": {', dup, 1)
    with pytest.raises(JSONFormatError, match="duplicate key 'a'"):
        _read(tmp_path, text)


def test_read_manifest_rejects_a_root_digest_that_does_not_match(tmp_path: Path) -> None:
    obj = manifest_dict({"a": {"size": 1, "sha256": H1}}, root="0" * 64)
    with pytest.raises(SchemaError, match="does not match its entries"):
        _read(tmp_path, json.dumps(obj))


def test_read_manifest_refuses_symlink_fifo_and_missing(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_bytes(Manifest(files={}).dumps())
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(InputError, match="symlink"):
        read_manifest(link)
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(InputError, match="FIFO"):
        read_manifest(tmp_path / "fifo.json")
    with pytest.raises(InputError, match="no such file"):
        read_manifest(tmp_path / "absent.json")


def test_inspect_collects_all_path_problems_instead_of_raising() -> None:
    obj = manifest_dict({"../x": {"size": 1, "sha256": H1}, "/abs": {"size": 1, "sha256": H1},
                         "A": {"size": 1, "sha256": H1}, "a": {"size": 1, "sha256": H1},
                         "ok": {"size": 1, "sha256": H1}})
    reading = inspect_manifest(obj)
    assert {b.path for b in reading.bad_entries} == {"../x", "/abs", "a"}
    assert reading.unsafe == {"../x", "/abs"}
    assert reading.root_digest_consistent


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(files=st.dictionaries(st.text(max_size=10), _JSON | st.fixed_dictionaries(
    {"size": st.integers(-2, 2**54) | st.booleans() | st.floats(allow_nan=False),
     "sha256": st.sampled_from([H1, H2, "x", H1.upper()])}), max_size=4),
       root=st.sampled_from([H1, "", None, 3]))
def test_fuzz_manifest_reader_raises_only_relgate_errors(files: dict[str, Any], root: Any) -> None:
    obj = {"schema_version": 1, "kind": "manifest", "algorithm": "sha256", "files": files,
           "root_digest": root}
    with contextlib.suppress(RelgateError):
        Manifest.from_dict(obj)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200))
def test_fuzz_manifest_bytes_raise_only_relgate_errors(data: bytes) -> None:
    from relgate.jsonio import loads_strict

    with contextlib.suppress(RelgateError):
        Manifest.from_dict(loads_strict(data))


TOP_LEVEL_VARIANTS = [
    {},
    {"algorithm": "sha512"},
    {"kind": "manifests"},
    {"schema_version": 0},
    {"schema_version": "1"},
    {"root_digest": H1.upper()},
    {"root_digest": None},
    {"files": None},
    {"files": "a"},
    {"unexpected": True},
]


@pytest.mark.parametrize("change", TOP_LEVEL_VARIANTS)
def test_hand_checked_top_level_agrees_with_the_schema(change: dict[str, Any]) -> None:
    """inspect_manifest checks the top level by hand (no jsonschema in verify's start-up)."""
    obj = {**manifest_dict({"a": {"size": 1, "sha256": H1}}), **change}
    schema_ok = not schemas.errors(obj, "manifest")
    try:
        inspect_manifest(obj)
        ours_ok = True
    except SchemaError:
        ours_ok = False
    assert ours_ok == schema_ok == (change == {})


@pytest.mark.parametrize("key", ["schema_version", "kind", "algorithm", "files", "root_digest"])
def test_each_top_level_key_is_required_by_both(key: str) -> None:
    obj = manifest_dict({"a": {"size": 1, "sha256": H1}})
    partial = {k: v for k, v in obj.items() if k != key}
    assert schemas.errors(partial, "manifest")
    with pytest.raises(SchemaError, match=f"required key '{key}'"):
        inspect_manifest(partial)
