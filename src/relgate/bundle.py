"""Verification and atomic, immutable publication of bundles.

Verification answers "is every byte the released byte?" with a diff, not a
bool: missing, extra, size and hash mismatches, folders no entry lies in,
entries that are not regular files, hardlinks, manifest entries that break the
path rules, files that changed while they were read, and a root digest that
differs from the manifest or from a digest pinned elsewhere. It never follows
a symlink, never opens anything lstat did not show to be a regular file (and
re-checks with fstat after opening, non-blocking, so a FIFO swapped in cannot
hang it), never reads past the size the manifest declares. Once every file is
hashed, the folder is listed again and the manifest re-read: a file whose
inode, size, mtime or ctime moved since it was hashed (ctime moves on every
write, even when mtime is put back) is "changed while read", not verified.

Publication builds the bundle in a staging folder next to the target (same
filesystem), writes the manifest, fsyncs and seals it read-only, takes a
lock, and renames it into place in one step. A target path is therefore
either absent or complete: never partial, never overwritten. Publishing the
same content again is a no-op; other content under the same name, or an
unverifiable folder already at the target, is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from relgate.dvclinks import HINT as LINK_HINT
from relgate.dvclinks import DvcCacheLinks, LinkRefused, is_link
from relgate.errors import InputError, PublishRefused, RelgateError
from relgate.hashing import WriteError, byte_progress, parallel_map, sha256_fd
from relgate.jsonio import atomic_write_bytes, dumps, fsync_dir, loads_strict
from relgate.manifest import (
    MANIFEST_NAME,
    EntryProblem,
    FileDigest,
    Manifest,
    TreeEntry,
    TreeScan,
    build_manifest,
    inspect_manifest,
    open_in_tree,
    open_root,
    read_manifest,
    read_manifest_bytes,
    read_manifest_fd,
    scan_tree,
    show_path,
    sort_paths,
    stat_signature,
)

# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, kw_only=True)
class SizeMismatch:
    path: str
    expected: int
    actual: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "expected": self.expected, "actual": self.actual,
                "note": self.note}


@dataclass(frozen=True, kw_only=True)
class HashMismatch:
    path: str
    expected: str
    actual: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "expected": self.expected, "actual": self.actual}


@dataclass(frozen=True, kw_only=True)
class NotRegular:
    """A symlink, FIFO, socket, device or folder where a file is (or is not) listed."""

    path: str
    kind: str
    listed: bool
    #: why a link was not accepted as a DVC cache link (with --allow-dvc-cache-links)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "kind": self.kind, "listed": self.listed}
        return {**out, "note": self.note} if self.note else out


@dataclass(frozen=True, kw_only=True)
class Hardlinked:
    path: str
    links: int
    #: why the link was not accepted as a DVC cache link (with --allow-dvc-cache-links)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "links": self.links}
        return {**out, "note": self.note} if self.note else out


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    """Everything that differs between a bundle folder and its manifest."""

    ok: bool
    folder: str
    files: int
    bytes: int
    root_digest: str
    declared_root_digest: str
    expected_root_digest: str | None = None
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    extra_folders: tuple[str, ...] = ()
    size_mismatch: tuple[SizeMismatch, ...] = ()
    hash_mismatch: tuple[HashMismatch, ...] = ()
    not_regular: tuple[NotRegular, ...] = ()
    hardlinked: tuple[Hardlinked, ...] = ()
    bad_entries: tuple[EntryProblem, ...] = ()
    unreadable: tuple[EntryProblem, ...] = ()
    changed: tuple[EntryProblem, ...] = ()
    digest_problems: tuple[str, ...] = ()
    #: sha256 of the manifest.json bytes verified (a signature covers the manifest too)
    manifest_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "folder": self.folder,
            "files": self.files,
            "bytes": self.bytes,
            "root_digest": self.root_digest,
            "declared_root_digest": self.declared_root_digest,
            "expected_root_digest": self.expected_root_digest,
            "missing": list(self.missing),
            "extra": list(self.extra),
            "extra_folders": list(self.extra_folders),
            "size_mismatch": [m.to_dict() for m in self.size_mismatch],
            "hash_mismatch": [m.to_dict() for m in self.hash_mismatch],
            "not_regular": [m.to_dict() for m in self.not_regular],
            "hardlinked": [m.to_dict() for m in self.hardlinked],
            "bad_entries": [m.to_dict() for m in self.bad_entries],
            "unreadable": [m.to_dict() for m in self.unreadable],
            "changed": [m.to_dict() for m in self.changed],
            "digest_problems": list(self.digest_problems),
            "reasons": self.reasons(),
        }

    def reasons(self) -> list[str]:
        """One sentence per problem, each naming the file (empty when verified)."""
        out: list[str] = []
        out += [f"{show_path(p)}: listed in the manifest but missing from the bundle."
                for p in self.missing]
        out += [f"{show_path(p)}: in the bundle but not listed in the manifest."
                for p in self.extra]
        out += [f"{show_path(p)}/: a folder no manifest entry lies in (a bundle holds only the "
                "files of its manifest)." for p in self.extra_folders]
        for m in self.size_mismatch:
            out.append(f"{show_path(m.path)}: {m.note}." if m.note else
                       f"{show_path(m.path)}: {m.actual} bytes, the manifest says {m.expected}.")
        out += [f"{show_path(m.path)}: sha256 {m.actual[:16]}... differs from the manifest's "
                f"{m.expected[:16]}...." for m in self.hash_mismatch]
        for n in self.not_regular:
            where = "listed in the manifest" if n.listed else "not in the manifest"
            out.append(f"{show_path(n.path)}: is a {n.kind} ({where}); a bundle holds regular "
                       "files only, and it was not opened" + _link_advice(n.kind == "symlink"
                                                                          and n.listed, n.note))
        out += [f"{show_path(h.path)}: is hardlinked ({h.links} links), so its bytes can change "
                "through another name" + _link_advice(True, h.note) for h in self.hardlinked]
        out += [f"manifest entry {show_path(b.path)}: {b.reason}." for b in self.bad_entries]
        out += [f"{show_path(u.path)}: {u.reason}." for u in self.unreadable]
        out += [f"{show_path(c.path)}: changed while it was read ({c.reason}); verify again once "
                "nothing writes to the bundle." for c in self.changed]
        out += list(self.digest_problems)
        return out


def _link_advice(link: bool, note: str) -> str:
    """The end of a refused link's sentence: why it was not a DVC cache link, or the flag."""
    if note:
        return f"; not accepted as a DVC cache link: {note}."
    return f" ({LINK_HINT})." if link else "."


def normalise_digest(value: str | None, *, what: str = "--root-digest") -> str | None:
    """A pinned digest as 64 lowercase hex characters, or InputError."""
    if value is None:
        return None
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise InputError(f"{what}: {value[:80]!r} is not a sha256 (64 hex characters)",
                         hint="copy the root_digest from the release record")
    return text


_Outcome = tuple[Literal["ok", "size", "hash", "kind", "missing", "unreadable", "changed"], Any]


def verify_bundle(
    folder: str | os.PathLike[str],
    *,
    expected_root_digest: str | None = None,
    workers: int = 2,
    progress: bool = False,
    dvc_links: DvcCacheLinks | None = None,
) -> VerifyResult:
    """Check *folder* against its manifest.json; a diff, never an exception for a mismatch.

    With *dvc_links* (``--allow-dvc-cache-links``), a file that is a link into that DVC
    cache, to the entry DVC's metadata names for it, is verified through the entry it
    links to (relgate.dvclinks); any other link is refused as without it.
    Raises InputError/JSONFormatError/SchemaError (exit 2) only when the
    folder or the manifest itself cannot be read or is structurally invalid.
    """
    expected = normalise_digest(expected_root_digest)
    label = str(folder)
    root_fd = open_root(folder)
    try:
        source = str(Path(folder) / MANIFEST_NAME)
        data = _manifest_bytes(root_fd, source, dvc_links)
        reading = inspect_manifest(loads_strict(data, source=source), source=source)
        scan = scan_tree(root_fd)
        # links into the DVC cache, accepted: the lstat of the link and the fstat of its entry
        admitted: dict[str, tuple[TreeEntry, os.stat_result]] = {}
        refused: dict[str, str] = {}
        if dvc_links is not None:
            for path, seen in scan.entries.items():
                if path in reading.unsafe or (path not in reading.entries
                                              and path != MANIFEST_NAME):
                    continue
                if seen.kind == "symlink" or (seen.regular and seen.nlink > 1):
                    try:
                        fd, st = dvc_links.open_at(root_fd, path)
                        os.close(fd)
                        admitted[path] = (seen, st)
                    except LinkRefused as exc:
                        refused[path] = exc.reason

        missing: list[str] = []
        extra: list[str] = []
        sizes: list[SizeMismatch] = []
        hashes: list[HashMismatch] = []
        kinds: list[NotRegular] = []
        links: list[Hardlinked] = []
        unreadable = list(scan.unreadable)
        to_hash: list[tuple[str, FileDigest, TreeEntry]] = []

        for path, want in reading.entries.items():
            if path in reading.unsafe:
                continue
            got = scan.entries.get(path)
            if path in admitted:
                got = _as_entry(path, admitted[path][1])
            if got is None:
                missing.append(path)
            elif not got.regular:
                kinds.append(NotRegular(path=path, kind=got.kind, listed=True,
                                        note=refused.get(path, "")))
            else:
                if got.nlink > 1 and path not in admitted:
                    links.append(Hardlinked(path=path, links=got.nlink, note=refused.get(path, "")))
                if got.size != want.size:
                    sizes.append(SizeMismatch(path=path, expected=want.size, actual=got.size))
                else:
                    to_hash.append((path, want, got))
        for path, got in scan.entries.items():
            if path == MANIFEST_NAME:
                if got.nlink > 1 and path not in admitted:
                    links.append(Hardlinked(path=path, links=got.nlink, note=refused.get(path, "")))
            elif path not in reading.entries:
                if got.regular:
                    extra.append(path)
                else:
                    kinds.append(NotRegular(path=path, kind=got.kind, listed=False))

        # Largest first, so big files are hashed side by side.
        to_hash.sort(key=lambda item: -item[1].size)
        with byte_progress(progress, (w.size for _, w, _ in to_hash)) as sink:
            outcomes = list(parallel_map(
                lambda item: _check_file(root_fd, *item, sink,
                                         via=dvc_links if item[0] in admitted else None),
                to_hash, workers=workers))
        changed = _changed_since(root_fd, scan, data, source,
                                 {path: detail for (path, _, _), (what, detail)
                                  in zip(to_hash, outcomes, strict=True) if what == "ok"},
                                 links=dvc_links, admitted=admitted)
    finally:
        os.close(root_fd)

    for (path, want, _), (what, detail) in zip(to_hash, outcomes, strict=True):
        if what == "hash":
            hashes.append(HashMismatch(path=path, expected=want.sha256, actual=detail))
        elif what == "size":
            sizes.append(SizeMismatch(path=path, expected=want.size, actual=detail[0],
                                      note=detail[1]))
        elif what == "kind":
            kinds.append(NotRegular(path=path, kind=detail, listed=True))
        elif what == "missing":
            missing.append(path)
        elif what == "unreadable":
            unreadable.append(EntryProblem(path=path, reason=detail))
        elif what == "changed":
            changed.append(EntryProblem(path=path, reason=detail))

    problems: list[str] = []
    if not reading.root_digest_consistent:
        problems.append(
            f"{MANIFEST_NAME}: root_digest {reading.declared_root_digest} does not match its "
            f"entries ({reading.computed_root_digest}); the manifest was edited.")
    if expected is not None and expected != reading.computed_root_digest:
        problems.append(
            f"{MANIFEST_NAME}: root digest {reading.computed_root_digest} differs from the pinned "
            f"{expected}; this is not the bundle that was released.")

    def by_path(items: list[Any]) -> tuple[Any, ...]:
        return tuple(sorted(items, key=lambda x: (x if isinstance(x, str) else x.path)
                            .encode("utf-8", "surrogatepass")))

    folders = scan.unaccounted_folders(p for p in reading.entries if p not in reading.unsafe)
    result_ok = not (missing or extra or folders or sizes or hashes or kinds or links
                     or reading.bad_entries or unreadable or changed or problems)
    return VerifyResult(
        ok=result_ok,
        folder=label,
        files=len(reading.entries),
        bytes=sum(e.size for e in reading.entries.values()),
        root_digest=reading.computed_root_digest,
        declared_root_digest=reading.declared_root_digest,
        expected_root_digest=expected,
        missing=by_path(missing),
        extra=by_path(extra),
        extra_folders=tuple(folders),
        size_mismatch=by_path(sizes),
        hash_mismatch=by_path(hashes),
        not_regular=by_path(kinds),
        hardlinked=by_path(links),
        bad_entries=reading.bad_entries,
        unreadable=by_path(unreadable),
        changed=by_path(changed),
        digest_problems=tuple(problems),
        manifest_sha256=hashlib.sha256(data).hexdigest(),
    )


def _manifest_bytes(root_fd: int, source: str, links: DvcCacheLinks | None) -> bytes:
    """manifest.json's bytes: never through a link, unless *links* proves it a DVC cache link."""
    if links is not None:
        try:
            st = os.stat(MANIFEST_NAME, dir_fd=root_fd, follow_symlinks=False)
        except OSError:
            st = None
        if st is not None and is_link(st):
            try:
                fd, _ = links.open_at(root_fd, MANIFEST_NAME)
            except LinkRefused as exc:
                raise InputError(f"{source}: is a link, not accepted as a DVC cache link: "
                                 f"{exc.reason}",
                                 hint="run 'dvc checkout' to restore DVC's links, or replace "
                                      "it with a copy") from None
            return read_manifest_fd(fd, source=source)
    return read_manifest_bytes(MANIFEST_NAME, dir_fd=root_fd, source=source)


def _as_entry(path: str, st: os.stat_result) -> TreeEntry:
    """A TreeEntry for the cache entry an accepted link leads to (what is hashed)."""
    from relgate.hashing import file_kind

    return TreeEntry(path=path, kind=file_kind(st.st_mode), size=st.st_size, dev=st.st_dev,
                     ino=st.st_ino, nlink=st.st_nlink, mtime_ns=st.st_mtime_ns,
                     ctime_ns=st.st_ctime_ns)


def _check_file(root_fd: int, path: str, want: FileDigest, seen: TreeEntry,
                sink: Callable[[int], None] | None,
                via: DvcCacheLinks | None = None) -> _Outcome:
    """Hash one listed file, reading at most its declared size (plus a 1-byte probe);
    *via*: the file is an accepted DVC cache link, opened through its cache entry."""
    try:
        if via is not None:
            try:
                fd, st = via.open_at(root_fd, path)
            except LinkRefused as exc:
                return "changed", f"no longer a DVC cache link ({exc.reason})"
        else:
            fd, st = open_in_tree(root_fd, path)
    except FileNotFoundError:
        return "missing", None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return "kind", "symlink (swapped in during verification)"
        return "unreadable", f"cannot be opened ({exc.strerror})"
    try:
        if not stat.S_ISREG(st.st_mode):
            from relgate.hashing import file_kind

            return "kind", f"{file_kind(st.st_mode)} (swapped in during verification)"
        if (st.st_dev, st.st_ino) != (seen.dev, seen.ino):
            return "unreadable", "was replaced during verification"
        try:
            size, digest, more = sha256_fd(fd, limit=want.size, on_bytes=sink)
            after = os.fstat(fd)
        except OSError as exc:
            return "unreadable", f"cannot be read ({exc.strerror})"
    finally:
        os.close(fd)
    if more:
        return "size", (size + 1, f"grew past the {want.size} bytes the manifest declares "
                                  "while it was read")
    if size != want.size:
        return "size", (size, f"shrank to {size} bytes while it was read; the manifest says "
                              f"{want.size}")
    if digest != want.sha256:
        return "hash", digest
    if stat_signature(after) != stat_signature(st):
        return "changed", "written to while it was hashed"
    return "ok", stat_signature(after)


def _changed_since(root_fd: int, scan: TreeScan, manifest_bytes: bytes, source: str,
                   hashed: Mapping[str, tuple[int, ...]], *, links: DvcCacheLinks | None = None,
                   admitted: Mapping[str, tuple[TreeEntry, os.stat_result]] | None = None,
                   ) -> list[EntryProblem]:
    """Files that differ, after every file was hashed, from what was hashed or first listed.

    The folder is listed again (lstat, no file opened): a hashed file whose signature
    moved since its hash was taken was rewritten after it was read; an entry that
    appeared, vanished or changed kind since the first listing changed under the run.
    The manifest is read again and must hold the same bytes. An accepted DVC cache link
    must still be the same link, leading to the same, unwritten entry.
    """
    admitted = admitted or {}
    again = scan_tree(root_fd)
    out: list[EntryProblem] = []
    for path in sort_paths({*scan.entries, *again.entries}):
        before, now = scan.entries.get(path), again.entries.get(path)
        if before is None or now is None:
            out.append(EntryProblem(path=path, reason="appeared during verification"
                                    if before is None else "removed during verification"))
        elif path in admitted and links is not None:
            problem = _link_moved(root_fd, links, path, now, admitted[path], hashed.get(path))
            if problem:
                out.append(EntryProblem(path=path, reason=problem))
        elif path in hashed and now.signature != hashed[path]:
            out.append(EntryProblem(path=path, reason="rewritten after it was hashed"))
        elif path not in hashed and path != MANIFEST_NAME and (now.kind, now.ino) != (
                before.kind, before.ino):
            out.append(EntryProblem(path=path, reason="replaced during verification"))
    for folder in sort_paths(again.folders ^ scan.folders):
        out.append(EntryProblem(path=folder + "/", reason="appeared during verification"
                                if folder in again.folders else "removed during verification"))
    try:
        manifest_now = _manifest_bytes(root_fd, source, links)
    except RelgateError:
        manifest_now = None
    if manifest_now != manifest_bytes:
        out.append(EntryProblem(path=MANIFEST_NAME, reason="its bytes differ from the ones "
                                "verification started with"))
    return out


def _link_moved(root_fd: int, links: DvcCacheLinks, path: str, now: TreeEntry,
                first: tuple[TreeEntry, os.stat_result],
                hashed: tuple[int, ...] | None) -> str | None:
    """Why an accepted DVC cache link is not, after hashing, what was checked and hashed."""
    link, entry = first
    if (now.kind, now.dev, now.ino) != (link.kind, link.dev, link.ino):
        return "replaced during verification"
    try:
        fd, st = links.open_at(root_fd, path)
        os.close(fd)
    except LinkRefused as exc:
        return f"no longer a DVC cache link ({exc.reason})"
    if (st.st_dev, st.st_ino) != (entry.st_dev, entry.st_ino):
        return "links to another file than the one verified"
    if hashed is not None and stat_signature(st) != hashed:
        return "rewritten after it was hashed"
    return None


# --------------------------------------------------------------------------- publication

STEPS = ("staging-created", "built", "manifest-written", "synced", "locked", "target-checked",
         "renamed", "unlocked")
STAGING_PREFIX = ".relgate-staging-"
STALE_EMPTY_LOCK_S = 10.0

BuildFn = Callable[[Path], Mapping[str, FileDigest] | None]


@dataclass(frozen=True, kw_only=True)
class PublishOutcome:
    """What a publication did: created the bundle, or found it already there, identical."""

    path: Path
    root_digest: str
    created: bool
    message: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "root_digest": self.root_digest, "created": self.created,
                "message": self.message, "notes": list(self.notes)}


def publish_bundle(
    target: str | os.PathLike[str],
    build: BuildFn,
    *,
    lock_timeout: float = 60.0,
    workers: int = 2,
    on_step: Callable[[str], None] | None = None,
    dvc_links: DvcCacheLinks | None = None,
) -> PublishOutcome:
    """Publish the folder that *build* fills at *target*, atomically, never overwriting.

    ``build(staging)`` writes the bundle's files into *staging* (a fresh folder
    beside *target*) and may return the digests it computed while copying
    (``copy_and_hash``) so they are not read again; returned digests are
    trusted, so return only digests of the bytes actually written.
    *on_step* is called with each name in STEPS as it is reached (progress,
    and crash tests that kill the process at a given step).
    Raises PublishRefused (exit 1) when the target holds other content or a
    folder that does not verify, or when another publisher keeps the lock.
    *dvc_links* (for the target's folder) lets a target already published and checked
    out by DVC as links into its cache verify (``verify_bundle``).
    """
    target = Path(target)
    name = target.name
    if name in ("", ".", "..") or name.startswith(".") or "/" in name:
        raise InputError(f"{target}: not a usable bundle folder name",
                         hint="name the release folder with letters, digits, '.', '_' or '-'")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{parent}: cannot create ({exc.strerror})",
                         hint="check permissions") from None
    step = on_step or (lambda _name: None)
    notes = clean_stale_staging(parent, name)
    staging = _make_staging(parent, name)
    renamed = False
    try:
        step("staging-created")
        known = build(staging)
        step("built")
        manifest = build_manifest(staging, known=known, workers=workers)
        atomic_write_bytes(staging / MANIFEST_NAME, manifest.dumps())
        step("manifest-written")
        seal_tree(staging)
        step("synced")
        with PublishLock(parent, name, timeout=lock_timeout) as lock:
            notes += lock.notes
            step("locked")
            existing = _existing_bundle(target, workers=workers, dvc_links=dvc_links)
            step("target-checked")
            if existing is None:
                try:
                    rename_noreplace(staging, target)
                except FileExistsError:  # only if someone bypassed the lock
                    existing = _existing_bundle(target, workers=workers, dvc_links=dvc_links)
                else:
                    renamed = True
                    fsync_dir(parent)
                    step("renamed")
            if existing is not None and existing.root_digest != manifest.root_digest:
                raise PublishRefused(
                    f"{target}: already published with different content: "
                    f"{_differing_files(target, manifest)} (root digest "
                    f"{existing.root_digest[:16]}..., this one {manifest.root_digest[:16]}...)",
                    hint="published bundles are never rewritten, nor taken as this publication: "
                         "publish under a new release name, or remove a bundle that is not the "
                         "release by hand after checking it",
                )
        step("unlocked")
    except OSError as exc:  # disk full, file size limit, I/O error: no partial bundle is left
        where = exc.filename or staging
        state = "published, but not synced to disk" if renamed else "not published"
        raise InputError(f"{target}: {state}: {where}: {exc.strerror or exc}",
                         hint="check free space, file size limits and permissions, "
                              "then publish again") from None
    except WriteError as exc:  # a copy into the staging folder could not be written
        raise InputError(f"{target}: not published: {exc.message}",
                         hint="check free space, file size limits and permissions, "
                              "then publish again") from None
    finally:
        if os.path.lexists(staging):
            force_rmtree(staging)
    if existing is not None:
        return PublishOutcome(path=target, root_digest=manifest.root_digest, created=False,
                              message=f"{target}: already published, identical; nothing to do",
                              notes=tuple(notes))
    return PublishOutcome(path=target, root_digest=manifest.root_digest, created=True,
                          message=f"{target}: published ({len(manifest.files) + 1} files, root "
                                  f"digest {manifest.root_digest})",
                          notes=tuple(notes))


def _differing_files(target: Path, manifest: Manifest) -> str:
    """The files in which the (verified) bundle at *target* differs from *manifest*, in words."""
    try:
        have = read_manifest(target / MANIFEST_NAME).files
    except RelgateError:
        return "its manifest changed while it was compared"
    differ = sort_paths(p for p in {*have, *manifest.files} if have.get(p) != manifest.files.get(p))
    shown = ", ".join(show_path(p) for p in differ[:6])
    return f"{shown}{f' and {len(differ) - 6} more' if len(differ) > 6 else ''} differ"


def _existing_bundle(target: Path, *, workers: int,
                     dvc_links: DvcCacheLinks | None = None) -> VerifyResult | None:
    """None when *target* is absent; its verification when it is a complete bundle; else refuse."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        from relgate.hashing import file_kind

        raise PublishRefused(f"{target}: exists and is a {file_kind(st.st_mode)}, not a bundle; "
                             "it is never replaced",
                             hint="move it away by hand, then publish again")
    links_hint = "" if dvc_links is not None else (
        " (a bundle DVC checked out as links into its cache verifies with "
        "--allow-dvc-cache-links or release.allow_dvc_cache_links: true)")
    try:
        result = verify_bundle(target, workers=workers, dvc_links=dvc_links)
    except RelgateError as exc:
        linked = "symlink" in exc.message
        raise PublishRefused(
            f"{target}: exists but is not a complete bundle ({exc.message}); it is never replaced",
            hint="inspect it and remove it by hand if it is debris"
                 f"{links_hint if linked else ''}, then publish again",
        ) from None
    if not result.ok:
        reasons = result.reasons()
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        linked = bool(result.hardlinked or any(n.kind == "symlink" for n in result.not_regular))
        raise PublishRefused(
            f"{target}: exists but does not verify: {reasons[0]}{more}; it is never replaced",
            hint=f"run 'relgate verify {target}', then remove it by hand if it is debris"
                 f"{links_hint if linked else ''}",
        )
    return result


# -- staging folders


def _host_tag() -> str:
    import hashlib

    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _make_staging(parent: Path, name: str) -> Path:
    path = parent / f"{STAGING_PREFIX}{name}.{_host_tag()}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.mkdir(path, 0o700)
    except OSError as exc:
        raise InputError(f"{parent}: cannot create a staging folder ({exc.strerror})",
                         hint="check that the folder is writable") from None
    return path


def clean_stale_staging(parent: Path, name: str) -> list[str]:
    """Remove staging folders for *name* left by dead processes of this host; notes say which."""
    prefix = f"{STAGING_PREFIX}{name}."
    notes: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return notes
    for entry in entries:
        if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
            continue
        parts = entry.name[len(prefix):].split(".")
        if len(parts) != 3 or parts[0] != _host_tag() or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if process_alive(pid):
            continue
        force_rmtree(Path(entry.path))
        notes.append(f"removed staging folder {entry.name} left by process {pid}, which is gone")
    return notes


def seal_tree(folder: Path) -> None:
    """fsync every file and folder, bottom-up; files become 0o444, folders stay 0o755.

    Folders are not made read-only: DVC must be able to unlink a bundle's files when it
    checks out a revision without that release (EACCES otherwise, for non-root users).
    Adding or removing a file is still caught by ``relgate verify`` (exact file set).
    A symlink is left as it is, never followed (verification judges it).
    """
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False, followlinks=False):
        for fname in filenames:
            try:
                fd = os.open(os.path.join(dirpath, fname),
                             os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    continue
                raise
            try:
                os.fchmod(fd, 0o444)
                os.fsync(fd)
            finally:
                os.close(fd)
        del dirnames
        fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o755)
            os.fsync(fd)
        finally:
            os.close(fd)


def force_rmtree(path: Path) -> None:
    """Remove a (possibly read-only) folder that relgate created; links are not followed."""
    for dirpath, _dirnames, _files in os.walk(path, topdown=True, followlinks=False):
        if not os.path.islink(dirpath):
            with contextlib.suppress(OSError):
                os.chmod(dirpath, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename *src* to *dst* atomically, failing with FileExistsError if *dst* exists.

    Uses renameat2(RENAME_NOREPLACE) where the kernel and filesystem offer it,
    so even a broken lock cannot make one publisher replace another's folder;
    elsewhere it falls back to check-then-rename under the publication lock.
    """
    fn = _renameat2()
    if fn is not None:
        at_fdcwd, rename_noreplace_flag = -100, 1
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace_flag) == 0:
            return
        err = ctypes.get_errno()
        if err in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(src))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


# -- the publication lock


def _proc_start(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) from /proc, or None where unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def process_alive(pid: int, start: int | None = None) -> bool:
    """Whether *pid* runs on this host (and, given *start*, is still the same process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    info = _proc_start(pid)
    if info is None:
        return True
    state, started = info
    if state in ("Z", "X"):
        return False
    return start is None or start == started


class PublishLock:
    """``parent/.<name>.lock``, created with O_EXCL, holding pid, host and start times.

    A lock whose process is gone (same host: dead pid, pid reused, or a
    reboot) is stale and is removed with a note. A live holder is waited for
    up to *timeout* seconds, then the publication is refused. Breaking a stale
    lock renames it aside first and checks it is still the stale one, so two
    breakers cannot remove a fresh lock.
    """

    def __init__(self, parent: Path, name: str, *, timeout: float = 60.0) -> None:
        self.path = parent / f".{name}.lock"
        self.timeout = timeout
        self.notes: list[str] = []
        self._content: bytes | None = None

    def _info(self) -> bytes:
        me = _proc_start(os.getpid())
        return dumps({
            "tool": "relgate",
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "process_start": me[1] if me else None,
            "boot_id": _boot_id(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        })

    def __enter__(self) -> PublishLock:
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            content = self._info()
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                seen = self._read()
                verdict = self._stale(seen)
                if verdict is not None and seen is not None:
                    if self._break(seen):
                        self.notes.append(f"removed stale lock {self.path.name}: {verdict}")
                    continue
                if time.monotonic() >= deadline:
                    raise PublishRefused(
                        f"{self.path}: another publisher holds the lock ({self._describe(seen)})",
                        hint="wait for it to finish; if no publisher is running, "
                             "delete the lock file",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            except OSError as exc:
                raise InputError(f"{self.path}: cannot create the lock ({exc.strerror})",
                                 hint="check that the folder is writable") from None
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.path.parent)
            self._content = content
            return self

    def __exit__(self, *exc: object) -> None:
        if self._content is None:
            return
        if self._read() == self._content:
            try:
                os.unlink(self.path)
                fsync_dir(self.path.parent)
            except OSError:
                pass
        self._content = None

    def _read(self) -> bytes | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return os.read(fd, 65536)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _stale(self, seen: bytes | None) -> str | None:
        """Why the lock holding *seen* is stale, or None when it may be live."""
        if seen is None:
            return None  # vanished: retry at once
        try:
            info = loads_strict(seen, source=str(self.path))
            pid = int(info["pid"])
            host = str(info["hostname"])
        except (RelgateError, KeyError, TypeError, ValueError):
            try:
                age = time.time() - os.lstat(self.path).st_mtime
            except OSError:
                return None
            if age > STALE_EMPTY_LOCK_S:
                return f"unreadable lock file, untouched for {age:.0f} s"
            return None
        if host != socket.gethostname():
            return None  # another machine: its processes cannot be checked from here
        boot = info.get("boot_id")
        if boot and _boot_id() and boot != _boot_id():
            return f"process {pid} ran before the last reboot"
        start = info.get("process_start")
        if not process_alive(pid, start if isinstance(start, int) else None):
            return f"process {pid} that held it is gone"
        return None

    def _break(self, seen: bytes) -> bool:
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, aside)
        except OSError:
            return False  # someone else broke or released it first
        try:
            with open(aside, "rb") as fh:
                now = fh.read(65536)
            if now != seen:  # a fresh lock replaced the stale one in between: put it back
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)
                return False
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(aside)

    def _describe(self, seen: bytes | None) -> str:
        try:
            info = loads_strict(seen or b"", source=str(self.path))
            return f"pid {info['pid']} on {info['hostname']} since {info.get('created', '?')}"
        except (RelgateError, KeyError, TypeError):
            return "holder unknown"


def iter_staging(parent: Path, name: str) -> Iterator[Path]:
    """Staging folders for *name* under *parent* (live or not), for tests and cleanup tools."""
    prefix = f"{STAGING_PREFIX}{name}."
    try:
        for entry in os.scandir(parent):
            if entry.name.startswith(prefix):
                yield Path(entry.path)
    except OSError:
        return
