"""Promotion: reproduce the evidence, apply the gates, publish the core bundle.

The steps follow DESIGN.md "Promotion, step by step". Everything that decides
is pure (``compare_metrics``); everything that touches files is explicit
(``promote``). A refusal is a ``NotReproduced`` or ``GateFailed`` (exit 1)
carrying every reason; nothing is published unless all checks passed, and
publication itself is atomic (relgate.bundle).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from relgate import schemas
from relgate.errors import GateFailed, InputError, NotReproduced, PublishRefused, RelgateError
from relgate.jsonio import MAX_JSON_BYTES, dumps, loads_strict, read_capped, read_json, write_json
from relgate.manifest import FileDigest, compute_root_digest
from relgate.params import ArtifactSpec, Params, thaw
from relgate.provenance import package_versions, platform_string

RELEASE_FILE = "release.json"
REPORT_FILE = "validation_report.json"
CALIBRATION_FILE = "calibration.json"
CARD_FILE = "README.md"
TAG_PREFIX = "core@"


def release_tag(name: str) -> str:
    """The git tag of a release: ``core@<name>`` (GTO's ``artifact@version`` form).

    Name releases ``vMAJOR.MINOR.PATCH`` (e.g. ``v1.2.0``) and the tag is a valid
    GTO registration tag, so ``gto show`` and ``dvc artifacts get`` understand it.
    """
    return f"{TAG_PREFIX}{name}"


@dataclass(frozen=True, kw_only=True)
class Reproduction:
    """One metric's reported vs re-evaluated value, against its absolute tolerance."""

    metric: str
    field: str
    reported: float | None
    reproduced: float | None
    tolerance: float

    @property
    def delta(self) -> float | None:
        if self.reported is None or self.reproduced is None:
            return None
        return self.reproduced - self.reported

    @property
    def ok(self) -> bool:
        if self.reported is None and self.reproduced is None:
            return True
        d = self.delta
        return d is not None and math.isfinite(d) and abs(d) <= self.tolerance

    def reason(self) -> str:
        name = self.metric if self.field == "value" else f"{self.metric} {self.field}"
        if self.delta is None:
            return f"{name}: reported {self.reported}, re-evaluated {self.reproduced}"
        return (f"{name} moved by {self.delta:+.3g} (reported {self.reported:.6g}, "
                f"re-evaluated {self.reproduced:.6g}; tolerance ±{self.tolerance:g})")


def compare_metrics(
    reported: Mapping[str, Mapping[str, Any]],
    fresh: Mapping[str, Mapping[str, Any]],
    *,
    names: Iterable[str],
    tolerance_for: Callable[[str], float],
    fields: Mapping[str, tuple[str, ...]] | None = None,
) -> list[Reproduction]:
    """Pair the reported and re-evaluated value of each named metric (and of CI bounds asked for).

    Comparisons are absolute and symmetric: ``|fresh - reported| <= tolerance``.
    A metric missing on either side is compared as None and fails unless both are None.
    """
    out = []
    for name in sorted(set(names)):
        for fld in (fields or {}).get(name, ("value",)):
            out.append(Reproduction(
                metric=name, field=fld,
                reported=_number(reported.get(name, {}).get(fld)),
                reproduced=_number(fresh.get(name, {}).get(fld)),
                tolerance=tolerance_for(name),
            ))
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def report_differences(reported: Any, fresh: Any, *, tolerance_for: Callable[[str], float],
                       skip: frozenset[str] | set[str] = frozenset({"environment"}),
                       path: str = "", limit: int = 5) -> list[str]:
    """Where a report differs from its re-evaluation: every field, not only the gated metrics.

    Floats compare within the tolerance of the metric they belong to (the nearest metric name
    on their key path); integers, strings, booleans and the shape of the record exactly.
    ``environment`` is not compared (package versions are recorded, not reproduced), nor the
    ``reason`` sentences, which only restate numbers that are compared.
    """
    out: list[str] = []

    def walk(a: Any, b: Any, where: str, metric: str | None) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if (not where and key in skip) or key in ("reason", "reasons"):
                    continue  # reasons are sentences about numbers that are compared themselves
                sub = f"{where}.{key}" if where else key
                name = key if key in _METRIC_NAMES else metric
                if key not in a or key not in b:
                    out.append(f"{sub}: {'missing from' if key not in a else 'not re-evaluated in'} "
                               "the report")
                else:
                    walk(a[key], b[key], sub, name)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}[{i}]", metric)
        elif (isinstance(a, float) or isinstance(b, float)) and not isinstance(a, bool) \
                and not isinstance(b, bool) and isinstance(a, int | float) and isinstance(b, int | float):
            tol = tolerance_for(metric or "")  # the default tolerance off any metric
            if not abs(a - b) <= tol:
                out.append(f"{where}: reported {a!r}, re-evaluated {b!r}")
        elif a != b or type(a) is not type(b):
            shown = repr(a) if len(repr(a)) < 60 else repr(a)[:57] + "..."
            out.append(f"{where}: reported {shown}, re-evaluated {b!r}"[:160])

    walk(reported, fresh, path, None)
    return out


#: report fields promotion does not compare: the verdict is re-made with the gates in force
#: (step 4), and package versions are recorded, not reproduced
_NOT_REPRODUCED = frozenset({"environment", "gates", "passed", "reasons"})
_METRIC_NAMES = frozenset({"auc", "pr_auc", "f1", "precision", "recall", "accuracy", "specificity",
                           "ece", "brier", "mean_std", "high_corr_frac", "frac_sig"})


@dataclass(frozen=True, kw_only=True)
class PromotionResult:
    name: str
    path: Path
    root_digest: str
    created: bool
    message: str
    gates: Mapping[str, Any]
    reproduced: tuple[Reproduction, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": str(self.path), "root_digest": self.root_digest,
            "created": self.created, "message": self.message, "gates": dict(self.gates),
            "reproduced": [
                {"metric": r.metric, "field": r.field, "reported": r.reported,
                 "reproduced": r.reproduced, "delta": r.delta, "tolerance": r.tolerance, "ok": r.ok}
                for r in self.reproduced
            ],
        }


def promote(params: Params, *, root: Path | None = None) -> PromotionResult:
    """Promote ``params.release`` from the registry at *root* (default: the current folder)."""
    from relgate.bundle import PublishLock, publish_bundle
    from relgate.gates import apply_gates
    from relgate.metrics import MetricEstimate
    from relgate.onnxmodel import model_digest
    from relgate.validation import baseline_for_params, validate_model

    root = Path.cwd() if root is None else root
    spec = params.release
    report_path = _inside(root, spec.report, "release.report")
    # Evidence files are read once: the bytes hashed are the bytes published.
    report_bytes = read_capped(report_path, max_bytes=MAX_JSON_BYTES, what="validation report")
    report = loads_strict(report_bytes, source=str(report_path))
    schemas.validate(report, "validation-report", source=str(report_path))

    # 2. the evidence must be the files we have now, byte for byte
    promoted_path = _inside(root, spec.promoted.path, "release.promoted.path")
    data_path = _inside(root, spec.data, "release.data")
    digest = model_digest(promoted_path)
    problems = []
    if digest.sha256 != report["model"]["sha256"]:
        problems.append(f"{spec.promoted.path} changed after validation (sha256 {digest.sha256[:12]}… "
                        f"!= report {report['model']['sha256'][:12]}…)")
    data_sha = _sha256(data_path)
    if data_sha != report["data"]["sha256"]:
        problems.append(f"{spec.data} is not the data the report was computed on")
    calibration_path: Path | None = None
    calibration_bytes: bytes | None = None
    if report.get("calibration") is not None:
        calibration_path = _inside(root, spec.calibration, "release.calibration")
        calibration_bytes = read_capped(calibration_path, max_bytes=MAX_JSON_BYTES,
                                        what="calibration")
        if _digest(calibration_bytes) != report["calibration"]["sha256"]:
            problems.append(f"{spec.calibration} changed after validation")
    if problems:
        raise NotReproduced("evidence does not match the artifacts: " + "; ".join(problems),
                            hint="re-run validation (dvc repro validate) and promote again")

    # 3. re-evaluate with the same code path and compare within tolerance
    fresh = validate_model(promoted_path, data_path, calibration_path=calibration_path, params=params,
                           model_label=spec.promoted.path, data_label=spec.data,
                           calibration_label=None if calibration_path is None else spec.calibration,
                           baseline=baseline_for_params(params, root=root))
    used = {"model": fresh["model"]["sha256"], "data": fresh["data"]["sha256"],
            "calibration": (fresh.get("calibration") or {}).get("sha256")}
    checked = {"model": digest.sha256, "data": data_sha,
               "calibration": None if calibration_bytes is None else _digest(calibration_bytes)}
    if used != checked:
        changed = ", ".join(k for k in used if used[k] != checked[k])
        raise NotReproduced(f"{changed} changed during promotion (re-evaluated bytes differ from "
                            "the checked ones)", hint="promote again once nothing writes to them")
    gated = {r.metric for r in params.gates.rules}
    fields: dict[str, tuple[str, ...]] = {}
    for rule in params.gates.rules:
        fields[rule.metric] = tuple(sorted({*fields.get(rule.metric, ()), "value", *(
            (rule.on,) if rule.on != "point" else ())}))
    reproductions = compare_metrics(report["metrics"], fresh["metrics"], names=gated,
                                    tolerance_for=spec.tolerance_for, fields=fields)
    moved = [r.reason() for r in reproductions if not r.ok]
    moved += report_differences(report, fresh, tolerance_for=spec.tolerance_for,
                                skip=_NOT_REPRODUCED | ({"metrics"} if moved else set()))
    if moved:
        raise NotReproduced("re-evaluation does not reproduce the report: " + "; ".join(moved),
                            hint="the report was edited or the model/data/environment changed")

    # 4. the gates of the params in force (not the ones the report claims)
    metrics = {k: MetricEstimate.from_dict(v) for k, v in fresh["metrics"].items()}
    verdict = apply_gates(params.gates, metrics, deltas=_baseline_deltas(fresh))
    if not verdict.passed:
        raise GateFailed("gates failed: " + "; ".join(verdict.reasons),
                         hint="the model stays unreleased; improve it or change the gates by review")

    # 5. publish atomically
    artifacts = [_artifact_record(spec.promoted, digest, fresh["model"]["contract"],
                                  path=promoted_path)]
    for variant in spec.variants:
        path = _inside(root, variant.path, f"artifact {variant.path}")
        artifacts.append(_artifact_record(variant, model_digest(path), None, path=path))
    shas = {"report": _digest(report_bytes),
            "calibration": None if calibration_bytes is None else _digest(calibration_bytes),
            "data": data_sha}
    record = _release_record(params, root=root, shas=shas, artifacts=artifacts,
                             gates=verdict.to_dict(), metrics=fresh["metrics"],
                             reproductions=reproductions)
    schemas.validate(record, "release", source="release record")
    target = _inside(root, f"{spec.core_dir}/{spec.name}", "release.core_dir", must_exist=False)

    def build(staging: Path) -> dict[str, FileDigest]:
        """Fill the staging folder; return the digests computed while writing (no re-read)."""
        from relgate.hashing import copy_and_hash

        known: dict[str, FileDigest] = {}
        for art in artifacts:
            folder = PurePosixPath(art["path"]).parent
            src_dir = _inside(root, art["path"], "artifact").parent
            for f in art["files"]:
                dst = staging / str(folder) / f["path"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                size, sha = copy_and_hash(src_dir / f["path"], dst)
                if (size, sha) != (f["size"], f["sha256"]):
                    raise NotReproduced(f"{folder / f['path']} changed while it was being published",
                                        hint="promote again once nothing writes to the artifacts")
                known[str(folder / f["path"])] = FileDigest(size=size, sha256=sha)
        for name, data in generated.items():
            if data is not None:
                (staging / name).write_bytes(data)
                known[name] = FileDigest(size=len(data), sha256=_digest(data))
        return known

    content = _content_identity(artifacts, shas)
    from relgate.report.card import model_card

    generated = {REPORT_FILE: report_bytes, CALIBRATION_FILE: calibration_bytes,
                 RELEASE_FILE: dumps(record), CARD_FILE: model_card(record).encode("utf-8")}
    expected = _expected_root_digest(artifacts, generated)
    bundle_path = f"{spec.core_dir}/{spec.name}"
    mirror_path = root / "analysis" / f"release_{spec.name}.json"
    pinned = _read_pin(mirror_path)
    if pinned is not None and pinned["bundle"]["root_digest"] != expected:
        raise PublishRefused(_pin_mismatch(spec.name, mirror_path, pinned, content, record),
                             hint="a release never changes: publish under a new release.name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{target.parent}: cannot create ({exc.strerror})",
                         hint="release.core_dir must be a writable folder") from None
    with PublishLock(target.parent, target.name):  # also clears a lock left by a dead promoter
        done = _already_published(target, content)
    if done is None:
        try:
            outcome = publish_bundle(target, build)
        except PublishRefused:
            done = _already_published(target, content)  # a concurrent promoter of the same content won
            if done is None:
                raise
    if done is not None:
        if pinned is None:
            _restore_mirror(root, spec.name, spec.core_dir, target, done)
        return PromotionResult(name=spec.name, path=target, root_digest=done, created=False,
                               message=f"{target}: already published with identical content; nothing to do",
                               gates=verdict.to_dict(), reproduced=tuple(reproductions))
    if pinned is None:  # a release reproduced from its pin keeps its original publication record
        write_json(mirror_path, _mirror(record, root=root, bundle_path=bundle_path,
                                        root_digest=outcome.root_digest))
    return PromotionResult(name=spec.name, path=target, root_digest=outcome.root_digest,
                           created=outcome.created, message=outcome.message, gates=verdict.to_dict(),
                           reproduced=tuple(reproductions))


def _restore_mirror(root: Path, name: str, core_dir: str, target: Path, root_digest: str) -> None:
    """Write analysis/release_<name>.json from the verified bundle when it is missing.

    The mirror is the root digest pinned in git; a promoter killed (or out of disk)
    between the rename and the mirror must not leave a release that no record pins.
    """
    mirror_path = root / "analysis" / f"release_{name}.json"
    if os.path.lexists(mirror_path):
        return
    record = read_json(target / RELEASE_FILE)
    mirror = _mirror(record, root=root, bundle_path=f"{core_dir}/{name}", root_digest=root_digest)
    schemas.validate(mirror, "release", source=str(target / RELEASE_FILE))
    write_json(mirror_path, mirror)


def _expected_root_digest(artifacts: list[dict[str, Any]],
                          generated: Mapping[str, bytes | None]) -> str:
    """The root digest the bundle will have, from digests already known (nothing re-read)."""
    files = {}
    for art in artifacts:
        folder = PurePosixPath(art["path"]).parent
        for f in art["files"]:
            files[str(folder / f["path"])] = FileDigest(size=f["size"], sha256=f["sha256"])
    for name, data in generated.items():
        if data is not None:
            files[name] = FileDigest(size=len(data), sha256=_digest(data))
    return compute_root_digest(files)


def _read_pin(mirror_path: Path) -> dict[str, Any] | None:
    """The git-tracked record of a release already published (None if never published)."""
    if not os.path.lexists(mirror_path):
        return None
    record = read_json(mirror_path)
    schemas.validate(record, "release", source=str(mirror_path))
    if not record.get("bundle"):
        raise InputError(f"{mirror_path}: has no bundle.root_digest",
                         hint="a release record written by relgate promote pins its bundle")
    return dict(record)


def _pin_mismatch(name: str, mirror_path: Path, pinned: Mapping[str, Any],
                  content: Mapping[str, str], record: Mapping[str, Any]) -> str:
    """Why this promotion would not rebuild the pinned bundle, as precisely as the record allows."""
    base = (f"release {name} already published with root digest "
            f"{pinned['bundle']['root_digest'][:16]}… ({mirror_path}); this promotion would publish ")
    pinned_content = _content_identity(
        list(pinned["artifacts"]),
        {"report": pinned["evidence"]["validation_report"]["sha256"],
         "calibration": (pinned["evidence"].get("calibration") or {}).get("sha256")})
    changed = sorted(k for k in {*content, *pinned_content}
                     if content.get(k) != pinned_content.get(k))
    if changed:
        return base + "different content: " + ", ".join(changed[:6])
    env = [f"{k} {pinned['provenance']['packages'].get(k)} -> {v}"
           for k, v in record["provenance"]["packages"].items()
           if pinned["provenance"]["packages"].get(k) != v]
    if pinned["provenance"]["platform"] != record["provenance"]["platform"]:
        env.append(f"platform {pinned['provenance']['platform']} -> {record['provenance']['platform']}")
    what = "; ".join(env) if env else "params or gates"
    return base + f"the same artifacts and evidence with another release record ({what})"


def _content_identity(artifacts: list[dict[str, Any]], shas: Mapping[str, str | None]
                      ) -> dict[str, str]:
    """sha256 by bundle path of everything but the per-publication files (release.json, README.md).

    Two promotions of the same artifacts and evidence are "identical content" even
    though their release records differ in time and commit.
    """
    out = {}
    for art in artifacts:
        folder = PurePosixPath(art["path"]).parent
        for f in art["files"]:
            out[str(folder / f["path"])] = f["sha256"]
    out[REPORT_FILE] = str(shas["report"])
    if shas["calibration"] is not None:
        out[CALIBRATION_FILE] = str(shas["calibration"])
    return out


def _already_published(target: Path, content: Mapping[str, str]) -> str | None:
    """The root digest of the bundle at *target* if it verifies and holds *content*; None if absent.

    A folder that exists but does not verify, or verifies with other content, is refused.
    """
    from relgate.bundle import verify_bundle
    from relgate.manifest import read_manifest

    if not os.path.lexists(target):
        return None
    try:
        result = verify_bundle(target)
    except RelgateError as exc:
        raise PublishRefused(f"{target} exists but is not a valid bundle ({exc.one_line()})",
                             hint="never replaced automatically: inspect it and remove it by hand") from None
    if not result.ok:
        raise PublishRefused(f"{target} exists but does not verify: " + "; ".join(result.reasons()),
                             hint="never replaced automatically: inspect it and remove it by hand")
    files = read_manifest(target / "manifest.json").files
    have = {p: d.sha256 for p, d in files.items() if p not in (RELEASE_FILE, CARD_FILE)}
    if have != dict(content):
        raise PublishRefused(f"{target}: release already published with different content",
                             hint="published bundles never change; choose a new release.name")
    return str(result.root_digest)


def _baseline_deltas(report: Mapping[str, Any]) -> dict[str, Any] | None:
    from relgate.metrics import MetricEstimate

    base = report.get("baseline")
    if not base:
        return None
    return {k: MetricEstimate.from_dict(v) for k, v in base["deltas"].items()}


def _artifact_record(art: ArtifactSpec, digest: Any, contract: Mapping[str, Any] | None, *,
                     path: Path) -> dict[str, Any]:
    """The release record's entry for one artifact (its contract read from *path* if not given)."""
    rec: dict[str, Any] = {
        "path": art.path, "role": art.role, "sha256": digest.sha256,
        "size": sum(f.size for f in digest.files), "files": [f.to_dict() for f in digest.files],
    }
    if art.description:
        rec["description"] = art.description
    if contract is None:
        from relgate.onnxmodel import load_contract

        contract = load_contract(path).to_dict()
    rec["contract"] = dict(contract)
    return rec


def _release_record(params: Params, *, root: Path, shas: Mapping[str, str | None],
                    artifacts: list[dict[str, Any]], gates: Mapping[str, Any],
                    metrics: Mapping[str, Any], reproductions: list[Reproduction]) -> dict[str, Any]:
    spec = params.release
    return {
        "schema_version": 1, "kind": "release", "name": spec.name, "tag": release_tag(spec.name),
        "artifacts": artifacts, "metrics": dict(metrics), "gates": dict(gates),
        "tolerance": {m: spec.tolerance_for(m) for m in sorted({r.metric for r in params.gates.rules})},
        "reproduced": {r.metric: {"reported": r.reported, "reproduced": r.reproduced, "delta": r.delta}
                       for r in reproductions if r.field == "value"},
        "evidence": {
            "validation_report": {"path": spec.report, "sha256": shas["report"]},
            "calibration": None if shas["calibration"] is None
            else {"path": spec.calibration, "sha256": shas["calibration"]},
            "data": {"path": spec.data, "sha256": shas["data"]},
        },
        "provenance": {
            "params": thaw(params.raw), "seed": params.seed,
            "packages": package_versions(), "platform": platform_string(),
        },
    }


def _mirror(record: Mapping[str, Any], *, root: Path, bundle_path: str,
            root_digest: str) -> dict[str, Any]:
    """The git-tracked release record: the bundle's record plus when and from what it was
    published (time, git commit, dirty tree, dvc.lock digest) and the pinned root digest.

    Those publication facts stay out of the bundle so that the bundle's bytes are a function
    of the evidence alone: promoting the same evidence again, anywhere, rebuilds the same
    bundle, and its root digest can be checked against the pin.
    """
    commit, dirty, when = _git_state(root)
    lock = root / "dvc.lock"
    provenance = {**record["provenance"], "git_commit": commit, "git_dirty": dirty,
                  "dvc_lock_sha256": _sha256(lock) if lock.is_file() else None}
    return {**record, "created": when, "provenance": provenance,
            "bundle": {"path": bundle_path, "root_digest": root_digest}}


def _git_state(root: Path) -> tuple[str | None, bool | None, str]:
    """HEAD commit, whether the tree is dirty, and a timestamp for the record.

    The timestamp is SOURCE_DATE_EPOCH when set, else now (UTC): a release is an event.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    try:
        when = datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else datetime.now(UTC)
    except (OverflowError, ValueError, OSError):
        raise InputError(f"SOURCE_DATE_EPOCH={epoch[:30]!r} is not a usable timestamp",
                         hint="set it to seconds since 1970, or unset it") from None
    stamp = when.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=30, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None, stamp
    return commit, bool(status.strip()), stamp


def _inside(root: Path, rel: str, what: str, *, must_exist: bool = True) -> Path:
    """Resolve a params path under *root*, refusing anything that escapes it."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        raise InputError(f"{what}: {rel!r} must be a relative path inside the registry")
    path = root / pure
    if must_exist and not path.is_file():
        raise InputError(f"{what}: {rel} does not exist", hint="run the pipeline first (dvc repro)")
    return path


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256(path: Path) -> str:
    from relgate.hashing import sha256_file

    return sha256_file(path)


__all__ = ["PromotionResult", "Reproduction", "compare_metrics", "promote", "release_tag"]
