"""``relgate reproduce``: re-run a registry revision in a temp clone and compare with its dvc.lock.

Why: "the release reproduces" is a claim about every machine, not about the one
that wrote ``dvc.lock``. This module clones the registry at a revision into a
private temporary folder, fetches the inputs that are not stage outputs, runs
``dvc repro --force --no-run-cache`` there (its own DVC cache and site cache:
nothing shared with the registry), and compares every stage output with the
committed ``dvc.lock``:

* bytes: the DVC md5 of the fresh output against the locked one;
* numbers: when the bytes differ and the committed JSON/CSV can be read (from
  git, or the registry's DVC cache), value by value within the tolerance
  declared in params (``reproduce:``, default ``release.tolerance``);
* the released bundle: rebuilt by the ``promote`` stage, verified against the
  root digest pinned in git (``analysis/release_<name>.json``).

The temporary clone is removed afterwards, on errors and on Ctrl-C too (and a
clone left by a killed run is removed by the next one). The core never prints:
progress goes to a callback, results to :class:`ReproduceResult`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from relgate.errors import InputError
from relgate.jsonio import read_capped

#: verdicts of one output
IDENTICAL, WITHIN, DIFFERS, MISSING, NOT_RUN = (
    "identical", "within tolerance", "differs", "missing", "not run")
_OK_VERDICTS = (IDENTICAL, WITHIN)
_NUMERIC_SUFFIXES = (".json", ".csv")
_MAX_COMPARED_BYTES = 64 * 1024 * 1024
_MAX_LOCK_BYTES = 16 * 1024 * 1024
_CLONE_PREFIX = "relgate-reproduce-"
_RUNNING_STAGE = re.compile(r"^Running stage '([^']+)'")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True)
class Tolerances:
    """Absolute tolerances by key (any segment of a number's path), else ``default``."""

    by_key: Mapping[str, float] = field(default_factory=dict)
    default: float = 0.0

    def for_path(self, path: tuple[str, ...]) -> float:
        for part in reversed(path):
            if part in self.by_key:
                return float(self.by_key[part])
        return self.default

    def to_dict(self) -> dict[str, Any]:
        return {"by_key": dict(sorted(self.by_key.items())), "default": self.default}


@dataclass(frozen=True, kw_only=True)
class OutputCheck:
    """One stage output: its verdict and, for numbers, the largest difference and where."""

    stage: str
    path: str
    verdict: str
    locked_md5: str | None = None
    fresh_md5: str | None = None
    largest: float | None = None
    where: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict in _OK_VERDICTS

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "path": self.path, "verdict": self.verdict, "ok": self.ok,
                "locked_md5": self.locked_md5, "fresh_md5": self.fresh_md5,
                "largest_difference": self.largest, "where": self.where, "detail": self.detail}


@dataclass(frozen=True, kw_only=True)
class ReproduceResult:
    """Every output of every locked stage, compared; plus the repro's own failure, if any."""

    registry: str
    rev: str
    commit: str
    checks: tuple[OutputCheck, ...]
    tolerances: Tolerances
    failure: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.checks) and all(c.ok for c in self.checks)

    def problems(self) -> list[str]:
        out = [] if self.failure is None else [self.failure]
        for c in self.checks:
            if not c.ok:
                where = f" (largest difference {c.largest:.3g} at {c.where})" if c.largest is not None \
                    and c.where else ""
                out.append(f"{c.stage}: {c.path} {c.verdict}{where}"
                           + (f": {c.detail}" if c.detail else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": 1, "registry": self.registry, "rev": self.rev, "commit": self.commit,
                "passed": self.ok, "failure": self.failure, "tolerances": self.tolerances.to_dict(),
                "outputs": [c.to_dict() for c in self.checks], "problems": self.problems()}


# --- numbers --------------------------------------------------------------------------------


@dataclass
class _Diff:
    largest: float = 0.0
    where: str | None = None
    mismatch: str | None = None  # a structural or non-numeric difference: never within tolerance
    beyond: bool = False

    def number(self, a: float, b: float, path: tuple[str, ...], tol: float) -> None:
        if math.isnan(a) and math.isnan(b):
            return
        d = abs(a - b) if math.isfinite(a) and math.isfinite(b) else (0.0 if a == b else math.inf)
        if d > self.largest or (self.where is None and d > 0):
            self.largest, self.where = d, "/".join(path) or "."
        if d > tol:
            self.beyond = True

    def other(self, path: tuple[str, ...], what: str) -> None:
        if self.mismatch is None:
            self.mismatch = f"{'/'.join(path) or '.'}: {what}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _walk(a: Any, b: Any, path: tuple[str, ...], tol: Tolerances, diff: _Diff) -> None:
    if _is_number(a) and _is_number(b):
        diff.number(float(a), float(b), path, tol.for_path(path))
    elif isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            diff.other(path, f"keys differ ({', '.join(sorted(set(a) ^ set(b)))})")
        for k in sorted(set(a) & set(b)):
            _walk(a[k], b[k], (*path, str(k)), tol, diff)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            diff.other(path, f"{len(a)} items locked, {len(b)} now")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _walk(x, y, (*path, str(i)), tol, diff)
    elif a != b:
        diff.other(path, f"{_short(a)} locked, {_short(b)} now")


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _csv_rows(data: bytes) -> list[Any]:
    rows: list[Any] = []
    for row in csv.reader(io.StringIO(data.decode("utf-8"))):
        cells: list[Any] = []
        for cell in row:
            try:
                cells.append(float(cell))
            except ValueError:
                cells.append(cell)
        rows.append(cells)
    return rows


def compare_numbers(path: str, locked: bytes, fresh: bytes, tol: Tolerances) -> _Diff | None:
    """Number-by-number comparison of a JSON or CSV output; None when it cannot be parsed."""
    try:
        if path.endswith(".json"):
            a, b = json.loads(locked), json.loads(fresh)
        else:
            a, b = _csv_rows(locked), _csv_rows(fresh)
            header = a[0] if a else []
            if a[:1] == b[:1] and header and all(isinstance(c, str) for c in header):
                # name the columns, so a difference reads "12/tpr" rather than "12/1"
                a = [dict(zip(header, r, strict=False)) for r in a[1:]]
                b = [dict(zip(header, r, strict=False)) for r in b[1:]]
    except (ValueError, UnicodeDecodeError):
        return None
    diff = _Diff()
    _walk(a, b, (), tol, diff)
    return diff


# --- dvc.lock ---------------------------------------------------------------------------------


def _lock_outputs(lock: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """(stage, path, md5) of every output in a parsed dvc.lock, in stage order."""
    out = []
    for stage, entry in (lock.get("stages") or {}).items():
        for o in (entry or {}).get("outs") or []:
            if isinstance(o, dict) and isinstance(o.get("path"), str):
                out.append((str(stage), o["path"], o.get("md5")))
    return out


def _read_lock(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{what}: no dvc.lock", hint="run dvc repro and commit dvc.lock first")
    try:
        doc = yaml.safe_load(read_capped(path, max_bytes=_MAX_LOCK_BYTES, what="dvc.lock"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        raise InputError(f"{what}: dvc.lock is not readable ({type(exc).__name__})",
                         hint="restore dvc.lock from git") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), dict):
        raise InputError(f"{what}: dvc.lock has no stages", hint="run dvc repro and commit dvc.lock")
    return doc


# --- git and dvc --------------------------------------------------------------------------------


def _git(args: list[str], cwd: Path, *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def resolve(registry: Path, rev: str) -> str:
    """The commit *rev* names in *registry* (a branch, tag like ``core@v1.0.0``, or sha)."""
    if not registry.is_dir():
        raise InputError(f"{registry}: not a folder", hint="give the registry's git checkout")
    top = _git(["rev-parse", "--show-toplevel"], registry)
    if top.returncode != 0:
        raise InputError(f"{registry}: not a git repository", hint="give the registry's git checkout")
    if rev.startswith("-"):
        raise InputError(f"{rev!r}: not a revision", hint="name a commit, branch or tag")
    sha = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"], registry)
    if sha.returncode != 0 or not sha.stdout.strip():
        raise InputError(f"{rev}: unknown revision in {registry}",
                         hint="name a commit, branch or tag that exists (git tag -l 'core@*')")
    return sha.stdout.strip()


def _dirty(registry: Path) -> list[str]:
    proc = _git(["status", "--porcelain", "--untracked-files=no"], registry)
    return [line[3:] for line in proc.stdout.splitlines() if line.strip()]


def _locked_bytes(registry: Path, commit: str, path: str, md5: str | None) -> bytes | None:
    """The committed bytes of an output: from git at *commit*, else from the registry's DVC cache."""
    shown = subprocess.run(["git", "cat-file", "blob", f"{commit}:{path}"], cwd=registry,
                           capture_output=True, timeout=120, check=False)
    if shown.returncode == 0 and len(shown.stdout) <= _MAX_COMPARED_BYTES:
        return shown.stdout
    if md5 and re.fullmatch(r"[0-9a-f]{32}", md5):
        cached = registry / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        with contextlib.suppress(OSError):
            if cached.is_file() and cached.stat().st_size <= _MAX_COMPARED_BYTES:
                return cached.read_bytes()
    return None


def _clean_stale(parent: Path) -> None:
    """Remove clones left by reproduce runs whose process is gone (SIGKILL, power loss)."""
    from relgate.bundle import force_rmtree, process_alive

    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            m = re.fullmatch(rf"{_CLONE_PREFIX}(\d+)-\w+", entry.name)
            if m and entry.is_dir() and not entry.is_symlink() and not process_alive(int(m.group(1))):
                force_rmtree(entry)


@contextlib.contextmanager
def _temp_clone_dir() -> Iterator[Path]:
    """A private temp folder, removed on exit, on errors, on Ctrl-C and on SIGTERM."""
    from relgate.bundle import force_rmtree

    parent = Path(tempfile.gettempdir())
    _clean_stale(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"{_CLONE_PREFIX}{os.getpid()}-", dir=parent))

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield folder
    finally:
        signal.signal(signal.SIGTERM, previous)
        force_rmtree(folder)


def _run_dvc(args: list[str], cwd: Path, env: Mapping[str, str], progress: Progress | None,
             total: int) -> tuple[int, list[str]]:
    """Run DVC, streaming its output for progress; return (exit code, last lines)."""
    from relgate.distribution import dvc_command

    proc = subprocess.Popen([*dvc_command(), *args], cwd=cwd, env=dict(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    tail: list[str] = []
    seen = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail[-39:], line.rstrip()]
            m = _RUNNING_STAGE.match(line)
            if m and progress is not None:
                seen += 1
                progress(m.group(1), seen, total)
        return proc.wait(), tail
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _pull_inputs(root: Path, clone: Path, tracked: list[str], env: Mapping[str, str]) -> None:
    """``dvc pull`` the ``.dvc``-tracked inputs into the clone: from the registry's own DVC
    cache when it holds them (read as a local remote: nothing is written there), else from the
    registry's configured remote."""
    own_cache = root / ".dvc" / "cache"
    if own_cache.is_dir():
        code, _ = _run_dvc(["remote", "add", "--local", "relgate-registry-cache", str(own_cache)],
                           clone, env, None, 0)
        if code == 0:
            code, _ = _run_dvc(["pull", "--quiet", "-r", "relgate-registry-cache", *tracked], clone,
                               env, None, 0)
            if code == 0:
                return
    code, tail = _run_dvc(["pull", "--quiet", *tracked], clone, env, None, 0)
    if code != 0:
        raise InputError(f"cannot fetch the registry's tracked inputs: {_failure_line(tail)}",
                         hint="configure and fill the registry's DVC remote (dvc push)")


def _failure_line(tail: list[str]) -> str:
    for line in reversed(tail):
        if "error" in line.lower() and line.strip():
            return line.strip()
    return tail[-1].strip() if tail else "dvc repro failed"


# --- the whole check ------------------------------------------------------------------------


def tolerances_for(params: Any) -> Tolerances:
    """``reproduce:`` from params (``tolerance`` by key, ``default_tolerance``), else release.tolerance."""
    section = (params.raw.get("reproduce") or {}) if params is not None else {}
    if "tolerance" in section or "default_tolerance" in section:
        return Tolerances(by_key={str(k): float(v) for k, v in (section.get("tolerance") or {}).items()},
                          default=float(section.get("default_tolerance", 0.0)))
    if params is None:
        return Tolerances()
    return Tolerances(by_key=dict(params.release.tolerance), default=0.0)


def reproduce(registry: str | os.PathLike[str], rev: str = "HEAD", *,
              progress: Progress | None = None, allow_dirty: bool = False) -> ReproduceResult:
    """Clone *registry* at *rev*, ``dvc repro --force`` it in isolation, compare with ``dvc.lock``."""
    from relgate.errors import RelgateError
    from relgate.params import load_params

    started = time.monotonic()
    root = Path(registry).resolve()
    commit = resolve(root, rev)
    dirty = _dirty(root)
    if dirty and rev == "HEAD" and not allow_dirty:
        raise InputError(f"{root}: uncommitted changes ({', '.join(dirty[:3])}"
                         f"{', …' if len(dirty) > 3 else ''}) that a clone of HEAD would not see",
                         hint="commit or stash them, or name the revision to reproduce")
    with _temp_clone_dir() as tmp:
        clone = tmp / "registry"
        proc = _git(["clone", "--quiet", "--no-hardlinks", "--no-checkout", str(root), str(clone)], tmp)
        if proc.returncode != 0:
            raise InputError(f"{root}: git clone failed ({proc.stderr.strip()[:200]})",
                             hint="check the registry path")
        proc = _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", commit], clone)
        if proc.returncode != 0:
            raise InputError(f"{commit[:12]}: checkout failed ({proc.stderr.strip()[:200]})",
                             hint="check the revision")
        lock = _read_lock(clone / "dvc.lock", f"{rev} ({commit[:12]})")
        outputs = _lock_outputs(lock)
        try:
            params = load_params(clone / "params.yaml") if (clone / "params.yaml").is_file() else None
        except RelgateError:
            params = None  # a stage refuses bad params with its own message
        tol = tolerances_for(params)
        env = {**os.environ, "CI": "1", "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0",
               "DVC_SITE_CACHE_DIR": str(tmp / "site-cache")}
        code, tail = _run_dvc(["config", "--local", "cache.dir", str(tmp / "cache")], clone, env,
                              None, 0)
        if code != 0:
            raise InputError(f"dvc config failed in the clone: {_failure_line(tail)}",
                             hint="check the registry's .dvc/config")
        tracked = _git(["ls-files", "*.dvc", "**/*.dvc"], clone).stdout.split()
        if tracked:
            _pull_inputs(root, clone, tracked, env)
        stages = list(lock.get("stages") or {})
        code, tail = _run_dvc(["repro", "--force", "--no-run-cache"], clone, env, progress, len(stages))
        failure = None if code == 0 else f"dvc repro failed: {_failure_line(tail)}"
        fresh_lock = _read_lock(clone / "dvc.lock", "the reproduced clone")
        fresh = {(s, p): md5 for s, p, md5 in _lock_outputs(fresh_lock)}
        checks = [_check_output(root, clone, commit, params, stage, path, md5,
                                fresh.get((stage, path)), tol, ran=code == 0)
                  for stage, path, md5 in outputs]
    return ReproduceResult(registry=str(root), rev=rev, commit=commit, checks=tuple(checks),
                           tolerances=tol, failure=failure, seconds=time.monotonic() - started)


def _check_output(root: Path, clone: Path, commit: str, params: Any, stage: str, path: str,
                  locked: str | None, fresh_md5: str | None, tol: Tolerances, *, ran: bool
                  ) -> OutputCheck:
    base = OutputCheck(stage=stage, path=path, verdict=DIFFERS, locked_md5=locked, fresh_md5=fresh_md5)
    core_dir = None if params is None else str(params.release.core_dir).rstrip("/")
    if core_dir is not None and path.rstrip("/") == core_dir:
        return _check_bundle(clone, params, base)
    target = clone / path
    if not target.exists():
        return replace(base, verdict=MISSING if ran else NOT_RUN,
                       detail=None if ran else "dvc repro stopped before it was written")
    if locked is not None and locked == fresh_md5:
        return replace(base, verdict=IDENTICAL)
    if path.endswith(_NUMERIC_SUFFIXES) and target.is_file():
        old = _locked_bytes(root, commit, path, locked)
        if old is not None and target.stat().st_size <= _MAX_COMPARED_BYTES:
            diff = compare_numbers(path, old, target.read_bytes(), tol)
            if diff is not None and diff.mismatch is not None:
                return replace(base, detail=diff.mismatch)
            if diff is not None:
                verdict = DIFFERS if diff.beyond else (WITHIN if diff.where else IDENTICAL)
                return replace(base, verdict=verdict, largest=diff.largest, where=diff.where,
                               detail="beyond tolerance" if diff.beyond else None)
    return replace(base, detail="bytes differ")


def _check_bundle(clone: Path, params: Any, base: OutputCheck) -> OutputCheck:
    """The released bundle the promote stage rebuilt, against the root digest pinned in git."""
    from relgate.bundle import verify_bundle
    from relgate.validation import pinned_root_digest

    name = params.release.name
    bundle = clone / params.release.core_dir / name
    pin = pinned_root_digest(clone, name)
    if pin is None:
        return replace(base, detail=f"release {name} has no pinned root digest")
    if not bundle.is_dir():
        return replace(base, verdict=MISSING, detail=f"release {name} was not rebuilt")
    check = verify_bundle(bundle, expected_root_digest=pin)
    if check.ok:
        return replace(base, verdict=IDENTICAL, detail=f"release {name} root digest equals the pin")
    return replace(base, detail=f"release {name} does not match its pin: " + "; ".join(check.reasons()[:3]))
