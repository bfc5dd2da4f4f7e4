"""Bundle manifests: the records, the path rules, and building/reading them safely.

A manifest lists every file of a folder except ``manifest.json`` itself,
keyed by relative POSIX path, with its size and sha256, plus a root digest:
the sha256 of the lines ``"<sha256> <size> <path>\\n"`` in path order (UTF-8
bytes). Pinning the root digest outside the bundle (release record, git tag,
dvc.lock) catches an attacker who rewrites files and manifest consistently.

Paths must be portable and harmless: relative, no ``.``/``..`` or empty
component, no backslash, NUL, line break or other control character, and a
name every common filesystem can hold: none of ``< > : " | ? *`` (``:`` names
an NTFS alternate data stream), no component ending in a dot or a space
(Windows drops them: ``x.`` is ``x``), no Windows device name (``CON``,
``NUL``, ``COM1``, ... with any extension), and no two names -- files or the
folders they lie in -- that collide on a case-insensitive or normalising
filesystem (a file ``A`` beside a folder ``a/``, NFC vs NFD).

Folders are walked with descriptor-relative calls that never follow a
symlink, so neither building nor verification can be led outside the folder
by a link planted in it, even one that appears while the walk is running.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relgate.errors import InputError, SchemaError
from relgate.hashing import file_kind, parallel_map, sha256_fd
from relgate.jsonio import MAX_JSON_BYTES, atomic_write_bytes, dumps, loads_strict

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
MAX_SIZE = 2**53 - 1
MAX_PATH_BYTES = 4096
MAX_DEPTH = 128
_SHA256 = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class FileDigest:
    """Size and sha256 of one file."""

    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, obj: Any, *, where: str = "entry") -> FileDigest:
        """Strict: exactly ``size`` (a JSON integer, not a bool or float) and ``sha256``."""
        if not isinstance(obj, dict):
            raise SchemaError(f"{where}: expected an object with size and sha256",
                              hint="see the 'manifest' schema")
        keys = set(obj)
        if keys != {"size", "sha256"}:
            extra = sorted(keys - {"size", "sha256"})
            what = f"unexpected key {extra[0]!r}" if extra else \
                f"missing {sorted({'size', 'sha256'} - keys)[0]!r}"
            raise SchemaError(f"{where}: {what}", hint="an entry holds exactly size and sha256")
        size, digest = obj["size"], obj["sha256"]
        if type(size) is not int or not 0 <= size <= MAX_SIZE:
            raise SchemaError(f"{where}.size: {size!r} is not an integer between 0 and 2^53-1",
                              hint="write the size in bytes as a plain integer")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise SchemaError(f"{where}.sha256: not 64 lowercase hex characters",
                              hint="write the sha256 as lowercase hex")
        return cls(size=size, sha256=digest)


def _utf8(path: str) -> bytes:
    return path.encode("utf-8", "surrogatepass")


def sort_paths(paths: Iterable[str]) -> list[str]:
    """Paths in manifest order: by their UTF-8 bytes."""
    return sorted(paths, key=_utf8)


def compute_root_digest(files: Mapping[str, FileDigest]) -> str:
    """sha256 over ``"<sha256> <size> <path>\\n"`` for every entry in path order."""
    digest = hashlib.sha256()
    for path in sort_paths(files):
        entry = files[path]
        digest.update(f"{entry.sha256} {entry.size} ".encode("ascii") + _utf8(path) + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Every file of a bundle (but manifest.json) by sorted relative POSIX path.

    Construction enforces the path rules, so a Manifest value is always
    writable and portable; ``root_digest`` is derived, never stored apart.
    """

    files: Mapping[str, FileDigest] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = [*(EntryProblem(path=p, reason=r) for p in self.files
                      if (r := path_problem(p)) is not None),
                    *duplicate_problems(self.files)]
        if problems:
            first = problems[0]
            raise SchemaError(f"manifest entry {show_path(first.path)}: {first.reason}",
                              hint="rename the file to a portable relative path")
        ordered = {p: self.files[p] for p in sort_paths(self.files)}
        object.__setattr__(self, "files", MappingProxyType(ordered))

    @property
    def root_digest(self) -> str:
        return compute_root_digest(self.files)

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "manifest",
            "algorithm": "sha256",
            "files": {p: e.to_dict() for p, e in self.files.items()},
            "root_digest": self.root_digest,
        }

    @classmethod
    def from_dict(cls, obj: Any, *, source: str = "manifest") -> Manifest:
        """Strict reading: any structural, path or root-digest problem raises SchemaError."""
        from relgate import schemas

        manifest = inspect_manifest(obj, source=source).strict(source)
        schemas.validate(obj, "manifest", source=source)  # belt and braces: the schema agrees
        return manifest

    def dumps(self) -> bytes:
        """Deterministic bytes (sorted keys, UTF-8, trailing newline)."""
        return dumps(self.to_dict())


# --------------------------------------------------------------------------- path rules


@dataclass(frozen=True, kw_only=True)
class EntryProblem:
    """A manifest entry whose path breaks the rules, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason}


def show_path(path: str) -> str:
    """A path as it should appear in a one-line message (quoted if not plain)."""
    plain = path.isprintable() and path.strip() == path and path != "" and "'" not in path
    return path if plain else ascii(path)


def path_problem(path: str) -> str | None:
    """Why *path* is not an acceptable manifest key, or None when it is."""
    if not isinstance(path, str) or path == "":
        return "empty path"
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode (lone surrogate)"
    if len(encoded) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"
    if "\x00" in path:
        return "contains a NUL character"
    if "\n" in path or "\r" in path:
        return "contains a line break"
    if "\\" in path:
        return "contains a backslash (paths use '/')"
    if path.startswith("/"):
        return "is an absolute path"
    if path.endswith("/"):
        return "ends with '/'"
    parts = path.split("/")
    if "" in parts:
        return "has an empty component ('//')"
    if ".." in parts:
        return "has a '..' component (points outside the bundle)"
    if "." in parts:
        return "has a '.' component"
    return _portability_problem(path, parts)


#: characters Windows does not allow in a name (':' also names an NTFS alternate data stream)
_FORBIDDEN = frozenset('<>:"|?*')
#: device names Windows reserves in every folder, with or without an extension
_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                       *(f"{dev}{n}" for dev in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3")})


def _portability_problem(path: str, parts: list[str]) -> str | None:
    """Why a path that is safe on POSIX cannot exist as-is on Windows or macOS."""
    for ch in path:
        if ord(ch) < 0x20:
            return f"contains the control character {ch!r}"
        if ch in _FORBIDDEN:
            what = ("an NTFS alternate data stream" if ch == ":" else
                    "a character Windows does not allow in names")
            return f"contains {ch!r} ({what})"
    for part in parts:
        if part[-1] in ". ":
            return (f"component {part!r} ends with {'a dot' if part[-1] == '.' else 'a space'}, "
                    "which Windows drops (it would collide with the name without it)")
        if part.split(".")[0].rstrip(" ").upper() in _RESERVED:
            return f"component {part!r} is a device name Windows reserves (CON, NUL, COM1, ...)"
    return None


def _collision_key(path: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", path).casefold())


def duplicate_problems(paths: Iterable[str]) -> list[EntryProblem]:
    """Paths that collide with another on a case-insensitive or normalising filesystem.

    Files and the folders they lie in are compared alike: a file ``A`` beside a folder
    ``a/`` cannot coexist on macOS or Windows, nor can ``Models/x`` and ``models/y`` keep
    their two spellings. The first of each group (in manifest order) is kept; every other
    member is a problem naming the one it collides with. A path lying under another entry
    that is a file is a problem too.
    """
    paths = sort_paths(paths)
    nodes: dict[str, tuple[str, bool]] = {}  # collision key -> (spelling, is a file)
    problems: list[EntryProblem] = []
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            node, is_file = "/".join(parts[:i]), i == len(parts)
            key = _collision_key(node)
            seen = nodes.setdefault(key, (node, is_file))
            if seen == (node, is_file) or (seen[0] == node and not seen[1] and not is_file):
                continue  # the first time, or the same folder again
            problems.append(EntryProblem(path=path, reason=_collision(node, is_file, *seen)))
            break
    return problems


def _collision(node: str, is_file: bool, other: str, other_is_file: bool) -> str:
    if other == node:
        return (f"lies under {show_path(other)}, which is listed as a file" if other_is_file
                else f"is listed as a file, but other entries lie under {show_path(other)}")
    nfc_same = unicodedata.normalize("NFC", node) == unicodedata.normalize("NFC", other)
    kind = "Unicode normalisation (NFC/NFD)" if nfc_same else "case"
    what = "" if is_file == other_is_file else (
        f" ({'a file' if is_file else 'a folder'} beside {'a file' if other_is_file else 'a folder'})")
    subject = "" if is_file else f"its folder {show_path(node)} "
    return (f"{subject}differs from {show_path(other)} only by {kind}{what}; "
            "both cannot exist on macOS or Windows")


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, kw_only=True)
class ManifestReading:
    """A structurally valid manifest, with its path problems collected, not raised.

    Verification needs the full picture (every bad entry named, the root
    digest checked) rather than the first error, so path problems land here;
    ``unsafe`` holds the entries that must never be touched on disk.
    """

    entries: Mapping[str, FileDigest]
    bad_entries: tuple[EntryProblem, ...]
    unsafe: frozenset[str]
    declared_root_digest: str
    computed_root_digest: str

    @property
    def root_digest_consistent(self) -> bool:
        return self.declared_root_digest == self.computed_root_digest

    def strict(self, source: str) -> Manifest:
        """The Manifest, or SchemaError naming the first problem."""
        if self.bad_entries:
            first = self.bad_entries[0]
            raise SchemaError(f"{source}: files[{show_path(first.path)}]: {first.reason}",
                              hint="rebuild the manifest with 'relgate manifest DIR'")
        if not self.root_digest_consistent:
            raise SchemaError(
                f"{source}: root_digest {self.declared_root_digest[:12]}... does not match its "
                f"entries ({self.computed_root_digest[:12]}...)",
                hint="the manifest was edited by hand; rebuild it with 'relgate manifest DIR'",
            )
        return Manifest(files=self.entries)


def inspect_manifest(obj: Any, *, source: str = "manifest") -> ManifestReading:
    """Check a parsed manifest: structure raises SchemaError, path problems are collected.

    The top level is checked by hand with the schema's rules (and exact
    Python types), which keeps jsonschema out of ``relgate verify``'s start-up;
    a test holds the two in agreement, and strict reading runs the schema too.
    """
    _check_top_level(obj, source)
    files = obj["files"]
    entries = {p: FileDigest.from_dict(v, where=f"{source}: files[{show_path(p)}]")
               for p, v in files.items()}
    unsafe = {p: r for p in entries if (r := path_problem(p)) is not None}
    problems = [EntryProblem(path=p, reason=r) for p, r in unsafe.items()]
    problems += duplicate_problems(p for p in entries if p not in unsafe)
    ordered = {p: entries[p] for p in sort_paths(entries)}
    return ManifestReading(
        entries=MappingProxyType(ordered),
        bad_entries=tuple(sorted(problems, key=lambda e: _utf8(e.path))),
        unsafe=frozenset(unsafe),
        declared_root_digest=obj["root_digest"],
        computed_root_digest=compute_root_digest(ordered),
    )


_TOP_KEYS = ("schema_version", "kind", "algorithm", "files", "root_digest")


def _check_top_level(obj: Any, source: str) -> None:
    """The manifest schema's top-level rules, with messages that name the key."""
    hint = "see the 'manifest' schema (relgate schema show manifest)"
    if not isinstance(obj, dict):
        raise SchemaError(f"{source}: (root): expected a JSON object", hint=hint)
    for key in _TOP_KEYS:
        if key not in obj:
            raise SchemaError(f"{source}: (root): required key {key!r} is missing", hint=hint)
    for key in obj:
        if key not in _TOP_KEYS:
            raise SchemaError(f"{source}: (root): key {key!r} not allowed", hint=hint)
    if type(obj["schema_version"]) is not int or obj["schema_version"] != SCHEMA_VERSION:
        raise SchemaError(f"{source}: schema_version: expected the integer {SCHEMA_VERSION}, "
                          f"got {obj['schema_version']!r}", hint="this relgate reads version 1")
    if obj["kind"] != "manifest":
        raise SchemaError(f"{source}: kind: expected 'manifest', got {obj['kind']!r}", hint=hint)
    if obj["algorithm"] != "sha256":
        raise SchemaError(f"{source}: algorithm: {obj['algorithm']!r} is not supported",
                          hint="relgate manifests use sha256")
    if not isinstance(obj["files"], dict):
        raise SchemaError(f"{source}: files: expected an object keyed by path", hint=hint)
    root = obj["root_digest"]
    if not isinstance(root, str) or not _SHA256.fullmatch(root):
        raise SchemaError(f"{source}: root_digest: not 64 lowercase hex characters", hint=hint)


def read_manifest_bytes(name: str | os.PathLike[str], *, dir_fd: int | None = None,
                        source: str | None = None) -> bytes:
    """The bytes of a manifest file, opened without following a final symlink."""
    src = source or str(name)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        raise InputError(f"{src}: no such file",
                         hint="a bundle carries manifest.json; "
                              "write one with 'relgate manifest DIR'") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{src}: is a symlink",
                             hint="manifest.json must be a regular file (a link into this "
                                  "repository's DVC cache is accepted with "
                                  "--allow-dvc-cache-links)") from None
        raise InputError(f"{src}: cannot open ({exc.strerror})",
                         hint="manifest.json must be a regular file") from None
    return read_manifest_fd(fd, source=src)


def read_manifest_fd(fd: int, *, source: str) -> bytes:
    """The bytes of a manifest file open as *fd* (non-blocking or not; closed here)."""
    src = source
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{src}: is a {file_kind(st.st_mode)}, not a regular file",
                             hint="manifest.json must be a regular file")
        if st.st_size > MAX_JSON_BYTES:
            raise InputError(f"{src}: larger than the {MAX_JSON_BYTES} byte limit",
                             hint="this is not a relgate manifest")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, 1024 * 1024):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_JSON_BYTES:
                raise InputError(f"{src}: larger than the {MAX_JSON_BYTES} byte limit",
                                 hint="this is not a relgate manifest")
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(f"{src}: cannot read ({exc.strerror})", hint="check the file") from None
    finally:
        os.close(fd)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and strictly check a manifest file (exit 2 on any problem)."""
    data = read_manifest_bytes(path)
    return Manifest.from_dict(loads_strict(data, source=str(path)), source=str(path))


# --------------------------------------------------------------------------- folders


@dataclass(frozen=True, kw_only=True)
class TreeEntry:
    """What lstat said about one non-directory entry of a walked folder."""

    path: str
    kind: str
    size: int
    dev: int
    ino: int
    nlink: int
    mtime_ns: int = 0
    ctime_ns: int = 0

    @property
    def regular(self) -> bool:
        return self.kind == "regular file"

    @property
    def signature(self) -> tuple[int, int, int, int, int]:
        """What changes when the file's bytes change: (dev, inode, size, mtime, ctime)."""
        return (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)


def stat_signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """``TreeEntry.signature`` of a (f)stat result: ctime moves on every write, even when
    mtime is set back, so equal signatures mean the bytes were not rewritten in between."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True, kw_only=True)
class TreeScan:
    """Every non-directory entry under a folder, its folders, and those that could not be read."""

    entries: Mapping[str, TreeEntry]
    unreadable: tuple[EntryProblem, ...] = ()
    folders: frozenset[str] = frozenset()

    def unaccounted_folders(self, files: Iterable[str]) -> list[str]:
        """The topmost folders that no path of *files* lies in (empty, or holding only
        other things): a manifest lists files, so such a folder is never part of a bundle."""
        needed = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        return sort_paths(f for f in self.folders
                          if f not in needed and (f.rpartition("/")[0] in needed or "/" not in f))


def open_root(folder: str | os.PathLike[str]) -> int:
    """Open the folder a user named (a symlink *to* the folder itself is followed)."""
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{folder}: no such folder", hint="check the path") from None
    except NotADirectoryError:
        raise InputError(f"{folder}: not a folder", hint="point at a bundle folder") from None
    except OSError as exc:
        raise InputError(f"{folder}: cannot open ({exc.strerror})",
                         hint="check permissions") from None


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def scan_tree(root_fd: int) -> TreeScan:
    """lstat every entry below *root_fd* without following any symlink.

    Directories are entered with openat(O_NOFOLLOW) and checked to be the
    directory lstat saw, so a folder swapped for a link mid-walk is not
    entered. Open descriptors are bounded by the depth, not the width.
    """
    entries: dict[str, TreeEntry] = {}
    unreadable: list[EntryProblem] = []
    folders: list[str] = []
    stack: list[tuple[int, str, Iterator[str]]] = []

    def enter(fd: int, prefix: str) -> None:
        subdirs: list[str] = []
        try:
            with os.scandir(fd) as it:
                items = list(it)
            for item in items:
                rel = prefix + item.name
                st = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(item.name)
                    folders.append(rel)
                else:
                    entries[rel] = TreeEntry(path=rel, kind=file_kind(st.st_mode), size=st.st_size,
                                             dev=st.st_dev, ino=st.st_ino, nlink=st.st_nlink,
                                             mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
        except OSError as exc:
            unreadable.append(EntryProblem(path=prefix.rstrip("/") or ".",
                                           reason=f"cannot be listed ({exc.strerror})"))
        stack.append((fd, prefix, iter(sorted(subdirs))))

    enter(os.dup(root_fd), "")
    try:
        while stack:
            fd, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(fd)
                stack.pop()
                continue
            rel = prefix + name
            if len(stack) >= MAX_DEPTH:
                unreadable.append(EntryProblem(path=rel, reason=f"nested deeper than {MAX_DEPTH}"))
                continue
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                unreadable.append(EntryProblem(path=rel,
                                               reason=f"cannot be opened ({exc.strerror})"))
                continue
            enter(sub, rel + "/")
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    return TreeScan(entries=MappingProxyType(entries), unreadable=tuple(unreadable),
                    folders=frozenset(folders))


def open_in_tree(root_fd: int, relpath: str) -> tuple[int, os.stat_result]:
    """Open *relpath* under *root_fd* for reading, never following a symlink.

    Every directory on the way is opened with O_NOFOLLOW; the file itself
    with O_NOFOLLOW|O_NONBLOCK, so a FIFO does not block. Raises OSError;
    the caller checks the returned fstat (regular file, same inode).
    """
    parts = relpath.split("/")
    cur = root_fd
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=cur)
            if cur != root_fd:
                os.close(cur)
            cur = nxt
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=cur)
    finally:
        if cur != root_fd:
            os.close(cur)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def build_manifest(
    folder: str | os.PathLike[str],
    *,
    exclude: Iterable[str] = (MANIFEST_NAME,),
    known: Mapping[str, FileDigest] | None = None,
    workers: int = 2,
    progress: bool = False,
) -> Manifest:
    """The manifest of every file under *folder* (the *exclude* paths aside).

    Refuses, naming the file, anything a bundle must not hold: symlinks,
    FIFOs, sockets, devices, hardlinked files, unportable names. *known*
    digests (from ``copy_and_hash`` while filling the folder) are used
    instead of re-reading a file when its size still matches.
    """
    from relgate.hashing import byte_progress

    excluded = set(exclude)
    root_fd = open_root(folder)
    try:
        scan = scan_tree(root_fd)
        if scan.unreadable:
            bad = scan.unreadable[0]
            raise InputError(f"{Path(folder) / bad.path}: {bad.reason}", hint="check permissions")
        files = {p: e for p, e in scan.entries.items() if p not in excluded}
        for path in sort_paths(files):
            _refuse_unbundleable(folder, files[path])
        empty = scan.unaccounted_folders(files)
        if empty:
            raise InputError(f"{show_path(str(Path(folder) / empty[0]))}/: a folder that holds no file; a "
                             "manifest lists files only, so it would never verify",
                             hint="remove the empty folder (rmdir), then build the manifest again")
        problems = duplicate_problems(files)
        if problems:
            raise InputError(f"{Path(folder) / problems[0].path}: {problems[0].reason}",
                             hint="rename one of the files")
        known = known or {}
        todo = [p for p in sorted(files, key=lambda p: -files[p].size)
                if not (p in known and known[p].size == files[p].size)]
        digests = {p: known[p] for p in files if p not in todo}
        with byte_progress(progress, (files[p].size for p in todo)) as sink:
            hashed = parallel_map(lambda p: _hash_entry(root_fd, folder, files[p], sink), todo,
                                  workers=workers)
            digests.update(zip(todo, hashed, strict=True))
    finally:
        os.close(root_fd)
    return Manifest(files=digests)


def _refuse_unbundleable(folder: str | os.PathLike[str], entry: TreeEntry) -> None:
    where = Path(folder) / entry.path
    problem = path_problem(entry.path)
    if problem is not None:
        raise InputError(f"{str(where)!a}: name {problem}", hint="rename the file")
    if entry.kind == "symlink":
        raise InputError(f"{where}: is a symlink; a bundle holds regular files only",
                         hint="replace the link with a copy of the file it points to")
    if not entry.regular:
        raise InputError(f"{where}: is a {entry.kind}; a bundle holds regular files only",
                         hint="remove it from the folder")
    if entry.nlink > 1:
        raise InputError(
            f"{where}: is hardlinked ({entry.nlink} links); "
            "its bytes can change through another name",
            hint="replace it with an independent copy "
                 "(cp --no-preserve=links, or dvc cache.type copy)",
        )


def _hash_entry(root_fd: int, folder: str | os.PathLike[str], entry: TreeEntry,
                sink: Any) -> FileDigest:
    where = Path(folder) / entry.path
    try:
        fd, st = open_in_tree(root_fd, entry.path)
    except OSError as exc:
        raise InputError(f"{where}: cannot open ({exc.strerror})",
                         hint="the folder changed while it was read; retry") from None
    try:
        if (st.st_dev, st.st_ino) != (entry.dev, entry.ino) or not stat.S_ISREG(st.st_mode):
            raise InputError(f"{where}: was replaced while the folder was read",
                             hint="stop writing to the folder and retry")
        size, digest, more = sha256_fd(fd, limit=entry.size, on_bytes=sink)
    except OSError as exc:
        raise InputError(f"{where}: cannot read ({exc.strerror})", hint="check the file") from None
    finally:
        os.close(fd)
    if more or size != entry.size:
        raise InputError(f"{where}: changed size while it was hashed",
                         hint="stop writing to the folder and retry")
    return FileDigest(size=size, sha256=digest)


def write_manifest(folder: str | os.PathLike[str], **options: Any) -> Manifest:
    """Build the manifest of *folder* and write folder/manifest.json atomically."""
    manifest = build_manifest(folder, **options)
    try:
        atomic_write_bytes(Path(folder) / MANIFEST_NAME, manifest.dumps())
    except OSError as exc:
        raise InputError(f"{Path(folder) / MANIFEST_NAME}: cannot write ({exc.strerror})",
                         hint="check that the folder is writable") from None
    return manifest
