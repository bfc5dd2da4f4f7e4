"""relgate.parity's pure parts: the numbers against numpy, fail-closed gates, the record
comparison promote uses, and the archive checks that run before torch opens a file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from relgate.errors import DataError, ModelError
from relgate.parity import (
    DecisionRule,
    compare_outputs,
    decision_rule,
    gate_reasons,
    record_differences,
    reference_format,
)


def test_numbers_are_numpys_on_vectors_and_matrices() -> None:
    rng = np.random.default_rng(1)
    for shape in ((50,), (40, 3)):
        a = rng.normal(size=shape)
        b = a + rng.normal(scale=1e-3, size=shape)
        c = compare_outputs(a, b)
        assert c.max_abs_diff == float(np.max(np.abs(a - b)))
        assert c.correlation == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-15)
        assert c.n == shape[0] and c.shape == shape and c.nonfinite == 0


def test_agreement_is_the_share_of_equal_decisions() -> None:
    c = compare_outputs(np.arange(4.0), np.arange(4.0),
                        decisions=(np.array([1, 0, 1, -1]), np.array([1, 1, 1, -1])))
    assert c.agreement == 0.75


def test_a_shape_mismatch_is_bad_input() -> None:
    with pytest.raises(ModelError, match=r"\[5, 1\].*\[5\]"):
        compare_outputs(np.zeros(5), np.zeros((5, 1)))
    with pytest.raises(DataError):
        compare_outputs(np.zeros(0), np.zeros(0))


def test_bounds_are_inclusive_and_unset_bounds_are_not_gated() -> None:
    c = compare_outputs(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.5]))
    assert gate_reasons(c) == []
    assert gate_reasons(c, max_abs_diff=0.5) == []
    (reason,) = gate_reasons(c, max_abs_diff=0.4999)
    assert reason.startswith("parity max_abs_diff 0.5 > 0.4999")


def test_an_undefined_correlation_fails_its_gate_closed() -> None:
    c = compare_outputs(np.ones(6), np.ones(6))  # constant: Pearson is undefined
    assert c.correlation is None and c.max_abs_diff == 0.0
    assert gate_reasons(c, max_abs_diff=0.0) == []
    (reason,) = gate_reasons(c, min_correlation=0.995)
    assert "undefined" in reason and "fails closed" in reason
    assert gate_reasons(c, min_agreement=0.9)  # no decisions: undefined agreement fails


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_fail_without_any_bound(bad: float) -> None:
    b = np.arange(5.0)
    b[2] = bad
    c = compare_outputs(np.arange(5.0), b, decisions=(np.zeros(5), np.zeros(5)))
    assert c.nonfinite == 1 and c.max_abs_diff is None and c.agreement is None
    assert "non-finite" in gate_reasons(c)[0]
    assert len(gate_reasons(c, max_abs_diff=1.0, min_correlation=0.0)) == 3


def test_decision_rules() -> None:
    class Contract:
        score_kind, output_type, positive_index, reducer, score_output = \
            "score", "logit", None, None, "score"

    logits = np.array([-2.0, -0.1, 0.0, 0.3, 4.0])
    half = decision_rule("binary", None)
    assert half.to_dict() == {"rule": "probability >= 0.5", "threshold": 0.5}
    assert half.decide(Contract(), logits, "m").tolist() == [False, False, True, True, True]
    calibration = {"input": {"scale": 1.0, "offset": 0.0}, "threshold": {"value": 0.8},
                   "probability": {"a": 1.0, "b": 0.0, "score_is_probability": False},
                   "inconclusive": {"low": 0.4, "high": 0.6}}
    cal = decision_rule("binary", calibration)
    assert cal.threshold == 0.8
    assert cal.decide(Contract(), logits, "m").tolist() == [0, -1, -1, -1, 1]
    argmax = DecisionRule(kind="argmax", threshold=None)
    assert argmax.decide(Contract(), np.array([[0.1, 2.0], [3.0, 1.0]]), "m").tolist() == [1, 0]
    with pytest.raises(ModelError):
        argmax.decide(Contract(), np.zeros(3), "m")


def _record() -> dict[str, object]:
    return {"reference": {"sha256": "a" * 64, "format": "torchscript"}, "model": {"sha256": "b" * 64},
            "data": {"sha256": "c" * 64}, "samples": {"n": 10}, "output": {"name": "score",
            "shape": [10]}, "decision": {"rule": "calibration", "threshold": 0.4,
            "calibration": {"path": "analysis/calibration.json", "sha256": "d" * 64}},
            "bounds": {"max_abs_diff": 1e-4, "min_correlation": None, "min_agreement": None},
            "passed": True, "metrics": {"max_abs_diff": 1e-6, "correlation": 0.9999,
            "spearman": 0.9998, "agreement": 1.0, "nonfinite": 0}}


def test_record_differences_name_an_edited_number_and_a_stale_input() -> None:
    fresh = _record()
    assert record_differences(_record(), fresh) == []
    edited = _record()
    edited["metrics"]["correlation"] = 0.99995  # type: ignore[index]
    assert [d.split(":")[0] for d in record_differences(edited, fresh)] == \
        ["parity metrics.correlation"]
    assert record_differences(edited, fresh, tolerance=1e-3) == []
    stale = _record()
    stale["decision"]["calibration"]["sha256"] = "e" * 64  # type: ignore[index]
    stale["decision"]["threshold"] = 0.5  # type: ignore[index]
    stale["data"]["sha256"] = "f" * 64  # type: ignore[index]
    assert {d.split(":")[0] for d in record_differences(stale, fresh)} == {
        "parity decision.threshold", "parity decision.calibration.sha256", "parity data.sha256"}
    undefined = _record()
    undefined["metrics"]["correlation"] = None  # type: ignore[index]
    assert record_differences(undefined, fresh)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"m/{name}", data)
    return path


_PT2 = {"archive_format": b"pt2", "archive_version": b"0", "byteorder": b"little",
        "models/model.json": b"{}",
        "data/weights/model_weights_config.json": json.dumps(
            {"config": {"w": {"path_name": "weight_0", "use_pickle": False}}}).encode(),
        "data/weights/weight_0": b"\x00" * 8,
        "data/constants/model_constants_config.json": b'{"config": {}}'}


def test_archives_are_judged_before_torch_opens_them(tmp_path: Path) -> None:
    assert reference_format(_zip(tmp_path / "ok.pt2", _PT2)) == "torch.export"
    shapes = {**_PT2, "models/model.json": json.dumps({
        "guards_code": ["L['x'].size()[1] == 12"], "range_constraints": {"s77": {}},
        "graph": {"sym_int_values": [{"as_expr": {"expr_str": "Max(1, 2*s77 + 1)"}}]}}).encode()}
    assert reference_format(_zip(tmp_path / "shapes.pt2", shapes)) == "torch.export"
    ts = {"data.pkl": b"", "constants.pkl": b"", "code/__torch__/m.py": b"", "version": b"3"}
    assert reference_format(_zip(tmp_path / "ts.pt", ts)) == "torchscript"
    (tmp_path / "raw.pt").write_bytes(b"\x80\x02}q\x00.")  # a legacy (non-zip) pickle
    with pytest.raises(ModelError, match="not a zip"):
        reference_format(tmp_path / "raw.pt")
    with pytest.raises(ModelError, match=r"not a TorchScript or torch\.export"):
        reference_format(_zip(tmp_path / "other.pt", {"readme.txt": b"hi"}))


@pytest.mark.parametrize(("extra", "config", "match"), [
    ({"data/aotinductor/model/m.so": b"\x7fELF"}, None, "native code"),
    ({"data/constants/custom_obj_0": b"x"}, {"c": {"path_name": "custom_obj_0"}}, "pickled object"),
    ({"data/weights/model.pt": b"x"}, None, r"not part of a torch\.export program"),
    ({}, {"c": {"path_name": "../../etc/passwd"}}, "missing constants file"),
    ({"models/model.json": b'{"guards_code": ["L[\'x\'].size()[0] == 2 or exec(\'1\')"]}'},
     None, "guards_code"),
    ({"models/model.json": json.dumps({"graph": {"sym_int_values": [{"as_expr": {
        "expr_str": "exec(chr(49))"}}]}}).encode()}, None, "symbolic expression"),
    ({"models/model.json": b'{"range_constraints": {"__import__": {}}}'}, None, "symbolic"),
])
def test_pt2_members_torch_would_unpickle_or_run_are_refused(
        tmp_path: Path, extra: dict[str, bytes], config: dict[str, object] | None,
        match: str) -> None:
    members = {**_PT2, **extra}
    if config is not None:
        members["data/constants/model_constants_config.json"] = json.dumps(
            {"config": config}).encode()
    with pytest.raises(ModelError, match=match):
        reference_format(_zip(tmp_path / "bad.pt2", members))
