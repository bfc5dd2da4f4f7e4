"""Multi-class calibration end to end on real exports: ``relgate calibrate`` fits a temperature
by NLL and a "no conclusive" threshold on the validation split, ``validate --calibration``
judges the calibrated probabilities (plus coverage and selective accuracy), ``promote`` ships
the calibration, ``evaluate`` writes the calibrated matrix, and a previous release is a
baseline. Oracles: scipy's NLL minimum, scikit-learn's numbers on softmax(z / T), brute-force
coverage counts; attacks: a calibration fit on the test split or for another model, a forged
temperature, NaN/inf temperatures, an unreachable selective target.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.acceptance.test_multiclass_validate import _outputs, _skl2onnx, _torch_logits
from tests.support.registry import relgate

PARAMS = """\
schema_version: 1
seed: 0
task:
{task}evaluate:
  threads: 1
  batch_size: 256
calibrate:
  method: temperature
{selective}  ece_bins: 10
validate:
  bootstrap:
    resamples: 30
    confidence: 0.9
    seed: 3
  ece_bins: 10
gates:
  mode: all
  rules:
{rules}{baseline}release:
  name: {release}
  promoted:
    path: models/model.onnx
    description: a calibrated multi-class classifier
  tolerance: 1.0e-9
"""
RULES = "  - {metric: accuracy, op: '>=', value: 0.5}\n  - {metric: ece, op: '<', value: 0.5}\n"
SELECTIVE = "  selective: {target_accuracy: %s, min_coverage: %s}\n"


def _write_params(root: Path, task: dict[str, Any], *, selective: str = "",
                  rules: str = RULES, baseline: str = "", release: str = "v1.0.0") -> None:
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in task.items())
    (root / "params.yaml").write_text(PARAMS.format(task=lines, selective=selective, rules=rules,
                                                    baseline=baseline, release=release))


def _registry(root: Path, model: bytes, splits: dict[str, dict[str, np.ndarray]],
              task: dict[str, Any], **kw: Any) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.onnx").write_bytes(model)
    (root / "data").mkdir()
    for name, arrays in splits.items():
        np.savez(root / "data" / f"{name}.npz", **arrays)  # type: ignore[arg-type]
    _write_params(root, task, **kw)
    return root


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(1).permutation(len(y))
    train, val, test = order[:700], order[700:1250], order[1250:]
    # strongly regularised: under-confident, so the temperature is far from 1
    clf = LogisticRegression(C=0.02, max_iter=2000).fit(x[train], y[train])
    return {"clf": clf, "val": {"x": x[val], "y": y[val].astype(np.int64)},
            "test": {"x": x[test], "y": y[test].astype(np.int64)}}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    p = _softmax(z / t)
    return float(-np.mean(np.log(p[np.arange(y.size), y])))


def _scipy_temperature(z: np.ndarray, y: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda lt: _nll(z, y, float(np.exp(lt))), bounds=(-6, 6),
                          method="bounded", options={"xatol": 1e-10})
    return float(np.exp(res.x))


def _brute_selective(y: np.ndarray, prob: np.ndarray, target: float
                     ) -> tuple[float, float, float] | None:
    conf, pred = prob.max(axis=1), prob.argmax(axis=1)
    best = None
    for t in sorted(set(conf.tolist())):
        covered = conf >= t
        acc = float(np.mean(pred[covered] == y[covered]))
        if acc >= target and (best is None or covered.mean() > best[1]):
            best = (t, float(covered.mean()), acc)
    return best


def _coverage(y: np.ndarray, prob: np.ndarray, t: float) -> tuple[float, float]:
    conf, pred = prob.max(axis=1), prob.argmax(axis=1)
    covered = conf >= t
    return int(covered.sum()) / y.size, int((pred[covered] == y[covered]).sum()) / int(covered.sum())


def _sklearn(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    k = prob.shape[1]
    labels = list(range(k))
    pred = prob.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {"accuracy": skm.accuracy_score(y, pred),
                "macro_f1": skm.f1_score(y, pred, average="macro", labels=labels,
                                         zero_division=0),
                "log_loss": skm.log_loss(y, prob, labels=labels),
                "macro_auc": skm.roc_auc_score(y, prob, multi_class="ovr", labels=labels)}


def _calibrate(root: Path, data: str = "data/val.npz", out: str = "analysis/calibration.json"
               ) -> int:
    return relgate(root, "calibrate", "--model", "models/model.onnx", "--data", data,
                   "--out", out)


def _validate(root: Path, out: str = "analysis/validation_report.json",
              calibration: str = "analysis/calibration.json", data: str = "data/test.npz") -> int:
    return relgate(root, "validate", "--model", "models/model.onnx", "--data", data,
                   "--calibration", calibration, "--out", out)


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "no-zipmap"])
def test_digits_temperature_selective_validate_promote_with_scipy_and_sklearns_numbers(
        digits: dict[str, Any], tmp_path: Path, zipmap: bool, capsys: Any) -> None:
    from relgate import schemas

    model = _skl2onnx(digits["clf"], zipmap)
    output = "output_probability" if zipmap else "probabilities"
    root = _registry(tmp_path / "reg", model, {"val": digits["val"], "test": digits["test"]},
                     {"kind": "multiclass", "output": output, "output_type": "probabilities"},
                     selective=SELECTIVE % (0.97, 0.5),
                     rules=RULES + "  - {metric: coverage, op: '>=', value: 0.4}\n"
                                   "  - {metric: selective_accuracy, op: '>=', value: 0.9}\n")
    capsys.readouterr()
    assert _calibrate(root) == 0
    assert "temperature" in capsys.readouterr().out
    record = json.loads((root / "analysis" / "calibration.json").read_text())
    schemas.validate(record, "calibration", source="record")
    assert record["task"] == {"kind": "multiclass", "n_classes": 10, "output": output,
                              "output_type": "probabilities", "fit_on": "log_probabilities",
                              "zero_probabilities": 0}
    # the temperature is scipy's NLL minimum on log p of the validation split
    zv = np.log(_outputs(model, digits["val"]["x"], output))
    yv = digits["val"]["y"]
    t = record["probability"]["temperature"]
    assert t == pytest.approx(_scipy_temperature(zv, yv), rel=1e-6)
    assert t < 0.9  # under-confident model: sharpened
    assert _nll(zv, yv, t) <= _nll(zv, yv, t * 1.001) and _nll(zv, yv, t) <= _nll(zv, yv, t / 1.001)
    assert record["nll"]["after"] == pytest.approx(_nll(zv, yv, t), abs=1e-12)
    assert record["nll"]["after"] < record["nll"]["before"]
    # the selective threshold is the brute-force largest coverage at accuracy >= 0.97
    best = _brute_selective(yv, _softmax(zv / t), 0.97)
    assert best is not None
    sel = record["selective"]
    assert (sel["threshold"], sel["coverage"], sel["selective_accuracy"]) == pytest.approx(best,
                                                                                           abs=1e-12)
    assert record["model"]["sha256"] and record["fit_split"]["name"] == "val"

    assert _validate(root) == 0
    report = json.loads((root / "analysis" / "validation_report.json").read_text())
    zt = np.log(_outputs(model, digits["test"]["x"], output))
    yt = digits["test"]["y"]
    prob = _softmax(zt / t)
    for name, want in _sklearn(yt, prob).items():
        assert report["metrics"][name]["value"] == pytest.approx(want, abs=1e-12), name
    cov, acc = _coverage(yt, prob, sel["threshold"])
    assert report["metrics"]["coverage"]["value"] == pytest.approx(cov, abs=1e-12)
    assert report["metrics"]["selective_accuracy"]["value"] == pytest.approx(acc, abs=1e-12)
    cal = report["calibration"]
    assert cal["temperature"] == t and cal["method"] == "temperature"
    assert cal["selective"]["threshold"] == sel["threshold"]
    assert report["threshold"] == 0.0
    assert relgate(root, "promote") == 0
    bundle = root / "models" / "core" / "v1.0.0"
    assert json.loads((bundle / "calibration.json").read_text()) == record
    assert relgate(root, "verify", "models/core/v1.0.0") == 0


def test_torch_logits_50_classes_calibrate_validate_and_evaluate(tmp_path: Path,
                                                                 capsys: Any) -> None:
    rng = np.random.default_rng(7)
    k, d = 50, 16
    centers = rng.normal(size=(k, d)) * 0.8  # classes overlap: the fit is not separable
    y_train = rng.integers(0, k, 2000)
    y_val, y_test = np.repeat(np.arange(k), 6), np.repeat(np.arange(k), 6)
    x_train = (centers[y_train] + rng.normal(size=(2000, d))).astype(np.float32)
    x_val = (centers[y_val] + rng.normal(size=(y_val.size, d))).astype(np.float32)
    x_test = (centers[y_test] + rng.normal(size=(y_test.size, d))).astype(np.float32)
    model = _torch_logits(x_train, y_train, k)
    root = _registry(tmp_path / "reg", model, {"val": {"x": x_val, "y": y_val},
                                               "test": {"x": x_test, "y": y_test}},
                     {"kind": "multiclass", "output": "logits", "output_type": "logits",
                      "top_k": [5]}, selective=SELECTIVE % (0.9, 0.1),
                     rules="  - {metric: accuracy, op: '>=', value: 0.3}\n")
    assert _calibrate(root) == 0
    record = json.loads((root / "analysis" / "calibration.json").read_text())
    t = record["probability"]["temperature"]
    zv = _outputs(model, x_val, "logits")
    assert t == pytest.approx(_scipy_temperature(zv, y_val), rel=1e-6)
    assert record["task"]["fit_on"] == "logits"
    assert _validate(root) == 0
    report = json.loads((root / "analysis" / "validation_report.json").read_text())
    zt = _outputs(model, x_test, "logits")
    prob = _softmax(zt / t)
    for name, want in _sklearn(y_test, prob).items():
        assert report["metrics"][name]["value"] == pytest.approx(want, abs=1e-12), name
    cov, acc = _coverage(y_test, prob, record["selective"]["threshold"])
    assert report["metrics"]["coverage"]["value"] == pytest.approx(cov, abs=1e-12)
    assert report["metrics"]["selective_accuracy"]["value"] == pytest.approx(acc, abs=1e-12)

    capsys.readouterr()
    assert relgate(root, "evaluate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--params", "params.yaml", "--calibration", "analysis/calibration.json",
                   "--out", "scores.npz") == 0
    shown = capsys.readouterr().out
    assert "50 classes" in shown and "no conclusive" in shown
    got = np.load(root / "scores.npz")
    assert sorted(got.files) == ["output", "pred", "prob", "y"]
    assert got["prob"].dtype == np.float64 and got["prob"].shape == (y_test.size, k)
    np.testing.assert_allclose(got["prob"], prob, rtol=0, atol=1e-12)
    assert got["y"].dtype == np.int64 and got["y"].tolist() == y_test.tolist()
    want_pred = np.where(prob.max(axis=1) >= record["selective"]["threshold"],
                         prob.argmax(axis=1), -1)
    assert got["pred"].dtype == np.int64 and got["pred"].tolist() == want_pred.tolist()
    assert (got["pred"] == -1).any()
    np.testing.assert_array_equal(got["output"], zt)
    # without a calibration: the model's own softmax and plain argmax
    assert relgate(root, "evaluate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--params", "params.yaml", "--out", "raw.npz") == 0
    raw = np.load(root / "raw.npz")
    np.testing.assert_allclose(raw["prob"], _softmax(zt), rtol=0, atol=1e-12)
    assert raw["pred"].tolist() == zt.argmax(axis=1).tolist()


def test_calibration_attacks_are_refused(digits: dict[str, Any], tmp_path: Path,
                                         capsys: Any) -> None:
    """Fit on the test split, fit for another model, a forged temperature after validation,
    NaN and infinite temperatures: each is refused, nothing is promoted."""
    from sklearn.linear_model import LogisticRegression

    model = _skl2onnx(digits["clf"], False)
    root = _registry(tmp_path / "reg", model, {"val": digits["val"], "test": digits["test"]},
                     {"kind": "multiclass", "output": "probabilities",
                      "output_type": "probabilities"})
    # a calibration fit on the split being validated
    assert _calibrate(root, data="data/test.npz", out="analysis/on_test.json") == 0
    capsys.readouterr()
    assert _validate(root, out="r.json", calibration="analysis/on_test.json") == 2
    assert "fit on the test split" in capsys.readouterr().err
    assert not (root / "r.json").exists()
    # a calibration of another model
    other = LogisticRegression(C=1.0, max_iter=2000).fit(digits["val"]["x"], digits["val"]["y"])
    (root / "models" / "other.onnx").write_bytes(_skl2onnx(other, False))
    assert relgate(root, "calibrate", "--model", "models/other.onnx", "--data", "data/val.npz",
                   "--out", "analysis/other.json") == 0
    capsys.readouterr()
    assert _validate(root, out="r.json", calibration="analysis/other.json") == 2
    assert "fit for another model" in capsys.readouterr().err
    # NaN / infinite / negative temperatures in an edited record: bad input, exit 2
    assert _calibrate(root) == 0
    good = (root / "analysis" / "calibration.json").read_text()
    t = json.loads(good)["probability"]["temperature"]
    for bad in ("NaN", "Infinity", "1e999", "-1.0"):
        text = good.replace(f'"temperature": {json.dumps(t)}', f'"temperature": {bad}', 1)
        assert text != good
        (root / "analysis" / "bad.json").write_text(text)
        capsys.readouterr()
        assert _validate(root, out="r.json", calibration="analysis/bad.json") == 2, bad
        assert not (root / "r.json").exists()
    # the multi-class record read by a binary task (column 1 as the positive probability):
    # bad input naming the mismatch, never a crash on fields a multi-class record lacks
    (root / "params.yaml").rename(root / "multiclass.yaml")
    _write_params(root, {"kind": "binary", "output": "probabilities",
                         "output_type": "probability", "positive": 1})
    capsys.readouterr()
    assert _validate(root, out="r.json") == 2
    assert "a multi-class calibration, but the task is binary" in capsys.readouterr().err
    assert not (root / "r.json").exists()
    (root / "multiclass.yaml").replace(root / "params.yaml")
    # a temperature forged after validation (a and temperature edited consistently): the
    # calibration no longer matches the report's sha256, and promote refuses it
    assert _validate(root) == 0
    forged = json.loads(good)
    forged["probability"]["temperature"] = t * 2
    forged["probability"]["a"] = 1.0 / (t * 2)
    (root / "analysis" / "calibration.json").write_text(json.dumps(forged))
    capsys.readouterr()
    assert relgate(root, "promote") == 1
    assert "changed after validation" in capsys.readouterr().err
    assert not (root / "models" / "core" / "v1.0.0").exists()


def test_unreachable_selective_target_fails_closed(digits: dict[str, Any], tmp_path: Path,
                                                   capsys: Any) -> None:
    """No threshold reaches accuracy 1.0 at coverage >= 0.99: the record says so (threshold
    null, a reason), validate fails (exit 1) with that reason, the coverage gate fails closed."""
    model = _skl2onnx(digits["clf"], False)
    root = _registry(tmp_path / "reg", model, {"val": digits["val"], "test": digits["test"]},
                     {"kind": "multiclass", "output": "probabilities",
                      "output_type": "probabilities"}, selective=SELECTIVE % (1.0, 0.99),
                     rules=RULES + "  - {metric: coverage, op: '>=', value: 0.5}\n")
    capsys.readouterr()
    assert _calibrate(root) == 0
    assert "no threshold" in capsys.readouterr().out
    record = json.loads((root / "analysis" / "calibration.json").read_text())
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                   "--out", "again.json", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((root / "again.json").read_text())
    assert printed["selective"] == record["selective"]
    sel = record["selective"]
    assert sel["threshold"] is None and sel["coverage"] is None
    assert "below min_coverage 0.99" in sel["reason"]
    assert _validate(root) == 1
    report = json.loads((root / "analysis" / "validation_report.json").read_text())
    assert report["passed"] is False
    assert report["metrics"]["coverage"]["value"] is None
    assert "no conclusive threshold" in report["metrics"]["coverage"]["reason"]
    results = {r["metric"]: r for r in report["gates"]["results"]}
    assert results["coverage"]["passed"] is False
    assert any("no conclusive threshold" in r for r in report["reasons"])
    assert relgate(root, "promote") == 1
    assert not (root / "models" / "core" / "v1.0.0").exists()


def test_previous_multiclass_release_is_the_baseline(digits: dict[str, Any],
                                                     tmp_path: Path) -> None:
    """v1.0.0 (calibrated) is promoted; v1.1.0, a weaker model, is compared with it on the same
    test rows: the deltas are scikit-learn's differences at the point, and a drop larger than
    max_drop fails (exit 1); a generous max_drop promotes."""
    from sklearn.linear_model import LogisticRegression

    task = {"kind": "multiclass", "output": "probabilities", "output_type": "probabilities"}
    root = _registry(tmp_path / "reg", _skl2onnx(digits["clf"], False),
                     {"val": digits["val"], "test": digits["test"]}, task,
                     selective=SELECTIVE % (0.95, 0.3))
    assert _calibrate(root) == 0 and _validate(root) == 0
    assert relgate(root, "promote") == 0
    t1 = json.loads((root / "analysis" / "calibration.json").read_text())

    weak = LogisticRegression(C=0.05, max_iter=2000).fit(digits["val"]["x"][:150],
                                                          digits["val"]["y"][:150])
    (root / "models" / "model.onnx").write_bytes(_skl2onnx(weak, False))
    base = ("  baseline:\n    release: v1.0.0\n    max_drop: {accuracy: %s, ece: 0.5, "
            "coverage: 1.0}\n")
    _write_params(root, task, selective=SELECTIVE % (0.95, 0.0), baseline=base % "0.0",
                  release="v1.1.0")
    assert _calibrate(root) == 0
    assert _validate(root) == 1
    report = json.loads((root / "analysis" / "validation_report.json").read_text())
    t2 = json.loads((root / "analysis" / "calibration.json").read_text())
    yt = digits["test"]["y"]
    p1 = _softmax(np.log(_outputs(_skl2onnx(digits["clf"], False), digits["test"]["x"],
                                  "probabilities")) / t1["probability"]["temperature"])
    p2 = _softmax(np.log(_outputs(_skl2onnx(weak, False), digits["test"]["x"],
                                  "probabilities")) / t2["probability"]["temperature"])
    d = report["baseline"]["deltas"]
    assert report["baseline"]["name"] == "v1.0.0"
    assert report["baseline"]["temperature"] == t1["probability"]["temperature"]
    assert d["accuracy"]["value"] == pytest.approx(
        _sklearn(yt, p2)["accuracy"] - _sklearn(yt, p1)["accuracy"], abs=1e-12)
    assert d["accuracy"]["value"] < 0
    if t2["selective"]["threshold"] is not None:
        c2 = _coverage(yt, p2, t2["selective"]["threshold"])[0]
        c1 = _coverage(yt, p1, t1["selective"]["threshold"])[0]
        assert d["coverage"]["value"] == pytest.approx(c2 - c1, abs=1e-12)
    results = {r["metric"]: r for r in report["gates"]["results"]}
    assert results["accuracy vs baseline"]["passed"] is False
    assert any("accuracy vs baseline" in r for r in report["reasons"])
    _write_params(root, task, selective=SELECTIVE % (0.95, 0.0), baseline=base % "0.9",
                  release="v1.1.0")
    assert _validate(root) == 0
    assert relgate(root, "promote") == 0
    assert (root / "models" / "core" / "v1.1.0" / "calibration.json").is_file()
    # a max_drop on log_loss (smaller is better) is judged as a rise, never as a drop
    _write_params(root, task, selective=SELECTIVE % (0.95, 0.0),
                  baseline="  baseline:\n    release: v1.0.0\n    max_drop: {log_loss: 0.0}\n",
                  release="v1.2.0")
    code = _validate(root, out="ll.json")
    ll = json.loads((root / "ll.json").read_text())
    delta = ll["baseline"]["deltas"]["log_loss"]["value"]
    gate = {g["metric"]: g for g in ll["gates"]["results"]}["log_loss vs baseline"]
    assert gate["op"] == "<=" and "rise" in gate["reason"]
    assert gate["passed"] is (delta <= 0.0)
    assert code == (0 if delta <= 0.0 else 1)


def test_seed_003s_calibrated_gates_pass_after_temperature_and_promote(
        digits: dict[str, Any], tmp_path: Path) -> None:
    """Seed 003 in params.yaml: top-1 >= 70%, top-5 >= 85% (interval low end), every class's
    recall > 60%, ECE < 0.10 after temperature scaling, and "no conclusive" at accuracy >= 95%
    with coverage >= 80%. The raw model fails the ECE gate; calibrated, it passes and promotes."""
    seed003 = ("  - {metric: accuracy, op: '>=', value: 0.70}\n"
               "  - {metric: top5_accuracy, op: '>=', value: 0.85, on: ci_low}\n"
               "  - {metric: min_class_recall, op: '>', value: 0.60}\n"
               "  - {metric: ece, op: '<', value: 0.10}\n"
               "  - {metric: coverage, op: '>=', value: 0.80}\n"
               "  - {metric: selective_accuracy, op: '>=', value: 0.95}\n")
    root = _registry(tmp_path / "reg", _skl2onnx(digits["clf"], True),
                     {"val": digits["val"], "test": digits["test"]},
                     {"kind": "multiclass", "output": "output_probability",
                      "output_type": "probabilities", "top_k": [5]},
                     selective=SELECTIVE % (0.95, 0.8), rules=seed003)
    assert relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--out", "raw.json") == 1
    raw = json.loads((root / "raw.json").read_text())
    assert any(r.startswith("ece") for r in raw["reasons"])
    assert _calibrate(root) == 0 and _validate(root) == 0
    report = json.loads((root / "analysis" / "validation_report.json").read_text())
    assert [r["passed"] for r in report["gates"]["results"]] == [True] * 6
    assert report["metrics"]["ece"]["value"] < 0.10 < raw["metrics"]["ece"]["value"]
    assert relgate(root, "promote") == 0


def test_a_perfectly_separated_fit_split_has_no_temperature(tmp_path: Path, capsys: Any) -> None:
    """Well-separated classes: the NLL falls to 0 as T -> 0, so any temperature would be the
    search range's end, not a fit. Refused (exit 2), no record written."""
    rng = np.random.default_rng(7)
    k, d = 10, 16
    centers = rng.normal(size=(k, d)) * 4.0
    y_train, y_val = rng.integers(0, k, 600), np.repeat(np.arange(k), 10)
    x_train = (centers[y_train] + rng.normal(size=(600, d))).astype(np.float32)
    x_val = (centers[y_val] + rng.normal(size=(y_val.size, d))).astype(np.float32)
    root = _registry(tmp_path / "reg", _torch_logits(x_train, y_train, k),
                     {"val": {"x": x_val, "y": y_val}},
                     {"kind": "multiclass", "output": "logits", "output_type": "logits"})
    capsys.readouterr()
    assert _calibrate(root) == 2
    assert "separates the fit split perfectly" in capsys.readouterr().err
    assert not (root / "analysis" / "calibration.json").exists()
