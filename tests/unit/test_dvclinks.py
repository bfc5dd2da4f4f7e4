"""relgate.dvclinks on real files: which cache entry DVC's metadata names, and what is opened.

The e2e tests (tests/e2e/test_dvc_cache_links.py) run DVC itself; these pin the metadata
forms DVC writes (dvc.lock stage outputs, ``.dvc`` files in subfolders, folder outputs with
their ``.dir`` listing, DVC 2's lock without ``hash:``) with a cache laid out as DVC lays it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from relgate.dvclinks import DvcCacheLinks, LinkRefused
from relgate.manifest import open_root


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def put(cache: Path, data: bytes, *, legacy: bool = False, suffix: str = "") -> Path:
    digest = md5(data)
    entry = cache / ("" if legacy else "files/md5") / digest[:2] / (digest[2:] + suffix)
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(data)
    return entry


def links_for(repo: Path, meta: dict[str, str]) -> DvcCacheLinks:
    return DvcCacheLinks(repo, cache_dir=repo / ".dvc" / "cache",
                         read_meta=lambda rel: meta[rel].encode() if rel in meta else None)


def test_a_file_output_of_dvc_lock_names_its_entry(tmp_path: Path) -> None:
    cache = tmp_path / ".dvc" / "cache"
    put(cache, b"weights")
    lock = (f"schema: '2.0'\nstages:\n  export:\n    cmd: x\n    outs:\n    - path: models/m.data\n"
            f"      hash: md5\n      md5: {md5(b'weights')}\n      size: 7\n")
    links = links_for(tmp_path, {"dvc.lock": lock})
    digest = md5(b"weights")
    assert links.expected_entry("models/m.data") == f"files/md5/{digest[:2]}/{digest[2:]}"
    assert links.expected_entry("models/other") is None


def test_a_dvc_file_in_a_subfolder_and_a_folder_output_with_its_dir_listing(tmp_path: Path) -> None:
    cache = tmp_path / ".dvc" / "cache"
    put(cache, b"card")
    listing = json.dumps([{"md5": md5(b"card"), "relpath": "v1/README.md"}]).encode()
    put(cache, listing, suffix=".dir")  # DVC names a folder's object by its listing's md5
    folder = (f"outs:\n- md5: {md5(listing)}.dir\n  size: 4\n  nfiles: 1\n  hash: md5\n"
              "  path: core\n")
    links = links_for(tmp_path, {"models/core.dvc": folder})
    digest = md5(b"card")
    assert links.expected_entry("models/core/v1/README.md") == \
        f"files/md5/{digest[:2]}/{digest[2:]}"
    assert links.expected_entry("models/core/v1/missing") is None


def test_dvc2_lock_without_hash_key_uses_the_legacy_layout(tmp_path: Path) -> None:
    cache = tmp_path / ".dvc" / "cache"
    put(cache, b"old", legacy=True)
    lock = f"schema: '2.0'\nstages:\n  s:\n    outs:\n    - path: a.bin\n      md5: {md5(b'old')}\n"
    links = links_for(tmp_path, {"dvc.lock": lock})
    assert links.expected_entry("a.bin") == f"{md5(b'old')[:2]}/{md5(b'old')[2:]}"


def test_open_at_returns_the_entry_for_a_symlink_and_refuses_the_rest(tmp_path: Path) -> None:
    cache = tmp_path / ".dvc" / "cache"
    entry = put(cache, b"weights")
    other = put(cache, b"other")
    lock = (f"stages:\n  s:\n    outs:\n    - path: m.data\n      hash: md5\n"
            f"      md5: {md5(b'weights')}\n    - path: n.data\n      hash: md5\n"
            f"      md5: {md5(b'weights')}\n")
    links = links_for(tmp_path, {"dvc.lock": lock})
    (tmp_path / "m.data").symlink_to(entry)
    (tmp_path / "n.data").symlink_to(other)  # into the cache, but not the entry named
    (tmp_path / "x.data").symlink_to(entry)  # no metadata names it
    root_fd = open_root(tmp_path)
    try:
        fd, st = links.open_at(root_fd, "m.data")
        try:
            assert os.read(fd, 100) == b"weights"
            assert (st.st_ino, st.st_dev) == (entry.stat().st_ino, entry.stat().st_dev)
        finally:
            os.close(fd)
        with pytest.raises(LinkRefused, match="another entry of the DVC cache"):
            links.open_at(root_fd, "n.data")
        with pytest.raises(LinkRefused, match=r"names no cache entry for x\.data"):
            links.open_at(root_fd, "x.data")
    finally:
        os.close(root_fd)


def test_a_relative_symlink_to_the_entry_is_accepted(tmp_path: Path) -> None:
    cache = tmp_path / ".dvc" / "cache"
    entry = put(cache, b"weights")
    lock = (f"stages:\n  s:\n    outs:\n    - path: sub/m.data\n      hash: md5\n"
            f"      md5: {md5(b'weights')}\n")
    links = links_for(tmp_path, {"dvc.lock": lock})
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.data").symlink_to(os.path.relpath(entry, tmp_path / "sub"))
    root_fd = open_root(tmp_path)
    try:
        fd, _ = links.open_at(root_fd, "sub/m.data")
        os.close(fd)
    finally:
        os.close(root_fd)


def test_without_a_repository_every_link_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    links = DvcCacheLinks.for_folder(tmp_path)
    assert links.repo is None
    root_fd = open_root(tmp_path)
    try:
        with pytest.raises(LinkRefused, match="no DVC repository holds"):
            links.open_at(root_fd, "b")
    finally:
        os.close(root_fd)
