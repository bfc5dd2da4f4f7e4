"""``relgate init``: a params.yaml and a dvc.yaml for calibrate -> validate -> promote.

A newcomer has a model and two eval splits; what they lack is the wiring. :func:`plan_init`
reads the model safely (as ``relgate inspect`` does) and writes the task and the contract
from what the graph declares or proves, never from a guess: an output whose meaning the
graph does not prove (a logit or a probability?) must be declared with ``--output-type``.
The stages call the relgate CLI only, so nothing but relgate has to be installed; a stage's
deps list the model's external data files when it has them, and its params list only the
sections the params file has (DVC refuses a missing one).

Failing gates do not fail the validate stage (``relgate validate --record-verdict``): DVC
deletes a failed stage's outputs, and the report is the evidence of why; ``relgate
promote``, the next stage, refuses the model (exit 1) and the pipeline stops there.

:func:`write_init` leaves both files or neither of the ones it creates, and never replaces
one without ``force``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from relgate.errors import InputError, UsageError

PARAMS_FILE = "params.yaml"
DVC_FILE = "dvc.yaml"
CALIBRATION = "analysis/calibration.json"
REPORT = "analysis/validation_report.json"
METRICS = "analysis/metrics.json"
PLOTS = "analysis/plots"
CORE_DIR = "models/core"

#: output types by task kind (what --output-type may say)
OUTPUT_TYPES = {"binary": ("logit", "probability"), "multiclass": ("logits", "probabilities")}


@dataclass(frozen=True, kw_only=True)
class InitPlan:
    """What ``relgate init`` writes (file name -> text) and the choices it made."""

    files: Mapping[str, str]
    choices: Sequence[str] = field(default_factory=tuple)
    next_steps: Sequence[str] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"files": sorted(self.files), "choices": list(self.choices),
                "next_steps": list(self.next_steps)}


def repo_path(root: Path, given: str, what: str) -> str:
    """*given* as a POSIX path relative to *root*: an existing regular file inside it (DVC
    stages name their deps relative to the repository, and promote confines artifacts)."""
    path = Path(given)
    full = path if path.is_absolute() else Path.cwd() / path
    try:
        rel = PurePosixPath(Path(os.path.realpath(full)).relative_to(os.path.realpath(root)))
    except ValueError:
        raise UsageError(f"{what} {given}: not inside the repository {root}",
                         hint="copy it into the repository first") from None
    if not full.is_file() or full.is_symlink():
        raise InputError(f"{what} {given}: not a regular file",
                         hint="give the path of the file itself")
    return rel.as_posix()


def plan_init(root: Path, *, model: str, val: str, test: str, task: str | None = None,
              output: str | None = None, output_type: str | None = None,
              positive: int | None = None, release: str = "v0.1.0") -> InitPlan:
    """Read the model and the splits' names; compose params.yaml and dvc.yaml."""
    from relgate.onnxmodel import inspect_model
    from relgate.params import TaskSpec

    model_rel, val_rel, test_rel = (repo_path(root, p, what) for p, what in
                                    ((model, "--model"), (val, "--val"), (test, "--test")))
    if val_rel == test_rel:
        raise UsageError("--val and --test are the same file",
                         hint="calibrate on one split and judge on another")
    kind = task or ("multiclass" if output_type in OUTPUT_TYPES["multiclass"] else "binary")
    if output_type is not None and output_type not in OUTPUT_TYPES[kind]:
        raise UsageError(f"--output-type {output_type} is not a {kind} output type",
                         hint=f"use one of: {', '.join(OUTPUT_TYPES[kind])}")
    info = inspect_model(root / model_rel, output_name=output, positive_index=positive,
                         task=TaskSpec(kind=kind, output=output, output_type=output_type))
    contract = info.contract
    proven = contract.output_type
    if proven is None:
        raise UsageError(
            f"{model}: what output {contract.score_output!r} holds is not proven by the graph "
            f"({contract.type_reason})",
            hint=f"declare it: --output-type {' or '.join(OUTPUT_TYPES[kind])}")
    if kind == "multiclass" and proven == "probability":
        proven = "probabilities"  # a ZipMap/Softmax output, read as K columns
    keys = contract.class_keys
    if kind == "binary" and keys is not None and len(keys) != 2:
        raise UsageError(f"{model}: output {contract.score_output!r} has {len(keys)} classes "
                         f"({', '.join(map(str, keys))}), not two",
                         hint="pass --task multiclass")
    externals = [(PurePosixPath(model_rel).parent / e.path).as_posix() for e in info.external]
    choices = [f"task: {kind}, output {contract.score_output!r} read as {proven} "
               f"({contract.type_reason})"]
    n_classes = _class_count(contract, keys) if kind == "multiclass" else 2
    params = _params_text(kind=kind, output=contract.score_output, output_type=proven,
                          positive=positive, contract=contract.to_dict(), release=release,
                          model=model_rel, test=test_rel, n_classes=n_classes)
    if externals:
        choices.append("external data (stage deps): " + ", ".join(externals))
    dvc = _dvc_text(kind=kind, model=model_rel, externals=externals, val=val_rel, test=test_rel)
    _self_check(params, source=f"the {PARAMS_FILE} relgate init composed")
    steps = [f"read and edit the gates in {PARAMS_FILE} (they only say 'better than guessing')",
             "dvc add " + " ".join([model_rel, *externals, val_rel, test_rel]),
             f"git add {PARAMS_FILE} {DVC_FILE} && git commit -m 'relgate init'",
             "dvc repro   # calibrate -> validate -> promote; a failing gate stops at promote",
             f"relgate verify {CORE_DIR}/{release}"]
    return InitPlan(files={PARAMS_FILE: params, DVC_FILE: dvc}, choices=tuple(choices),
                    next_steps=tuple(steps))


def _class_count(contract: Any, keys: Sequence[Any] | None) -> int | None:
    if keys is not None:
        return len(keys)
    width = (contract.output(contract.score_output).shape or [None])[-1]
    return width if isinstance(width, int) else None


def _yaml(value: Any) -> str:
    """A flow-style YAML scalar or list (JSON is YAML; names are quoted)."""
    return json.dumps(value)


def _tensor_line(t: Mapping[str, Any]) -> str:
    """One contract entry; a tensor of unknown rank (a ZipMap's sequence of maps) has no
    shape to keep."""
    line = f"    - {{name: {_yaml(t['name'])}, dtype: {_yaml(t['dtype'])}"
    if t["shape"] is None:
        return line + "}"
    return line + ", shape: [" + ", ".join(
        "null" if d is None else (str(d) if isinstance(d, int) else _yaml(d))
        for d in t["shape"]) + "]}"


def _gate_lines(kind: str, n_classes: int | None) -> list[str]:
    if kind == "binary":
        return ['    - {metric: auc, op: ">", value: 0.5, on: ci_low}  # better than chance',
                '    - {metric: f1, op: ">", value: 0.0}']
    chance = 0.5 if not n_classes else round(1.0 / n_classes, 6)
    return [f'    - {{metric: accuracy, op: ">", value: {chance}, on: ci_low}}'
            f"  # above uniform guessing (1/K){'' if n_classes else ', K unknown: edit'}",
            '    - {metric: macro_f1, op: ">", value: 0.0}']


def _params_text(*, kind: str, output: str, output_type: str, positive: int | None,
                 contract: Mapping[str, Any], release: str, model: str, test: str,
                 n_classes: int | None) -> str:
    task = [f"  kind: {kind}", f"  output: {_yaml(output)}", f"  output_type: {output_type}"]
    if positive is not None:
        task.append(f"  positive: {positive}")
    calibrate = (["  method: temperature", "  threshold:", "    strategy: max_f1", "  ece_bins: 15"]
                 if kind == "binary" else ["  method: temperature", "  ece_bins: 15"])
    lines = [
        "# Written by `relgate init`: the calibrate -> validate -> promote pipeline of dvc.yaml.",
        "# Edit the gates (the bars a release must clear) and release.name; the task and the",
        "# contract were read from the model: change them only if the model changes.",
        "schema_version: 1",
        "seed: 0",
        "",
        "# What the model outputs, declared so that relgate never guesses.",
        "task:", *task,
        "",
        "evaluate:",
        "  threads: 1          # onnxruntime intra-op threads: repeated runs give identical scores",
        "  batch_size: 1024",
        "",
        "calibrate:           # fit on the validation split",
        *calibrate,
        "",
        "validate:",
        "  bootstrap: {resamples: 1000, confidence: 0.95, seed: 7}",
        "  ece_bins: 15",
        "",
        "# EDIT: these only say 'better than guessing'; write the bars your release must clear.",
        "gates:",
        "  mode: all",
        "  rules:",
        *_gate_lines(kind, n_classes),
        "",
        "release:",
        f"  name: {_yaml(release)}      # promote publishes {CORE_DIR}/<name>/",
        "  promoted:",
        f"    path: {_yaml(model)}",
        f"    description: {_yaml(f'{kind} model, output {output} ({output_type})')}",
        "  tolerance: 0.000001  # re-evaluation at promote must match the report this closely",
        f"  report: {_yaml(REPORT)}",
        f"  calibration: {_yaml(CALIBRATION)}",
        f"  data: {_yaml(test)}",
        f"  core_dir: {_yaml(CORE_DIR)}",
        "",
        "# The model's interface; promote refuses a model that breaks it.",
        "contract:",
        "  inputs:", *(_tensor_line(t) for t in contract["inputs"]),
        "  outputs:", *(_tensor_line(t) for t in contract["outputs"]),
        "",
    ]
    return "\n".join(lines)


def _dvc_text(*, kind: str, model: str, externals: Sequence[str], val: str, test: str) -> str:
    model_deps = [model, *externals]
    plots = ["roc.csv", "pr.csv", "reliability.csv"] + (["confusion.json"] if kind == "multiclass"
                                                         else [])
    lines = [
        "# Written by `relgate init`. Every stage runs the relgate CLI; `dvc repro` runs them.",
        "# A failing gate does not fail validate (the report is the evidence of why):",
        "# promote refuses the model (exit 1) and the pipeline stops there.",
        "stages:",
        "  calibrate:",
        f"    cmd: relgate calibrate --model {model} --data {val} --out {CALIBRATION}",
        "    deps:", *(f"      - {d}" for d in [*model_deps, val]),
        "    params: [task, calibrate, evaluate, contract]",
        "    outs:",
        f"      - {CALIBRATION}:", "          cache: false",
        "  validate:",
        f"    cmd: relgate validate --model {model} --data {test} --calibration {CALIBRATION}"
        f" --out {REPORT} --metrics-out {METRICS} --plots-dir {PLOTS} --record-verdict",
        "    deps:", *(f"      - {d}" for d in [*model_deps, test, CALIBRATION]),
        "    params: [task, validate, evaluate, gates, contract]",
        "    outs:",
        f"      - {REPORT}:", "          cache: false",
        "    metrics:",
        f"      - {METRICS}:", "          cache: false",
        "    plots:", *(line for name in plots for line in (
            f"      - {PLOTS}/{name}:", "          cache: false")),
        "  promote:",
        "    cmd: relgate promote",
        "    deps:", *(f"      - {d}" for d in [*model_deps, test, CALIBRATION, REPORT]),
        "    params: [task, gates, release, validate, evaluate, contract]",
        "    outs:",
        f"      - {CORE_DIR}:", "          persist: true",
        "      - analysis/release_${release.name}.json:", "          cache: false",
        "          persist: true",
        "",
    ]
    return "\n".join(lines)


def _self_check(params_text: str, *, source: str) -> None:
    """The composed params must load (a bug here would otherwise surface in dvc repro)."""
    from relgate.params import params_from_dict, parse_yaml

    params_from_dict(parse_yaml(params_text, source=source), source=source)


def write_init(root: Path, plan: InitPlan, *, force: bool = False) -> list[str]:
    """Write the plan's files under *root*: none is replaced without *force*, and a refusal
    writes nothing. Each file is written atomically; if one fails (a full disk), the ones
    this call created are removed again, so no half-set is left. Returns the names written."""
    from relgate.jsonio import atomic_write_bytes

    refuse_existing(root, plan, force=force)
    created: list[Path] = []
    try:
        for name, text in plan.files.items():
            new = not os.path.lexists(root / name)
            atomic_write_bytes(root / name, text.encode("utf-8"))
            if new:
                created.append(root / name)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return list(plan.files)


def refuse_existing(root: Path, plan: InitPlan, *, force: bool) -> None:
    """A UsageError (exit 2) naming the plan's files that already exist, unless *force*."""
    existing = [name for name in plan.files if os.path.lexists(root / name)]
    if existing and not force:
        raise UsageError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}"
                         f" in {root}", hint="relgate init --force replaces them")
