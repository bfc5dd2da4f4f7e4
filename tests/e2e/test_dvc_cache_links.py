"""DVC's cache.type link modes (issue 16 point 5), in real git + DVC repositories.

For each cache.type (copy as the control, hardlink, symlink, and reflink where the
filesystem supports it: tmp_path's filesystem is probed with FICLONE and the test says why
it cannot run where it cannot; ``--basetemp`` on an XFS or btrfs mount runs it), the model
is tracked with ``dvc add`` (its files become links into the cache), promoted, the bundle
is tracked with ``dvc add`` (its files become links too), then verified, promoted again
(already published) and fetched from the local registry (``dvc get`` links from its
cache). Without ``--allow-dvc-cache-links`` each command refuses a link in one line (or
reasons) naming the flag; with it each succeeds, and the manifest's sha256 is ``openssl
dgst -sha256`` of the file read through the link.

The attacks: a symlink into the cache but to another entry than DVC's metadata names, a
symlink out of the repository, a chain of symlinks, a dangling symlink, a cache entry
replaced by a symlink, a hard link to a file outside the cache, and a symlink swapped
between the check and the open. Each is refused with the flag given.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.conftest import assert_clean_failure
from tests.e2e.conftest import Tools, tool_env
from tests.support.registry import make_registry, prepare

pytestmark = pytest.mark.e2e

FLAG = "--allow-dvc-cache-links"
BUNDLE = "models/core/v1.0.0"
DATA = "models/model.onnx.data"
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def openssl_sha256(path: Path) -> str:
    """The oracle: ``openssl dgst -sha256`` of the file (openssl follows the link)."""
    out = subprocess.run(["openssl", "dgst", "-sha256", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return out.strip().rsplit(" ", 1)[-1]


def reflink_problem(folder: Path) -> str | None:
    """Why *folder*'s filesystem cannot reflink (FICLONE), or None when it can."""
    src, dst = folder / ".reflink-probe-src", folder / ".reflink-probe-dst"
    src.write_bytes(b"probe")
    try:
        with open(src, "rb") as a, open(dst, "wb") as b:
            fcntl.ioctl(b.fileno(), FICLONE, a.fileno())
    except OSError as exc:
        return f"FICLONE on {folder}: {errno.errorcode.get(exc.errno or 0, exc.errno)}"
    finally:
        src.unlink()
        dst.unlink(missing_ok=True)
    return None


def shares_extents(path: Path) -> bool | None:
    """Whether ``filefrag -v`` (FIEMAP) flags the file's extents shared: a real reflink.
    None when filefrag is not installed."""
    if shutil.which("filefrag") is None:
        return None
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return "shared" in out


def link_kind(path: Path) -> str:
    st = os.lstat(path)
    if path.is_symlink():
        return "symlink"
    return "hardlink" if st.st_nlink > 1 else "single"


EXPECTED_KIND = {"copy": "single", "reflink": "single", "hardlink": "hardlink",
                 "symlink": "symlink"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model, variant, splits, params, calibration and validation report (plain files)."""
    root = tmp_path_factory.mktemp("prepared") / "registry"
    make_registry(root)
    params = root / "params.yaml"  # fewer bootstrap resamples: each promote re-evaluates
    params.write_text(params.read_text().replace("resamples: 200", "resamples: 20"))
    prepare(root)
    return root


def new_repo(prepared: Path, base: Path, cache_type: str) -> tuple[Path, Tools]:
    """A git + DVC repository with cache.type *cache_type*, the model tracked by dvc add."""
    root = base / "registry"
    shutil.copytree(prepared, root)
    tools = Tools(env=tool_env(base / "home"))
    tools.git("init", "-q", cwd=root)
    tools.dvc("init", "-q", cwd=root)
    tools.dvc("config", "cache.type", cache_type, cwd=root)
    tools.dvc("add", "-q", "models/model.onnx", DATA, cwd=root)
    return root, tools


def run(cli: Any, root: Path, *args: object) -> Any:
    here = Path.cwd()
    os.chdir(root)
    try:
        return cli(*args)
    finally:
        os.chdir(here)


def refused_naming_the_flag(result: Any) -> None:
    """The existing refusal (one stderr line, or reasons on stdout), naming the flag."""
    line = assert_clean_failure(result, (1, 2))
    assert FLAG in (line or result.out), (result.out, result.err)


@pytest.mark.parametrize("cache_type", ["copy", "hardlink", "symlink", "reflink"])
def test_verify_promote_and_fetch_with_each_cache_type(cli: Any, prepared: Path, tmp_path: Path,
                                                       cache_type: str) -> None:
    if cache_type == "reflink" and (why := reflink_problem(tmp_path)) is not None:
        pytest.skip(f"cache.type reflink not testable here: the filesystem cannot reflink "
                    f"({why}); DVC refuses that cache type on it")
    root, tools = new_repo(prepared, tmp_path, cache_type)
    links = cache_type in ("hardlink", "symlink")
    assert link_kind(root / DATA) == EXPECTED_KIND[cache_type]
    if cache_type == "reflink":
        assert shares_extents(root / DATA) is not False  # DVC really reflinked it
    want = openssl_sha256(root / DATA)

    # promote: the model's external data is a link into the cache
    if links:
        refused_naming_the_flag(run(cli, root, "promote"))
        assert not (root / BUNDLE).exists()
    res = run(cli, root, "promote", *([FLAG] if links else []))
    assert res.code == 0, res.err
    manifest = json.loads((root / BUNDLE / "manifest.json").read_text())
    assert manifest["files"][DATA]["sha256"] == want

    # the bundle tracked by DVC: its files become links too
    tools.dvc("add", "-q", "models/core", cwd=root)
    assert link_kind(root / BUNDLE / DATA) == EXPECTED_KIND[cache_type]
    assert openssl_sha256(root / BUNDLE / DATA) == want
    if links:
        refused_naming_the_flag(run(cli, root, "verify", BUNDLE))
    res = run(cli, root, "verify", BUNDLE, "--json", *([FLAG] if links else []))
    assert res.code == 0, res.out
    verified = json.loads(res.out)
    assert verified["ok"] and verified["root_digest"] == manifest["root_digest"]

    # already published, the links accepted by the params key
    if links:
        refused_naming_the_flag(run(cli, root, "promote"))
        params = root / "params.yaml"
        params.write_text(params.read_text().replace(
            "  tolerance: 1.0e-9\n", "  tolerance: 1.0e-9\n  allow_dvc_cache_links: true\n"))
    res = run(cli, root, "promote")
    assert res.code == 0 and "already published" in res.out, (res.out, res.err)

    # fetch from the local registry: dvc get links from its cache
    tools.git("add", "-A", cwd=root)
    tools.git("commit", "-q", "-m", "release v1.0.0", cwd=root)
    if links:
        refused_naming_the_flag(run(cli, tmp_path, "fetch", root, "v1.0.0", "-o",
                                    tmp_path / "plain"))
        assert not (tmp_path / "plain").exists()
    res = run(cli, tmp_path, "fetch", root, "v1.0.0", "-o", tmp_path / "got",
              *([FLAG] if links else []))
    assert res.code == 0, (res.out, res.err)
    assert link_kind(tmp_path / "got" / DATA) == EXPECTED_KIND[cache_type]
    assert openssl_sha256(tmp_path / "got" / DATA) == want


# --------------------------------------------------------------------------- attacks


@pytest.fixture(scope="module")
def linked(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A symlink and a hardlink registry, each with its bundle published and tracked by DVC.
    Each attack below restores what it changed."""
    out = {}
    for cache_type in ("symlink", "hardlink"):
        base = tmp_path_factory.mktemp(f"attacks-{cache_type}")
        root, tools = new_repo(prepared, base, cache_type)
        from tests.support.registry import relgate

        assert relgate(root, "promote", FLAG) == 0
        tools.dvc("add", "-q", "models/core", cwd=root)
        out[cache_type] = root
    return out


@contextlib.contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """Move *path* (a link) aside for an attack, and put it back afterwards."""
    aside = path.with_name(path.name + ".aside")
    os.rename(path, aside)
    try:
        yield aside
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.rename(aside, path)


def cache_entry(root: Path, link: Path) -> Path:
    """The cache entry a symlink of the bundle points at (DVC wrote it)."""
    target = Path(os.readlink(link))
    assert str(target).startswith(str(root / ".dvc" / "cache" / "files" / "md5")), target
    return target


def verify_refused(cli: Any, root: Path, why: str) -> str:
    res = run(cli, root, "verify", BUNDLE, FLAG)
    assert_clean_failure(res, (1, 2))
    text = res.out + res.err
    assert why in text, text
    return text


def test_a_symlink_to_another_cache_entry_is_refused(cli: Any, linked: dict[str, Path]) -> None:
    root = linked["symlink"]
    link = root / BUNDLE / "README.md"
    other = cache_entry(root, root / BUNDLE / "calibration.json")
    with replaced(link):
        link.symlink_to(other)
        verify_refused(cli, root, "another entry of the DVC cache than the one DVC's metadata "
                                  "names for it")
    assert run(cli, root, "verify", BUNDLE, FLAG).code == 0  # restored


def test_a_symlink_out_of_the_repository_is_refused_even_with_the_same_bytes(
        cli: Any, linked: dict[str, Path], tmp_path: Path) -> None:
    root = linked["symlink"]
    outside = tmp_path / "outside.data"
    outside.write_bytes((root / DATA).read_bytes())
    with replaced(root / BUNDLE / DATA):
        (root / BUNDLE / DATA).symlink_to(outside)
        verify_refused(cli, root, "outside this repository's DVC cache")
    with replaced(root / DATA):  # and promote, for the model's external data
        (root / DATA).symlink_to(outside)
        line = assert_clean_failure(run(cli, root, "promote", FLAG))
        assert "model.onnx.data" in line and "outside this repository's DVC cache" in line


def test_a_chain_of_symlinks_that_leaves_the_cache_is_refused(cli: Any, linked: dict[str, Path],
                                                              tmp_path: Path) -> None:
    root = linked["symlink"]
    link = root / BUNDLE / DATA
    hop = tmp_path / "hop"
    hop.symlink_to(cache_entry(root, link))  # outside, pointing back at the right entry
    with replaced(link):
        link.symlink_to(hop)
        verify_refused(cli, root, "outside this repository's DVC cache")


def test_a_cache_entry_replaced_by_a_symlink_is_never_followed(cli: Any, linked: dict[str, Path],
                                                               tmp_path: Path) -> None:
    root = linked["symlink"]
    entry = cache_entry(root, root / BUNDLE / DATA)
    twin = tmp_path / "twin"
    twin.write_bytes(entry.read_bytes())
    with replaced(entry):
        entry.symlink_to(twin)
        verify_refused(cli, root, "is or goes through a symlink")


def test_a_dangling_symlink_is_refused(cli: Any, linked: dict[str, Path]) -> None:
    root = linked["symlink"]
    entry = cache_entry(root, root / BUNDLE / DATA)
    with replaced(entry):
        verify_refused(cli, root, "a dangling link")


def test_a_hard_link_to_a_file_outside_the_cache_is_refused(cli: Any, linked: dict[str, Path],
                                                            tmp_path: Path) -> None:
    root = linked["hardlink"]
    outside = tmp_path / "outside.data"
    outside.write_bytes((root / BUNDLE / DATA).read_bytes())
    with replaced(root / BUNDLE / DATA):
        os.link(outside, root / BUNDLE / DATA)  # 2 links, same bytes, not the cache entry
        verify_refused(cli, root, "but not to the cache entry DVC's metadata names for it")
    with replaced(root / DATA):
        os.link(outside, root / DATA)
        line = assert_clean_failure(run(cli, root, "promote", FLAG))
        assert "model.onnx.data" in line and "not to the cache entry" in line
    assert run(cli, root, "verify", BUNDLE, FLAG).code == 0  # restored


def test_a_symlink_swapped_between_the_check_and_the_open_is_refused(
        cli: Any, linked: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workspace link is re-pointed (on disk, by rename) right after relgate opened the
    cache entry it named: the kernel's resolution no longer lands on the opened inode."""
    from relgate import dvclinks

    root = linked["symlink"]
    link = root / BUNDLE / DATA
    evil = tmp_path / "evil.data"
    evil.write_bytes(b"\0" * link.stat().st_size)
    real_open = dvclinks._open_confined
    swapped: list[str] = []

    def open_then_swap(root_fd: int, rel: str) -> tuple[int, os.stat_result]:
        opened = real_open(root_fd, rel)
        if not swapped and rel.endswith(os.readlink(link).rsplit("/", 1)[-1]):
            tmp = link.with_name(link.name + ".swap")
            tmp.symlink_to(evil)
            os.rename(tmp, link)  # atomic swap of the link
            swapped.append(rel)
        return opened

    target = os.readlink(link)
    monkeypatch.setattr(dvclinks, "_open_confined", open_then_swap)
    try:
        verify_refused(cli, root, "changed during the check")
    finally:
        os.unlink(link)
        os.symlink(target, link)
    assert swapped
    monkeypatch.undo()
    assert run(cli, root, "verify", BUNDLE, FLAG).code == 0  # restored


@pytest.mark.parametrize("cache_type", ["symlink", "hardlink"])
def test_a_sidecar_tracked_by_dvc_ships_only_with_the_flag(linked: dict[str, Path],
                                                         cache_type: str) -> None:
    """``release.files``: a sidecar that dvc add turned into a cache link is bad input
    naming the flag without it, and is opened through its cache entry with it."""
    from relgate.dvclinks import DvcCacheLinks
    from relgate.errors import InputError
    from relgate.manifest import open_root
    from relgate.params import load_params, params_from_dict, thaw
    from relgate.release import _open_sidecar, check_sidecars

    root = linked[cache_type]
    side = root / "configs" / "deploy.json"
    if not side.exists():
        side.parent.mkdir()
        side.write_text('{"sidecar": true}\n')
        Tools(env=tool_env(root.parent / "home")).dvc("add", "-q", "configs/deploy.json", cwd=root)
    assert link_kind(side) == cache_type
    raw = thaw(load_params(root / "params.yaml").raw)
    raw["release"]["files"] = [{"path": "configs/deploy.json"}]
    params = params_from_dict(raw)
    with pytest.raises(InputError) as refused:
        check_sidecars(params, root=root)
    assert "configs/deploy.json" in refused.value.one_line() and FLAG in refused.value.one_line()
    links = DvcCacheLinks.for_folder(root)
    check_sidecars(params, root=root, links=links)
    root_fd = open_root(root)
    try:
        fd, _ = _open_sidecar(root_fd, "configs/deploy.json", links=links)
        with os.fdopen(fd, "rb") as fh:
            assert fh.read() == side.read_bytes()
    finally:
        os.close(root_fd)
