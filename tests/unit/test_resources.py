"""Resource budgets (relgate.resources): params, gates, promotion's reproduction rules, the
batch size, and the streaming output health of task kind none.

Timings never decide a test here: a gate test declares a bound nothing can miss or meet.
"""

from __future__ import annotations

import resource

import numpy as np
import pytest

from relgate.errors import ParamsError
from relgate.gates import GateVerdict
from relgate.metrics import health_stats
from relgate.onnxmodel import TensorInfo
from relgate.params import params_from_dict
from relgate.resources import (
    DEFAULT_BATCH_BYTES,
    MIB,
    ResourcesSpec,
    current_rss_bytes,
    default_batch,
    fresh_breaches,
    gate_results,
    io_bytes_per_sample,
    peak_rss_bytes,
    rejudge,
    reproduction_problems,
    with_budgets,
)
from relgate.tasks.none import _Streaming

BASE = {"schema_version": 1,
        "gates": {"mode": "all", "rules": [{"metric": "auc", "op": ">=", "value": 0.5}]},
        "release": {"name": "v1", "promoted": {"path": "models/m.onnx"}}}


def _usage(**measured: float | None) -> dict[str, object]:
    values = {"peak_rss_mb": 100.0, "model_bytes": 1000, "load_seconds": 0.5,
              "latency_ms": 10.0, **measured}
    return {"budgets": {}, "measured": values,
            "machine": {"cpu": "x", "cores": 1, "onnxruntime": "1", "threads": 1}}


# ---------------------------------------------------------------- params


def test_resources_are_read_typed_with_default_tolerances() -> None:
    params = params_from_dict({**BASE, "resources": {
        "max_memory_mb": 4400, "max_load_seconds": 5, "max_latency_ms": 200,
        "latency": {"batch_size": 1, "percentile": 50, "runs": 7}, "max_model_bytes": 5000,
        "tolerance": {"memory": 0.1}}})
    spec = params.resources
    assert spec is not None
    assert spec.budgets() == {"max_memory_mb": 4400.0, "max_model_bytes": 5000.0,
                              "max_load_seconds": 5.0, "max_latency_ms": 200.0}
    assert (spec.latency.batch_size, spec.latency.percentile, spec.latency.runs,
            spec.latency.warmup) == (1, 50.0, 7, 3)
    assert dict(spec.tolerance) == {"memory": 0.1, "model_bytes": 0.0}
    assert params_from_dict(BASE).resources is None


@pytest.mark.parametrize("section", [
    {"max_memory": 4400},                      # a typo is not a budget nobody checks
    {"max_memory_mb": 0},                      # a budget nothing fits
    {"max_latency_ms": -1},
    {"max_model_bytes": 1.5},
    {"latency": {"percentile": 101}},
    {"tolerance": {"timing": 0.5}},            # timings are never a reproduction check
])
def test_a_malformed_resources_section_is_bad_input(section: dict[str, object]) -> None:
    with pytest.raises(ParamsError):
        params_from_dict({**BASE, "resources": section})


def test_task_kind_none_refuses_score_metrics_and_baselines() -> None:
    none = {**BASE, "task": {"kind": "none"}}
    with pytest.raises(ParamsError, match="task kind none has no 'auc'"):
        params_from_dict(none)
    ok = {**none, "gates": {"mode": "all",
                            "rules": [{"metric": "mean_std", "op": ">", "value": 0.01}]}}
    assert params_from_dict(ok).task is not None
    with pytest.raises(ParamsError, match=r"gates\.baseline"):
        params_from_dict({**ok, "gates": {**ok["gates"],  # type: ignore[dict-item]
                                          "baseline": {"release": "v0", "max_drop": {}}}})


# ---------------------------------------------------------------- the gates


def test_generous_budgets_pass_and_impossible_ones_fail_naming_the_budget() -> None:
    generous = ResourcesSpec.from_dict({"max_memory_mb": 1e6, "max_latency_ms": 1e6,
                                        "max_load_seconds": 1e6, "max_model_bytes": 10**12})
    impossible = ResourcesSpec.from_dict({"max_memory_mb": 1e-6, "max_latency_ms": 1e-6,
                                          "max_load_seconds": 1e-6, "max_model_bytes": 1})
    assert all(r["passed"] for r in gate_results(_usage(), generous))
    failed = gate_results(_usage(), impossible)
    assert [r["metric"] for r in failed] == ["resources.max_memory_mb", "resources.max_model_bytes",
                                             "resources.max_load_seconds",
                                             "resources.max_latency_ms"]
    assert not any(r["passed"] for r in failed)
    assert "resources.max_memory_mb: 100 MiB peak RSS > the budget 1e-06" in failed[0]["reason"]
    assert failed[3]["observed"] == 10.0 and "at batch 1, p95" in failed[3]["reason"]


def test_an_unmeasured_budget_fails_closed() -> None:
    spec = ResourcesSpec.from_dict({"max_memory_mb": 1e6, "max_latency_ms": 1e6})
    usage = _usage(peak_rss_mb=None, latency_ms=None)
    usage["unmeasured"] = {"latency_ms": "the model takes a fixed batch of 4"}
    results = gate_results(usage, spec)
    assert [r["passed"] for r in results] == [False, False]
    assert "fixed batch of 4" in results[1]["reason"] and "fails closed" in results[1]["reason"]
    assert all(not r["passed"] and "not measured" in r["reason"]
               for r in gate_results(None, spec))


def test_budgets_are_anded_with_rules_whatever_the_mode() -> None:
    rules = {"mode": "any", "passed": True, "reasons": [],
             "results": [{"metric": "auc", "op": ">=", "bound": 0.5, "on": "point",
                          "observed": 0.9, "passed": True, "reason": "auc 0.9 >= 0.5"}]}
    spec = ResourcesSpec.from_dict({"max_memory_mb": 50})
    combined = with_budgets(rules, gate_results(_usage(), spec))
    assert combined["passed"] is False and len(combined["results"]) == 2
    assert combined["reasons"] == [combined["results"][1]["reason"]]
    assert with_budgets(rules, gate_results(_usage(), ResourcesSpec.from_dict(
        {"max_memory_mb": 500})))["passed"] is True


def test_a_recorded_verdict_is_rejudged_on_the_recorded_measurement() -> None:
    """A report whose resources section was edited below its budget after the verdict was
    recorded does not keep a stale 'pass': renderers judge the numbers, not the claim."""
    rules = GateVerdict.from_dict({"mode": "all", "passed": True, "reasons": [], "results": []})
    recorded = gate_results(_usage(), ResourcesSpec.from_dict({"max_memory_mb": 500}))
    assert rejudge(rules, recorded, _usage()).passed
    assert not rejudge(rules, recorded, _usage(peak_rss_mb=900.0)).passed
    assert not rejudge(rules, recorded, None).passed  # the measurement was removed
    assert rejudge(rules, (), _usage()).passed  # nothing recorded, nothing to judge


# ---------------------------------------------------------------- promotion


def test_memory_and_size_must_reproduce_within_their_tolerance_timings_never() -> None:
    spec = ResourcesSpec.from_dict({"max_memory_mb": 1e6, "max_model_bytes": 10**9,
                                    "max_latency_ms": 1e6, "tolerance": {"memory": 0.25}})
    reported = _usage(peak_rss_mb=100.0)
    assert reproduction_problems(reported, _usage(peak_rss_mb=124.0, latency_ms=999.0), spec) == []
    moved = reproduction_problems(reported, _usage(peak_rss_mb=126.0), spec)
    assert len(moved) == 1 and "peak_rss_mb: reported 100, re-measured 126" in moved[0]
    assert reproduction_problems(reported, _usage(model_bytes=1001), spec) != []
    assert reproduction_problems(None, _usage(), spec) == [
        "the validation report has no resources section"]


def test_a_fresh_measurement_over_the_budget_is_a_breach() -> None:
    spec = ResourcesSpec.from_dict({"max_memory_mb": 110, "max_latency_ms": 1e-6})
    assert fresh_breaches(_usage(peak_rss_mb=100.0), spec) == []  # latency: never compared
    breach = fresh_breaches(_usage(peak_rss_mb=120.0), spec)
    assert len(breach) == 1 and "when re-measured by promote" in breach[0]


# ---------------------------------------------------------------- measurements


def test_peak_rss_is_the_kernels_high_water_mark() -> None:
    """VmHWM agrees with getrusage's ru_maxrss (the same counter, read another way), and
    grows when the process touches more memory."""
    peak = peak_rss_bytes()
    assert peak is not None and current_rss_bytes() is not None
    assert abs(peak - resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) <= 8 * MIB
    block = np.ones(64 * MIB, dtype=np.uint8)  # touched: resident
    after = peak_rss_bytes()
    assert after is not None and after >= (current_rss_bytes() or 0) >= 64 * MIB
    del block


def test_the_default_batch_caps_inputs_and_outputs_of_one_batch() -> None:
    wide = type("C", (), {"inputs": (TensorInfo(name="x", dtype="float32", shape=("N", 16)),),
                          "outputs": (TensorInfo(name="f", dtype="float32",
                                                 shape=("N", 128, 8192)),)})()
    per = io_bytes_per_sample(wide)
    assert per == 4 * 16 + 4 * 128 * 8192
    assert default_batch(wide, 256) == DEFAULT_BATCH_BYTES // per == 63
    small = type("C", (), {"inputs": (TensorInfo(name="x", dtype="float32", shape=("N", 16)),),
                           "outputs": (TensorInfo(name="s", dtype="float32", shape=("N",)),)})()
    assert default_batch(small, 256) == 256
    symbolic = type("C", (), {"inputs": (TensorInfo(name="x", dtype="float32",
                                                    shape=("N", "T")),), "outputs": ()})()
    assert io_bytes_per_sample(symbolic) is None and default_batch(symbolic, 256) == 256


# ---------------------------------------------------------------- task kind none's health


@pytest.mark.parametrize("shape", [(40, 7, 6), (40, 5), (40,)])
def test_streaming_health_equals_the_metrics_module_on_the_whole_output(
        shape: tuple[int, ...]) -> None:
    """mean_std and high_corr_frac accumulated batch by batch equal relgate.metrics'
    health_stats on the whole output laid out as rows (sample, position) x last axis."""
    rng = np.random.default_rng(0)
    out = rng.normal(size=shape).astype(np.float32)
    if len(shape) >= 2:
        out[..., 1] = 2 * out[..., 0] + 0.001 * out[..., 1]  # one highly correlated pair
        out[..., -1] = 3.0  # a constant column
    stream = _Streaming()
    for start in range(0, shape[0], 9):
        stream.add(out[start:start + 9])
    got = stream.health()
    rows = out.reshape(-1, shape[-1] if len(shape) >= 2 else 1).astype(np.float64)
    want = health_stats(rows, np.zeros(rows.shape[0]), 0.5)
    assert got["mean_std"][0] == pytest.approx(want["mean_std"], rel=1e-9, abs=1e-12)
    assert got["high_corr_frac"][0] == pytest.approx(want["high_corr_frac"], abs=1e-12)
    if len(shape) >= 2:
        assert got["high_corr_frac"][0] > 0
