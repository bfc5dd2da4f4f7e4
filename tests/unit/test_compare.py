"""relgate.compare: candidate specs, the paired engine on shared resamples, ranking and ties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from relgate.compare import (
    CandidateSpec,
    SnapshotSpec,
    compare,
    paired_metrics,
    parse_candidate,
)
from relgate.errors import UsageError
from relgate.metrics import paired_bootstrap_delta
from relgate.params import load_params
from tests.support.onnx_factory import probability_model, write_npz

PARAMS = """\
schema_version: 1
seed: 0
task:
  kind: {kind}
  output: probabilities
  output_type: {output_type}
evaluate:
  threads: 1
  batch_size: 512
validate:
  bootstrap:
    resamples: 400
    confidence: 0.95
    seed: 11
  ece_bins: 10
gates:
  mode: all
  rules:
  - metric: auc
    op: '>='
    value: 0.5
release:
  name: r
  promoted:
    path: models/a.onnx
"""

W = np.array([1.2, -0.8, 0.5, 0.0], dtype=np.float64)


def test_candidate_syntax() -> None:
    one = parse_candidate("run1=models/m.onnx:analysis/cal.json")
    assert one == CandidateSpec(name="run1", snapshots=(
        SnapshotSpec(model=Path("models/m.onnx"), calibration=Path("analysis/cal.json")),))
    assert parse_candidate("r=analysis/report.json").snapshots == (
        SnapshotSpec(report=Path("analysis/report.json")),)
    sets = parse_candidate("s=a.onnx,b.onnx:b.json,rep.json").snapshots
    assert [(s.model, s.calibration, s.report) for s in sets] == [
        (Path("a.onnx"), None, None), (Path("b.onnx"), Path("b.json"), None),
        (None, None, Path("rep.json"))]
    for bad in ("noequals.onnx", "=a.onnx", "x=", "x=a.pt", "x=a.onnx,,b.onnx",
                "x=a.txt:c.json", "bad name=a.onnx"):
        with pytest.raises(UsageError):
            parse_candidate(bad)


def _probs(seed: int, n: int = 800) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.int8)
    signal = y * 1.0 + rng.normal(size=n)
    probs = [1.0 / (1.0 + np.exp(-(k * signal + rng.normal(scale=0.5, size=n) - 0.5)))
             for k in (1.0, 1.5, 0.5)]
    return y, probs


def test_points_match_sklearn_at_each_models_own_threshold() -> None:
    y, probs = _probs(0)
    thresholds = [0.5, 0.42, 0.61]
    points, boots = paired_metrics(y, probs, thresholds, ("f1", "precision", "recall"),
                                   resamples=50, seed=1)
    for p, t, point in zip(probs, thresholds, points, strict=True):
        pred = (p >= t).astype(int)
        assert abs(point["f1"] - skm.f1_score(y, pred)) <= 1e-12
        assert abs(point["precision"] - skm.precision_score(y, pred)) <= 1e-12
        assert abs(point["recall"] - skm.recall_score(y, pred)) <= 1e-12
    assert all(b["f1"].shape == (50,) for b in boots)


def test_every_model_sees_the_same_resamples_as_a_paired_delta() -> None:
    """The delta of models 0 and m on the shared resamples is exactly relgate's paired
    bootstrap of the pair (same seed, drawn in model 0's order)."""
    from relgate.metrics import _interval

    y, probs = _probs(1)
    thresholds = [0.5, 0.45, 0.55]
    _, boots = paired_metrics(y, probs, thresholds, ("f1",), resamples=300, seed=9)
    for m in (1, 2):
        pair = paired_bootstrap_delta(y, probs[0], probs[m], "f1", thresholds[0], thresholds[m],
                                      resamples=300, confidence=0.9, seed=9)
        assert _interval(boots[0]["f1"] - boots[m]["f1"], 0.9) == (pair.ci_low, pair.ci_high)


def _world(tmp_path: Path, models: dict[str, tuple[np.ndarray, float]], *,
           kind: str = "binary", output_type: str = "probability") -> Path:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1200, 4)).astype(np.float32)
    y = (rng.random(1200) < 1.0 / (1.0 + np.exp(-(x @ W - 0.3)))).astype(np.int64)
    write_npz(tmp_path / "test.npz", x=x, y=y)
    for name, (coef, intercept) in models.items():
        probability_model(tmp_path, coef, intercept, name=f"{name}.onnx")
    (tmp_path / "params.yaml").write_text(PARAMS.format(kind=kind, output_type=output_type))
    return tmp_path


def _specs(root: Path, *names: str) -> list[CandidateSpec]:
    return [CandidateSpec(name=n, snapshots=(SnapshotSpec(model=root / f"{n}.onnx"),))
            for n in names]


def test_tie_breakers_order_a_tie_and_can_beat_the_leader(tmp_path: Path) -> None:
    """Two models indistinguishable on f1: the one with the higher precision wins."""
    root = _world(tmp_path, {"eager": (W, -0.25), "strict": (W, -0.35), "weak": (0.2 * W, -0.3)})
    record = compare(_specs(root, "eager", "strict", "weak"), data_path=root / "test.npz",
                     params=load_params(root / "params.yaml"), by="f1", then=("precision",))
    rows = {r["name"]: r for r in record["candidates"]}
    assert rows["eager"]["group"] == rows["strict"]["group"] == 1
    assert rows["weak"]["group"] == 2 and rows["weak"]["delta_vs_leader"]["f1"]["ci_high"] < 0
    tied = [r for r in record["candidates"] if r["group"] == 1]
    assert tied[0]["metrics"]["precision"]["value"] > tied[1]["metrics"]["precision"]["value"]
    assert record["winner"] == tied[0]["name"]
    leader = max(tied, key=lambda r: r["metrics"]["f1"]["value"])
    assert record["leader"] == leader["name"]
    # precision outranks a higher f1 inside the tie
    assert (record["leader"], record["winner"]) == ("eager", "strict")
    assert rows["strict"]["tied_with_leader"] and not rows["eager"]["tied_with_leader"]
    # without tie-breakers the tie is ordered by f1 itself
    plain = compare(_specs(root, "strict", "eager", "weak"), data_path=root / "test.npz",
                    params=load_params(root / "params.yaml"), by="f1")
    assert plain["winner"] == plain["leader"] == leader["name"]


def test_lower_is_better_sorts_ascending(tmp_path: Path) -> None:
    root = _world(tmp_path, {"good": (W, -0.3), "bad": (3.0 * W, 1.0), "ok": (0.6 * W, -0.3)})
    record = compare(_specs(root, "bad", "ok", "good"), data_path=root / "test.npz",
                     params=load_params(root / "params.yaml"), by="brier")
    values = [r["metrics"]["brier"]["value"] for r in record["candidates"]]
    assert values == sorted(values) and record["leader"] == "good"
    assert record["lower_is_better"] == ["brier"]


def test_refusals_before_scoring(tmp_path: Path) -> None:
    root = _world(tmp_path, {"a": (W, 0.0), "b": (W, 0.1)})
    params = load_params(root / "params.yaml")
    with pytest.raises(UsageError, match="unknown metric 'mean_std'"):
        compare(_specs(root, "a", "b"), data_path=root / "test.npz", params=params,
                by="mean_std")
    with pytest.raises(UsageError, match="named twice"):
        compare(_specs(root, "a", "b"), data_path=root / "test.npz", params=params,
                by="f1", then=("f1",))
    multi = _world(tmp_path / "mc", {"a": (W, 0.0), "b": (W, 0.1)}, kind="multiclass",
                   output_type="probabilities")
    with pytest.raises(UsageError, match="unknown metric 'f1' for this multi-class task"):
        compare(_specs(multi, "a", "b"), data_path=multi / "test.npz",
                params=load_params(multi / "params.yaml"))
    with pytest.raises(UsageError, match="selective threshold"):
        compare(_specs(multi, "a", "b"), data_path=multi / "test.npz", by="coverage",
                params=load_params(multi / "params.yaml"))
    record = compare(_specs(multi, "a", "b"), data_path=multi / "test.npz", by="log_loss",
                     then=("macro_f1",), params=load_params(multi / "params.yaml"))
    assert record["task"] == "multiclass" and record["lower_is_better"] == ["log_loss"]
    losses = [r["metrics"]["log_loss"]["value"] for r in record["candidates"]]
    assert losses == sorted(losses)
