"""Distribution: consumers fetch a released core bundle through DVC, verified, and list releases.

``fetch_bundle`` is the consumer's one command. It uses ``dvc get`` rather than
``dvc import``: the consumer needs no DVC project, and ``dvc get`` writes plain
files where it is told, so the bundle can land in a private temp folder beside
the target, be verified there and only then be renamed into place (an import
writes a ``.dvc`` file next to its output and cannot be moved afterwards).
Projects that want a tracked, updatable copy use ``dvc import`` and then
``relgate verify``; both routes end at the same bytes.

The root digest is pinned outside the bundle: the registry's git-tracked
``analysis/release_<name>.json`` at the very commit the bundle is fetched from
(the tag is resolved to a commit once, in a clone, and both reads use that
commit), else the ``relgate-root-digest:`` line of the annotated release tag
``core@<name>`` (publish.yml writes it). A remote whose files and manifest were
rewritten consistently still verifies against its own manifest; it cannot match
the pin held in git. A release with neither pin is refused, never verified
against its own manifest alone.

Each fetch gives DVC a private site cache (``DVC_SITE_CACHE_DIR`` inside its temp
folder): DVC's default one is shared and world-writable, and what one hostile
answer leaves there must not decide a later fetch. A fetch killed mid-way leaves
its temp folders behind (a git clone each); the next fetch into the same folder
removes those whose process is gone.

The judge of a pull request reads two more pins from the base branch's checkout:
``pinned_file`` gives the md5 its ``dvc.lock`` (or ``<path>.dvc``) records for a
file, so the candidate's splits can be checked to be the base branch's own.

DVC and git run as subprocesses: their output is captured and reduced to one
line, and importing relgate never imports dvc.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from relgate.errors import InputError, Refusal, RelgateError, UsageError, VerificationFailed

RECORD_DIR = "analysis"
CORE_DIR = "models/core"
FETCH_PREFIX = ".relgate-fetch-"
_RELEASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_RECORD_FILE = re.compile(r"release_(.+)\.json")
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/\\]+@[^/\\]+:")
_MAX_RECORD_BYTES = 16 * 1024 * 1024

StepFn = Callable[[str], None]


# --------------------------------------------------------------------------- tools


def dvc_command() -> list[str]:
    """How to run DVC: the ``dvc`` beside this interpreter, else ``python -m dvc``, else PATH."""
    beside = Path(sys.executable).parent / "dvc"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    if importlib.util.find_spec("dvc") is not None:
        return [sys.executable, "-m", "dvc"]
    found = shutil.which("dvc")
    if found:
        return [found]
    raise InputError("dvc is not installed", hint="pip install dvc (and dvc-s3 for S3 remotes)")


def _tool_env(site_cache: Path | None = None) -> dict[str, str]:
    """The caller's environment, minus anything that could make git or DVC wait for a person.

    With *site_cache*, DVC keeps its site cache (repo indexes, state) there instead of the
    shared default (``/var/tmp/dvc``, world-writable): nothing another run left can be read.
    """
    env = dict(os.environ)
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    if site_cache is not None:
        env["DVC_SITE_CACHE_DIR"] = str(site_cache)
    return env


#: the longest a git or DVC call may take (a clone or download of a large bundle included)
_TIMEOUT_S = 3600


def _run(cmd: Sequence[str], *, cwd: Path | None = None,
         site_cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        # errors="replace": a tag message or a tool's output that is not UTF-8 is text, not a crash
        return subprocess.run(list(cmd), cwd=cwd, env=_tool_env(site_cache), capture_output=True,
                              text=True, errors="replace", stdin=subprocess.DEVNULL, check=False,
                              timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Refusal(f"{' '.join(cmd[:3])}: no answer within {_TIMEOUT_S} s",
                      hint="check the registry and its DVC remote are reachable") from None
    except FileNotFoundError:
        raise InputError(f"{cmd[0]}: not found", hint="install it and make sure it is on PATH") \
            from None


def tool_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The lines of a failed git/DVC run that say what went wrong, joined into one line."""
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    keep = [ln for ln in lines if ln.startswith(("ERROR", "fatal:", "error:"))] or lines[-2:]
    keep = [ln for ln in keep if "Having any troubles?" not in ln]
    text = " ".join(" ".join(keep).split())
    return (text[:600] + "...") if len(text) > 600 else (text or f"exit status {proc.returncode}")


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run(["git", *args], cwd=cwd)


def _is_local(repo: str) -> bool:
    return not _URL_LIKE.match(repo) and os.path.isdir(repo)


def _source(repo: str) -> str:
    """An absolute path for a local registry (DVC and git run elsewhere), a URL unchanged."""
    return str(Path(repo).resolve()) if _is_local(repo) else repo


def clone(repo: str, dest: Path) -> Path:
    """``git clone --no-checkout`` of *repo* into *dest* (history, tags and branches only)."""
    proc = _run(["git", "clone", "--quiet", "--no-checkout", "--", _source(repo), str(dest)])
    if proc.returncode != 0:
        raise InputError(f"{repo}: cannot clone the registry ({tool_error(proc)})",
                         hint="give a git URL or the path of a registry's git repository")
    return dest


def resolve_rev(repo_dir: Path, rev: str | None, *, label: str) -> str:
    """The commit *rev* names in a clone (a tag, a branch of origin, a sha); HEAD when None."""
    if rev is not None and (not rev or rev.startswith("-") or "\n" in rev):
        raise InputError(f"--rev {rev!r}: not a usable git revision")
    for candidate in ([rev, f"origin/{rev}"] if rev else ["HEAD"]):
        proc = _git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=repo_dir)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    if rev is None:
        raise InputError(f"{label}: the repository has no commits")
    raise InputError(f"{label}: unknown revision {rev!r}",
                     hint="use a release tag (release.tag, default core@<name>), a branch or a "
                          "commit; "
                          "'relgate releases REPO' lists the tags")


def _show(repo_dir: Path, commit: str, path: str) -> bytes | None:
    """A file's bytes at *commit*, or None when it is not in that tree.

    The blob's size is asked first: a registry is untrusted input, and nothing larger than a
    record (``_MAX_RECORD_BYTES``) is read into memory.
    """
    size = _git("cat-file", "-s", f"{commit}:{path}", cwd=repo_dir)
    if size.returncode != 0:
        return None
    if not size.stdout.strip().isdigit() or int(size.stdout.strip()) > _MAX_RECORD_BYTES:
        raise InputError(f"{path} at {commit[:12]}: larger than the {_MAX_RECORD_BYTES} byte "
                         "limit for a record", hint="this is not a release record relgate wrote")
    proc = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=repo_dir, env=_tool_env(),
                          capture_output=True, stdin=subprocess.DEVNULL, check=False,
                          timeout=_TIMEOUT_S)
    return proc.stdout if proc.returncode == 0 else None


def _check_name(name: str) -> str:
    if not _RELEASE_NAME.fullmatch(name) or ".." in name or name.endswith((".", ".lock")):
        raise InputError(f"{name!r} is not a release name",
                         hint="release names are like v1.2.0 (letters, digits, '.', '_', '-')")
    return name


# --------------------------------------------------------------------------- release records


def parse_record(data: bytes, *, source: str, name: str | None = None) -> dict[str, Any]:
    """A schema-valid release record, strict JSON; its name must be *name* when given."""
    from relgate import schemas
    from relgate.jsonio import loads_strict

    if len(data) > _MAX_RECORD_BYTES:
        raise InputError(f"{source}: {len(data)} bytes, larger than a release record can be")
    record = loads_strict(data, source=source)
    schemas.validate(record, "release", source=source)
    if name is not None and record["name"] != name:
        raise InputError(f"{source}: names release {record['name']!r}, expected {name!r}",
                         hint="the record's file name and its name field must agree")
    assert isinstance(record, dict)
    return record


def record_path(name: str) -> str:
    return f"{RECORD_DIR}/release_{name}.json"


def signature_path(name: str) -> str:
    """The release's OpenSSF model signature, beside its record (relgate.signing)."""
    return f"{RECORD_DIR}/release_{name}.sig"


@dataclass(frozen=True, kw_only=True)
class Pin:
    """Where a pinned root digest came from (or why there is none)."""

    root_digest: str | None
    source: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"root_digest": self.root_digest, "source": self.source, "note": self.note}


def pin_from_record(data: bytes | None, *, name: str, source: str) -> tuple[Pin, str | None]:
    """The pin a release record gives, and the bundle path it names (None: no record)."""
    if data is None:
        return Pin(root_digest=None, source=source,
                   note=f"{source} not found: no root digest pinned outside the bundle; "
                        "verified against the bundle's own manifest only"), None
    record = parse_record(data, source=source, name=name)
    bundle = record.get("bundle")
    if not bundle:
        return Pin(root_digest=None, source=source,
                   note=f"{source} has no bundle.root_digest: verified against the bundle's "
                        "own manifest only"), None
    return Pin(root_digest=bundle["root_digest"], source=source), str(bundle["path"])


#: the line publish.yml writes into the annotated release tag's message
TAG_DIGEST_LINE = re.compile(r"relgate-root-digest: ([0-9a-f]{64})")


#: a tag template as params.schema.json allows it: exactly one {name}, ref-safe characters
_TAG_TEMPLATE = re.compile(r"[A-Za-z0-9._/@-]*\{name\}[A-Za-z0-9._/@-]*")
#: a filled tag (the ``tag`` a release record carries)
_TAG_NAME = re.compile(r"[A-Za-z0-9._@-]+(/[A-Za-z0-9._@-]+)*")


def tag_template(params_text: bytes | None, *, source: str) -> str:
    """The ``release.tag`` template of a registry's params.yaml (*params_text*; None: no such
    file), the default ``core@{name}`` when it names none. A template params.schema.json would
    refuse is refused here too (InputError): it names no tag relgate could trust."""
    import yaml

    from relgate.release import DEFAULT_TAG_TEMPLATE

    if params_text is None:
        return DEFAULT_TAG_TEMPLATE
    try:
        doc = yaml.safe_load(params_text)
    except yaml.YAMLError:
        raise InputError(f"{source}: not valid YAML", hint="fix the registry's params.yaml") from None
    release = doc.get("release") if isinstance(doc, dict) else None
    template = release.get("tag") if isinstance(release, dict) else None
    if template is None:
        return DEFAULT_TAG_TEMPLATE
    if not isinstance(template, str) or not _TAG_TEMPLATE.fullmatch(template) \
            or ".." in template or not 6 <= len(template) <= 200:
        raise InputError(f"{source}: release.tag {str(template)[:80]!r} is not a tag template "
                         "(exactly one {name}, letters, digits and ._/@-)",
                         hint="fix release.tag in the registry's params.yaml")
    return template


def tag_of(record: Mapping[str, Any] | None, release: str, template: str) -> str:
    """A release's git tag: the one its record carries, else *template* filled with its name."""
    from relgate.release import release_tag

    tag = None if record is None else record.get("tag")
    if isinstance(tag, str) and _TAG_NAME.fullmatch(tag) and ".." not in tag:
        return tag
    return release_tag(release, template)


def name_from_tag(tag: str, template: str) -> str | None:
    """The release name *tag* is for under *template* (None: not a tag of that form)."""
    head, _, tail = template.partition("{name}")
    if len(tag) <= len(head) + len(tail) or not tag.startswith(head) or not tag.endswith(tail):
        return None
    return tag[len(head):len(tag) - len(tail)]


def pin_from_tag(repo_dir: Path, release: str, *, tag: str | None = None) -> Pin | None:
    """The root digest the annotated release tag *tag* (default ``core@<release>``) records;
    None when there is no such tag, a Pin without a digest for a lightweight tag or one without
    a ``relgate-root-digest:`` line. A tag that records two different digests is refused
    (InputError): it pins nothing.
    """
    from relgate.release import release_tag

    tag = release_tag(release) if tag is None else tag
    ref = f"refs/tags/{tag}"
    kind = _git("cat-file", "-t", ref, cwd=repo_dir)
    if kind.returncode != 0:
        return None
    unpinned = Pin(root_digest=None, source=f"tag {tag}", note=f"tag {tag} records no root digest")
    if kind.stdout.strip() != "tag":
        return unpinned
    size = _git("cat-file", "-s", ref, cwd=repo_dir)
    if not size.stdout.strip().isdigit() or int(size.stdout.strip()) > _MAX_RECORD_BYTES:
        raise InputError(f"tag {tag}: larger than the {_MAX_RECORD_BYTES} byte limit for a "
                         "tag message", hint="this is not a release tag relgate's publish wrote")
    body = _git("cat-file", "tag", ref, cwd=repo_dir)
    _headers, _, message = body.stdout.partition("\n\n")
    found = {m[1] for line in message.splitlines()
             if (m := TAG_DIGEST_LINE.fullmatch(line.strip()))}
    if len(found) > 1:
        raise InputError(f"tag {tag}: records {len(found)} different root digests",
                         hint="a release tag names one bundle; tell the registry's maintainers")
    if not found:
        return unpinned
    return Pin(root_digest=found.pop(), source=f"annotated tag {tag}")


def choose_pin(record_pin: Pin, tag_pin: Pin | None, *, release: str, where: str,
               tag: str | None = None) -> Pin:
    """The pin to verify against: the release record's, else the tag's; both must agree.

    Neither is a refusal (VerificationFailed): a bundle checked only against its own
    manifest would accept a remote that rewrote files and manifest together.
    """
    from relgate.release import release_tag

    if record_pin.root_digest is not None:
        if tag_pin is not None and tag_pin.root_digest not in (None, record_pin.root_digest):
            raise VerificationFailed(
                f"release {release!r}: {record_pin.source} pins root digest "
                f"{record_pin.root_digest}, but {tag_pin.source} records {tag_pin.root_digest}",
                hint="the registry's record and tag disagree; tell its maintainers")
        return record_pin
    if tag_pin is not None and tag_pin.root_digest is not None:
        return dataclasses.replace(tag_pin, note=f"{record_pin.source} pins no root digest; "
                                                 f"pinned by {tag_pin.source}")
    raise VerificationFailed(
        f"release {release!r} at {where}: no root digest is pinned outside the bundle (no "
        f"{record_path(release)} with bundle.root_digest there, no annotated tag "
        f"{tag or release_tag(release)} recording one), so it cannot be verified; nothing was "
        "fetched",
        hint="fetch at a revision that records the release (--rev <tag>), or ask the registry's "
             "maintainers to tag it as publish.yml does; 'relgate releases REPO' lists releases")


# --------------------------------------------------------------------------- fetch


@dataclass(frozen=True, kw_only=True)
class FetchResult:
    """What ``relgate fetch`` did: the verification, the pin, and whether the bundle was placed."""

    release: str
    repo: str
    rev: str | None
    commit: str
    bundle_path: str
    out: str
    placed: bool
    pin: Pin
    verify: Any  # relgate.bundle.VerifyResult (imported lazily)
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    stage: str | None = None  # the GTO stage the release was fetched for (--stage)
    #: the release's signature check (relgate.signing.SignatureCheck), None when unsigned
    signature: Any = None

    @property
    def ok(self) -> bool:
        return self.placed and not self.problems and bool(self.verify.ok)

    def reasons(self) -> list[str]:
        return [*self.verify.reasons(), *self.problems]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "release": self.release, "repo": self.repo, "rev": self.rev,
            "commit": self.commit, "path": self.bundle_path, "out": self.out,
            "placed": self.placed, "root_digest": self.verify.root_digest,
            "pin": self.pin.to_dict(), "reasons": self.reasons(), "notes": list(self.notes),
            "verify": self.verify.to_dict(), "stage": self.stage,
            "signature": None if self.signature is None else self.signature.to_dict(),
        }


def _dvc_tracks(repo_dir: Path, commit: str, path: str, *, exact: bool = False) -> bool:
    """Whether *path* is (inside) a DVC output (dvc.lock or a .dvc file) or a git path at *commit*.

    A release folder is usually inside one output (``models/core`` holds every release);
    with *exact*, only an output of exactly *path* counts.
    """
    import yaml

    pure = PurePosixPath(path)
    covering = {str(pure)} if exact else {str(pure), *(str(p) for p in pure.parents
                                                         if str(p) != ".")}
    if any(_show(repo_dir, commit, f"{c}.dvc") is not None for c in covering):
        return True
    if _git("cat-file", "-e", f"{commit}:{path}", cwd=repo_dir).returncode == 0:
        return True
    lock = _show(repo_dir, commit, "dvc.lock")
    if lock is None or len(lock) > _MAX_RECORD_BYTES:
        return False
    try:
        data = yaml.safe_load(lock)
    except (yaml.YAMLError, RecursionError, ValueError):  # a hostile registry's dvc.lock
        return False
    stages = data.get("stages", {}) if isinstance(data, dict) else {}
    for stage in stages.values() if isinstance(stages, dict) else ():
        outs = stage.get("outs", []) if isinstance(stage, dict) else []
        if any(isinstance(o, dict) and o.get("path") in covering for o in outs):
            return True
    return False


def fetch_bundle(
    repo: str,
    release: str | None,
    out: str | os.PathLike[str],
    *,
    rev: str | None = None,
    on_step: StepFn | None = None,
    allow_dvc_cache_links: bool = False,
    stage: str | None = None,
    allow_deprecated: bool = False,
    trust: Any = None,
) -> FetchResult:
    """Download release *release* of *repo* with ``dvc get``, verify it, then move it to *out*.

    Nothing is ever left at *out* unless it verified against the pinned root
    digest (module docstring; no pin is a refusal before any download): the
    download goes to a private folder beside *out*, which is removed whatever
    happens, and folders that killed fetches left there are removed first. A
    verification failure is returned (``placed=False``); a failed download or a
    missing pin raises Refusal (exit 1); bad input (existing *out*, unknown
    repository, revision or release) raises InputError (exit 2).
    With *allow_dvc_cache_links*, files that ``dvc get`` linked from a local registry's own
    DVC cache (its cache.type hardlink or symlink) are verified through the cache entries
    the registry's metadata at the fetched commit names (relgate.dvclinks), and placed as
    the links they are; any other link is refused.

    With *stage* instead of *release*, the release is the one GTO's tags put in that stage
    (relgate.lifecycle), fetched at its registration tag unless *rev* says otherwise. A
    release GTO's tags deprecate is refused (Refusal) unless *allow_deprecated*.
    """
    from relgate.bundle import force_rmtree, rename_noreplace, seal_tree, verify_bundle
    from relgate.jsonio import fsync_dir
    from relgate.lifecycle import check_stage, deprecation_of

    step = on_step or (lambda _msg: None)
    if (release is None) == (stage is None):
        raise UsageError("fetch: give a release name or --stage STAGE"
                         + (", not both" if release is not None else ""),
                         hint="e.g. 'relgate fetch REPO v1.0.0 -o DIR' or "
                              "'relgate fetch REPO --stage prod -o DIR'")
    if stage is not None:
        check_stage(stage)
    else:
        _check_name(str(release))
    target = Path(out)
    if os.path.lexists(target):
        raise InputError(f"{target}: already exists; relgate fetch never overwrites",
                         hint="choose a new -o folder, or remove the old one yourself")
    if target.name in ("", ".", ".."):
        raise InputError(f"{out}: not a usable folder name", hint="name the folder, e.g. -o core")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{parent}: cannot create ({exc.strerror})") from None
    cleaned = clean_stale_fetches(parent)
    work = parent.resolve() / f"{FETCH_PREFIX}{target.name}.{_owner_tag()}.{secrets.token_hex(4)}"
    # the download sits beside the target, not inside *work*: moving a folder to another
    # parent needs write permission on it (its '..' changes), and a sealed bundle has none
    download = work.with_name(work.name + ".bundle")
    try:
        os.mkdir(work, 0o700)
    except OSError as exc:
        raise InputError(f"{parent}: cannot create a temp folder ({exc.strerror})",
                         hint="fetch into a writable folder") from None
    try:
        step(f"cloning {repo}")
        repo_dir = clone(repo, work / "repo")
        head = resolve_rev(repo_dir, None, label=repo)
        if stage is not None:
            release, rev = _release_in_stage(repo_dir, stage, rev=rev, head=head)
            step(f"stage {stage}: release {release}")
        assert release is not None
        commit = resolve_rev(repo_dir, rev, label=repo)
        rec_source = f"{record_path(release)} at {commit[:12]}"
        record_data = _show(repo_dir, commit, record_path(release))
        record_pin, named_path = pin_from_record(record_data, name=release, source=rec_source)
        bundle_path = named_path or f"{CORE_DIR}/{release}"
        if PurePosixPath(bundle_path).name != release:
            raise InputError(f"{rec_source}: bundle.path {bundle_path!r} is not a folder named "
                             f"{release}")
        # the tag the record carries, else the one params.yaml's release.tag template names
        tag = tag_of(None if record_data is None else parse_record(record_data, source=rec_source,
                                                                   name=release),
                     release, tag_template(_show(repo_dir, commit, "params.yaml"),
                                           source=f"params.yaml at {commit[:12]}"))
        tag_pin = pin_from_tag(repo_dir, release, tag=tag)
        tag_digest = None if tag_pin is None else tag_pin.root_digest
        if record_pin.root_digest is None and tag_digest is None \
                and not _dvc_tracks(repo_dir, commit, bundle_path, exact=True):
            # nothing pins it and DVC has no output of exactly this path: not a release here
            raise InputError(
                f"{repo}: no release {release!r} at {rev or 'HEAD'}: "
                + (f"no {record_path(release)}" if record_data is None
                   else f"{record_path(release)} has no bundle.root_digest")
                + (f", no tag {tag}" if tag_pin is None else f", tag {tag} records no root digest"),
                hint="'relgate releases REPO' lists the releases and their tags")
        lifecycle_notes: list[str] = []
        deprecated = deprecation_of(repo_dir, release, tag, head=head)
        if deprecated is not None:
            if not allow_deprecated:
                raise Refusal(f"release {release!r} is deprecated ({deprecated}), so nothing "
                              "was fetched", hint="pass --allow-deprecated to fetch it anyway; "
                                                  "'relgate releases REPO' shows the current ones")
            lifecycle_notes.append(f"release {release} is deprecated ({deprecated}); fetched "
                                   "because --allow-deprecated was given")
        pin = choose_pin(record_pin, tag_pin, release=release, tag=tag,
                         where=f"{rev or 'HEAD'} (commit {commit[:12]})")
        step(f"downloading {bundle_path} at {commit[:12]} with dvc get")
        site_cache = work / "dvc-site-cache"
        os.mkdir(site_cache, 0o700)
        proc = _run([*dvc_command(), "get", "--rev", commit, "-o", str(download), "--",
                     _source(repo), bundle_path], cwd=work, site_cache=site_cache)
        if proc.returncode != 0:
            # a pinned release whose path DVC does not track at this commit is not there; one
            # it tracks (a record or a tag pins it) exists, and the download itself failed
            if not _dvc_tracks(repo_dir, commit, bundle_path):
                raise InputError(f"{repo}: no release {release!r} at {rev or 'HEAD'} "
                                 f"({bundle_path} is not tracked there)",
                                 hint="'relgate releases REPO' lists the releases and their tags")
            where = "" if record_data is not None else (
                f" (only {pin.source} pins it: if it is not in this revision, use --rev "
                f"{pin.source.split()[-1]})")
            raise Refusal(f"dvc get {bundle_path} failed, so nothing was fetched{where}: "
                          f"{tool_error(proc)}",
                          hint="the DVC remote is unreachable or holds damaged or missing "
                               "objects; tell the registry's maintainers")
        if not download.is_dir():
            raise Refusal(f"dvc get {bundle_path}: did not produce a folder",
                          hint="a core bundle is a folder; check the release name")
        seal_tree(download)
        step("verifying")
        links = _registry_links(repo, repo_dir, commit, bundle_path) \
            if allow_dvc_cache_links else None
        try:
            result = verify_bundle(download, expected_root_digest=pin.root_digest,
                                   dvc_links=links)
        except RelgateError as exc:
            linked = links is None and "symlink" in exc.message
            raise VerificationFailed(
                f"{bundle_path} at {commit[:12]} does not verify: {exc.message}",
                hint="dvc get linked it from the local registry's DVC cache (cache.type "
                     "symlink); fetch with --allow-dvc-cache-links to accept such links; "
                     "nothing was written" if linked else
                     "the download is damaged or was tampered with; nothing was written") from None
        problems = [] if not result.ok else _release_name_problems(download, release)
        notes = [*cleaned, *([pin.note] if pin.note else []), *lifecycle_notes]
        signature = None
        if result.ok and not problems:  # a signed release must verify, or it is not placed
            from relgate.signing import check_release_signature

            step("checking the signature")
            signature = check_release_signature(
                download, result, trust=trust, work=work, label=f"{signature_path(release)} at "
                f"{commit[:12]}", signature=_show(repo_dir, commit, signature_path(release)),
                note=None if record_data is None else parse_record(
                    record_data, source=rec_source, name=release).get("signature"))
            if signature is not None:
                problems += list(signature.reasons)
                notes += list(signature.notes)
        placed = False
        if result.ok and not problems:
            try:
                rename_noreplace(download, target)
            except FileExistsError:
                raise InputError(f"{target}: appeared while fetching; it was left alone",
                                 hint="choose a new -o folder") from None
            except OSError as exc:
                raise InputError(f"{target}: cannot move the verified bundle there "
                                 f"({exc.strerror})", hint="fetch into a writable folder") from None
            fsync_dir(parent)
            placed = True
        label = str(target) if placed else f"{bundle_path} at {commit[:12]} (not placed)"
        result = dataclasses.replace(result, folder=label)
        return FetchResult(release=release, repo=repo, rev=rev, commit=commit,
                           bundle_path=bundle_path, out=str(target), placed=placed, pin=pin,
                           verify=result, problems=tuple(problems), notes=tuple(notes),
                           stage=stage, signature=signature)
    finally:
        for folder in (work, download):
            if os.path.lexists(folder):
                force_rmtree(folder)


def _registry_links(repo: str, repo_dir: Path, commit: str, bundle_path: str) -> Any:
    """The DVC cache links a download of *bundle_path* may hold: into a local registry's own
    cache, as its metadata at *commit* names them; from a remote registry, none."""
    from relgate.dvclinks import DvcCacheLinks

    if not _is_local(repo):
        return DvcCacheLinks(None, why_none=f"{repo} is not a local registry, so no link can "
                                            "lead into its DVC cache")
    return DvcCacheLinks(Path(_source(repo)), prefix=bundle_path,
                         read_meta=lambda rel: _show(repo_dir, commit, rel))


def _release_in_stage(repo_dir: Path, stage: str, *, rev: str | None,
                      head: str) -> tuple[str, str]:
    """(release, revision) for ``fetch --stage``: the release GTO puts in *stage* (the
    artifact from ``release.tag`` at the default branch), at its registration tag unless
    *rev* is given."""
    from relgate.lifecycle import release_in_stage

    template = tag_template(_show(repo_dir, head, "params.yaml"),
                            source=f"params.yaml at {head[:12]}")
    holder = release_in_stage(repo_dir, stage, template=template, head=head)
    return _check_name(holder.version), rev or holder.registration or holder.commit


def _owner_tag() -> str:
    """``<host>.<pid>.<start>`` of this process, so a later fetch can tell whether it is gone."""
    from relgate.bundle import _host_tag, _proc_start

    info = _proc_start(os.getpid())
    return f"{_host_tag()}.{os.getpid()}.{info[1] if info else 0}"


def clean_stale_fetches(parent: Path) -> list[str]:
    """Remove the temp folders of fetches into *parent* whose process is gone; notes say which.

    A folder is removed only when its name says it belongs to a process of this host that no
    longer runs (a dead pid, or a pid now used by a process started later); anything else,
    another host's folders included, is left alone.
    """
    from relgate.bundle import _host_tag, force_rmtree, process_alive

    notes: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return notes
    for entry in entries:
        if not entry.name.startswith(FETCH_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        parts = entry.name.removesuffix(".bundle").rsplit(".", 4)
        if len(parts) != 5 or parts[1] != _host_tag() or not (parts[2] + parts[3]).isdigit():
            continue
        pid, start = int(parts[2]), int(parts[3])
        if process_alive(pid, start or None):
            continue
        force_rmtree(Path(entry.path))
        notes.append(f"removed {entry.name}, left by fetch process {pid}, which is gone")
    return notes


def _release_name_problems(bundle: Path, release: str) -> list[str]:
    """The verified bundle's release.json must name *release* (a renamed folder is refused)."""
    from relgate.jsonio import loads_strict

    try:
        data = (bundle / "release.json").read_bytes()
        name = loads_strict(data, source="release.json").get("name")
    except (OSError, RelgateError, AttributeError):
        return ["release.json: missing or unreadable, so the bundle's release is unknown."]
    if name != release:
        return [f"release.json: this bundle is release {name!r}, not {release!r}."]
    return []


# --------------------------------------------------------------------------- pinned files


@dataclass(frozen=True, kw_only=True)
class FilePin:
    """The md5 a trusted checkout's DVC metadata records for one file."""

    path: str
    md5: str
    source: str


def pinned_file(root: Path, path: str) -> FilePin | None:
    """The md5 that *root*'s ``dvc.lock`` (a stage's file output) or ``<path>.dvc`` records.

    *root* is trusted (the base branch's checkout in CI). Only an output of exactly
    *path* counts, with DVC's plain md5 of the file's bytes; None when there is none.
    """
    from relgate.jsonio import read_capped
    from relgate.params import parse_yaml

    def outs_of(doc: Any) -> list[Any]:
        if not isinstance(doc, dict):
            return []
        found = list(doc.get("outs") or []) if isinstance(doc.get("outs"), list) else []
        stages = doc.get("stages")
        for stage in stages.values() if isinstance(stages, dict) else ():
            if isinstance(stage, dict) and isinstance(stage.get("outs"), list):
                found.extend(stage["outs"])
        return found

    for meta, rel in ((root / "dvc.lock", path), (root / f"{path}.dvc", PurePosixPath(path).name)):
        if not meta.is_file():
            continue
        doc = parse_yaml(read_capped(meta, max_bytes=_MAX_RECORD_BYTES, what="DVC metadata")
                         .decode("utf-8", "replace"), source=str(meta))
        for out in outs_of(doc):
            if not isinstance(out, dict) or out.get("path") != rel:
                continue
            md5 = out.get("md5")
            if out.get("hash", "md5") == "md5" and isinstance(md5, str) \
                    and re.fullmatch(r"[0-9a-f]{32}", md5):
                return FilePin(path=path, md5=md5, source=str(meta))
    return None


def md5_and_sha256(path: str | os.PathLike[str]) -> tuple[str, str]:
    """Both digests of a regular file in one read (DVC pins md5, relgate records sha256)."""
    from relgate.hashing import open_regular

    fd, _ = open_regular(path)
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        while chunk := os.read(fd, 1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})", hint="check the file") from None
    finally:
        os.close(fd)
    return md5.hexdigest(), sha.hexdigest()


# --------------------------------------------------------------------------- releases


@dataclass(frozen=True, kw_only=True)
class ReleaseInfo:
    """One release of a registry, as its release record describes it."""

    name: str
    tag: str | None
    tag_commit: str | None
    root_digest: str | None
    promoted: Mapping[str, Any]
    metrics: Mapping[str, float | None]
    created: str
    git_commit: str | None
    record: str
    bundle_path: str
    present: bool | None
    #: GTO stages this release holds, and the tag that deprecated it (relgate.lifecycle)
    stages: tuple[str, ...] = ()
    deprecated_by: str | None = None
    #: who signed the bundle, as the record notes it (None: unsigned)
    signer: str | None = None
    #: why ``relgate fetch`` cannot download it (relgate.remotes), None when a remote can
    not_fetchable: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "tag": self.tag, "tag_commit": self.tag_commit,
            "root_digest": self.root_digest, "promoted": dict(self.promoted),
            "metrics": dict(self.metrics), "created": self.created,
            "git_commit": self.git_commit, "record": self.record,
            "bundle_path": self.bundle_path, "present": self.present,
            "stages": list(self.stages), "deprecated": self.deprecated_by is not None,
            "deprecated_by": self.deprecated_by,
            "signer": self.signer,
            "fetchable": self.not_fetchable is None, "not_fetchable": self.not_fetchable,
        }


@dataclass(frozen=True, kw_only=True)
class ReleaseListing:
    """Every release found in a registry, newest first."""

    repo: str
    local: bool
    commit: str | None
    releases: tuple[ReleaseInfo, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: GTO artifact -> stage -> the version holding it
    stages: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "local": self.local, "commit": self.commit,
                "releases": [r.to_dict() for r in self.releases], "notes": list(self.notes),
                "stages": {a: dict(s) for a, s in self.stages.items()}}


HEADLINE_METRICS = ("auc", "f1")


def release_info(record: Mapping[str, Any], *, source: str, tag: str | None,
                 tag_commit: str | None, present: bool | None) -> ReleaseInfo:
    promoted = next((a for a in record["artifacts"] if a["role"] == "promoted"), None)
    metrics: dict[str, float | None] = {}
    for name in HEADLINE_METRICS:
        value = record["metrics"].get(name, {}).get("value")
        metrics[name] = None if isinstance(value, bool) or not isinstance(value, int | float) \
            else float(value)
    bundle = record.get("bundle") or {}
    return ReleaseInfo(
        name=record["name"], tag=tag, tag_commit=tag_commit,
        root_digest=bundle.get("root_digest"),
        promoted={} if promoted is None else {"path": promoted["path"],
                                               "sha256": promoted["sha256"]},
        metrics=metrics, created=record["created"],
        git_commit=record["provenance"].get("git_commit"), record=source,
        bundle_path=bundle.get("path") or f"{CORE_DIR}/{record['name']}", present=present,
        signer=(record.get("signature") or {}).get("signer"),
    )


def _version_key(info: ReleaseInfo) -> tuple[Any, ...]:
    """Newest first: semantic versions by number, then by date, then by name."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(.*)", info.name)
    version = (1, int(m[1]), int(m[2]), int(m[3]), m[4] == "", m[4]) if m else (0,)
    return (version, info.created, info.name)


def _all_tags(repo_dir: Path) -> dict[str, str]:
    """Every tag of the repository: tag -> the commit it points at."""
    proc = _git("for-each-ref", "--format=%(refname:strip=2) %(objectname) %(*objectname)",
                "refs/tags/", cwd=repo_dir)
    if proc.returncode != 0:
        return {}
    return {parts[0]: parts[-1] for line in proc.stdout.splitlines()
            if len(parts := line.split()) >= 2}


def _tags(all_tags: Mapping[str, str], template: str) -> dict[str, tuple[str, str]]:
    """Release tags: release name -> (tag, commit it points at), for tags of the form
    *template* (``release.tag``), or the default ``core@<name>`` (tags made before it was
    a template); the template's form wins where both name a release."""
    from relgate.release import DEFAULT_TAG_TEMPLATE

    out: dict[str, tuple[str, str]] = {}
    for form in dict.fromkeys((DEFAULT_TAG_TEMPLATE, template)):
        for tag, commit in sorted(all_tags.items()):
            name = name_from_tag(tag, form)
            if name is not None:
                out[name] = (tag, commit)
    return out


def _tag_for(name: str, record: Mapping[str, Any], tags: Mapping[str, tuple[str, str]],
             all_tags: Mapping[str, str], template: str) -> tuple[str | None, str | None]:
    """(tag, commit) of a recorded release: its record's tag, else its template form."""
    tag = tag_of(record, name, template)
    if tag in all_tags:
        return tag, all_tags[tag]
    return tags.get(name, (None, None))


def _git_toplevel(folder: Path) -> Path | None:
    proc = _git("rev-parse", "--show-toplevel", cwd=folder)
    if proc.returncode != 0:
        return None
    top = Path(proc.stdout.strip())
    return top if top.resolve() == folder.resolve() else None


def _head(folder: Path) -> str | None:
    proc = _git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", cwd=folder)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _is_bare(folder: Path) -> bool:
    proc = _git("rev-parse", "--is-bare-repository", cwd=folder)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def list_releases(repo: str = ".") -> ReleaseListing:
    """The releases of a registry: a local folder (working tree), or a git repository (a clone).

    Records come from ``analysis/release_*.json`` (the working tree of a local
    folder, HEAD of a clone), plus the record at each ``core@<name>`` tag whose
    release is no longer recorded there. Every record is schema-validated and
    must be named like its file.
    """
    import tempfile

    from relgate.jsonio import read_capped
    from relgate.lifecycle import annotate

    if _is_local(repo) and not _is_bare(Path(repo)):
        root = Path(repo)
        git_dir = _git_toplevel(root)
        params_file = root / "params.yaml"
        template = tag_template(read_capped(params_file, max_bytes=_MAX_RECORD_BYTES,
                                            what="params.yaml")
                                if params_file.is_file() else None, source=str(params_file))
        all_tags = _all_tags(root) if git_dir is not None else {}
        tags = _tags(all_tags, template)
        commit = _head(root) if git_dir is not None else None
        found: dict[str, tuple[dict[str, Any], str]] = {}
        folder = root / RECORD_DIR
        for path in sorted(folder.glob("release_*.json")) if folder.is_dir() else []:
            m = _RECORD_FILE.fullmatch(path.name)
            if m is None:
                continue
            data = read_capped(path, max_bytes=_MAX_RECORD_BYTES, what="release record")
            found[m[1]] = (parse_record(data, source=str(path), name=m[1]), str(path))
        if git_dir is not None:
            _add_tagged(found, tags, root)
        infos = [release_info(rec, source=src, present=_present(root, rec),
                              **_tag_kw(name, rec, tags, all_tags, template))
                 for name, (rec, src) in found.items()]
        notes: list[str] = [] if git_dir is not None else [
            f"{repo} is not the top of a git repository: tags are not listed"]
        stages: dict[str, dict[str, str]] = {}
        if git_dir is not None:
            infos, stages, lifecycle_notes = annotate(infos, root, head=commit)
            notes += lifecycle_notes
            infos = _with_remotes(infos, root, head=commit)
            notes += _remote_notes(infos)
        return ReleaseListing(repo=repo, local=True, commit=commit,
                              releases=tuple(sorted(infos, key=_version_key, reverse=True)),
                              notes=tuple(notes), stages=stages)

    with tempfile.TemporaryDirectory(prefix="relgate-releases-") as tmp:
        repo_dir = clone(repo, Path(tmp) / "repo")
        commit = resolve_rev(repo_dir, None, label=repo)
        template = tag_template(_show(repo_dir, commit, "params.yaml"),
                                source=f"params.yaml at {commit[:12]}")
        all_tags = _all_tags(repo_dir)
        tags = _tags(all_tags, template)
        found = {}
        proc = _git("ls-tree", "--name-only", commit, f"{RECORD_DIR}/", cwd=repo_dir)
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            m = _RECORD_FILE.fullmatch(PurePosixPath(line).name)
            blob = _show(repo_dir, commit, line) if m else None
            if m and blob is not None:
                source = f"{line} at {commit[:12]}"
                found[m[1]] = (parse_record(blob, source=source, name=m[1]), source)
        _add_tagged(found, tags, repo_dir)
        infos = [release_info(rec, source=src, present=None,
                              **_tag_kw(name, rec, tags, all_tags, template))
                 for name, (rec, src) in found.items()]
        infos, stages, lifecycle_notes = annotate(infos, repo_dir, head=commit)
        infos = _with_remotes(infos, repo_dir, head=commit)
        return ReleaseListing(repo=repo, local=False, commit=commit,
                              releases=tuple(sorted(infos, key=_version_key, reverse=True)),
                              notes=(*lifecycle_notes, *_remote_notes(infos)), stages=stages)


def _with_remotes(infos: Sequence[ReleaseInfo], repo_dir: Path,
                  head: str | None) -> list[ReleaseInfo]:
    """Mark each release that no DVC remote can serve: ``dvc get`` reads the default remote
    of the committed ``.dvc/config`` at the commit fetch resolves (its tag's, else HEAD)."""
    from relgate.remotes import fetch_problem

    problems: dict[str | None, str | None] = {}
    out = []
    for info in infos:
        commit = info.tag_commit or head
        if commit not in problems:
            config = None if commit is None else _show(repo_dir, commit, ".dvc/config")
            problems[commit] = fetch_problem([config])
        out.append(dataclasses.replace(info, not_fetchable=problems[commit]))
    return out


def _remote_notes(infos: Sequence[ReleaseInfo]) -> list[str]:
    """One note naming the releases no remote can serve, and the fix."""
    blocked = [i for i in infos if i.not_fetchable is not None]
    if not blocked:
        return []
    return [f"{blocked[0].not_fetchable} for {', '.join(i.name for i in blocked)}: the "
            "registry's owner adds one (dvc remote add -d NAME URL, commit .dvc/config, "
            "dvc push; README 'Running a registry')"]


def _tag_kw(name: str, record: Mapping[str, Any], tags: Mapping[str, tuple[str, str]],
            all_tags: Mapping[str, str], template: str) -> dict[str, str | None]:
    tag, commit = _tag_for(name, record, tags, all_tags, template)
    return {"tag": tag, "tag_commit": commit}


def _add_tagged(found: dict[str, tuple[dict[str, Any], str]],
                tags: Mapping[str, tuple[str, str]], repo_dir: Path) -> None:
    """Add the record at each release tag whose release is not recorded at the tip."""
    for name, (tag, commit) in sorted(tags.items()):
        if name in found or not _RELEASE_NAME.fullmatch(name):
            continue
        data = _show(repo_dir, commit, record_path(name))
        if data is not None:
            source = f"{record_path(name)} at {tag}"
            found[name] = (parse_record(data, source=source, name=name), source)


def _present(root: Path, record: Mapping[str, Any]) -> bool:
    bundle = record.get("bundle") or {}
    path = root / str(bundle.get("path") or f"{CORE_DIR}/{record['name']}")
    return (path / "manifest.json").is_file() and not path.is_symlink()


__all__ = [
    "FetchResult", "FilePin", "Pin", "ReleaseInfo", "ReleaseListing", "choose_pin",
    "clean_stale_fetches", "clone", "dvc_command", "fetch_bundle", "list_releases",
    "md5_and_sha256", "name_from_tag", "parse_record", "pin_from_record", "pin_from_tag",
    "pinned_file", "resolve_rev", "tag_of", "tag_template", "tool_error",
]
