"""Lifecycle: which release holds which stage, and which are deprecated, read from GTO's git tags.

GTO (iterative/gto) keeps a model's lifecycle in annotated git tags: ``core@v1.0.0``
registers version v1.0.0 of artifact ``core``, ``core@v1.0.0!`` deregisters (deprecates)
it, ``core#prod#3`` assigns stage prod to the version registered at the tag's commit,
``core#prod!#4`` unassigns it, and ``core@deprecated`` deprecates the whole artifact.
Assigning stays GTO's job (``gto assign``, ``gto deprecate``); relgate reads the outcome,
and reads it the way ``gto show`` does, so that both always name the same release:

- only annotated tags count, replayed in the order they were made (tagger time, to the
  second; ties by tag name), deprecations first, then registrations, then assignments;
- a version is deprecated when its newest registration event is a deregistration; the
  artifact when its newest event (its versions' commits included) is a deprecation;
- a stage is held by one version (``gto show``'s default ``--vs 1``, by timestamp): of the
  active versions whose newest event for that stage is an assignment, the one assigned most
  recently. Deprecating the version in prod hands prod back to the one assigned before it.

``_replay`` mirrors GTO 1.10's state machine (gto/base.py, gto/tag.py, gto/index.py) step
by step, tie-breaking included: the tests compare it with ``gto show --json`` on registries
that GTO itself tagged. GTO is not imported; reading a registry needs only git.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relgate.errors import InputError

if TYPE_CHECKING:
    from relgate.distribution import ReleaseInfo

# GTO's tag grammar, built as gto/constants.py builds it (a test checks they are equal)
_DIRNAME = "[a-zA-Z0-9-_./]+"
_NAME = r"[a-zA-Z0-9]([a-zA-Z0-9-/_]*[a-zA-Z0-9])?"
_SEMVER = (r"(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
           r"(?:-(?P<prerelease>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
           r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
           r"(?:\+(?P<buildmetadata>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?")
_FULLNAME_IN_TAG = f"(?P<dirname>{_DIRNAME}:)?(?P<name>{_NAME})".replace(":", "=")
TAG_RE = re.compile(
    f"^(?P<artifact>{_FULLNAME_IN_TAG})(((#(?P<stage>{_NAME})|@(?P<version>v{_SEMVER}))"
    f"(?P<cancel>!?))|@((?P<deprecated>deprecated)|(?P<created>created)))(#(?P<counter>[0-9]+))?$")
_STAGE_RE = re.compile(f"^{_NAME}$")
_ARTIFACT_IN_TAG_RE = re.compile(f"^{_FULLNAME_IN_TAG}$")

REGISTER, DEREGISTER, ASSIGN, UNASSIGN, DEPRECATE, COMMIT = (
    "register", "deregister", "assign", "unassign", "deprecate", "commit")
_ADDITIONS = frozenset({REGISTER, ASSIGN, COMMIT})


@dataclass(frozen=True, kw_only=True)
class GtoTag:
    """One annotated git tag in GTO's grammar."""

    name: str
    action: str
    artifact: str
    commit: str  # the object the tag points at (GTO's ``tag.target``)
    time: int  # tagger time, seconds since the epoch
    version: str = ""
    stage: str = ""


def parse_tag(name: str, *, commit: str = "", time: int = 0) -> GtoTag | None:
    """*name* as GTO reads it; None for a tag GTO ignores.

    ``<artifact>@created`` tags are ignored too: GTO 1.10 parses them without an action
    and stops with a KeyError on any repository that has one.
    """
    m = TAG_RE.match(name)
    if m is None or m["created"]:
        return None
    artifact = m["artifact"].replace("=", ":")
    if m["deprecated"]:
        return GtoTag(name=name, action=DEPRECATE, artifact=artifact, commit=commit, time=time)
    cancel = m["cancel"] == "!"
    if m["version"]:
        return GtoTag(name=name, action=DEREGISTER if cancel else REGISTER, artifact=artifact,
                      commit=commit, time=time, version=m["version"])
    return GtoTag(name=name, action=UNASSIGN if cancel else ASSIGN, artifact=artifact,
                  commit=commit, time=time, stage=m["stage"])


def artifact_of_tag(tag: str | None, release: str) -> str | None:
    """The GTO artifact whose version *release* the release tag *tag* registers, else None."""
    parsed = None if tag is None else parse_tag(tag)
    if parsed is None or parsed.action != REGISTER or parsed.version != release:
        return None
    return parsed.artifact


def artifact_of_template(template: str) -> str | None:
    """The GTO artifact of a ``release.tag`` template of the form ``<artifact>@{name}``."""
    head, sep, tail = template.partition("@{name}")
    if not sep or tail or not _ARTIFACT_IN_TAG_RE.match(head):
        return None
    return head.replace("=", ":")


def check_stage(stage: str) -> str:
    """A stage name as GTO allows it (letters, digits, '-', '_', '/'), else InputError."""
    if not _STAGE_RE.match(stage) or len(stage) > 100:
        raise InputError(f"--stage {stage[:80]!r}: not a GTO stage name",
                         hint="stage names are like prod or staging (letters, digits, '-', "
                              "'_', '/'; starting and ending with a letter or digit)")
    return stage


# --------------------------------------------------------------------------- GTO's state machine


@dataclass(eq=False)
class _Event:
    kind: str
    time: int
    commit: str
    tag: str = ""
    version: str = ""
    stage: str = ""

    @property
    def addition(self) -> bool:
        return self.kind in _ADDITIONS


def _desc(items: Iterable[Any], key: Callable[[Any], Any]) -> list[Any]:
    """GTO's ``sorted(...)[::-1]``: newest first, and the later of two ties first."""
    return sorted(items, key=key)[::-1]


def _time(event: _Event) -> int:
    return event.time


class _VStage:
    def __init__(self, stage: str, owner: _Version) -> None:
        self.stage, self.owner = stage, owner
        self.assignments: list[_Event] = []
        self.unassignments: list[_Event] = []

    def add(self, event: _Event) -> None:
        bucket = self.assignments if event.kind == ASSIGN else self.unassignments
        bucket.append(event)
        bucket.sort(key=_time)

    def events(self) -> list[_Event]:
        return _desc(self.assignments + self.unassignments, _time)

    @property
    def is_active(self) -> bool:
        return self.events()[0].kind == ASSIGN

    @property
    def activated_at(self) -> int:
        return self.events()[0].time

    @property
    def created_at(self) -> int:  # the authoring event: the newest assignment
        return next(e for e in self.events() if e.addition).time


class _Version:
    def __init__(self, name: str, commit: str) -> None:
        self.name, self.commit = name, commit
        self.registrations: list[_Event] = []
        self.deregistrations: list[_Event] = []
        self.enrichments: list[_Event] = []
        self.stages: dict[str, _VStage] = {}

    def add(self, event: _Event) -> None:
        if event.kind in (ASSIGN, UNASSIGN):
            self.stages.setdefault(event.stage, _VStage(event.stage, self)).add(event)
            return
        bucket = {REGISTER: self.registrations, DEREGISTER: self.deregistrations,
                  COMMIT: self.enrichments}[event.kind]
        bucket.append(event)
        bucket.sort(key=_time)

    def events(self, *, direct: bool = True, indirect: bool = True) -> list[_Event]:
        return _desc((self.registrations + self.deregistrations if direct else [])
                     + (self.enrichments + [e for s in self.stages.values() for e in s.events()]
                        if indirect else []), _time)

    @property
    def is_active(self) -> bool:
        direct = self.events(indirect=False)
        if direct:
            return direct[0].kind == REGISTER
        return bool(self.events(direct=False))

    @property
    def is_registered(self) -> bool:
        return bool(self.registrations)

    @property
    def discovered(self) -> bool:
        return not self.events(indirect=False)

    @property
    def created_at(self) -> int:
        additions = [e for e in self.events(indirect=False) if e.addition]
        return (additions or self.events(direct=False))[0].time

    def active_vstages(self) -> list[_VStage]:
        return sorted((s for s in self.stages.values() if s.is_active),
                      key=lambda s: s.activated_at)


class _Artifact:
    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: list[_Version] = []
        self.deprecations: list[_Event] = []

    def events(self) -> list[_Event]:
        return _desc(self.deprecations + [e for v in self.versions for e in v.events()], _time)

    @property
    def is_active(self) -> bool:
        events = self.events()
        return bool(events) and events[0].kind != DEPRECATE

    def find_version(self, name: str = "", commit: str = "", *,
                     create: bool = False) -> _Version | None:
        found = [v for v in self.versions if (not name or v.name == name)
                 and (not commit or v.commit == commit) and not v.discovered]
        if create and not found:
            found = [_Version(name or commit, commit)]
            self.versions.append(found[0])
        if len(found) > 1:
            raise InputError(f"GTO tags of {self.name}: versions "
                             f"{', '.join(sorted(v.name for v in found))} are all registered at "
                             f"commit {commit[:12]}, so a stage assigned there names no one "
                             "release (gto show stops here too)",
                             hint="deregister all but one of them with 'gto deprecate'")
        return found[0] if found else None

    def add(self, event: _Event) -> None:
        if event.kind == DEPRECATE:
            self.deprecations.append(event)
            self.deprecations.sort(key=_time)
            return
        version = self.find_version(event.version, event.commit, create=True)
        assert version is not None
        version.add(event)

    def active_versions(self) -> list[_Version]:
        """``get_versions()`` as ``gto show`` calls it: unregistered commits included."""
        return _desc((v for v in self.versions if v.is_active
                      and ((v.is_registered and not v.discovered) or not v.is_registered)),
                     lambda v: v.created_at)

    def stage_holders(self) -> dict[str, _VStage]:
        """``get_vstages(versions_per_stage=1, sort=timestamp)``: the one version per stage."""
        assignments = _desc((a for v in self.active_versions() for a in v.active_vstages()),
                            lambda a: a.created_at)
        holders: dict[str, _VStage] = {}
        for vstage in assignments:
            holders.setdefault(vstage.stage, vstage)
        return holders


def _replay(tags: Sequence[GtoTag], artifact: str, *, commit_time: Callable[[str], int],
            head: str | None = None) -> _Artifact:
    """GTO's ``get_state()`` for one artifact: tag managers in their order, then enrichment.

    *head*: the HEAD commit when its ``artifacts.yaml`` declares *artifact* (GTO's index
    then discovers a version there).
    """
    state = _Artifact(artifact)
    ordered = sorted((t for t in tags if t.artifact == artifact), key=lambda t: (t.time, t.name))
    for actions in ((DEPRECATE,), (REGISTER, DEREGISTER), (ASSIGN, UNASSIGN)):
        for tag in (t for t in ordered if t.action in actions):
            name = tag.version
            if tag.action in (ASSIGN, UNASSIGN):  # the stage goes to the version at that commit
                found = state.find_version(commit=tag.commit, create=True)
                assert found is not None
                name = found.name
            state.add(_Event(tag.action, tag.time, tag.commit, tag.name, name, tag.stage))
    for version in list(state.versions):
        version.add(_Event(COMMIT, commit_time(version.commit), version.commit,
                           version=version.name))
    if head is not None:
        at_head = state.find_version(commit=head, create=True)
        assert at_head is not None
        if not any(e.commit == head for e in at_head.enrichments):
            at_head.add(_Event(COMMIT, commit_time(head), head, version=at_head.name))
    return state


# --------------------------------------------------------------------------- what relgate reads


@dataclass(frozen=True, kw_only=True)
class StageHolder:
    """The version a stage is assigned to: a registered release, or a bare commit."""

    stage: str
    version: str
    commit: str
    registered: bool
    tag: str  # the assignment tag that put it there
    registration: str | None  # the tag that registers the version (None: a bare commit)


@dataclass(frozen=True, kw_only=True)
class Lifecycle:
    """One artifact's stages and deprecations, as ``gto show`` reports them."""

    artifact: str
    stages: Mapping[str, StageHolder] = field(default_factory=dict)
    deregistered: Mapping[str, str] = field(default_factory=dict)  # version -> its ``!`` tag
    known: frozenset[str] = frozenset()  # every version a registration tag names
    deprecated_by: str | None = None  # the ``@deprecated`` tag, while the artifact is deprecated

    def stages_of(self, version: str) -> tuple[str, ...]:
        return tuple(sorted(s for s, h in self.stages.items()
                            if h.registered and h.version == version))

    def deprecation(self, version: str) -> str | None:
        """Why *version* is deprecated (the tag that did it), None when it is not."""
        if version in self.deregistered:
            return self.deregistered[version]
        if self.deprecated_by is not None and version in self.known:
            return self.deprecated_by
        return None


def lifecycle_from_tags(tags: Sequence[GtoTag], artifact: str, *,
                        commit_time: Callable[[str], int], head: str | None = None) -> Lifecycle:
    """The lifecycle of *artifact* from its GTO tags (pure: git is read by the caller)."""
    state = _replay(tags, artifact, commit_time=commit_time, head=head)
    stages = {}
    for stage, vstage in state.stage_holders().items():
        version = vstage.owner
        stages[stage] = StageHolder(
            stage=stage, version=version.name, commit=version.commit,
            registered=version.is_registered, tag=vstage.events()[0].tag,
            registration=version.registrations[-1].tag if version.registrations else None)
    by_name: dict[str, list[_Version]] = {}
    for version in state.versions:
        if version.is_registered:
            by_name.setdefault(version.name, []).append(version)
    deregistered = {name: max((e for v in found for e in v.deregistrations), key=_time).tag
                    for name, found in by_name.items() if not any(v.is_active for v in found)}
    deprecated_by = None
    if not state.is_active and state.deprecations:
        deprecated_by = state.deprecations[-1].tag
    return Lifecycle(artifact=artifact, stages=stages, deregistered=deregistered,
                     known=frozenset(by_name), deprecated_by=deprecated_by)


# --------------------------------------------------------------------------- reading a registry


def read_tags(repo_dir: Path) -> list[GtoTag]:
    """Every annotated tag of the repository in GTO's grammar (lightweight tags: GTO skips them)."""
    from relgate.distribution import _git

    proc = _git("for-each-ref",
                "--format=%(refname)%00%(objecttype)%00%(object)%00%(taggerdate:raw)",
                "refs/tags/", cwd=repo_dir)
    found: list[GtoTag] = []
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        parts = line.split("\0")
        if len(parts) != 4 or parts[1] != "tag":
            continue
        when = parts[3].split()
        seconds = int(when[0]) if when and when[0].lstrip("-").isdigit() else 0
        tag = parse_tag(parts[0].removeprefix("refs/tags/"), commit=parts[2], time=seconds)
        if tag is not None:
            found.append(tag)
    return found


def _commit_times(repo_dir: Path, commits: Iterable[str]) -> dict[str, int]:
    """Committer time of each commit (GTO dates a version's commit event by it)."""
    from relgate.distribution import _git

    wanted = sorted(set(commits))
    times: dict[str, int] = {}
    for chunk in (wanted[i:i + 200] for i in range(0, len(wanted), 200)):
        proc = _git("log", "--no-walk=unsorted", "--format=%H %ct", *chunk, "--", cwd=repo_dir)
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            sha, _, when = line.partition(" ")
            if when.strip().isdigit():
                times[sha] = int(when)
    return times


def _head_declares(repo_dir: Path, head: str | None, artifact: str) -> bool:
    """Whether ``artifacts.yaml`` at *head* (GTO's own index) declares *artifact*."""
    import yaml

    from relgate.distribution import _show

    data = None if head is None else _show(repo_dir, head, "artifacts.yaml")
    if data is None:
        return False
    try:
        doc = yaml.safe_load(data)
    except (yaml.YAMLError, RecursionError, ValueError):  # GTO warns and reads nothing
        return False
    return isinstance(doc, dict) and artifact in doc


def read_lifecycle(repo_dir: Path, artifact: str, *, head: str | None,
                   tags: Sequence[GtoTag] | None = None) -> Lifecycle:
    """*artifact*'s lifecycle in a git repository (*head*: the commit ``gto show`` reads)."""
    tags = read_tags(repo_dir) if tags is None else tags
    mine = [t for t in tags if t.artifact == artifact]
    commits = [t.commit for t in mine]
    declared = _head_declares(repo_dir, head, artifact)
    times = _commit_times(repo_dir, [*commits, *([head] if declared and head else [])])
    return lifecycle_from_tags(mine, artifact, commit_time=lambda c: times.get(c, 0),
                               head=head if declared else None)


def annotate(infos: Sequence[ReleaseInfo], repo_dir: Path, *, head: str | None
             ) -> tuple[list[ReleaseInfo], dict[str, dict[str, str]], list[str]]:
    """Each release with its stages and deprecation; the stage map per artifact; notes.

    A release is part of a GTO artifact when its tag registers it (``core@v1.0.0``); other
    releases (a ``core/{name}`` template, no tag) have no lifecycle GTO could record.
    """
    import dataclasses

    tags = read_tags(repo_dir)
    artifacts = sorted({a for i in infos if (a := artifact_of_tag(i.tag, i.name)) is not None})
    lifecycles = {a: read_lifecycle(repo_dir, a, head=head, tags=tags) for a in artifacts}
    out: list[ReleaseInfo] = []
    for info in infos:
        life = lifecycles.get(artifact_of_tag(info.tag, info.name) or "")
        out.append(info if life is None else dataclasses.replace(
            info, stages=life.stages_of(info.name), deprecated_by=life.deprecation(info.name)))
    stage_map = {a: {s: h.version for s, h in sorted(life.stages.items())}
                 for a, life in lifecycles.items() if life.stages}
    notes = [f"stage {s} of {a} is assigned to commit {h.commit[:12]} ({h.tag}), which no tag "
             "registers as a release" for a, life in lifecycles.items()
             for s, h in sorted(life.stages.items()) if not h.registered]
    listed = {i.name for i in infos}
    notes += [f"stage {s} of {a} is held by {h.version}, which has no release record here"
              for a, life in lifecycles.items() for s, h in sorted(life.stages.items())
              if h.registered and h.version not in listed]
    notes += [f"artifact {life.artifact} is deprecated ({life.deprecated_by}): every release of "
              "it is" for life in lifecycles.values() if life.deprecated_by]
    return out, stage_map, notes


def release_in_stage(repo_dir: Path, stage: str, *, template: str, head: str | None) -> StageHolder:
    """The release ``gto show <artifact>#<stage>`` names, the artifact taken from *template*.

    No release in that stage, or a stage given to a commit no tag registers, is InputError.
    """
    check_stage(stage)
    artifact = artifact_of_template(template)
    if artifact is None:
        raise InputError(f"--stage {stage}: release.tag {template!r} is not GTO's "
                         "<artifact>@{name} form, so no GTO tag assigns its releases a stage",
                         hint="use the default release.tag core@{name}, or fetch by name")
    life = read_lifecycle(repo_dir, artifact, head=head)
    holder = life.stages.get(stage)
    if holder is None:
        held = ", ".join(sorted(life.stages)) or "none"
        raise InputError(f"no release of {artifact} is in stage {stage!r} (stages held: {held})",
                         hint=f"assign one with 'gto assign {artifact} --version vX.Y.Z --stage "
                              f"{stage}' and push the tag; 'relgate releases REPO' lists stages")
    if not holder.registered:
        raise InputError(f"stage {stage!r} of {artifact} is assigned to commit "
                         f"{holder.commit[:12]} ({holder.tag}), which no tag registers as a "
                         "release", hint="assign the stage to a registered version "
                                         f"('gto assign {artifact} --version vX.Y.Z')")
    return holder


def deprecation_of(repo_dir: Path, release: str, tag: str, *, head: str | None) -> str | None:
    """Why *release* (registered by its release tag *tag*) is deprecated, None when it is not."""
    artifact = artifact_of_tag(tag, release)
    if artifact is None:
        return None
    return read_lifecycle(repo_dir, artifact, head=head).deprecation(release)


__all__ = [
    "TAG_RE", "GtoTag", "Lifecycle", "StageHolder", "annotate", "artifact_of_tag",
    "artifact_of_template", "check_stage", "deprecation_of", "lifecycle_from_tags", "parse_tag",
    "read_lifecycle", "read_tags", "release_in_stage",
]
