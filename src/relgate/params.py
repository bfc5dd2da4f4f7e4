"""The one typed loader of params.yaml.

Safe YAML only, with the YAML 1.1 traps closed: an unquoted yes/no/on/off is
refused (YAML 1.1 reads ``no`` as false), and so is an unquoted integer that
is not plain decimal (YAML 1.1 reads ``0777`` as 511, ``1:30`` as 90 and
``1_000`` as 1000; YAML 1.2 reads ``0o17`` as 15 and ``08`` as 8): the reader
cannot know which the author meant. Floats follow YAML 1.2 so ``1e-3`` is a
number rather than a string, duplicate keys and anchors/aliases are refused,
explicit ``!!int``/``!!float``/``!!bool``/``!!null`` tags obey the same rules,
and any string field given a number (``name: 1.10`` read as 1.1) fails schema
validation with "quote the value". The result is frozen, typed records;
stages and commands never re-parse YAML.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

import yaml

from relgate import schemas
from relgate.errors import ParamsError, SchemaError
from relgate.jsonio import read_capped
from relgate.resources import ResourcesSpec
from relgate.slice_params import SlicesSpec, slices_from_dict

MAX_PARAMS_BYTES = 1024 * 1024
MAX_PARAMS_DEPTH = 64  # as for JSON records: params are a few levels deep, never thousands
MAX_INT_DIGITS = 40  # beyond 2^128: no setting needs it, and 10^4 digits cannot be converted
_AMBIGUOUS_BOOLS = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")
_DECIMAL_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
#: what PyYAML (YAML 1.1) and the YAML 1.2 core schema read as integers, beyond plain decimal
_YAML11_INT = re.compile(
    r"""^[-+]?(?:0b[0-1_]+|0[0-7_]+|0x[0-9a-fA-F_]+|[1-9][0-9_]*(?::[0-5]?[0-9])+
    |0|[1-9][0-9_]*)$""",
    re.X,
)
_YAML12_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
#: plain scalars that YAML 1.1 or YAML 1.2 reads as an integer written other than in plain
#: decimal: a radix prefix, a leading zero (octal in 1.1, decimal in 1.2), digit separators
#: (1.1 only), base 60 (1.1 only). Resolved before the int and float resolvers, and refused.
_AMBIGUOUS_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-9_]+|[-+]?0x[0-9a-fA-F_]+|0o[0-7]+
    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+|[-+]?[1-9][0-9]*_[0-9_]*)$""",
    re.X,
)
_YAML12_FLOAT = re.compile(
    r"""^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$
    |^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$""",
    re.X,
)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats, no yes/no booleans, no duplicates, no aliases."""


_AMBIGUOUS_INT_TAG = "tag:relgate:ambiguous-int"

# Ambiguous integers first, then plain decimal ints, YAML 1.2 floats, and no implicit
# timestamps (2024-01-01 stays a string, as in YAML 1.2): params are recorded as JSON in
# release records, so only JSON types may come out.
_StrictLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in rs
          if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                         "tag:yaml.org,2002:timestamp")]
    for key, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _ch in "-+0123456789":
    _StrictLoader.yaml_implicit_resolvers.setdefault(_ch, []).insert(0, (_AMBIGUOUS_INT_TAG,
                                                                         _AMBIGUOUS_INT))
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", _DECIMAL_INT, list("-+0123456789"))
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def _line(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}"


def _readings(text: str) -> str:
    """How YAML 1.1 (PyYAML) and YAML 1.2 (core schema) read *text*, for the error message."""
    if len(text) > MAX_INT_DIGITS:
        return "a non-decimal integer"
    sign, body = (-1 if text[0] == "-" else 1), text.lstrip("+-")
    v11: int | str = "a string"
    if _YAML11_INT.match(text):
        digits = body.replace("_", "")
        if ":" in digits:
            v11 = 0
            for part in digits.split(":"):
                v11 = v11 * 60 + int(part)
            v11 *= sign
        else:
            base = {"0b": 2, "0x": 16}.get(digits[:2], 8 if digits[:1] == "0" and digits != "0"
                                           else 10)
            v11 = sign * int(digits[2:] if base in (2, 16) else digits, base)
    v12: int | str = "a string"
    if _YAML12_INT.match(text):
        base = {"0o": 8, "0x": 16}.get(body[:2], 10)
        v12 = sign * int(body[2:] if base != 10 else body, base)
    if v11 == v12:
        return f"YAML reads it as {v11}; params integers are written in plain decimal"
    return f"YAML 1.1 reads it as {v11}, YAML 1.2 as {v12}"


def _ambiguous_int(text: str, node: yaml.Node) -> ParamsError:
    shown = text if len(text) <= MAX_INT_DIGITS else text[:MAX_INT_DIGITS] + "..."
    return ParamsError(
        f"{_line(node)}: {shown!r} is ambiguous ({_readings(text)})",
        hint="write a plain decimal number, or quote it if you meant a string",
    )


def _construct_ambiguous_int(loader: _StrictLoader, node: yaml.ScalarNode) -> Any:
    raise _ambiguous_int(str(node.value), node)


def _construct_bool(loader: _StrictLoader, node: yaml.ScalarNode) -> bool:
    text = str(node.value)
    if _AMBIGUOUS_BOOLS.match(text):
        raise ParamsError(
            f"line {node.start_mark.line + 1}: {text!r} is ambiguous (YAML 1.1 reads it as a boolean)",
            hint="write true/false, or quote it if you meant a string",
        )
    if text.lower() not in ("true", "false"):  # only reachable through an explicit !!bool
        raise ParamsError(f"{_line(node)}: {text!r} is not a boolean", hint="write true or false")
    return text.lower() == "true"


def _construct_null(loader: _StrictLoader, node: yaml.ScalarNode) -> None:
    text = str(node.value)
    if text not in ("", "~", "null", "Null", "NULL"):  # only reachable through an explicit !!null
        raise ParamsError(f"{_line(node)}: {text!r} is not null", hint="write null, or drop the tag")


def _construct_float(loader: _StrictLoader, node: yaml.ScalarNode) -> float:
    text = str(node.value)
    if not _YAML12_FLOAT.match(text):  # only reachable through an explicit !!float
        raise ParamsError(f"{_line(node)}: {text!r} is not a number",
                          hint="write a decimal number such as 0.5 or 1e-3")
    value = float(text.lower().replace(".inf", "inf").replace(".nan", "nan"))
    if value != value or value in (float("inf"), float("-inf")):
        raise ParamsError(
            f"line {node.start_mark.line + 1}: {node.value!r} is not a finite number",
            hint="params must be finite numbers",
        )
    return value


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    text = str(node.value)
    digits = text.lstrip("+-")
    if len(digits) > MAX_INT_DIGITS:
        raise ParamsError(
            f"line {node.start_mark.line + 1}: an integer of {len(digits)} digits is out of range",
            hint=f"params integers have at most {MAX_INT_DIGITS} digits",
        )
    if not _DECIMAL_INT.match(text):  # only reachable through an explicit !!int
        if _AMBIGUOUS_INT.match(text):
            raise _ambiguous_int(text, node)
        raise ParamsError(f"{_line(node)}: {text!r} is not an integer",
                          hint="write a plain decimal integer")
    return int(text)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:bool":
            key = key_node.value  # keys such as `on:` are names, not booleans
        else:
            key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ParamsError(
                f"line {key_node.start_mark.line + 1}: key {key!r} is not a string",
                hint="quote the key",
            )
        if key in out:
            raise ParamsError(
                f"line {key_node.start_mark.line + 1}: duplicate key {key!r}",
                hint="each key may appear once per mapping",
            )
        try:
            out[key] = loader.construct_object(value_node, deep=True)
        except ParamsError as exc:
            path = getattr(exc, "key_path", "")
            exc.key_path = f"{key}.{path}" if path else key  # type: ignore[attr-defined]
            raise
    return out



_StrictLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:null", _construct_null)
_StrictLoader.add_constructor(_AMBIGUOUS_INT_TAG, _construct_ambiguous_int)


def _refuse_non_json(loader: _StrictLoader, node: yaml.Node) -> Any:
    raise ParamsError(
        f"line {node.start_mark.line + 1}: YAML tags such as {node.tag.rsplit(':', 1)[-1]!r} "
        "are not allowed (params hold JSON types only)",
        hint="write a plain string, number, list or mapping (quote dates)",
    )


for _tag in ("timestamp", "binary", "set", "omap", "pairs"):
    _StrictLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_non_json)


class _NoAliasComposer(_StrictLoader):
    """Refuses aliases, and nesting deeper than MAX_PARAMS_DEPTH before PyYAML's
    recursive composer can hit Python's recursion limit."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ParamsError(
                f"line {event.start_mark.line + 1}: anchors and aliases are not allowed",
                hint="write values out in full",
            )
        if self._depth >= MAX_PARAMS_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ParamsError(
                f"line {event.start_mark.line + 1}: nesting deeper than {MAX_PARAMS_DEPTH} levels",
                hint="params.yaml is a few levels deep; flatten the document",
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse one YAML document under the strict rules."""
    try:
        return yaml.load(text, Loader=_NoAliasComposer)  # noqa: S506 - strict SafeLoader subclass
    except ParamsError as exc:
        path = getattr(exc, "key_path", "")
        where = f"{path}: " if path else ""
        raise ParamsError(f"{source}: {where}{exc.message}", hint=exc.hint) from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ParamsError(
            f"{source}: {where}YAML tags such as {str(exc.problem).split()[-1]} are not allowed",
            hint="params.yaml holds plain values only",
        ) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        if mark is not None:
            line = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
            op = _UNQUOTED_OP.search(line)
            if op is not None:  # ">" starts a folded block in YAML: the commonest slip here
                raise ParamsError(
                    f"{source}: line {mark.line + 1}: op: {op.group(1)} must be quoted "
                    "(YAML reads an unquoted > or < as the start of something else)",
                    hint=f'write op: "{op.group(1)}"') from None
        raise ParamsError(f"{source}: invalid YAML{where}: {first}", hint="fix the syntax") from None


#: a gate operator written without quotes (``op: >=``), which YAML cannot read as a string
_UNQUOTED_OP = re.compile(r"\bop:\s*([<>]=?)(?=[\s,}]|$)")


# ---------------------------------------------------------------- typed records


@dataclass(frozen=True, kw_only=True)
class GateRule:
    metric: str
    op: str
    value: float
    on: str = "point"

    def describe(self) -> str:
        where = "" if self.on == "point" else f" ({self.on})"
        return f"{self.metric}{where} {self.op} {self.value:g}"


#: metrics that are not proportions: log loss and the output spread are >= 0, unbounded
_UNBOUNDED_METRICS = ("log_loss", "mean_std")


def _check_rule_can_pass(rule: GateRule, *, where: str) -> None:
    """Refuse a rule that no value of its metric satisfies: every metric but log_loss and
    mean_std lies in [0, 1] (so ``auc >= 95`` is a typo for 0.95), and those two in
    [0, inf). A rule that can never pass would fail every release for a reason that is not
    the model's."""
    low, high = (0.0, math.inf) if rule.metric in _UNBOUNDED_METRICS else (0.0, 1.0)
    never = {">=": rule.value > high, ">": rule.value >= high,
             "<=": rule.value < low, "<": rule.value <= low}[rule.op]
    if never:
        span = "[0, inf)" if math.isinf(high) else "[0, 1]"
        hint = (f"did you mean {rule.value / 100:g}?" if high == 1.0 and 1 < rule.value <= 100
                else f"use a bound inside {span}")
        raise ParamsError(f"{where}: {rule.describe()} can never pass: {rule.metric} lies in "
                          f"{span}", hint=hint)


@dataclass(frozen=True, kw_only=True)
class BaselineSpec:
    release: str | None
    max_drop: Mapping[str, float]
    on: str = "point"


@dataclass(frozen=True, kw_only=True)
class GatesSpec:
    mode: str
    rules: tuple[GateRule, ...]
    baseline: BaselineSpec | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GatesSpec:
        """Build from the ``gates:`` mapping (already schema-valid)."""
        base = data.get("baseline")
        rules = tuple(GateRule(metric=r["metric"], op=r["op"], value=float(r["value"]),
                               on=r.get("on", "point")) for r in data["rules"])
        return cls(
            mode=data["mode"],
            rules=rules,
            baseline=None
            if base is None
            else BaselineSpec(
                release=base.get("release"),
                max_drop=MappingProxyType({k: float(v) for k, v in base["max_drop"].items()}),
                on=base.get("on", "point"),
            ),
        )



@dataclass(frozen=True, kw_only=True)
class ArtifactSpec:
    path: str
    role: str
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class VariantSpec(ArtifactSpec):
    """An entry of ``release.variants``: another ONNX model of the release, with its own
    evidence (``evaluated``: its test split ``data``, its ``report`` and ``calibration``;
    its task, contract, calibrate and gates stay in the params document, read by
    :meth:`Params.for_variant`), or shipped unjudged (``evaluated`` False)."""

    name: str
    evaluated: bool
    data: str | None = None
    report: str | None = None
    calibration: str | None = None


@dataclass(frozen=True, kw_only=True)
class SigningSpec:
    """``release.signing``: how promote signs the bundle (relgate.signing). ``method`` is
    ``key`` (an EC private key), ``certificate`` (the key with its signing certificate and
    chain) or ``sigstore`` (keyless, from the CI's OIDC identity). Paths are relative to the
    registry root unless absolute; a key's passphrase is read from the environment variable
    ``password_env`` names, never from params."""

    method: str
    key: str | None = None
    certificate: str | None = None
    certificate_chain: tuple[str, ...] = ()
    password_env: str | None = None


def _signing(value: Any) -> SigningSpec | None:
    if value is None:
        return None
    if value == "sigstore":
        return SigningSpec(method="sigstore")
    return SigningSpec(method="certificate" if "certificate" in value else "key", key=value["key"],
                       certificate=value.get("certificate"),
                       certificate_chain=tuple(value.get("certificate_chain", ())),
                       password_env=value.get("password_env"))


@dataclass(frozen=True, kw_only=True)
class ReleaseSpec:
    name: str
    promoted: ArtifactSpec
    variants: tuple[VariantSpec, ...] = ()
    tolerance: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    default_tolerance: float = 1e-6
    report: str = "analysis/validation_report.json"
    calibration: str = "analysis/calibration.json"
    data: str = "data/test.npz"
    core_dir: str = "models/core"
    #: sidecar files shipped in the bundle (role "file"): copied, hashed, in the manifest
    files: tuple[ArtifactSpec, ...] = ()
    #: git tag template; ``{name}`` is the release name
    tag_template: str = "core@{name}"
    #: accept files that are links into the registry's own DVC cache (relgate.dvclinks)
    allow_dvc_cache_links: bool = False
    #: sign the bundle at promote (None: unsigned)
    signing: SigningSpec | None = None

    @property
    def tag(self) -> str:
        """This release's git tag (``tag_template`` with the name filled in)."""
        return self.tag_template.replace("{name}", self.name)

    def tolerance_for(self, metric: str) -> float:
        """Absolute tolerance for *metric* (the per-metric value, else the default)."""
        return float(self.tolerance.get(metric, self.default_tolerance))

    def variant(self, name: str) -> VariantSpec:
        """The variant called *name*; a ParamsError (exit 2) listing the names otherwise."""
        for v in self.variants:
            if v.name == name:
                return v
        names = ", ".join(v.name for v in self.variants) or "none"
        raise ParamsError(f"release.variants has no variant named {name!r} (variants: {names})",
                          hint="name a variant by its name: (default: its file's stem)")


#: rows per onnxruntime call: small enough to stay in cache (measured fastest for 1-D CNNs on
#: 2 cores, bench/bench_evaluate.py), large enough to amortise the per-call overhead
DEFAULT_BATCH = 256


@dataclass(frozen=True, kw_only=True)
class ParitySpec:
    """``parity:``: the non-ONNX reference (TorchScript / torch.export) that must agree with
    the gated ONNX model on the same samples; a bound left None is not gated."""

    reference: str
    data: str | None = None
    samples: int = 256
    record: str = "analysis/parity.json"
    max_abs_diff: float | None = None
    min_correlation: float | None = None
    min_agreement: float | None = None


@dataclass(frozen=True, kw_only=True)
class EvaluateSpec:
    threads: int = 1
    batch_size: int = DEFAULT_BATCH


@dataclass(frozen=True, kw_only=True)
class EvalDataSpec:
    """``eval_data:``: how a Parquet/CSV eval set's columns map to the model's inputs.

    ``inputs`` names, per model input, the scalar columns of a table that are assembled in
    that order into ``[N, F]``; an input not named there is the column of its own name.
    ``label`` is the label column. An ``.npz`` given a non-default spec is refused (its
    arrays are named after the inputs plus ``y``), never read another way than declared.
    """

    label: str = "y"
    inputs: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def is_default(self) -> bool:
        return self.label == "y" and not self.inputs


@dataclass(frozen=True, kw_only=True)
class ThresholdSpec:
    strategy: str = "max_f1"
    precision_target: float | None = None
    value: float | None = None


@dataclass(frozen=True, kw_only=True)
class SelectiveSpec:
    """Multi-class "no conclusive" (seed 003 section 5): the confidence threshold chosen on
    validation with the largest coverage whose covered rows' accuracy is >= target_accuracy;
    none (and validation fails closed) when that coverage is below min_coverage."""

    target_accuracy: float
    min_coverage: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CalibrateSpec:
    scales: tuple[float, ...] = (1.0,)
    offsets: tuple[float, ...] = (0.0,)
    method: str = "temperature"
    threshold: ThresholdSpec = field(default_factory=ThresholdSpec)
    inconclusive_band: float | None = None
    ece_bins: int = 15
    #: multi-class tasks only: the selective-prediction target (None: every row is answered)
    selective: SelectiveSpec | None = None


@dataclass(frozen=True, kw_only=True)
class BootstrapSpec:
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class ValidateSpec:
    bootstrap: BootstrapSpec = field(default_factory=BootstrapSpec)
    ece_bins: int = 15


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    name: str
    dtype: str | None = None
    shape: tuple[int | str | None, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class ContractSpec:
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


BINARY_TYPES = ("logit", "probability", "features")
MULTICLASS_TYPES = ("logits", "probabilities", "features")
REDUCERS = ("mean", "max", "max_abs", "l2", "column")


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """What the promoted model outputs (``task:``), declared so that nothing is guessed.

    ``output_type`` None means "not declared": relgate then uses only what the graph
    proves and refuses otherwise. ``positive`` is a column index, a ZipMap class key or a
    name from ``classes``.
    """

    kind: str = "binary"
    output: str | None = None
    output_type: str | None = None
    reducer: str | None = None
    classes: tuple[str, ...] | None = None
    positive: int | str | None = None
    top_k: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for key in ("output", "output_type", "reducer", "positive"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.top_k:
            out["top_k"] = list(self.top_k)
        return out


def _task(data: Mapping[str, Any] | None, *, source: str) -> TaskSpec | None:
    if data is None:
        return None
    classes = data.get("classes")
    positive = data.get("positive")
    if isinstance(positive, str) and (classes is None or positive not in classes):
        raise ParamsError(f"{source}: task.positive {positive!r} is not one of task.classes",
                          hint="name a class listed in task.classes, or give its index")
    if positive is not None and data.get("kind") == "multiclass":
        raise ParamsError(f"{source}: task.positive applies to binary tasks only",
                          hint="drop task.positive for kind: multiclass")
    if data.get("reducer") == "column" and positive is None:
        raise ParamsError(f"{source}: task.reducer column needs task.positive (the column)",
                          hint="add task.positive: I")
    return TaskSpec(
        kind=data["kind"], output=data.get("output"), output_type=data.get("output_type"),
        reducer=data.get("reducer"), classes=None if classes is None else tuple(classes),
        positive=positive, top_k=tuple(int(k) for k in data.get("top_k", ())),
    )


@dataclass(frozen=True, kw_only=True)
class Params:
    """params.yaml, validated and typed. ``raw`` is the read-only parsed document."""

    source: str
    raw: Mapping[str, Any]
    seed: int
    gates: GatesSpec
    #: None when params have no ``release:`` section (validate and calibrate need none)
    release_spec: ReleaseSpec | None
    evaluate: EvaluateSpec
    eval_data: EvalDataSpec = field(default_factory=EvalDataSpec)
    calibrate: CalibrateSpec
    validate: ValidateSpec
    contract: ContractSpec | None
    task: TaskSpec | None = None
    parity: ParitySpec | None = None
    #: ``resources:`` budgets (relgate.resources); None when params declare none
    resources: ResourcesSpec | None = None
    #: ``slices:`` (issue 19): slice columns and per-slice rules (relgate.slice_params)
    slices: SlicesSpec | None = None
    data: Mapping[str, Any]
    train: Mapping[str, Any]
    export: Mapping[str, Any]

    @property
    def release(self) -> ReleaseSpec:
        """The ``release:`` section; a ParamsError (exit 2) for a command that needs one
        when the params have none."""
        if self.release_spec is None:
            raise ParamsError(f"{self.source}: no release: section (what to release: its name "
                              "and the promoted model)",
                              hint="add release: {name: v0.1.0, promoted: {path: MODEL.onnx}}, "
                                   "or run relgate init")
        return self.release_spec

    def for_variant(self, name: str) -> Params:
        """The params that judge variant *name* as if it were the promoted model: its own
        task, contract, gates and test split, report and calibration paths (``calibrate``
        is the variant's, else the release's: a procedure, not a claim about the model);
        seed, evaluate, eval_data (how a table's columns map to inputs), validate and the
        release's name, tolerance and core_dir are shared.
        Nothing of the promoted model's task, contract, gates or parity carries over."""
        variant = self.release.variant(name)
        if not variant.evaluated:
            raise ParamsError(f"variant {name!r} is declared evaluated: false; it has no "
                              "evidence to validate or calibrate",
                              hint="give it data: and gates: (and drop evaluated: false)")
        doc = thaw(self.raw)
        rel = doc["release"]
        entry = next(v for v in rel["variants"] if _variant_name(v) == name)
        sub: dict[str, Any] = {k: doc[k] for k in _SHARED_SECTIONS if k in doc}
        sub.update({k: entry[k] for k in ("task", "contract", "gates") if k in entry})
        if "calibrate" in entry or "calibrate" in doc:
            sub["calibrate"] = entry.get("calibrate", doc.get("calibrate"))
        sub["release"] = {
            **{k: rel[k] for k in ("name", "tolerance", "core_dir", "tag") if k in rel},
            "promoted": {k: entry[k] for k in ("path", "description") if k in entry},
            "data": variant.data, "report": variant.report, "calibration": variant.calibration,
        }
        return params_from_dict(sub, source=f"{self.source} (variant {name})")


#: the params sections a variant shares with the promoted model (see Params.for_variant)
_SHARED_SECTIONS = ("schema_version", "seed", "data", "train", "export", "reproduce",
                    "evaluate", "eval_data", "validate")
#: an evaluated variant's name is a folder name (params.schema.json says the same of name:)
_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: what only an evaluated variant may declare
_EVIDENCE_KEYS = ("task", "contract", "calibrate", "gates", "data", "report", "calibration")


def _variant_name(entry: Mapping[str, Any]) -> str:
    return str(entry.get("name") or PurePosixPath(entry["path"]).stem)


def _variants(entries: Any, *, source: str, promoted: Mapping[str, Any],
              report: str | None) -> tuple[VariantSpec, ...]:
    """``release.variants`` typed, with the rules the schema cannot say: names are unique;
    a variant either declares its evidence (data and gates) or ``evaluated: false``, never
    both and never neither; its report is its own; no baseline gate (a variant has no
    previous release to be compared with yet)."""
    out: list[VariantSpec] = []
    seen: dict[str, str] = {}
    reports = {report or "analysis/validation_report.json": "the promoted model"}
    for entry in entries:
        name = _variant_name(entry)
        where = f"{source}: release.variants {name!r}"
        if name.casefold() in seen:
            raise ParamsError(f"{where}: two variants are named {name!r}",
                              hint="give each variant a name: of its own")
        seen[name.casefold()] = entry["path"]
        if entry["path"] == promoted["path"]:
            raise ParamsError(f"{where}: is the promoted model itself ({entry['path']})",
                              hint="list other models as variants")
        declared = [k for k in _EVIDENCE_KEYS if k in entry]
        evaluated = bool(entry.get("evaluated", True))
        if not evaluated and declared:
            raise ParamsError(f"{where}: declared evaluated: false, but also declares "
                              f"{', '.join(declared)}",
                              hint="drop evaluated: false to judge it, or drop its evidence")
        missing = [k for k in ("data", "gates") if k not in entry]
        if evaluated and missing:
            raise ParamsError(
                f"{where}: declares no {' or '.join(missing)}; a variant is judged on its own "
                "test split and gates, or declared evaluated: false",
                hint="add data: and gates: to the variant, or evaluated: false to ship it unjudged")
        if evaluated and "baseline" in entry["gates"]:
            raise ParamsError(f"{where}: gates.baseline is not supported for a variant",
                              hint="gate the variant on its own rules")
        if evaluated and not _VARIANT_NAME.fullmatch(name):
            raise ParamsError(f"{where}: the name {name!r} (from the file's stem unless given) "
                              "cannot name its report folder (analysis/variants/<name>/)",
                              hint="give the variant a name: of letters, digits, '.', '_' or "
                                   "'-', starting with a letter or digit")
        base = f"analysis/variants/{name}"
        spec = VariantSpec(
            role="variant", path=entry["path"], description=entry.get("description", ""),
            name=name, evaluated=evaluated, data=entry.get("data"),
            report=entry.get("report", f"{base}/validation_report.json") if evaluated else None,
            calibration=entry.get("calibration", f"{base}/calibration.json") if evaluated else None)
        if spec.report is not None:
            if spec.report in reports:
                raise ParamsError(f"{where}: its report {spec.report} is also the report of "
                                  f"{reports[spec.report]}", hint="give each model its own report")
            reports[spec.report] = f"variant {name!r}"
        out.append(spec)
    return tuple(out)


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read, validate and type params.yaml. Any problem is a ParamsError (exit 2)."""
    source = str(path)
    try:
        data = read_capped(path, max_bytes=MAX_PARAMS_BYTES, what="params file")
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParamsError(f"{source}: not valid UTF-8", hint="save the file as UTF-8") from None
    except ParamsError:
        raise
    except Exception as exc:  # InputError / JSONFormatError from read_capped
        msg = getattr(exc, "message", str(exc))
        raise ParamsError(msg, hint=getattr(exc, "hint", None)) from None
    return params_from_dict(parse_yaml(text, source=source), source=source)


def params_from_dict(doc: Any, *, source: str = "params.yaml") -> Params:
    """Validate a parsed params document and build the typed records."""
    if not isinstance(doc, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level", hint="see README 'params.yaml'")
    contract = doc.get("contract")
    budgets = [k for k in ("max_memory_mb", "max_load_seconds", "max_latency_ms",
                           "max_model_bytes") if isinstance(contract, dict) and k in contract]
    # the interface is the contract; what running it may cost is resources:
    if budgets and isinstance(contract, dict):
        raise ParamsError(f"{source}: contract.{budgets[0]}: resource budgets are declared in "
                          "resources:, not contract:",
                          hint=f"move it: resources: {{{budgets[0]}: "
                               f"{contract[budgets[0]]!r}}}")
    try:
        schemas.validate(doc, "params", source=source)
    except SchemaError as exc:
        raise ParamsError(exc.message, hint=exc.hint) from None
    if (doc.get("task") or {}).get("kind") == "none":  # schema-valid: what kind none cannot have
        from relgate.tasks.none import check_none_params

        check_none_params(doc, source=source)
    rel = doc.get("release")
    tol = 1e-6 if rel is None else rel.get("tolerance", 1e-6)
    cal = doc.get("calibrate", {})
    val = doc.get("validate", {})
    contract = doc.get("contract")
    return Params(
        source=source,
        raw=_freeze(doc),
        seed=int(doc.get("seed", 0)),
        gates=_gates(doc["gates"], source=source),
        release_spec=None if rel is None else ReleaseSpec(
            name=rel["name"],
            promoted=ArtifactSpec(role="promoted", **rel["promoted"]),
            variants=_variants(rel.get("variants", []), source=source, promoted=rel["promoted"],
                               report=rel.get("report")),
            files=tuple(ArtifactSpec(role="file", **f) for f in rel.get("files", [])),
            tag_template=rel.get("tag", "core@{name}"),
            allow_dvc_cache_links=_strict_bool(rel.get("allow_dvc_cache_links", False),
                                               where=f"{source}: release.allow_dvc_cache_links"),
            signing=_signing(rel.get("signing")),
            tolerance=MappingProxyType(dict(tol) if isinstance(tol, dict) else {}),
            default_tolerance=float(tol) if not isinstance(tol, dict) else 1e-6,
            **{k: rel[k] for k in ("report", "calibration", "data", "core_dir") if k in rel},
        ),
        evaluate=EvaluateSpec(**doc.get("evaluate", {})),
        eval_data=_eval_data(doc.get("eval_data", {})),
        calibrate=CalibrateSpec(
            scales=tuple(float(s) for s in cal.get("scales", (1.0,))),
            offsets=tuple(float(o) for o in cal.get("offsets", (0.0,))),
            method=cal.get("method", "temperature"),
            threshold=ThresholdSpec(**cal.get("threshold", {})),
            inconclusive_band=cal.get("inconclusive_band"),
            ece_bins=cal.get("ece_bins", 15),
            selective=None if cal.get("selective") is None
            else SelectiveSpec(**cal["selective"]),
        ),
        validate=ValidateSpec(
            bootstrap=BootstrapSpec(**val.get("bootstrap", {})), ece_bins=val.get("ece_bins", 15)
        ),
        contract=None
        if contract is None
        else ContractSpec(
            inputs=tuple(_tensor(t) for t in contract.get("inputs", [])),
            outputs=tuple(_tensor(t) for t in contract.get("outputs", [])),
        ),
        task=_task(doc.get("task"), source=source),
        parity=_parity(doc.get("parity")),
        resources=None if doc.get("resources") is None
        else ResourcesSpec.from_dict(doc["resources"]),
        slices=slices_from_dict(doc.get("slices"), source=source),
        data=_freeze(doc.get("data", {})),
        train=_freeze(doc.get("train", {})),
        export=_freeze(doc.get("export", {})),
    )


def _strict_bool(value: Any, *, where: str) -> bool:
    """A YAML boolean, exactly (the schema says so too): never a string such as "yes"."""
    if type(value) is not bool:
        raise ParamsError(f"{where}: {value!r} is not true or false",
                          hint="write true or false, unquoted")
    return value


def _gates(g: Mapping[str, Any], *, source: str) -> GatesSpec:
    """``gates:`` typed; a rule no value of its metric can pass (``auc >= 95``) is refused
    here, where params are read (GatesSpec itself judges any bound)."""
    gates = GatesSpec.from_dict(g)
    for i, rule in enumerate(gates.rules):
        _check_rule_can_pass(rule, where=f"{source}: gates.rules[{i}]")
    return gates


def _eval_data(e: Mapping[str, Any]) -> EvalDataSpec:
    inputs = MappingProxyType({str(k): tuple(str(c) for c in v)
                               for k, v in e.get("inputs", {}).items()})
    return EvalDataSpec(label=str(e.get("label", "y")), inputs=inputs)


def _parity(p: Mapping[str, Any] | None) -> ParitySpec | None:
    if p is None:
        return None
    bounds: dict[str, Any] = {k: float(p[k]) for k in ("max_abs_diff", "min_correlation",
                                                      "min_agreement") if k in p}
    rest: dict[str, Any] = {k: p[k] for k in ("data", "samples", "record") if k in p}
    return ParitySpec(reference=str(p["reference"]), **bounds, **rest)


def _tensor(t: Mapping[str, Any]) -> TensorSpec:
    shape = t.get("shape")
    return TensorSpec(name=t["name"], dtype=t.get("dtype"), shape=None if shape is None else tuple(shape))


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, JSON-serialisable copy of a frozen params value."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value

