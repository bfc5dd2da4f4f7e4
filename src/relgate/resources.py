"""Resource budgets as gates (issue 16, points 1 and 2): memory, load time, latency, size.

params.yaml declares them in a top-level ``resources:`` section, not inside ``contract:``:
the contract is the model's interface, checked against its graph wherever the model is read
(inspect, evaluate, calibrate); a budget is a claim about running it on a host, measured only
where relgate runs it to judge it (validate, promote), and it carries its own reproduction
tolerance. What is measured, and how:

* ``peak_rss_mb``: the peak resident set (``VmHWM`` of ``/proc/self/status``, else
  ``getrusage(RUSAGE_SELF).ru_maxrss``) of the process that evaluates, read when the
  evaluation (scoring, checks, bootstrap) is done: Python, the imports, the data and the
  onnxruntime session, everything that process held from its start until then. The guarded
  probe child's own peak is recorded beside it (``children_peak_rss_mb``, informative).
* ``model_bytes``: the sizes of the model's files (``.onnx`` plus external data), exact.
* ``load_seconds``: creating a fresh in-process onnxruntime session (after the evaluation's
  session is released, so two are never held), wall clock.
* ``latency_ms``: the declared percentile (nearest rank) of ``runs`` warm runs (after
  ``warmup`` runs) of one batch of ``batch_size`` rows of the eval set, wall clock.

Each declared budget is a gate result (``resources.max_memory_mb <= 4400``) among the
report's gates, ANDed with the rules whatever their mode; an unmeasured value fails closed.
Promotion measures again: memory and size must reproduce within the declared relative
tolerance (``resources.tolerance``) and still fit their budgets; timings are recorded beside
the reported ones and never compared (they are noise across runs and machines).

A declared ``max_memory_mb`` also sizes the batch (:func:`choose_batch`): the per-sample
memory is measured on a probe batch, and the batch is the largest that fits the budget's
remaining room (never more than ``evaluate.batch_size``). Without a budget, an undeclared
``evaluate.batch_size`` is capped so that one batch's inputs and outputs stay under
:data:`DEFAULT_BATCH_BYTES` (:func:`default_batch`).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

MIB = 1024 * 1024
#: without a memory budget, one batch's inputs and outputs stay under this many bytes
DEFAULT_BATCH_BYTES = 256 * MIB
#: the largest probe batch that sizes a batch under a memory budget
PROBE_ROWS = 32
#: room kept free under a memory budget, on top of what the probe measured (allocator slack,
#: the bootstrap's arrays)
BUDGET_SLACK = 0.10
#: the budget keys, with their measured value's key and how a result is named
BUDGETS = (("max_memory_mb", "peak_rss_mb"), ("max_model_bytes", "model_bytes"),
           ("max_load_seconds", "load_seconds"), ("max_latency_ms", "latency_ms"))
#: measured values that promotion must reproduce (within resources.tolerance)
REPRODUCED = (("max_memory_mb", "peak_rss_mb", "memory"), ("max_model_bytes", "model_bytes",
                                                          "model_bytes"))


@dataclass(frozen=True, kw_only=True)
class LatencySpec:
    batch_size: int = 1
    percentile: float = 95.0
    runs: int = 20
    warmup: int = 3


@dataclass(frozen=True, kw_only=True)
class ResourcesSpec:
    """``resources:``: budgets (None: not gated) and how closely promotion must reproduce
    memory and size (relative: 0.25 is within 25 % of the reported value)."""

    max_memory_mb: float | None = None
    max_model_bytes: int | None = None
    max_load_seconds: float | None = None
    max_latency_ms: float | None = None
    latency: LatencySpec = field(default_factory=LatencySpec)
    tolerance: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({"memory": 0.25, "model_bytes": 0.0}))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourcesSpec:
        """Build from the ``resources:`` mapping (already schema-valid)."""
        tol = {"memory": 0.25, "model_bytes": 0.0, **dict(data.get("tolerance", {}))}
        return cls(
            max_memory_mb=_opt_float(data.get("max_memory_mb")),
            max_model_bytes=None if data.get("max_model_bytes") is None
            else int(data["max_model_bytes"]),
            max_load_seconds=_opt_float(data.get("max_load_seconds")),
            max_latency_ms=_opt_float(data.get("max_latency_ms")),
            latency=LatencySpec(**dict(data.get("latency", {}))),
            tolerance=MappingProxyType({k: float(v) for k, v in tol.items()}),
        )

    def budgets(self) -> dict[str, float]:
        """The declared budgets by key, in :data:`BUDGETS` order."""
        return {key: float(getattr(self, key)) for key, _ in BUDGETS
                if getattr(self, key) is not None}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: getattr(self, key) for key, _ in BUDGETS
                               if getattr(self, key) is not None}
        if self.max_latency_ms is not None:
            out["latency"] = {"batch_size": self.latency.batch_size,
                              "percentile": self.latency.percentile,
                              "runs": self.latency.runs, "warmup": self.latency.warmup}
        out["tolerance"] = dict(sorted(self.tolerance.items()))
        return out


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


# ---------------------------------------------------------------- what is measured


def peak_rss_bytes() -> int | None:
    """This process's peak resident set (VmHWM; else ru_maxrss), None when unknown."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib) * 1024 if kib > 0 else None


def current_rss_bytes() -> int | None:
    """This process's resident set now (VmRSS), None when unknown."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """The machine a measurement was made on: CPU model, cores, onnxruntime, platform."""
    from relgate.numeric_env import cpu_info
    from relgate.provenance import package_versions

    cpu = cpu_info()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return {"cpu": str(cpu.get("model") or cpu.get("vendor") or platform.processor() or "unknown"),
            "cores": int(os.cpu_count() or 1), "usable_cores": int(usable),
            "onnxruntime": package_versions(("onnxruntime",)).get("onnxruntime", "absent"),
            "platform": f"{platform.system()}-{platform.machine()}"}


def _mb(nbytes: int | None) -> float | None:
    return None if nbytes is None else round(nbytes / MIB, 3)


def measure(model_path: str | os.PathLike[str], data_path: str | os.PathLike[str], *,
            spec: ResourcesSpec, model_bytes: int, threads: int, table: Any = None,
            labels: str = "binary", batch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report's ``resources`` section: budgets, what was measured, the machine.

    Call it when the evaluation is done: the peak RSS is read first, then the evaluation's
    sessions are released, then load time and latency are timed on a fresh session (only
    when a budget asks for them). A value that cannot be measured is None with a reason in
    ``unmeasured``; its gate then fails closed.
    """
    from relgate.scoring import release_sessions

    peak = peak_rss_bytes()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    measured: dict[str, Any] = {"peak_rss_mb": _mb(peak), "model_bytes": int(model_bytes),
                                "load_seconds": None, "latency_ms": None,
                                "children_peak_rss_mb": _mb(int(children) * 1024)}
    unmeasured: dict[str, str] = {}
    if peak is None:
        unmeasured["peak_rss_mb"] = "this system reports no peak resident set"
    release_sessions()
    if spec.max_load_seconds is not None or spec.max_latency_ms is not None:
        load: float | None
        latency: float | None
        try:
            load, latency = _time_model(Path(model_path), Path(data_path), spec.latency,
                                        threads=threads, table=table, labels=labels)
        except _Unmeasured as exc:
            unmeasured["load_seconds" if exc.stage == "load" else "latency_ms"] = exc.why
            if exc.stage == "load":
                unmeasured["latency_ms"] = exc.why
            load, latency = exc.load, None
        measured["load_seconds"], measured["latency_ms"] = load, latency
    out: dict[str, Any] = {"budgets": spec.to_dict(), "measured": measured,
                           "machine": {**machine(), "threads": int(threads)},
                           "memory": "peak RSS (VmHWM) of the evaluating process, read after "
                                     "evaluation"}
    if unmeasured:
        out["unmeasured"] = dict(sorted(unmeasured.items()))
    if batch is not None:
        out["batch"] = dict(batch)
    return out


class _Unmeasured(Exception):
    def __init__(self, stage: str, why: str, load: float | None = None) -> None:
        super().__init__(why)
        self.stage, self.why, self.load = stage, why, load


def _time_model(model: Path, data: Path, spec: LatencySpec, *, threads: int,
                table: Any, labels: str) -> tuple[float, float]:
    """(load seconds, latency ms at the declared percentile) on one fresh session."""
    from relgate import onnxmodel
    from relgate.errors import RelgateError

    try:
        start = time.perf_counter()
        session = onnxmodel.make_session(model, threads=threads)
        load = round(time.perf_counter() - start, 6)
    except RelgateError as exc:
        raise _Unmeasured("load", f"the model could not be loaded again: {exc.message}") from None
    try:
        feeds = _feeds(session, data, spec.batch_size, table=table, labels=labels)
        times: list[float] = []
        for i in range(spec.warmup + spec.runs):
            start = time.perf_counter()
            session.run(None, feeds)
            if i >= spec.warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    except _Unmeasured as exc:
        raise _Unmeasured("latency", exc.why, load) from None
    except Exception as exc:  # any failure to time is "unmeasured": fail closed
        raise _Unmeasured("latency", f"a timed run failed: {str(exc).splitlines()[0][:200]}",
                          load) from None
    finally:
        del session
    ranked = sorted(times)
    rank = max(1, math.ceil(spec.percentile / 100.0 * len(ranked)))
    return load, round(ranked[rank - 1], 6)


def _feeds(session: Any, data: Path, batch_size: int, *, table: Any,
           labels: str) -> dict[str, np.ndarray]:
    """One batch of *batch_size* rows of the eval set (its first rows, repeated if it has
    fewer) for every model input."""
    import numpy as np

    from relgate.scoring import EvalData

    names = [i.name for i in session.get_inputs()]
    fixed = [i.shape[0] for i in session.get_inputs() if i.shape and isinstance(i.shape[0], int)]
    if any(k != batch_size for k in fixed):
        raise _Unmeasured("latency", f"the model takes a fixed batch of {fixed[0]}, the latency "
                                     f"budget is declared at batch_size {batch_size}")
    ev = EvalData.open(data, labels=labels, table=table)
    rows = np.arange(min(ev.n, batch_size), dtype=np.intp)
    picked = ev.take(names, rows)
    reps = -(-batch_size // len(rows))
    return {k: np.ascontiguousarray(np.concatenate([v] * reps)[:batch_size])
            for k, v in picked.items()}


# ---------------------------------------------------------------- the gates


def gate_results(resources: Mapping[str, Any] | None, spec: ResourcesSpec, *,
                 where: str = "") -> list[dict[str, Any]]:
    """One gate result per declared budget (schema ``gate_result``), judged on *resources*
    (a report's ``resources`` section; None: nothing was measured, every budget fails)."""
    out = []
    measured = (resources or {}).get("measured") or {}
    unmeasured = (resources or {}).get("unmeasured") or {}
    for key, value_key in BUDGETS:
        bound = getattr(spec, key)
        if bound is None:
            continue
        name = f"resources.{key}"
        observed = measured.get(value_key)
        unit = _UNITS[key]
        if resources is None:
            passed, reason = False, f"{name}: not measured{where} (no resources section); fails closed"
        elif not isinstance(observed, int | float) or isinstance(observed, bool) \
                or not math.isfinite(observed):
            why = unmeasured.get(value_key, "no value")
            passed, reason = False, f"{name}: not measured{where} ({why}); fails closed"
            observed = None
        else:
            passed = float(observed) <= float(bound)
            pct = f" at batch {spec.latency.batch_size}, p{spec.latency.percentile:g}" \
                if key == "max_latency_ms" else ""
            reason = (f"{name}: {_fmt(observed)} {unit}{pct} "
                      f"{'<=' if passed else '>'} the budget {_fmt(bound)} {unit}{where}")
        out.append({"metric": name, "op": "<=", "bound": float(bound), "on": "measured",
                    "observed": None if observed is None else float(observed),
                    "passed": passed, "reason": reason})
    return out


_UNITS = {"max_memory_mb": "MiB peak RSS", "max_model_bytes": "bytes",
          "max_load_seconds": "s to load", "max_latency_ms": "ms"}


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def with_budgets(gates: Mapping[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """A gate verdict (``gate_verdict`` dict) with the budget results added: they are ANDed
    with the rules, whatever the rules' mode; a failed budget's reason joins the reasons."""
    failed = [r["reason"] for r in results if not r["passed"]]
    out = {**gates, "results": [*gates["results"], *results],
           "passed": bool(gates["passed"]) and not failed}
    out["reasons"] = [*gates.get("reasons", []), *failed]
    return out


def is_budget_result(result: Any) -> bool:
    """Whether a gate result (a dict or a GateResult) is a resource budget's."""
    metric = result.get("metric", "") if isinstance(result, Mapping) else result.metric
    return str(metric).startswith("resources.")


def recorded_spec(results: Any, resources: Mapping[str, Any] | None) -> ResourcesSpec | None:
    """The budgets a recorded verdict judged (its ``resources.*`` results' bounds), with the
    latency settings the record's resources section names; None when it judged none."""
    bounds = {}
    for r in results:
        if is_budget_result(r):
            d = r if isinstance(r, Mapping) else r.to_dict()
            bounds[str(d["metric"]).removeprefix("resources.")] = d["bound"]
    known = {key for key, _ in BUDGETS}
    if not bounds or not set(bounds) <= known:
        return None if not bounds else ResourcesSpec.from_dict({})  # an unknown budget: none
    latency = ((resources or {}).get("budgets") or {}).get("latency") or {}
    doc: dict[str, Any] = {k: (int(v) if k == "max_model_bytes" else float(v))
                           for k, v in bounds.items()}
    return ResourcesSpec.from_dict({**doc, "latency": dict(latency)})


def rejudge(verdict: Any, recorded_results: Any, resources: Mapping[str, Any] | None,
            spec: ResourcesSpec | None = None) -> Any:
    """*verdict* (a GateVerdict of the rules) with the budgets re-judged on the record's
    *resources* measurement: the budgets of *spec* (params in force), else those the
    recorded results name. A recorded budget without a measurement fails closed."""
    from relgate.gates import GateVerdict

    spec = recorded_spec(recorded_results, resources) if spec is None else spec
    if spec is None:
        return verdict
    return GateVerdict.from_dict(with_budgets(verdict.to_dict(), gate_results(resources, spec)))


def apply_to_report(report: dict[str, Any], resources: dict[str, Any], spec: ResourcesSpec,
                    **judged: Any) -> None:
    """Record *resources* in *report* and gate on it: results, verdict, reasons, passed.

    With ``judged_on`` (promote: the promoted report's ``resources``, None when it has
    none), that measurement is the one recorded and gated instead, so that the re-computed
    verdict can be required to be the report's; the fresh one is checked apart
    (:func:`reproduction_problems`, :func:`fresh_breaches`)."""
    if "judged_on" in judged:
        resources = judged["judged_on"]
        if resources is None:
            report.pop("resources", None)
        else:
            report["resources"] = dict(resources)
    else:
        report["resources"] = resources
    results = gate_results(resources, spec)
    report["gates"] = with_budgets(report["gates"], results)
    failed = [r["reason"] for r in results if not r["passed"]]
    if failed:
        report["passed"] = False
        report["reasons"] = [*report["reasons"], *failed]


# ---------------------------------------------------------------- promotion


def reproduction_problems(reported: Mapping[str, Any] | None, fresh: Mapping[str, Any],
                          spec: ResourcesSpec) -> list[str]:
    """Where promotion's fresh measurement of memory and size does not reproduce the report's
    (relative tolerance ``resources.tolerance``), for the budgets declared. Timings are
    never compared."""
    problems = []
    if reported is None:
        return [] if not spec.budgets() else ["the validation report has no resources section"]
    rm, fm = reported.get("measured") or {}, fresh.get("measured") or {}
    for key, value_key, tol_key in REPRODUCED:
        if getattr(spec, key) is None:
            continue
        a, b = rm.get(value_key), fm.get(value_key)
        tol = float(spec.tolerance.get(tol_key, 0.0))
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            problems.append(f"resources {value_key}: reported {a!r}, re-measured {b!r}")
        elif abs(float(b) - float(a)) > tol * abs(float(a)):
            problems.append(f"resources {value_key}: reported {_fmt(a)}, re-measured {_fmt(b)} "
                            f"(relative tolerance {tol:g})")
    return problems


def fresh_breaches(fresh: Mapping[str, Any], spec: ResourcesSpec) -> list[str]:
    """The reproduced budgets (memory, size) the fresh measurement breaks or cannot show."""
    keep = {key for key, _, _ in REPRODUCED}
    return [r["reason"] for r in gate_results(fresh, spec, where=" when re-measured by promote")
            if r["metric"].removeprefix("resources.") in keep and not r["passed"]]


# ---------------------------------------------------------------- the batch size


def declared_shapes(model_path: str | os.PathLike[str]) -> Any:
    """The graph's inputs and outputs (``TensorInfo``) from the model file alone (external
    data is not read, nothing is checked); None when it cannot be parsed (the runner then
    says why, as it always does)."""
    from types import SimpleNamespace

    from relgate import onnxmodel
    from relgate.errors import RelgateError

    try:
        graph = onnxmodel._load_proto(Path(model_path)).graph
    except (RelgateError, OSError):
        return None
    initializers = {t.name for t in graph.initializer}
    return SimpleNamespace(
        inputs=tuple(onnxmodel._value_info(v) for v in graph.input if v.name not in initializers),
        outputs=tuple(onnxmodel._value_info(v) for v in graph.output))


def io_bytes_per_sample(contract: Any) -> int | None:
    """Bytes of one sample's inputs and outputs from the model's declared shapes (anything
    with ``inputs`` and ``outputs`` of TensorInfo); None when a non-batch dimension is
    symbolic or a dtype's size is unknown."""
    total = 0
    for t in (*contract.inputs, *contract.outputs):
        if t.shape is None:
            return None
        size = _ITEMSIZE.get(t.dtype)
        dims = t.shape[1:]
        if size is None or not all(isinstance(d, int) and d > 0 for d in dims):
            return None
        total += size * math.prod(int(d) for d in dims)  # type: ignore[arg-type]
    return total


_ITEMSIZE = {"float32": 4, "float": 4, "float16": 2, "float64": 8, "double": 8, "int64": 8,
             "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1, "bfloat16": 2}


def default_batch(contract: Any, configured: int) -> int:
    """The memory-aware default: *configured*, capped so that one batch's inputs and outputs
    stay under DEFAULT_BATCH_BYTES (unknown sizes leave it as configured)."""
    per = io_bytes_per_sample(contract)
    if not per:
        return configured
    return max(1, min(configured, DEFAULT_BATCH_BYTES // per))


def choose_batch(model_path: str | os.PathLike[str], data_path: str | os.PathLike[str], *,
                 budget_mb: float, requested: int, threads: int, table: Any = None,
                 labels: str = "binary") -> dict[str, Any]:
    """The largest batch (<= *requested*) whose scoring fits *budget_mb* of peak RSS.

    Measures, on a session of its own (after the guarded probe), the resident set after a
    warm run of one row and after a run of a probe batch (up to PROBE_ROWS rows): the
    per-sample memory is the larger of their difference per row and the sample's own inputs
    and outputs. The room is the budget less the resident set after the probe and
    BUDGET_SLACK of the budget. Returns the report's ``resources.batch`` record.
    """
    import numpy as np

    from relgate import onnxmodel
    from relgate.scoring import EvalData, release_sessions

    release_sessions()
    onnxmodel.probe_session(model_path, threads=threads)
    session = onnxmodel.make_session(model_path, threads=threads)
    try:
        inputs = session.get_inputs()
        fixed = [i.shape[0] for i in inputs if i.shape and isinstance(i.shape[0], int)]
        if fixed:
            return {"requested": requested, "chosen": requested, "per_sample_bytes": None,
                    "reason": f"the model takes a fixed batch of {fixed[0]}"}
        ev = EvalData.open(data_path, labels=labels, table=table)
        names = [i.name for i in inputs]
        rows = min(ev.n, PROBE_ROWS)
        picked = ev.take(names, np.arange(rows, dtype=np.intp))
        one = {k: np.ascontiguousarray(v[:1]) for k, v in picked.items()}
        session.run(None, one)
        before = current_rss_bytes() or 0
        outs = session.run(None, {k: np.ascontiguousarray(v) for k, v in picked.items()})
        after = current_rss_bytes() or 0
        io = sum(int(v[:1].nbytes) for v in picked.values())
        io += sum(int(np.asarray(o).nbytes) // max(1, rows) for o in outs)
        grown = (after - before) // max(1, rows - 1) if rows > 1 else 0
        per = max(io, grown, 1)
    finally:
        del session
    room = budget_mb * MIB * (1.0 - BUDGET_SLACK) - float(max(after, peak_rss_bytes() or 0))
    fits = int(room // per) if room > 0 else 0
    chosen = max(1, min(requested, fits))
    if fits >= requested:
        reason = f"batch {requested} fits the memory budget"
    elif fits >= 1:
        reason = (f"batch {requested} would not fit max_memory_mb {budget_mb:g} "
                  f"(~{per / MIB:.3g} MiB a sample); {chosen} does")
    else:
        reason = (f"no batch fits max_memory_mb {budget_mb:g}: the model and relgate already "
                  f"hold {after / MIB:.0f} MiB; scored one row at a time")
    return {"requested": requested, "chosen": chosen, "per_sample_bytes": int(per),
            "reason": reason}
