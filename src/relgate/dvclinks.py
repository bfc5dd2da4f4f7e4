"""Links into a repository's own DVC cache, accepted where the user asks for it.

DVC's ``cache.type`` hardlink and symlink replace each tracked file of the workspace by a
link to its cache entry (``<cache>/files/md5/ab/cdef...``), so a 4 GB model is held once,
not three times (workspace, bundle, cache). relgate refuses links by default: a hard link's
bytes can change through another name, and a symlink can lead anywhere. With
``--allow-dvc-cache-links`` (or ``release.allow_dvc_cache_links: true``) a link is accepted
only when it provably *is* the cache entry that DVC's own metadata (``dvc.lock`` or a
``.dvc`` file, and for a folder output its ``.dir`` listing) names for that workspace path:

* a **symlink** whose target, read once, names that entry. The entry is then opened from a
  descriptor of the cache folder (the one ``dvc cache dir`` names), every component with
  O_NOFOLLOW, so a chain of links, a link out of the cache or a dangling link is never
  followed; finally the kernel resolves the workspace link once and must land on the very
  inode that was opened (a link swapped in between is refused).
* a **hard link** (st_nlink > 1) whose inode is that entry's inode: the other name is
  proven to be the cache entry. Further names of the same inode cannot be ruled out
  (SECURITY.md says what that leaves open).

What is opened is what is hashed; nothing is re-opened by name. A reflink (``cache.type
reflink``) is an independent copy, a regular file with one link: it needs none of this.
DVC runs once per repository (``dvc cache dir``), and only when a link is met.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from relgate.errors import InputError, RelgateError

FLAG = "--allow-dvc-cache-links"
PARAMS_KEY = "release.allow_dvc_cache_links"
#: what a refusal of a link suggests (one clause, for hints and reason sentences)
HINT = (f"if it is a link into this repository's DVC cache (cache.type hardlink or symlink), "
        f"pass {FLAG}; otherwise replace it with a copy of the file")
#: the same, for promote, which also reads the params key
PROMOTE_HINT = HINT.replace(f"pass {FLAG}", f"pass {FLAG} (or set {PARAMS_KEY}: true)")
_MD5 = re.compile(r"[0-9a-f]{32}")
_MAX_META_BYTES = 64 * 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

MetaReader = Callable[[str], bytes | None]


class LinkRefused(Exception):
    """A link that is not provably the cache entry DVC names for it; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_link(st: os.stat_result) -> bool:
    """Whether an lstat result is a link this module judges (a symlink, or a hard link)."""
    return stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1)


class DvcCacheLinks:
    """The DVC cache of one repository, and the cache entry its metadata names per path.

    *repo* is the repository's root (where ``dvc cache dir`` runs); *read_meta* returns the
    bytes of a repository-relative metadata file (``dvc.lock``, ``x.dvc``) or None (default:
    read from the working tree; fetch reads them from git at the fetched commit). *prefix*
    is the repository-relative folder the paths given to :meth:`open_at` are relative to.
    *cache_dir*, when the caller knows it, saves asking DVC. When *repo* is None every link
    is refused with *why_none*.
    """

    def __init__(self, repo: Path | None, *, read_meta: MetaReader | None = None,
                 prefix: str = "", why_none: str = "", cache_dir: Path | None = None,
                 _shared: dict[str, Any] | None = None) -> None:
        self.repo = repo
        self.prefix = prefix.strip("/")
        self.why_none = why_none
        self._read_meta = read_meta or self._read_worktree
        self._shared: dict[str, Any] = _shared if _shared is not None else {
            "lock": threading.Lock(), "cache": None if cache_dir is None else str(cache_dir),
            "md5": {}, "dirs": {}}

    # -- construction

    @classmethod
    def for_folder(cls, folder: str | os.PathLike[str]) -> DvcCacheLinks:
        """The links of the DVC repository that holds *folder* (the nearest folder above it
        with a ``.dvc`` folder); with none, every link is refused with that reason."""
        real = Path(os.path.realpath(folder))
        for candidate in (real, *real.parents):
            dot = candidate / ".dvc"
            if dot.is_dir() and not dot.is_symlink():
                return cls(candidate, prefix=real.relative_to(candidate).as_posix()
                           if real != candidate else "")
        return cls(None, why_none=f"no DVC repository holds {folder}, so no link in it can be "
                                  "proven to be a link into a DVC cache")

    def at(self, folder: str) -> DvcCacheLinks:
        """The same repository and cache, for paths relative to *folder* (relative to this
        view's folder)."""
        return DvcCacheLinks(self.repo, read_meta=self._read_meta,
                             prefix=self.workspace(folder) if folder not in ("", ".")
                             else self.prefix, why_none=self.why_none, _shared=self._shared)

    def workspace(self, rel: str) -> str:
        """The repository-relative path of *rel* (relative to this view's folder)."""
        return str(PurePosixPath(self.prefix, rel)) if self.prefix not in ("", ".") else rel

    # -- the cache folder

    def cache_dir(self) -> Path:
        """The cache folder DVC's config names for the repository (``dvc cache dir``)."""
        with self._shared["lock"]:
            if self._shared["cache"] is None:
                try:
                    self._shared["cache"] = self._ask_dvc()
                except LinkRefused as exc:  # asked once: every link is refused alike
                    self._shared["cache"] = exc
            if isinstance(self._shared["cache"], LinkRefused):
                raise LinkRefused(self._shared["cache"].reason)
            return Path(self._shared["cache"])

    def _ask_dvc(self) -> str:
        from relgate.distribution import _run, dvc_command, tool_error

        if self.repo is None:
            raise LinkRefused(self.why_none)
        proc = _run([*dvc_command(), "cache", "dir"], cwd=self.repo)
        lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
        if proc.returncode != 0 or not lines or not os.path.isabs(lines[-1]):
            raise LinkRefused(f"'dvc cache dir' in {self.repo} names no cache folder "
                              f"({tool_error(proc)})")
        return lines[-1]

    def _open_cache(self) -> int:
        cache = self.cache_dir()
        try:
            # the folder DVC's config names, as named (it may itself be a configured link)
            return os.open(cache, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LinkRefused(f"the DVC cache {cache} cannot be opened ({exc.strerror})") from None

    # -- what DVC's metadata names

    def _read_worktree(self, rel: str) -> bytes | None:
        from relgate.jsonio import read_capped

        assert self.repo is not None
        path = self.repo / rel
        if not path.is_file():
            return None
        return read_capped(path, max_bytes=_MAX_META_BYTES, what="DVC metadata file")

    def _outs(self, meta: str) -> list[tuple[str, str, bool]]:
        """``(repo-relative path, md5, legacy layout)`` of each output *meta* records."""
        from relgate.params import parse_yaml

        try:
            data = self._read_meta(meta)
            if data is None:
                return []
            doc = parse_yaml(data.decode("utf-8", "replace"), source=meta)
        except RelgateError:
            return []
        if not isinstance(doc, dict):
            return []
        outs = list(doc.get("outs") or []) if isinstance(doc.get("outs"), list) else []
        stages = doc.get("stages")
        for st in stages.values() if isinstance(stages, dict) else ():
            if isinstance(st, dict) and isinstance(st.get("outs"), list):
                outs.extend(st["outs"])
        base = PurePosixPath(meta).parent
        found = []
        for out in outs:
            if not isinstance(out, dict) or not isinstance(out.get("path"), str):
                continue
            md5 = out.get("md5")
            if not isinstance(md5, str) or not _MD5.fullmatch(md5.removesuffix(".dir")):
                continue
            if out.get("hash", "md5") not in ("md5", "md5-dos2unix"):
                continue
            path = os.path.normpath(str(base / out["path"])).replace(os.sep, "/")
            found.append((path, md5, out.get("hash") != "md5"))
        return found

    def expected_entry(self, workspace: str) -> str | None:
        """The cache-relative path of the entry DVC's metadata names for *workspace*."""
        memo: dict[str, str | None] = self._shared["md5"]
        if workspace in memo:
            return memo[workspace]
        parts = PurePosixPath(workspace).parts
        metas = ["dvc.lock", *(f"{PurePosixPath(*parts[:i])}.dvc" for i in range(len(parts), 0, -1))]
        entry: str | None = None
        for meta in metas:
            for path, md5, legacy in self._outs(meta):
                if path == workspace and not md5.endswith(".dir"):
                    entry = _entry(md5, legacy)
                elif workspace.startswith(path + "/") and md5.endswith(".dir"):
                    inner = self._dir_listing(_entry(md5, legacy)).get(workspace[len(path) + 1:])
                    entry = None if inner is None else _entry(inner, legacy)
                if entry is not None:
                    break
            if entry is not None:
                break
        memo[workspace] = entry
        return entry

    def _dir_listing(self, entry: str) -> dict[str, str]:
        """md5 by relative path of a folder output (its ``.dir`` object in the cache)."""
        dirs: dict[str, dict[str, str]] = self._shared["dirs"]
        if entry in dirs:
            return dirs[entry]
        listing: dict[str, str] = {}
        try:
            cache_fd = self._open_cache()
        except LinkRefused:
            return listing
        try:
            fd, st = _open_confined(cache_fd, entry)
            chunks: list[bytes] = []
            try:
                while stat.S_ISREG(st.st_mode) and sum(map(len, chunks)) <= _MAX_META_BYTES \
                        and (chunk := os.read(fd, 1 << 20)):
                    chunks.append(chunk)
            finally:
                os.close(fd)
            data = b"".join(chunks)
            items = json.loads(data) if len(data) <= _MAX_META_BYTES else []
        except (OSError, ValueError):
            items = []
        finally:
            os.close(cache_fd)
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and isinstance(item.get("relpath"), str) \
                    and isinstance(item.get("md5"), str) and _MD5.fullmatch(item["md5"]):
                listing[item["relpath"]] = item["md5"]
        dirs[entry] = listing
        return listing

    # -- opening a link

    def open_at(self, root_fd: int, rel: str) -> tuple[int, os.stat_result]:
        """Open *rel* (under the folder open as *root_fd*), a link into the cache: ``(fd,
        fstat)`` of the cache entry, blocking reads; or LinkRefused naming the reason.

        Folders on the way are entered with O_NOFOLLOW: DVC links files, never folders.
        """
        parts = rel.split("/")
        cur = root_fd
        try:
            for part in parts[:-1]:
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=cur)
                except OSError as exc:
                    raise LinkRefused(f"goes through {part!r}, which is not a plain folder "
                                      f"({exc.strerror})") from None
                if cur != root_fd:
                    os.close(cur)
                cur = nxt
            return self._open_link(cur, parts[-1], self.workspace(rel))
        finally:
            if cur != root_fd:
                os.close(cur)

    def _open_link(self, dir_fd: int, name: str, workspace: str) -> tuple[int, os.stat_result]:
        try:
            lst = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            raise LinkRefused(f"cannot be read ({exc.strerror})") from None
        if self.repo is None:
            raise LinkRefused(self.why_none)
        want = self.expected_entry(workspace)
        if want is None:
            raise LinkRefused(f"DVC's metadata (dvc.lock, .dvc files) names no cache entry for "
                              f"{workspace}, so the link cannot be proven to be DVC's")
        if stat.S_ISLNK(lst.st_mode):
            return self._open_symlink(dir_fd, name, want)
        if stat.S_ISREG(lst.st_mode):
            return self._open_hardlink(dir_fd, name, want)
        raise LinkRefused("is neither a symlink nor a regular file")

    def _open_symlink(self, dir_fd: int, name: str, want: str) -> tuple[int, os.stat_result]:
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError as exc:
            raise LinkRefused(f"is a symlink that cannot be read ({exc.strerror})") from None
        if not os.path.isabs(target):
            try:
                here = os.readlink(f"/proc/self/fd/{dir_fd}")
            except OSError:
                raise LinkRefused(f"is a relative symlink ({target!r}) and its folder cannot "
                                  "be named here") from None
            target = os.path.join(here, target)
        cache = self.cache_dir()
        expected = cache / want
        # the target must name the entry: the same name, in the entry's folder
        named = os.path.basename(target) == expected.name and \
            os.path.realpath(os.path.dirname(target)) == os.path.realpath(expected.parent)
        if not named:
            inside = _within(os.path.realpath(os.path.dirname(target)), os.path.realpath(cache))
            raise LinkRefused(
                f"is a symlink to {target!r}, " + (
                    f"another entry of the DVC cache than the one DVC's metadata names for it "
                    f"({want})" if inside else f"outside this repository's DVC cache ({cache})"))
        cache_fd = self._open_cache()
        try:
            fd, st = self._open_entry(cache_fd, want, what="its cache entry")
        finally:
            os.close(cache_fd)
        try:
            now = os.stat(name, dir_fd=dir_fd)  # the kernel's resolution, once
        except OSError as exc:
            os.close(fd)
            raise LinkRefused(f"no longer resolves ({exc.strerror}); it changed during the "
                              "check") from None
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise LinkRefused("resolves to another file than the cache entry that was checked "
                              "(it changed during the check)")
        return fd, st

    def _open_hardlink(self, dir_fd: int, name: str, want: str) -> tuple[int, os.stat_result]:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise LinkRefused(f"cannot be opened ({exc.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise LinkRefused("is not a regular file")
            cache_fd = self._open_cache()
            try:
                efd, est = self._open_entry(cache_fd, want, what="the cache entry DVC names "
                                            "for it")
                os.close(efd)
            finally:
                os.close(cache_fd)
            if (est.st_dev, est.st_ino) != (st.st_dev, st.st_ino):
                raise LinkRefused(f"is hard-linked ({st.st_nlink} links), but not to the cache "
                                  f"entry DVC's metadata names for it ({want})")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def _open_entry(self, cache_fd: int, want: str, *, what: str) -> tuple[int, os.stat_result]:
        try:
            fd, st = _open_confined(cache_fd, want)
        except FileNotFoundError:
            raise LinkRefused(f"{what} ({want}) is missing: a dangling link") from None
        except OSError as exc:
            why = ("is or goes through a symlink" if exc.errno in (errno.ELOOP, errno.ENOTDIR)
                   else f"cannot be opened ({exc.strerror})")
            raise LinkRefused(f"{what} ({want}) {why}") from None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise LinkRefused(f"{what} ({want}) is not a regular file")
        os.set_blocking(fd, True)
        return fd, st


def _entry(md5: str, legacy: bool) -> str:
    """The cache-relative path of an object: ``files/md5/ab/cdef...`` (DVC 3), ``ab/cdef...``
    for DVC 2's lock files (no ``hash:`` key)."""
    return f"{'' if legacy else 'files/md5/'}{md5[:2]}/{md5[2:]}"


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _open_confined(root_fd: int, rel: str) -> tuple[int, os.stat_result]:
    """Open *rel* under *root_fd*, every component with O_NOFOLLOW (OSError otherwise)."""
    from relgate.manifest import open_in_tree

    return open_in_tree(root_fd, rel)


def refused_input(where: str, reason: str) -> InputError:
    """The one-line bad-input error for a link that was asked to be accepted and is not."""
    return InputError(f"{where}: {reason}; only a link into this repository's own DVC cache, "
                      "to the entry DVC's metadata names, is accepted",
                      hint="run 'dvc checkout' to restore DVC's links, or replace the file with "
                           "a copy")
