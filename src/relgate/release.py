"""Promotion: reproduce the evidence, apply the gates, publish the core bundle.

The steps follow DESIGN.md "Promotion, step by step". Everything that decides
is pure (``compare_metrics``); everything that touches files is explicit
(``promote``). A refusal is a ``NotReproduced`` or ``GateFailed`` (exit 1)
carrying every reason; nothing is published unless all checks passed, and
publication itself is atomic (relgate.bundle).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from relgate import schemas
from relgate.errors import GateFailed, InputError, NotReproduced, PublishRefused, RelgateError
from relgate.jsonio import MAX_JSON_BYTES, dumps, loads_strict, read_capped, read_json
from relgate.manifest import FileDigest, compute_root_digest
from relgate.params import ArtifactSpec, Params, thaw
from relgate.provenance import package_versions, platform_string

if TYPE_CHECKING:
    from relgate.dvclinks import DvcCacheLinks

RELEASE_FILE = "release.json"
REPORT_FILE = "validation_report.json"
CALIBRATION_FILE = "calibration.json"
CARD_FILE = "README.md"
PARITY_FILE = "parity.json"
TAG_PREFIX = "core@"
#: ``release.tag`` when params name none (registries written before it was a template)
DEFAULT_TAG_TEMPLATE = TAG_PREFIX + "{name}"
#: the bundle files relgate writes itself: no artifact or sidecar may take these names
RESERVED_NAMES = frozenset({RELEASE_FILE, REPORT_FILE, CALIBRATION_FILE, CARD_FILE,
                            PARITY_FILE, "manifest.json"})


def release_tag(name: str, template: str = DEFAULT_TAG_TEMPLATE) -> str:
    """The git tag of a release: *template* (``release.tag``) with ``{name}`` filled in.

    The default ``core@<name>`` is GTO's ``artifact@version`` form: name releases
    ``vMAJOR.MINOR.PATCH`` (e.g. ``v1.2.0``) and the tag is a valid GTO registration tag,
    so ``gto show`` and ``dvc artifacts get`` understand it. Other templates (seed 000's
    ``core/{name}``) are plain git tags that relgate resolves and GTO ignores.
    """
    return template.replace("{name}", name)


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
                       path: str = "", limit: int = 5, sentences: bool = False) -> list[str]:
    """Where a report differs from its re-evaluation: every field, not only the gated metrics.

    Floats compare within the tolerance of the metric they belong to (the nearest metric name
    on their key path); integers, strings, booleans and the shape of the record exactly.
    The top-level keys in *skip* are not compared (by default ``environment``: package
    versions are recorded, not reproduced), nor, unless *sentences*, the ``reason`` sentences,
    which only restate numbers that are compared.
    """
    out: list[str] = []

    def walk(a: Any, b: Any, where: str, metric: str | None) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if (not where and key in skip) or (not sentences and key in ("reason", "reasons")):
                    continue  # reasons are sentences about numbers that are compared themselves
                sub = f"{where}.{key}" if where else key
                name = key if is_metric_name(key) else metric
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


#: report fields the evidence comparison leaves out: the verdict is re-made with the gates in
#: force (step 4), then required to be the report's (``verdict_differences``), like the
#: environment it was computed in
_NOT_REPRODUCED = frozenset({"environment", "gates", "passed", "reasons", "resources"})
_METRIC_NAMES = frozenset({"auc", "pr_auc", "f1", "precision", "recall", "accuracy", "specificity",
                           "ece", "brier", "mean_std", "high_corr_frac", "frac_sig"})
#: multi-class metric names (relgate.tasks.multiclass): top{k}, averaged, per-class, selective
_MULTICLASS_METRIC = re.compile(
    r"(top[1-9][0-9]*_accuracy|(macro|micro|weighted)_(f1|precision|recall)|min_class_(recall|f1)"
    r"|(macro|weighted)_auc|log_loss|classwise_ece|coverage|selective_accuracy"
    r"|class_(0|[1-9][0-9]*)_(precision|recall|f1))")


def is_metric_name(key: str) -> bool:
    """Whether *key* names a metric (binary or multi-class): its floats take its tolerance."""
    return key in _METRIC_NAMES or _MULTICLASS_METRIC.fullmatch(key) is not None


@dataclass(frozen=True, kw_only=True)
class PromotionResult:
    name: str
    path: Path
    root_digest: str
    created: bool
    message: str
    gates: Mapping[str, Any]
    reproduced: tuple[Reproduction, ...]
    #: what the record could not say (no git commit to name): the release stands, but a
    #: reader should know
    warnings: tuple[str, ...] = ()
    #: the resource budgets' reported and fresh (re-measured here) values, when declared
    resources: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": str(self.path), "root_digest": self.root_digest,
            "created": self.created, "message": self.message, "gates": dict(self.gates),
            "warnings": list(self.warnings),
            **({} if self.resources is None else {"resources": dict(self.resources)}),
            "reproduced": [
                {"metric": r.metric, "field": r.field, "reported": r.reported,
                 "reproduced": r.reproduced, "delta": r.delta, "tolerance": r.tolerance, "ok": r.ok}
                for r in self.reproduced
            ],
        }


def promote(params: Params, *, root: Path | None = None,
            allow_dvc_cache_links: bool = False) -> PromotionResult:
    """Promote ``params.release`` from the registry at *root* (default: the current folder).

    Every evidence file is read once, by copying it into the private staging folder while
    hashing it (``_build``); the staged copies are what is checked against the report,
    re-evaluated and published. "Already published" means the bundle at the target is
    byte for byte (root digest) the one this promotion builds, and equal to the pin. The
    promoted model and every evaluated variant are judged alike, each on its own evidence.
    With *allow_dvc_cache_links* (or ``release.allow_dvc_cache_links``), an external data
    file, a sidecar or a published bundle's file that is a link into the registry's own DVC
    cache is read through the cache entry DVC names for it (relgate.dvclinks).
    """
    from relgate import bundle, hashing
    from relgate.dvclinks import DvcCacheLinks

    root = Path.cwd() if root is None else root
    spec = params.release
    links = (DvcCacheLinks.for_folder(root) if allow_dvc_cache_links
             or spec.allow_dvc_cache_links else None)
    subjects = [_subject(params, root=root, variant=None)]
    subjects += [_subject(params, root=root, variant=v) for v in spec.variants if v.evaluated]
    unjudged = tuple((v, _inside(root, v.path, f"artifact {v.path}"))
                     for v in spec.variants if not v.evaluated)
    check_sidecars(params, root=root, links=links)  # before anything is written under core_dir
    target = _inside(root, f"{spec.core_dir}/{spec.name}", "release.core_dir", must_exist=False)
    mirror_path = root / "analysis" / f"release_{spec.name}.json"
    pinned = _read_pin(mirror_path)
    signer = None  # the key is checked before anything is written: a bad one is exit 2
    if spec.signing is not None and pinned is None:
        from relgate.signing import load_signer

        signer = load_signer(spec.signing, root=root)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{target.parent}: cannot create ({exc.strerror})",
                         hint="release.core_dir must be a writable folder") from None
    built: list[_Built] = []

    def build(staging: Path) -> dict[str, FileDigest]:
        # the re-evaluation's own digests of the staged copies are the copies' (one read)
        with hashing.remembered_copies():
            built.append(_build(params, root=root, staging=staging, subjects=subjects,
                                unjudged=unjudged, pinned=pinned, mirror_path=mirror_path,
                                links=links))
        return dict(built[-1].files)

    outcome = bundle.publish_bundle(
        target, build, dvc_links=None if links is None else links.at(f"{spec.core_dir}/{spec.name}"))
    done = built[-1]
    warnings: list[str] = []
    if pinned is None:  # a release reproduced from its pin keeps its original publication record
        mirror = _mirror(done.record, root=root, bundle_path=f"{spec.core_dir}/{spec.name}",
                         root_digest=outcome.root_digest)
        if done.resources is not None and "resources" in mirror:  # beside the reported one
            mirror["resources"] = {**mirror["resources"], "fresh": done.resources["fresh"]}
        mirror.update(_sign_and_attest(target, mirror, root=root, signer=signer))
        _write_pin(mirror_path, mirror)
        if mirror["provenance"]["git_commit"] is None:
            warnings.append(f"{root}: not a git repository with a commit, so the release record "
                            f"names no git_commit; commit {mirror_path.name} to pin the release")
    message = outcome.message if outcome.created else (
        f"{target}: already published with identical content; nothing to do")
    return PromotionResult(name=spec.name, path=target, root_digest=outcome.root_digest,
                           created=outcome.created, message=message, gates=done.verdict,
                           reproduced=done.reproductions, warnings=tuple(warnings),
                           resources=done.resources)


def _sign_and_attest(target: Path, mirror: Mapping[str, Any], *, root: Path,
                     signer: Any) -> dict[str, Any]:
    """The pin's ``signature`` and ``attestation`` notes: the bundle signed (when
    ``release.signing`` is set) and its provenance Statement written, beside the record.
    Both are built from the manifest promote just wrote from the bytes it copied: nothing
    is hashed again."""
    from relgate.attestation import write_attestation
    from relgate.signing import bundle_digests, sign_digests

    name = mirror["name"]
    digests = bundle_digests(target)
    try:
        (root / "analysis").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{root / 'analysis'}: cannot create ({exc.strerror})",
                         hint="check permissions") from None
    notes: dict[str, Any] = {}
    if signer is not None:
        rel = f"analysis/release_{name}.sig"
        notes["signature"] = sign_digests(name, digests, signer, root / rel,
                                          label=rel).to_record()
    notes["attestation"] = write_attestation(root=root, name=name, digests=digests,
                                             record=mirror, signer=signer)
    return notes


#: inside the staging folder, the copies of evidence that is not published (the test split);
#: removed before the manifest is built
EVIDENCE_DIR = ".relgate-evidence"
#: the bundle folder of an evaluated variant's report and calibration: variants/<name>/
VARIANTS_DIR = "variants"


@dataclass(frozen=True, kw_only=True)
class _Subject:
    """A model promote judges (the promoted one, or an evaluated variant) with its evidence,
    by registry path: each file is read once, by ``_judge``; the report already was."""

    variant: str | None
    params: Params
    model: Path
    data: Path
    calibration: Path | None
    report: Mapping[str, Any]
    report_bytes: bytes

    def bundle_path(self, file: str) -> str:
        """Where this subject's *file* (report, calibration) sits in the bundle."""
        return file if self.variant is None else f"{VARIANTS_DIR}/{self.variant}/{file}"


def _subject(params: Params, *, root: Path, variant: Any) -> _Subject:
    """Read the report of the promoted model (*variant* None) or of an evaluated variant, and
    resolve its evidence paths; a variant's problems are named after it."""
    name = None if variant is None else variant.name
    with _about(name):
        judged = params if name is None else params.for_variant(name)
        spec = judged.release
        report_path = _inside(root, spec.report, "release.report" if name is None
                              else f"release.variants {name!r} report")
        report_bytes = read_capped(report_path, max_bytes=MAX_JSON_BYTES, what="validation report")
        report = loads_strict(report_bytes, source=str(report_path))
        schemas.validate(report, "validation-report", source=str(report_path))
        what = "release." if name is None else f"release.variants {name!r} "
        return _Subject(
            variant=name, params=judged, report=report, report_bytes=report_bytes,
            model=_inside(root, spec.promoted.path, f"{what}{'promoted.' if name is None else ''}path"),
            data=_inside(root, spec.data, f"{what}data"),
            calibration=(_inside(root, spec.calibration, f"{what}calibration")
                         if report.get("calibration") is not None else None))


@contextlib.contextmanager
def _about(variant: str | None) -> Iterator[None]:
    """A refusal about a variant starts with its name (``variant NAME: ...``)."""
    if variant is None:
        yield
        return
    try:
        yield
    except RelgateError as exc:
        raise type(exc)(f"variant {variant}: {exc.message}", hint=exc.hint) from None


@dataclass(frozen=True, kw_only=True)
class _Judged:
    """A subject staged, re-evaluated and judged (steps 2-4 of DESIGN.md "Promotion")."""

    subject: _Subject
    digest: Any
    staged_model: Path
    data_sha: str
    calibration_sha: str | None
    calibration_bytes: bytes | None
    fresh: dict[str, Any]
    verdict: Any
    reproductions: tuple[Reproduction, ...]
    report_sha: str
    #: promote's own measurement of the resource budgets (None when params declare none)
    fresh_resources: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class _Built:
    """A staging folder filled and judged: its files' digests and what promotion decided."""

    files: Mapping[str, FileDigest]
    record: Mapping[str, Any]
    verdict: Mapping[str, Any]
    reproductions: tuple[Reproduction, ...]
    #: the promoted model's resources: reported (as in its report) and fresh (re-measured)
    resources: Mapping[str, Any] | None = None


def _build(params: Params, *, root: Path, staging: Path, subjects: list[_Subject],
           unjudged: tuple[tuple[Any, Path], ...], pinned: Mapping[str, Any] | None,
           mirror_path: Path, links: DvcCacheLinks | None = None) -> _Built:
    """Steps 2-5 of DESIGN.md "Promotion", inside the private staging folder.

    Each evidence file is copied in once, hashed while copying; the copies are checked
    against the report, re-evaluated, judged and (the test splits aside) published as they
    are. Nothing is read by its registry path again, so a file swapped there mid-promotion
    changes nothing: what was hashed is what is evaluated and published. Gate failures of
    the promoted model and of every evaluated variant are reported together.
    """
    spec = params.release
    files: dict[str, FileDigest] = {}
    evidence = staging / EVIDENCE_DIR
    evidence.mkdir()
    judged = [_judge(s, root=root, staging=staging, files=files, evidence=evidence, links=links)
              for s in subjects]
    main = judged[0]
    failed = [("" if j.subject.variant is None else f"variant {j.subject.variant}: ") + reason
              for j in judged if not j.verdict.passed for reason in j.verdict.reasons]
    if failed:
        raise GateFailed("gates failed: " + "; ".join(failed),
                         hint="the model stays unreleased; improve it or change the gates by review")

    # 5. the rest of the bundle: variants (copied once, like the model), record, card
    by_name: dict[str, dict[str, Any]] = {}
    for j in judged[1:]:
        variant = spec.variant(str(j.subject.variant))
        entry = _artifact_record(variant, j.digest, j.fresh["model"]["contract"],
                                 path=j.staged_model)
        by_name[variant.name] = {**entry, "name": variant.name, "evaluated": True,
                                 "evaluation": _evaluation_record(j)}
    for variant, source in unjudged:
        staged = staging / variant.path
        vdigest = _stage_model(source, staged, links=_links_for(links, variant.path))
        files.update(_bundle_files(variant.path, vdigest))
        with _named_as({staged: variant.path}):
            entry = _artifact_record(variant, vdigest, None, path=staged)
        by_name[variant.name] = {**entry, "name": variant.name, "evaluated": False}
    artifacts = [_artifact_record(spec.promoted, main.digest, main.fresh["model"]["contract"],
                                  path=main.staged_model),
                 *(by_name[v.name] for v in spec.variants)]  # in params order
    artifacts += _stage_sidecars(params, root=root, staging=staging, files=files, links=links)
    parity = _stage_parity(params, root=root, staging=staging, files=files,
                           checked={"model": main.digest.sha256, "data": main.data_sha})
    shas = {"report": main.report_sha, "calibration": main.calibration_sha, "data": main.data_sha}
    record = _release_record(params, root=root, shas=shas, artifacts=artifacts,
                             gates=main.verdict.to_dict(), metrics=main.fresh["metrics"],
                             reproductions=list(main.reproductions))
    if parity is not None:
        record["evidence"]["parity"] = parity
    record.update(task_record(main.fresh))
    if main.fresh.get("resources") is not None:  # the report's measurement: the bundle's bytes
        record["resources"] = {"reported": main.fresh["resources"]}  # depend on evidence only
    if main.fresh.get("slices") is not None:  # the slice rules as promote re-ran them
        record["slices"] = slices_summary(main.fresh["slices"])
    if main.calibration_bytes is not None and main.calibration_sha is not None:
        record["calibration"] = calibration_summary(
            loads_strict(main.calibration_bytes, source=spec.calibration),
            sha256=main.calibration_sha)
    schemas.validate(record, "release", source="release record")
    from relgate.card import model_card

    files[RELEASE_FILE] = _write_new(staging / RELEASE_FILE, dumps(record))
    files[CARD_FILE] = _write_new(staging / CARD_FILE, model_card(record).encode("utf-8"))
    from relgate.bundle import force_rmtree

    force_rmtree(evidence)  # the test splits are evidence, not part of the bundle
    if os.path.lexists(evidence):
        raise InputError(f"{evidence}: cannot remove the staged copy of the test split",
                         hint="check the folder's permissions, then promote again")

    # a name is bound to one bundle: a pinned release is rebuilt byte for byte or refused
    expected = compute_root_digest(files)
    if pinned is not None and pinned["bundle"]["root_digest"] != expected:
        raise PublishRefused(_pin_mismatch(spec.name, mirror_path, pinned, files),
                             hint=f"a release never changes: pull the released bundle from the "
                                  f"registry's remote (dvc pull {spec.core_dir}) instead of "
                                  "rebuilding it here, or publish under a new release.name")
    # each report is published as written: its verdict and environment must be the re-computed ones
    for j in judged:
        lies = verdict_differences(j.subject.report, j.fresh, tolerance_for=spec.tolerance_for)
        if lies:
            with _about(j.subject.variant):
                raise NotReproduced(
                    "the validation report's verdict, gates or environment are not the ones "
                    "promote re-computed, and the report is published as written: "
                    + "; ".join(lies),
                    hint="re-run validation with the params in force, on this machine (dvc repro "
                         "validate), then promote")
    resources = None if main.fresh_resources is None else {
        "reported": main.fresh.get("resources"), "fresh": main.fresh_resources}
    return _Built(files=files, record=record, verdict=main.verdict.to_dict(),
                  reproductions=main.reproductions, resources=resources)


def _judge(subject: _Subject, *, root: Path, staging: Path, files: dict[str, FileDigest],
           evidence: Path, links: DvcCacheLinks | None = None) -> _Judged:
    """Steps 2-4 for one subject: stage its model, test split, calibration and report (each
    read once, hashed while copied), check them against the report, re-evaluate the staged
    copies at the report's threshold, compare within tolerance, and apply the gates of the
    params in force (not the ones the report claims). Refusals of a variant name it."""
    from relgate import hashing
    from relgate.gates import apply_gates
    from relgate.metrics import MetricEstimate
    from relgate.validation import baseline_for_params, run_validation

    params, report = subject.params, subject.report
    spec = params.release
    with _about(subject.variant):
        # 2. the evidence must be the files we have now, byte for byte
        model = staging / spec.promoted.path
        if os.path.lexists(model):
            raise InputError(f"{spec.promoted.path}: two models of the release share this path",
                             hint="give each artifact a path of its own")
        digest = _stage_model(subject.model, model,
                              links=_links_for(links, spec.promoted.path))
        files.update(_bundle_files(spec.promoted.path, digest))
        # one folder per subject; "_promoted" is no variant's name (names start alphanumeric)
        folder = evidence / ("_promoted" if subject.variant is None else subject.variant)
        folder.mkdir()
        data = folder / subject.data.name
        _, data_sha = hashing.copy_and_hash(subject.data, data)
        calibration: Path | None = None
        calibration_sha: str | None = None
        calibration_bytes: bytes | None = None
        if subject.calibration is not None:
            calibration_bytes = read_capped(subject.calibration, max_bytes=MAX_JSON_BYTES,
                                            what="calibration")
            name = subject.bundle_path(CALIBRATION_FILE)
            calibration = staging / name
            calibration.parent.mkdir(parents=True, exist_ok=True)
            files[name] = _write_new(calibration, calibration_bytes)
            calibration_sha = files[name].sha256
        report_name = subject.bundle_path(REPORT_FILE)
        (staging / report_name).parent.mkdir(parents=True, exist_ok=True)
        files[report_name] = _write_new(staging / report_name, subject.report_bytes)
        problems = []
        if digest.sha256 != report["model"]["sha256"]:
            problems.append(f"{spec.promoted.path} changed after validation (sha256 "
                            f"{digest.sha256[:12]}… != report {report['model']['sha256'][:12]}…)")
        if data_sha != report["data"]["sha256"]:
            problems.append(f"{spec.data} is not the data the report was computed on")
        if calibration_sha is not None and calibration_sha != report["calibration"]["sha256"]:
            problems.append(f"{spec.calibration} changed after validation")
        if problems:
            raise NotReproduced("evidence does not match the artifacts: " + "; ".join(problems),
                                hint="re-run validation (dvc repro validate) and promote again")

        # 3. re-evaluate the staged copies with the same code path and compare within tolerance
        labels = {model: spec.promoted.path, data: spec.data}
        if calibration is not None:
            labels[calibration] = spec.calibration
        with _named_as(labels):
            outcome = run_validation(model, data, calibration_path=calibration, params=params,
                                     model_label=spec.promoted.path, data_label=spec.data,
                                     calibration_label=None if calibration is None
                                     else spec.calibration,
                                     baseline=baseline_for_params(params, root=root),
                                     threshold=reported_threshold(report),
                                     batch_size=reported_batch(report), promoting=report)
        fresh = outcome.report
        if "threshold_source" not in report:  # a report written before relgate recorded it
            fresh.pop("threshold_source", None)
        used = {"model": fresh["model"]["sha256"], "data": fresh["data"]["sha256"],
                "calibration": (fresh.get("calibration") or {}).get("sha256")}
        checked = {"model": digest.sha256, "data": data_sha, "calibration": calibration_sha}
        if used != checked:
            changed = ", ".join(k for k in used if used[k] != checked[k])
            raise NotReproduced(f"{changed} changed during promotion (re-evaluated bytes differ "
                                "from the checked ones)",
                                hint="promote again once nothing writes to them")
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
        if params.resources is not None:  # memory and size reproduce; timings are recorded
            from relgate.resources import fresh_breaches, reproduction_problems

            moved += reproduction_problems(report.get("resources"), outcome.fresh_resources or {},
                                           params.resources)
        if moved:
            raise NotReproduced("re-evaluation does not reproduce the report: " + "; ".join(moved),
                                hint="the report was edited or the model/data/environment changed")
        if params.resources is not None:
            breaches = fresh_breaches(outcome.fresh_resources or {}, params.resources)
            if breaches:
                raise GateFailed("resource budgets failed: " + "; ".join(breaches),
                                 hint="the model stays unreleased; make it fit, or change the "
                                      "budget by review")

    # 4. the gates of the params in force (not the ones the report claims)
    metrics = {k: MetricEstimate.from_dict(v) for k, v in fresh["metrics"].items()}
    verdict = apply_gates(params.gates, metrics, deltas=_baseline_deltas(fresh))
    if params.resources is not None:  # budgets, judged on the report's measurement
        from relgate.gates import GateVerdict
        from relgate.resources import gate_results, with_budgets

        verdict = GateVerdict.from_dict(with_budgets(
            verdict.to_dict(), gate_results(report.get("resources"), params.resources)))
    if (fresh.get("slices") or {}).get("passed") is False:  # issue 19: slice rules, as re-run
        from relgate.gates import GateVerdict

        verdict = GateVerdict(mode=verdict.mode, passed=False, results=verdict.results,
                              reasons=(*verdict.reasons, *fresh["slices"]["reasons"]))
    return _Judged(subject=subject, digest=digest, staged_model=model, data_sha=data_sha,
                   calibration_sha=calibration_sha, calibration_bytes=calibration_bytes,
                   fresh=fresh, verdict=verdict, reproductions=tuple(reproductions),
                   report_sha=files[report_name].sha256,
                   fresh_resources=outcome.fresh_resources)


def _evaluation_record(judged: _Judged) -> dict[str, Any]:
    """What the release record says of an evaluated variant: its evidence (registry paths and
    sha256), the gates' verdict and the re-computed metrics, task and threshold."""
    s = judged.subject
    spec = s.params.release
    out: dict[str, Any] = {
        "report": {"path": spec.report, "sha256": judged.report_sha},
        "calibration": None if judged.calibration_sha is None
        else {"path": spec.calibration, "sha256": judged.calibration_sha},
        "data": {"path": spec.data, "sha256": judged.data_sha},
        "gates": judged.verdict.to_dict(), "metrics": dict(judged.fresh["metrics"]),
    }
    out.update(task_record(judged.fresh))
    return out


def _stage_parity(params: Params, *, root: Path, staging: Path, files: dict[str, FileDigest],
                  checked: Mapping[str, str]) -> dict[str, str] | None:
    """``parity:`` at promote: the reported record (read once, published as read) must be the
    one a fresh run gives, on the very model and test split promote checked, and its bounds
    must hold. None without ``parity:``; the record's file reference otherwise."""
    spec = params.parity
    if spec is None:
        return None
    from relgate.parity import check_parity, record_differences

    path = _inside(root, spec.record, "parity.record")
    raw = read_capped(path, max_bytes=MAX_JSON_BYTES, what="parity record")
    reported = loads_strict(raw, source=spec.record)
    schemas.validate(reported, "parity", source=spec.record)
    fresh = check_parity(params, root).record
    problems = record_differences(reported, fresh)  # parity's own tolerance (1e-9)
    ran_on = {"model": fresh["model"]["sha256"], "data": fresh["data"]["sha256"]}
    if spec.data in (None, params.release.data) and ran_on != dict(checked):
        problems.append("the parity run read other bytes than the ones promote checked "
                        "(a file changed during promotion)")
    elif ran_on["model"] != checked["model"]:
        problems.append(f"{spec.record} is for another model than {params.release.promoted.path}")
    if problems:
        raise NotReproduced("parity does not reproduce: " + "; ".join(problems),
                            hint="re-run relgate parity (dvc repro), then promote again")
    if fresh["reasons"]:
        raise GateFailed("parity gates failed: " + "; ".join(fresh["reasons"]),
                         hint="the exported ONNX must agree with the model you deploy")
    files[PARITY_FILE] = _write_new(staging / PARITY_FILE, raw)
    return {"path": spec.record, "sha256": files[PARITY_FILE].sha256}


def verdict_differences(report: Mapping[str, Any], fresh: Mapping[str, Any], *,
                        tolerance_for: Callable[[str], float]) -> list[str]:
    """Where the report's ``passed``, ``reasons``, ``gates`` and ``environment`` differ from the
    re-computed ones (reason sentences included, compared exactly).

    Promotion publishes the validation report byte for byte (the bundle must rebuild to the
    same bytes from the same evidence, so it cannot hold a report re-computed on whichever
    machine promotes); these fields are therefore required to be the ones it re-computes.
    """
    pick = ("passed", "reasons", "gates", "environment")
    return report_differences({k: report[k] for k in pick if k in report},
                              {k: fresh[k] for k in pick if k in fresh},
                              tolerance_for=tolerance_for, skip=frozenset(), sentences=True)


@contextlib.contextmanager
def _named_as(labels: Mapping[Path, str]) -> Iterator[None]:
    """Errors raised inside name the registry's files, not their private staged copies."""
    try:
        yield
    except RelgateError as exc:
        message = exc.message
        for staged, label in sorted(labels.items(), key=lambda kv: -len(str(kv[0]))):
            message = message.replace(str(staged), label)
        if message == exc.message:
            raise
        raise type(exc)(message, hint=exc.hint) from None


def _bundle_files(art_path: str, digest: Any) -> dict[str, FileDigest]:
    """The bundle paths and digests of a model's files (``art_path`` is the .onnx's path)."""
    folder = PurePosixPath(art_path).parent
    return {str(folder / f.path): FileDigest(size=f.size, sha256=f.sha256) for f in digest.files}


def _write_new(path: Path, data: bytes) -> FileDigest:
    """Write *data* to a new file (never over one); its digest, from the bytes in hand."""
    with open(path, "xb") as fh:
        fh.write(data)
    return FileDigest(size=len(data), sha256=_digest(data))


def _stage_model(src: Path, dst: Path, *, links: DvcCacheLinks | None = None) -> Any:
    """Copy a model and its external data files to *dst*, hashing while copying: its ModelDigest.

    The .onnx is read once, by the copy; the external data locations are read from the copy;
    each data file is then read once, from the model's folder, through no symlink (every
    component opened with O_NOFOLLOW), and only as a single-link regular file. The ONNX
    confinement checks (locations, offsets, lengths) then run on the staged copies, which
    nobody else can write, and must find exactly the files that were copied.
    *links* (the model folder's view of the registry's DVC cache, or None): an external
    data file that is a link into that cache is read through its cache entry.
    """
    from relgate import hashing
    from relgate.errors import ModelError
    from relgate.manifest import open_root
    from relgate.onnxmodel import FileEntry, ModelDigest, external_data_files

    dst.parent.mkdir(parents=True, exist_ok=True)
    size, sha = hashing.copy_and_hash(src, dst)
    entries = {dst.name: FileEntry(path=dst.name, size=size, sha256=sha)}
    locations = [rel for rel in _external_locations(dst, shown=src) if rel != dst.name]
    if locations:
        dir_fd = open_root(src.parent)
        try:
            for rel in sorted(set(locations)):
                entries[rel] = _stage_external(dir_fd, src, rel, dst.parent / rel, links=links)
        finally:
            os.close(dir_fd)
    with _named_as({dst: str(src)}):
        found = {e.path for e in external_data_files(dst)} | {dst.name}
    if found != set(entries):
        raise ModelError(f"{src}: its external data files ({', '.join(sorted(found))}) are not the "
                         f"ones copied ({', '.join(sorted(entries))})", hint="re-export the model")
    files = tuple(sorted(entries.values(), key=lambda e: e.path))
    return ModelDigest(sha256=_model_sha256(files), files=files)


def _external_locations(model: Path, *, shown: Path) -> list[str]:
    """The external data locations a staged .onnx names, as plain paths relative to its folder."""
    import onnx

    from relgate.errors import ModelError
    from relgate.onnxmodel import _external_info, _iter_tensors, _load_proto, _model_file

    with _named_as({model: str(shown)}):
        proto = _load_proto(_model_file(model))
        try:
            tensors = list(_iter_tensors(proto))
        except RecursionError:
            raise ModelError(f"{shown}: graph nesting too deep",
                             hint="this is not a reasonable model") from None
        out = []
        for t in tensors:
            if t.data_location != onnx.TensorProto.EXTERNAL:
                continue
            location = _external_info(model, t.name or "<unnamed>", t.external_data).get("location", "")
            parts = [p for p in location.split("/") if p not in ("", ".")]
            if (not parts or location.startswith("/") or ".." in parts
                    or any(c in location for c in "\\\x00\n\r") or location[1:2] == ":"):
                raise ModelError(f"{shown}: tensor {t.name!r} external data location "
                                 f"{location[:80]!r} is not a plain relative path inside the "
                                 "model's folder", hint="external data must be a file next to the model")
            out.append("/".join(parts))
    return out


def _links_for(links: DvcCacheLinks | None, model: str) -> DvcCacheLinks | None:
    """The registry's DVC cache links seen from the folder of the model at *model* (a
    registry path), or None when links are refused."""
    return None if links is None else links.at(str(PurePosixPath(model).parent))


def _stage_external(dir_fd: int, model: Path, rel: str, dst: Path, *,
                    links: DvcCacheLinks | None = None) -> Any:
    """Copy one external data file from the model's folder (open *dir_fd*), hashing it;
    *links*: a DVC cache link is read through its cache entry (relgate.dvclinks)."""
    import errno
    import stat

    from relgate import hashing
    from relgate.dvclinks import PROMOTE_HINT as HINT
    from relgate.dvclinks import LinkRefused, is_link, refused_input
    from relgate.errors import ModelError
    from relgate.manifest import open_in_tree
    from relgate.onnxmodel import FileEntry

    what = f"{model}: external data file {rel!r}"
    via_cache = False
    try:
        if links is not None and is_link(os.stat(rel, dir_fd=dir_fd, follow_symlinks=False)):
            via_cache = True
            try:
                fd, st = links.open_at(dir_fd, rel)
            except LinkRefused as refused:
                raise refused_input(what, refused.reason) from None
        else:
            fd, st = open_in_tree(dir_fd, rel)
    except FileNotFoundError:
        raise ModelError(f"{what} is missing",
                         hint="copy the model together with its data file(s) (e.g. model.onnx.data)"
                         ) from None
    except OSError as exc:
        why = ("is or goes through a symlink; refusing to follow it out of the model's folder"
               if exc.errno in (errno.ELOOP, errno.ENOTDIR) else f"cannot be opened ({exc.strerror})")
        raise ModelError(f"{what} {why}", hint=HINT) from None
    try:
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"{what} is not a regular file", hint="re-export the model")
        if st.st_nlink > 1 and not via_cache:
            raise ModelError(f"{what} is a hard-linked file ({st.st_nlink} links); it may be "
                             "shared with a file outside the model's folder", hint=HINT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        size, sha = hashing.copy_and_hash(fd, dst)
    finally:
        os.close(fd)
    return FileEntry(path=rel, size=size, sha256=sha)


def _model_sha256(files: tuple[Any, ...]) -> str:
    """The model's sha256 from its files' digests (onnxmodel.model_digest's definition: the
    file's own sha256 for a single file, else sha256 over ``"<sha256>  <path>\\n"`` lines).
    The re-evaluation's own digest of the staged copy is compared with it, so a divergence
    is a refusal, never a pass."""
    if len(files) == 1:
        return str(files[0].sha256)
    text = "".join(f"{f.sha256}  {f.path}\n" for f in files)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_pin(path: Path, mirror: Mapping[str, Any]) -> None:
    """Write the git-tracked pin once: never over an existing one (another promoter of the
    same bundle may have written it first; then it must pin the same root digest)."""
    from relgate.jsonio import write_error

    schemas.validate(mirror, "release", source=str(path))
    data = dumps(mirror)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
        except FileExistsError:
            other = _read_pin(path)
            if other is None or other["bundle"]["root_digest"] != mirror["bundle"]["root_digest"]:
                raise PublishRefused(f"{path}: pins another root digest than the bundle just "
                                     "published", hint="inspect both; a release never changes") from None
        from relgate.jsonio import fsync_dir

        fsync_dir(path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


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


#: what the pin adds to the bundle's release record (``_mirror``), in provenance
_PUBLICATION_FACTS = ("git_commit", "git_dirty", "dvc_lock_sha256", "environment")


def _pinned_bundle_files(pinned: Mapping[str, Any]) -> dict[str, str]:
    """sha256 by bundle path of the bundle a pin describes, rebuilt from the pin alone."""
    from relgate.card import model_card

    out: dict[str, str] = {}
    for art in pinned["artifacts"]:
        folder = PurePosixPath(art["path"]).parent
        for f in art["files"]:
            out[str(folder / f["path"])] = f["sha256"]
    for art in pinned["artifacts"]:
        evaluation = art.get("evaluation")
        if evaluation is not None:  # an evaluated variant's report and calibration
            folder = PurePosixPath(VARIANTS_DIR) / art["name"]
            out[str(folder / REPORT_FILE)] = evaluation["report"]["sha256"]
            if evaluation.get("calibration") is not None:
                out[str(folder / CALIBRATION_FILE)] = evaluation["calibration"]["sha256"]
    out[REPORT_FILE] = pinned["evidence"]["validation_report"]["sha256"]
    if pinned["evidence"].get("calibration") is not None:
        out[CALIBRATION_FILE] = pinned["evidence"]["calibration"]["sha256"]
    if pinned["evidence"].get("parity") is not None:
        out[PARITY_FILE] = pinned["evidence"]["parity"]["sha256"]
    record = {k: v for k, v in pinned.items()
              if k not in ("created", "bundle", "signature", "attestation")}
    record["provenance"] = {k: v for k, v in pinned["provenance"].items()
                            if k not in _PUBLICATION_FACTS}
    out[RELEASE_FILE] = _digest(dumps(record))
    out[CARD_FILE] = _digest(model_card(record).encode("utf-8"))
    return out


def _pin_mismatch(name: str, mirror_path: Path, pinned: Mapping[str, Any],
                  files: Mapping[str, FileDigest]) -> str:
    """Why this promotion would not rebuild the pinned bundle: the files that differ, and the
    likely cause (this machine against the environment the pin records)."""
    base = (f"release {name} already published with root digest "
            f"{pinned['bundle']['root_digest'][:16]}… ({mirror_path}); this promotion would publish ")
    want = _pinned_bundle_files(pinned)
    differ = sorted(p for p in {*files, *want} if (files[p].sha256 if p in files else None)
                    != want.get(p))
    more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
    text = base + "different content: " + ", ".join(differ[:6] or ["the same files"]) + more
    causes = _likely_causes(pinned)
    return text + ("; likely cause: " + "; ".join(causes) if causes
                   else "; this machine matches the pinned environment, so the params, gates or "
                        "evidence changed")


def _likely_causes(pinned: Mapping[str, Any]) -> list[str]:
    """What differs between this machine and the one the pin was built on, most likely first."""
    from relgate.numeric_env import environment_differences, host_environment

    prov = pinned["provenance"]
    recorded = prov.get("environment")
    causes = [] if recorded is None else environment_differences(recorded, host_environment())
    here = package_versions()
    for pkg, version in sorted(prov["packages"].items()):
        if here.get(pkg) != version and not any(c.startswith(f"{pkg} ") for c in causes):
            causes.append(f"{pkg} {here.get(pkg, 'absent')} here vs {version} pinned")
    if prov["platform"] != platform_string() and recorded is None:
        causes.append(f"platform {platform_string()} here vs {prov['platform']} pinned")
    if recorded is None:
        causes.append("the pin records no host environment (an older relgate), so the CPUs "
                      "cannot be compared")
    return causes


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
        "schema_version": 1, "kind": "release", "name": spec.name, "tag": spec.tag,
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
            # the declared seed (null when params set none, rather than the default 0)
            "params": _recorded_params(params), "seed": params.raw.get("seed"),
            "packages": package_versions(), "platform": platform_string(),
        },
    }


#: the keys of a validation report's ``task`` block that a release record carries
_TASK_KEYS = ("kind", "output", "output_type", "reducer", "positive", "n_classes", "classes",
              "top_k")


def _recorded_params(params: Params) -> dict[str, Any]:
    """The params a release record keeps: all of them but how files were read
    (``release.allow_dvc_cache_links``), which is no property of the release: the same
    evidence read through DVC's links or from copies builds the same bundle, byte for byte."""
    doc = thaw(params.raw)
    doc["release"].pop("allow_dvc_cache_links", None)
    return dict(doc)


def slices_summary(slices: Mapping[str, Any]) -> dict[str, Any]:
    """What a release record (and its card) says of the gates per slice: the correction for
    many slices, the smallest gated slice, and each rule with its verdict and the slices it
    judged or left out as too small."""
    return {
        "correction": slices.get("correction"), "min_support": slices.get("min_support"),
        "passed": bool(slices.get("passed")),
        "rules": [{"rule": r.get("rule"), "passed": bool(r.get("passed")),
                   "reason": r.get("reason"), "slices": list(r.get("slices") or []),
                   "too_small": list(r.get("too_small") or [])}
                  for r in slices.get("results") or []],
    }


def task_record(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the release record says the model outputs, from the re-validated report (never the
    params text): ``task`` (its declared kind, output and classes), ``threshold`` (the decision
    threshold the report used: 0 for a multi-class argmax) and, when a multi-class calibration
    chose one, ``selective_threshold`` (the "no conclusive" confidence). A report without a
    task block (written before relgate declared tasks) adds only the threshold."""
    out: dict[str, Any] = {"threshold": float(report["threshold"])}
    task = report.get("task")
    if isinstance(task, Mapping):
        out["task"] = {k: task[k] for k in _TASK_KEYS if task.get(k) is not None}
        if task.get("kind") != "multiclass":
            out["task"].pop("n_classes", None)
            positive = (report["model"].get("contract") or {}).get("positive_index")
            if "positive" not in out["task"] and isinstance(positive, int):
                out["task"]["positive"] = positive
    selective = (report.get("calibration") or {}).get("selective")
    if isinstance(selective, Mapping) and selective.get("threshold") is not None:
        out["selective_threshold"] = float(selective["threshold"])
    return out


def reported_batch(report: Mapping[str, Any]) -> int | None:
    """The batch size promote re-evaluates at: the one a memory budget chose for the report
    (its ``resources.batch``), so that a re-measured budget cannot move a score; else None
    (sized as validation sizes it, which is deterministic without a budget)."""
    chosen = ((report.get("resources") or {}).get("batch") or {}).get("chosen")
    return chosen if isinstance(chosen, int) and not isinstance(chosen, bool) and chosen >= 1 \
        else None


def reported_threshold(report: Mapping[str, Any]) -> float | None:
    """The threshold promote re-evaluates at: the report's when it came from the command line
    (``validate --threshold``), else None (the calibration's, or the default, as validation
    chose). A report without ``threshold_source`` (older relgate) is re-evaluated as before."""
    if report.get("threshold_source") != "command line":
        return None
    thr = float(report["threshold"])
    if not 0.0 <= thr <= 1.0:  # NaN included: validate --threshold never writes one
        raise InputError(f"{_report_label(report)}: threshold {thr!r} is not a probability",
                         hint="re-run validation (relgate validate --threshold P, 0 <= P <= 1)")
    return thr


def _report_label(report: Mapping[str, Any]) -> str:
    """How errors name the validation report (its model, as the report records it)."""
    return f"validation report of {report['model']['path']}"


def calibration_summary(calibration: Mapping[str, Any], *, sha256: str) -> dict[str, Any]:
    """The recommended calibration as the release record shows it, from the calibration file
    promote checked (*sha256*): input scale/offset, the probability method and its parameters,
    and the binary threshold and inconclusive band, or the multi-class selective threshold."""
    prob = calibration["probability"]
    out: dict[str, Any] = {"sha256": sha256, "method": prob["method"]}
    if prob["method"] == "platt":
        out.update(a=float(prob["a"]), b=float(prob["b"]))
    elif prob.get("temperature") is not None:
        out["temperature"] = float(prob["temperature"])
    if isinstance(calibration.get("input"), Mapping):
        out["input"] = {"scale": float(calibration["input"]["scale"]),
                        "offset": float(calibration["input"]["offset"])}
    if isinstance(calibration.get("threshold"), Mapping):
        out["threshold"] = float(calibration["threshold"]["value"])
    band = calibration.get("inconclusive")
    if isinstance(band, Mapping) and band.get("low") is not None and band.get("high") is not None:
        out["inconclusive"] = {"low": float(band["low"]), "high": float(band["high"])}
    selective = calibration.get("selective")
    if isinstance(selective, Mapping) and selective.get("threshold") is not None:
        out["selective_threshold"] = float(selective["threshold"])
    return out


def _sidecar_name_problem(rel: str, taken: Mapping[str, str]) -> str | None:
    """Why *rel* cannot be a sidecar's bundle path (None if it can); *taken* maps the casefolded
    names already in the bundle to what holds them."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\\" in rel \
            or any(ord(c) < 32 for c in rel):
        return f"{rel!r} must be a relative path inside the registry"
    name = str(pure).casefold()
    if pure.parts[0].startswith(".relgate"):
        return f"{rel!r} is inside relgate's private staging name {pure.parts[0]!r}"
    for key, holder in sorted(taken.items()):  # the same name, or one is the other's folder
        if key == name or key.startswith(name + "/") or name.startswith(key + "/"):
            return f"{rel!r} clashes with {holder} in the bundle"
    return None


def check_sidecars(params: Params, *, root: Path, links: DvcCacheLinks | None = None) -> None:
    """Refuse ``release.files`` that promote could not ship as they are, before anything is
    written (InputError, exit 2): a path outside the registry, a name another bundle file has
    (release.json, manifest.json, README.md, calibration.json, validation_report.json, an
    artifact, another sidecar), and a file that is missing, a folder, a symlink (or reached
    through one) or hard-linked. ``_stage_sidecars`` opens each again the same way to copy it."""
    from relgate.manifest import open_root

    spec = params.release
    taken = {n.casefold(): n for n in RESERVED_NAMES}
    for v in spec.variants:
        if v.evaluated:
            for file in (REPORT_FILE, CALIBRATION_FILE):
                name = f"{VARIANTS_DIR}/{v.name}/{file}"
                taken[name.casefold()] = f"variant {v.name}'s {file}"
    for art in (spec.promoted, *spec.variants):
        problem = _sidecar_name_problem(art.path, taken)
        if problem is not None:
            raise InputError(f"release artifacts: {problem}",
                             hint="give each artifact a path of its own")
        taken[str(PurePosixPath(art.path)).casefold()] = f"artifact {art.path}"
    for side in spec.files:
        problem = _sidecar_name_problem(side.path, taken)
        if problem is not None:
            raise InputError(f"release.files: {problem}",
                             hint="ship a file of the registry under a name of its own")
        taken[str(PurePosixPath(side.path)).casefold()] = f"sidecar {side.path}"
    if not spec.files:
        return
    root_fd = open_root(root)
    try:
        for side in spec.files:
            fd, _ = _open_sidecar(root_fd, side.path, links=links)
            os.close(fd)
    finally:
        os.close(root_fd)


def _open_sidecar(root_fd: int, rel: str, *,
                  links: DvcCacheLinks | None = None) -> tuple[int, os.stat_result]:
    """Open a sidecar under the registry root through no symlink, as a single-link regular
    file: ``(fd, fstat)``, or a one-line InputError. With *links* (the registry's DVC cache),
    a link into that cache is opened through the cache entry DVC names for it instead."""
    import errno
    import stat

    from relgate.dvclinks import PROMOTE_HINT as HINT
    from relgate.dvclinks import LinkRefused, is_link, refused_input
    from relgate.manifest import open_in_tree

    what = f"release.files: {rel}"
    name = str(PurePosixPath(rel))
    if links is not None:
        try:
            lst: os.stat_result | None = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        except OSError:
            lst = None
        if lst is not None and is_link(lst):
            try:
                return links.open_at(root_fd, name)
            except LinkRefused as refused:
                raise refused_input(what, refused.reason) from None
    try:
        fd, st = open_in_tree(root_fd, name)
    except FileNotFoundError:
        raise InputError(f"{what} does not exist", hint="run the pipeline first (dvc repro)") from None
    except OSError as exc:
        why = ("is or goes through a symlink; refusing to follow it out of the registry"
               if exc.errno in (errno.ELOOP, errno.ENOTDIR) else f"cannot be opened ({exc.strerror})")
        raise InputError(f"{what} {why}", hint=HINT) from None
    try:
        if not stat.S_ISREG(st.st_mode):
            from relgate.hashing import file_kind

            raise InputError(f"{what} is not a regular file ({file_kind(st.st_mode)})",
                             hint="list files, not folders, in release.files")
        if st.st_nlink > 1:
            raise InputError(f"{what} is a hard-linked file ({st.st_nlink} links); it may be "
                             "shared with a file outside the registry", hint=HINT)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _stage_sidecars(params: Params, *, root: Path, staging: Path,
                    files: dict[str, FileDigest], links: DvcCacheLinks | None = None) -> list[dict[str, Any]]:
    """Copy each ``release.files`` entry into *staging* once, hashing what is copied; add its
    digest to *files* and return its release-record entries (role ``file``). Sidecars are
    bytes: never parsed, never loaded as a model."""
    from relgate import hashing
    from relgate.manifest import open_root

    out: list[dict[str, Any]] = []
    if not params.release.files:
        return out
    root_fd = open_root(root)
    try:
        for side in params.release.files:
            name = str(PurePosixPath(side.path))
            dst = staging / name
            fd, _ = _open_sidecar(root_fd, side.path, links=links)
            try:
                try:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    clash = name in files or os.path.lexists(dst)
                except OSError:  # a folder on the way is a staged file
                    clash = True
                if clash:
                    raise InputError(f"release.files: {side.path!r} clashes with another file "
                                     "of the bundle (an artifact's data file?)",
                                     hint="ship a file of the registry under a name of its own")
                size, sha = hashing.copy_and_hash(fd, dst)
            finally:
                os.close(fd)
            files[name] = FileDigest(size=size, sha256=sha)
            entry: dict[str, Any] = {
                "path": name, "role": "file", "sha256": sha, "size": size,
                "files": [{"path": dst.name, "size": size, "sha256": sha}]}
            if side.description:
                entry["description"] = side.description
            out.append(entry)
    finally:
        os.close(root_fd)
    return out


def _mirror(record: Mapping[str, Any], *, root: Path, bundle_path: str,
            root_digest: str) -> dict[str, Any]:
    """The git-tracked release record: the bundle's record plus when and from what it was
    published (time, git commit, dirty tree, dvc.lock digest), the host environment the
    bytes were built in (CPU, architecture, numeric pins, package versions), and the pinned
    root digest.

    Those publication facts stay out of the bundle so that the bundle's bytes are a function
    of the evidence alone: promoting the same evidence again, anywhere, rebuilds the same
    bundle, and its root digest can be checked against the pin. Where it cannot (another
    CPU or package version changed a float), the recorded environment names the likely cause.
    """
    from relgate.numeric_env import host_environment

    commit, dirty, when = _git_state(root)
    lock = root / "dvc.lock"
    provenance = {**record["provenance"], "git_commit": commit, "git_dirty": dirty,
                  "dvc_lock_sha256": _sha256(lock) if lock.is_file() else None,
                  "environment": host_environment()}
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


__all__ = ["PromotionResult", "Reproduction", "calibration_summary", "check_sidecars",
           "compare_metrics", "promote", "release_tag", "reported_threshold"]
