"""``slices:`` in params.yaml, typed (issue 19): which eval-set columns slice the rows and the
rules judged per slice. The schema has already checked the shapes; this module adds the rules
a schema cannot say (a crossing names declared features, a rule's slice names a declared
feature or crossing, bounds a metric can reach) so a bad spec is refused when params are read."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from relgate.errors import ParamsError

DEFAULT_MIN_SUPPORT = 50
#: metrics that are not proportions (a gate bound on them is not checked against [0, 1])
_UNBOUNDED = ("log_loss",)


@dataclass(frozen=True, kw_only=True)
class SliceTarget:
    """``region=EU_SW`` or ``region=*,device=ios``: a partition and a value (or ``*``) per feature."""

    text: str
    features: tuple[str, ...]
    values: tuple[str, ...]

    @property
    def partition(self) -> str:
        return ",".join(self.features)

    def matches(self, values: tuple[str, ...]) -> bool:
        return len(values) == len(self.values) and all(
            w in ("*", v) for w, v in zip(self.values, values, strict=True))

    @property
    def is_single(self) -> bool:
        return "*" not in self.values


@dataclass(frozen=True, kw_only=True)
class SliceRule:
    """A bound on a slice (``slice``) or on the gap across a partition (``across``)."""

    metric: str
    on: str
    op: str = "<="
    value: float = 0.0
    target: SliceTarget | None = None
    across: str | None = None  # the partition name of a gap rule

    @property
    def is_gap(self) -> bool:
        return self.across is not None

    def describe(self) -> str:
        where = "" if self.on == "point" else f" ({self.on})"
        if self.is_gap:
            return f"{self.metric} gap across {self.across}{where} <= {self.value:g}"
        assert self.target is not None
        return f"{self.metric} [{self.target.text}]{where} {self.op} {self.value:g}"


@dataclass(frozen=True, kw_only=True)
class SlicesSpec:
    features: tuple[str, ...]
    crossed: tuple[tuple[str, ...], ...] = ()
    min_support: int = DEFAULT_MIN_SUPPORT
    rules: tuple[SliceRule, ...] = ()
    max_drop: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def partitions(self) -> tuple[tuple[str, ...], ...]:
        """Every partition sliced: each feature alone, then each crossing."""
        return tuple((f,) for f in self.features) + self.crossed

    @property
    def columns(self) -> tuple[str, ...]:
        return self.features


def parse_target(text: str, partitions: tuple[tuple[str, ...], ...], *, where: str) -> SliceTarget:
    """``feature=value[,feature=value...]``; the features must be one declared partition."""
    feats: list[str] = []
    vals: list[str] = []
    for part in text.split(","):
        name, eq, value = part.partition("=")
        if not eq or not name or not value:
            raise ParamsError(f"{where}: slice {text!r} is not 'feature=value'",
                              hint="write e.g. region=EU_SW, region=* or region=EU,device=*")
        feats.append(name.strip())
        vals.append(value.strip())
    if tuple(feats) not in partitions:
        shown = ", ".join(",".join(p) for p in partitions)
        raise ParamsError(f"{where}: slice {text!r} names {','.join(feats)}, which is not a "
                          f"declared slice feature or crossing ({shown})",
                          hint="declare it in slices.features or slices.crossed (same order)")
    return SliceTarget(text=text, features=tuple(feats), values=tuple(vals))


def _bound_can_pass(metric: str, op: str, value: float, *, where: str) -> None:
    high = math.inf if metric in _UNBOUNDED else 1.0
    never = {">=": value > high, ">": value >= high, "<=": value < 0.0, "<": value <= 0.0}[op]
    if never:
        raise ParamsError(f"{where}: {metric} {op} {value:g} can never pass",
                          hint="use a bound inside [0, 1]" if high == 1.0 else "use a bound >= 0")


def slices_from_dict(data: Mapping[str, Any] | None, *, source: str) -> SlicesSpec | None:
    """The typed ``slices:`` section (None when params declare none)."""
    if data is None:
        return None
    features = tuple(str(f) for f in data["features"])
    crossed = tuple(tuple(str(f) for f in c) for c in data.get("crossed", ()))
    for i, combo in enumerate(crossed):
        unknown = [f for f in combo if f not in features]
        if unknown:
            raise ParamsError(f"{source}: slices.crossed[{i}] names {', '.join(unknown)}, not "
                              "in slices.features", hint="cross only declared features")
    spec = SlicesSpec(features=features, crossed=crossed,
                      min_support=int(data.get("min_support", DEFAULT_MIN_SUPPORT)))
    rules: list[SliceRule] = []
    for i, r in enumerate(data.get("rules", ())):
        where = f"{source}: slices.rules[{i}]"
        if "max_gap" in r:
            across = parse_target(f"{r['across'].replace(',', '=*,')}=*", spec.partitions,
                                  where=where).partition
            rules.append(SliceRule(metric=r["metric"], on=r.get("on", "ci_high"),
                                   value=float(r["max_gap"]), across=across))
            continue
        target = parse_target(r["slice"], spec.partitions, where=where)
        _bound_can_pass(r["metric"], r["op"], float(r["value"]), where=where)
        rules.append(SliceRule(metric=r["metric"], on=r.get("on", "point"), op=r["op"],
                               value=float(r["value"]), target=target))
    drops = MappingProxyType({str(k): float(v) for k, v in data.get("max_drop", {}).items()})
    return SlicesSpec(features=features, crossed=crossed, min_support=spec.min_support,
                      rules=tuple(rules), max_drop=drops)
