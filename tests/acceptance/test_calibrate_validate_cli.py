"""relgate calibrate and relgate validate through the real CLI, on real ONNX models and npz."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from relgate import calibration as cal
from relgate import metrics, schemas
from relgate.hashing import sha256_file

DIM = 16
W_TRUE = np.linspace(-1.0, 1.0, DIM) * 0.6


# ---------------------------------------------------------------- fixtures: models and data


def _save(path: Path, nodes: list, inits: list, *, input_type: int = TensorProto.FLOAT,
          outputs: list | None = None) -> Path:
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", input_type, ["batch", DIM])],
        outputs or [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="relgate-tests")
    model.ir_version = 10
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def linear_model(path: Path, weights: np.ndarray, bias: float = 0.0, *,
                 sigmoid: bool = False) -> Path:
    """score = x @ weights + bias (optionally through a Sigmoid), shape [batch, 1]."""
    w = numpy_helper.from_array(weights.reshape(DIM, 1).astype(np.float32), "w")
    b = numpy_helper.from_array(np.array([bias], dtype=np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["z" if sigmoid else "score"])]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["z"], ["score"]))
    return _save(path, nodes, [w, b])


def abs_model(path: Path, weights: np.ndarray) -> Path:
    """score = |x @ weights|: not monotone in the input offset, so the sweep matters."""
    w = numpy_helper.from_array(weights.reshape(DIM, 1).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]),
             helper.make_node("Abs", ["mm"], ["score"])]
    return _save(path, nodes, [w])


def int_model(path: Path, weights: np.ndarray) -> Path:
    """A token-style model: int64 x [batch, 16] -> Cast -> MatMul -> score."""
    w = numpy_helper.from_array(weights.reshape(DIM, 1).astype(np.float32), "w")
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "w"], ["score"])]
    return _save(path, nodes, [w], input_type=TensorProto.INT64)


def dataset(path: Path, n: int, seed: int, *, as_int: bool = False) -> Path:
    """x ~ N(0, 1) [n, 16]; y ~ Bernoulli(sigmoid(x @ W_TRUE)): W_TRUE is calibrated, 3x is not."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, DIM)).astype(np.float32)
    if as_int:
        x = np.round(x * 2).astype(np.int64)
    z = x.astype(np.float64) @ W_TRUE
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


PARAMS = """\
schema_version: 1
seed: 0
{task}evaluate:
  threads: 1
  batch_size: 256
calibrate:
  scales: [0.5, 1.0, 2.0]
  offsets: [-0.5, 0.0, 0.5]
  method: {method}
  threshold:
    strategy: {strategy}
{threshold_extra}  inconclusive_band: 0.05
  ece_bins: 10
validate:
  bootstrap:
    resamples: 200
    confidence: 0.9
    seed: 3
  ece_bins: 10
gates:
  mode: all
  rules:
  - metric: auc
    op: '>='
    value: {auc_bound}
  - metric: ece
    op: '<='
    value: 0.2
{baseline}release:
  name: test-release
  promoted:
    path: models/model.onnx
"""


def write_params(path: Path, *, method: str = "temperature", strategy: str = "max_f1",
                 threshold_extra: str = "", auc_bound: float = 0.7, baseline: str = "",
                 output_type: str | None = "logit") -> Path:
    """params.yaml; the task declares *output_type* (None: undeclared, the graph decides)."""
    task = "task:\n  kind: binary\n" + ("" if output_type is None
                                         else f"  output_type: {output_type}\n")
    path.write_text(PARAMS.format(method=method, strategy=strategy, baseline=baseline,
                                  threshold_extra=threshold_extra, auc_bound=auc_bound,
                                  task=task))
    return path


def baseline_block(release: str | None, max_drop: str = "auc: 0.01") -> str:
    name = "null" if release is None else f"'{release}'"
    return f"  baseline:\n    release: {name}\n    max_drop:\n      {max_drop}\n"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A folder with an overconfident linear model (3x the true logit), val and test splits."""
    linear_model(tmp_path / "models" / "model.onnx", 3.0 * W_TRUE)
    dataset(tmp_path / "data" / "val.npz", 3000, seed=1)
    dataset(tmp_path / "data" / "test.npz", 2000, seed=2)
    write_params(tmp_path / "params.yaml")
    return tmp_path


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _calibrate(cli, root: Path, *extra: object, model: str = "models/model.onnx",
               data: str = "data/val.npz", out: str = "analysis/calibration.json"):
    return cli("calibrate", "--model", root / model, "--data", root / data,
               "--out", root / out, "--params", root / "params.yaml", *extra)


def _validate(cli, root: Path, *extra: object, model: str = "models/model.onnx",
              data: str = "data/test.npz", out: str = "analysis/validation_report.json"):
    return cli("validate", "--model", root / model, "--data", root / data,
               "--out", root / out, "--params", root / "params.yaml", *extra)


# ---------------------------------------------------------------- calibrate


def test_calibrate_writes_a_schema_valid_record_that_fixes_overconfidence(cli, registry) -> None:
    result = _calibrate(cli, registry, "--plots-dir", registry / "analysis" / "plots")
    assert result.code == 0, result.err
    record = json.loads((registry / "analysis" / "calibration.json").read_text())
    schemas.validate(record, "calibration")
    assert record["fit_split"] == {"name": "val", "path": str(registry / "data" / "val.npz"),
                                   "sha256": sha256_file(registry / "data" / "val.npz"),
                                   "n": 3000}
    assert record["model"]["sha256"] == sha256_file(registry / "models" / "model.onnx")
    # the linear model's AUC does not depend on a positive scale; the offset shifts all scores
    # equally, so every grid point ties and the identity (1, 0) is chosen
    assert record["input"] == {"scale": 1.0, "offset": 0.0}
    assert record["probability"]["method"] == "temperature"
    assert record["probability"]["temperature"] == pytest.approx(3.0, rel=0.15)
    assert record["ece"]["after"] < 0.5 * record["ece"]["before"]
    band = record["inconclusive"]
    assert band["high"] - band["low"] == pytest.approx(0.1)
    assert "calibration" in result.out and "temperature" in result.out
    rows = (_csv(registry / "analysis" / "plots" / "calibration_sweep.csv"))
    assert [(float(r["scale"]), float(r["offset"])) for r in rows][:2] == [(0.5, -0.5), (0.5, 0.0)]
    assert len(rows) == 9 and all(float(r["auc"]) == record["sweep"]["auc"][0][0] for r in rows)


def test_calibrate_output_is_byte_identical_across_runs(cli, registry) -> None:
    assert _calibrate(cli, registry, out="a.json").code == 0
    assert _calibrate(cli, registry, out="b.json").code == 0
    assert (registry / "a.json").read_bytes() == (registry / "b.json").read_bytes()


def test_sweep_chooses_the_offset_that_maximises_auc(cli, tmp_path) -> None:
    w = (W_TRUE + 0.1).astype(np.float32)  # sum(w) != 0, so the offset moves every score
    abs_model(tmp_path / "models" / "model.onnx", w)
    dataset(tmp_path / "data" / "val.npz", 1500, seed=4)
    write_params(tmp_path / "params.yaml", method="platt")
    result = _calibrate(cli, tmp_path, "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    # brute force: AUC of |(x * s + o) @ w| for each grid point, computed in numpy
    with np.load(tmp_path / "data" / "val.npz") as npz:
        x, y = npz["x"], npz["y"]
    grid = {(s, o): metrics.roc_auc(y, np.abs((x * np.float32(s) + np.float32(o)) @ w))
            for s in (0.5, 1.0, 2.0) for o in (-0.5, 0.0, 0.5)}
    got = record["sweep"]["auc"]
    for i, s in enumerate((0.5, 1.0, 2.0)):
        for j, o in enumerate((-0.5, 0.0, 0.5)):
            assert got[i][j] == pytest.approx(grid[(s, o)], abs=1e-6)
    best = max(grid.values())
    chosen = (record["input"]["scale"], record["input"]["offset"])
    assert grid[chosen] == pytest.approx(best, abs=1e-6)
    assert record["input"]["offset"] != 0.0
    assert record["probability"]["method"] == "platt"
    assert record["probability"]["temperature"] is None


def test_calibrate_a_sigmoid_output_maps_through_logit(cli, tmp_path) -> None:
    linear_model(tmp_path / "models" / "model.onnx", 3.0 * W_TRUE, sigmoid=True)
    dataset(tmp_path / "data" / "val.npz", 3000, seed=1)
    write_params(tmp_path / "params.yaml", output_type=None)  # the Sigmoid proves it
    result = _calibrate(cli, tmp_path, "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert record["probability"]["score_is_probability"] is True
    assert record["probability"]["temperature"] == pytest.approx(3.0, rel=0.15)


def test_calibrate_skips_the_sweep_for_integer_inputs(cli, tmp_path) -> None:
    int_model(tmp_path / "models" / "model.onnx", W_TRUE)
    dataset(tmp_path / "data" / "val.npz", 800, seed=5, as_int=True)
    write_params(tmp_path / "params.yaml")
    result = _calibrate(cli, tmp_path, "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert record["sweep"]["scales"] == [1.0] and record["sweep"]["offsets"] == [0.0]
    assert "not a float tensor" in result.err


def test_precision_target_threshold_matches_brute_force(cli, registry) -> None:
    write_params(registry / "params.yaml", strategy="precision_target",
                 threshold_extra="    precision_target: 0.8\n")
    result = _calibrate(cli, registry, "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    with np.load(registry / "data" / "val.npz") as npz:
        x, y = npz["x"], npz["y"]
    raw = (x @ (3.0 * W_TRUE).astype(np.float32)).astype(np.float64)
    p = cal.apply_calibration(raw, record)
    candidates = sorted(set(p.tolist()))
    lowest = next(t for t in candidates if np.sum(p >= t)
                  and np.sum((p >= t) & (y == 1)) / np.sum(p >= t) >= 0.8)
    assert record["threshold"]["value"] == pytest.approx(lowest, rel=1e-6)
    assert record["threshold"]["precision"] >= 0.8


@pytest.mark.parametrize(("params_extra", "needle"), [
    ({"strategy": "precision_target", "threshold_extra": "    precision_target: 0.95\n"},
     "no threshold reaches precision"),
    ({"strategy": "fixed"}, "no value is set"),
])
def test_calibrate_bad_settings_exit_2_in_one_line(cli, registry, params_extra, needle) -> None:
    # a model that ranks the wrong way: its top scores are negatives, precision stays low
    linear_model(registry / "models" / "model.onnx", -3.0 * W_TRUE)
    write_params(registry / "params.yaml", **params_extra)
    result = _calibrate(cli, registry)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1 and needle in result.err
    assert not (registry / "analysis" / "calibration.json").exists()


def test_calibrate_bad_inputs_exit_2(cli, registry, tmp_path) -> None:
    assert _calibrate(cli, registry, data="data/missing.npz").code == 2
    np.savez(registry / "data" / "one_class.npz", x=np.zeros((10, DIM), np.float32),
             y=np.zeros(10, np.int8))
    result = _calibrate(cli, registry, data="data/one_class.npz")
    assert result.code == 2 and "one class" in result.err
    (registry / "params.yaml").write_text("schema_version: 1\n")
    assert _calibrate(cli, registry).code == 2


# ---------------------------------------------------------------- validate


def _calibrated(cli, root: Path) -> Path:
    assert _calibrate(cli, root).code == 0
    return root / "analysis" / "calibration.json"


def test_validate_writes_report_metrics_and_plots(cli, registry) -> None:
    calib = _calibrated(cli, registry)
    plots = registry / "analysis" / "plots"
    result = _validate(cli, registry, "--calibration", calib, "--plots-dir", plots,
                       "--metrics-out", registry / "analysis" / "metrics.json")
    assert result.code == 0, result.err
    report = json.loads((registry / "analysis" / "validation_report.json").read_text())
    schemas.validate(report, "validation-report")
    assert report["passed"] is True and report["reasons"] == []
    assert report["calibration"]["sha256"] == sha256_file(calib)
    assert report["calibration"]["fit_split_sha256"] == sha256_file(registry / "data" / "val.npz")
    assert report["data"]["sha256"] == sha256_file(registry / "data" / "test.npz")
    assert report["data"]["split"] == "test"
    assert report["data"]["n_pos"] + report["data"]["n_neg"] == report["data"]["n"] == 2000
    assert report["model"]["contract"]["score_output"] == "score"
    assert report["model"]["files"][0]["path"] == "model.onnx"
    record = json.loads(calib.read_text())
    assert report["threshold"] == record["threshold"]["value"]
    assert report["stats"]["auc"] == report["metrics"]["auc"]["value"]
    for name in ("auc", "f1", "ece", "brier"):
        m = report["metrics"][name]
        assert m["ci_low"] <= m["value"] <= m["ci_high"], name

    # the numbers agree with scikit-learn on the same calibrated probabilities
    from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, roc_auc_score

    with np.load(registry / "data" / "test.npz") as npz:
        x, y = npz["x"], npz["y"]
    p = cal.apply_calibration((x @ (3.0 * W_TRUE).astype(np.float32)).astype(np.float64), record)
    assert report["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert report["metrics"]["pr_auc"]["value"] == pytest.approx(average_precision_score(y, p),
                                                                 abs=1e-6)
    assert report["metrics"]["brier"]["value"] == pytest.approx(brier_score_loss(y, p), abs=1e-6)
    pred = (p >= report["threshold"]).astype(int)
    assert report["metrics"]["f1"]["value"] == pytest.approx(f1_score(y, pred), abs=1e-6)

    flat = json.loads((registry / "analysis" / "metrics.json").read_text())
    assert flat["auc"] == report["metrics"]["auc"]["value"]
    assert flat["auc_ci_low"] == report["metrics"]["auc"]["ci_low"]
    assert flat["gates_passed"] is True and flat["threshold"] == report["threshold"]
    roc = _csv(plots / "roc.csv")
    assert (roc[0]["fpr"], roc[0]["tpr"]) == ("0.0", "0.0")
    assert (float(roc[-1]["fpr"]), float(roc[-1]["tpr"])) == (1.0, 1.0)
    rel = _csv(plots / "reliability.csv")
    assert len(rel) == 10 and sum(int(r["count"]) for r in rel) == 2000
    assert (plots / "pr.csv").read_text().startswith("recall,precision,threshold\n")
    assert "PASSED" in result.out
    # the model checks: finite outputs, and 32 sampled rows scored alone equal their batch scores
    assert report["checks"]["finite"] == {"outputs": 2000, "nan": 0, "inf": 0, "passed": True}
    assert report["checks"]["batch"]["passed"] is True and report["checks"]["batch"]["rows"] == 32
    assert report["checks"]["batch"]["batch_size"] == 256
    assert "finite outputs ok, batch independence ok (32 rows alone vs batch 256" in result.out


def test_validate_refuses_a_calibration_fit_on_the_test_split(cli, registry) -> None:
    assert _calibrate(cli, registry, data="data/test.npz").code == 0
    result = _validate(cli, registry, "--calibration", registry / "analysis" / "calibration.json")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "calibration was fit on the test split" in result.err
    assert not (registry / "analysis" / "validation_report.json").exists()


def test_validate_refuses_a_calibration_of_another_model(cli, registry) -> None:
    calib = _calibrated(cli, registry)
    linear_model(registry / "models" / "other.onnx", 2.0 * W_TRUE)
    result = _validate(cli, registry, "--calibration", calib, model="models/other.onnx")
    assert result.code == 2 and "another model" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_failing_gates_exit_1_and_still_write_the_report(cli, registry) -> None:
    calib = _calibrated(cli, registry)
    write_params(registry / "params.yaml", auc_bound=0.99)
    result = _validate(cli, registry, "--calibration", calib,
                       "--metrics-out", registry / "analysis" / "metrics.json")
    assert result.code == 1, result.err
    report = json.loads((registry / "analysis" / "validation_report.json").read_text())
    schemas.validate(report, "validation-report")
    assert report["passed"] is False and report["gates"]["passed"] is False
    assert len(report["reasons"]) == 1 and "auc" in report["reasons"][0]
    assert json.loads((registry / "analysis" / "metrics.json").read_text())["gates_passed"] is False
    assert "FAILED" in result.out


def test_validate_is_byte_identical_across_runs(cli, registry) -> None:
    calib = _calibrated(cli, registry)
    assert _validate(cli, registry, "--calibration", calib, out="r1.json").code == 0
    assert _validate(cli, registry, "--calibration", calib, out="r2.json").code == 0
    assert (registry / "r1.json").read_bytes() == (registry / "r2.json").read_bytes()


def test_validate_without_calibration_uses_sigmoid_of_raw_scores(cli, registry) -> None:
    result = _validate(cli, registry, "--json")
    assert result.code in (0, 1), result.err
    report = json.loads(result.out)
    assert report["calibration"] is None and report["threshold"] == 0.5
    with np.load(registry / "data" / "test.npz") as npz:
        x, y = npz["x"], npz["y"]
    p = cal.sigmoid((x @ (3.0 * W_TRUE).astype(np.float32)).astype(np.float64))
    assert report["metrics"]["ece"]["value"] == pytest.approx(metrics.ece(y, p, 10), abs=1e-6)


def test_validate_bad_inputs_exit_2_in_one_line(cli, registry) -> None:
    (registry / "bad.json").write_text('{"kind": "calibration"}')
    for args in (("--calibration", registry / "bad.json"), ("--threshold", "1.5")):
        result = _validate(cli, registry, *args)
        assert result.code == 2, args
        assert len(result.err.strip().splitlines()) == 1
    result = _validate(cli, registry, data="data/nope.npz")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1


# ---------------------------------------------------------------- baseline ("no worse than")


def _weaker_weights() -> np.ndarray:
    rng = np.random.default_rng(11)
    return 3.0 * W_TRUE + rng.normal(0.0, 1.2, DIM)  # ranks worse than the true direction


def test_baseline_deltas_pass_when_the_candidate_is_better(cli, registry) -> None:
    calib = _calibrated(cli, registry)
    linear_model(registry / "old" / "old.onnx", _weaker_weights())
    write_params(registry / "params.yaml", baseline=baseline_block("old"))
    result = _validate(cli, registry, "--calibration", calib, "--json",
                       "--baseline", registry / "old" / "old.onnx")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    base = report["baseline"]
    assert base["name"] == "old"
    assert base["model_sha256"] == sha256_file(registry / "old" / "old.onnx")
    delta = base["deltas"]["auc"]
    # the paired delta is the difference of the two AUCs on the same samples
    with np.load(registry / "data" / "test.npz") as npz:
        x, y = npz["x"], npz["y"]
    old = (x @ _weaker_weights().astype(np.float32)).astype(np.float64)
    expected = report["metrics"]["auc"]["value"] - metrics.roc_auc(y, old)
    assert delta["value"] == pytest.approx(expected, abs=1e-6)
    assert delta["value"] > 0 and delta["ci_low"] <= delta["value"] <= delta["ci_high"]
    assert any(r["metric"] == "auc vs baseline" and r["passed"] for r in report["gates"]["results"])


def test_baseline_gate_fails_when_the_candidate_is_worse(cli, registry) -> None:
    linear_model(registry / "models" / "model.onnx", _weaker_weights())
    linear_model(registry / "old" / "old.onnx", 3.0 * W_TRUE)
    write_params(registry / "params.yaml", auc_bound=0.5, baseline=baseline_block("old"))
    result = _validate(cli, registry, "--baseline", registry / "old" / "old.onnx", "--json")
    assert result.code == 1, result.err
    report = json.loads(result.out)
    assert report["baseline"]["deltas"]["auc"]["value"] < -0.01
    assert any(r.startswith("auc vs baseline: delta") for r in report["reasons"])


def test_baseline_gate_without_a_previous_release_fails_closed(cli, registry) -> None:
    write_params(registry / "params.yaml", baseline=baseline_block(None))
    result = _validate(cli, registry, "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert "baseline" not in report
    assert any("no paired comparison" in r for r in report["reasons"])


def _bundle(root: Path, name: str, model: Path, calibration: Path | None) -> Path:
    """A published-bundle folder as relgate promote lays it out (release.json + artifacts)."""
    import shutil

    examples = Path(__file__).resolve().parents[1] / "examples" / "release" / "positive"
    record = json.loads((examples / "in-bundle.json").read_text())
    folder = root / "models" / "core" / name
    (folder / "models").mkdir(parents=True)
    shutil.copy(model, folder / "models" / "model.onnx")
    sha = sha256_file(model)
    record["name"] = name
    record["artifacts"] = [{"path": "models/model.onnx", "role": "promoted", "sha256": sha,
                            "files": [{"path": "model.onnx", "size": model.stat().st_size,
                                       "sha256": sha}]}]
    record["evidence"]["calibration"] = None
    if calibration is not None:
        shutil.copy(calibration, folder / "calibration.json")
        record["evidence"]["calibration"] = {"path": "analysis/calibration.json",
                                             "sha256": sha256_file(calibration)}
    schemas.validate(record, "release")
    (folder / "release.json").write_text(json.dumps(record))
    from relgate.manifest import write_manifest

    manifest = write_manifest(folder)  # a published bundle carries its manifest
    # and the registry pins its root digest (git-tracked): baselines verify against the pin
    pin = json.loads((examples / "mirror-with-root-digest.json").read_text())
    pin.update(name=name, artifacts=record["artifacts"], evidence=record["evidence"],
               bundle={"path": f"models/core/{name}", "root_digest": manifest.root_digest})
    schemas.validate(pin, "release")
    (root / "analysis").mkdir(exist_ok=True)
    (root / "analysis" / f"release_{name}.json").write_text(json.dumps(pin))
    return folder


def test_baseline_from_the_bundle_named_in_params(cli, registry, monkeypatch) -> None:
    # the previous release: the weaker model with its own calibration, published as a bundle
    linear_model(registry / "prev" / "model.onnx", _weaker_weights())
    assert _calibrate(cli, registry, model="prev/model.onnx", out="prev/calibration.json").code == 0
    prev = registry / "prev"
    _bundle(registry, "v0", prev / "model.onnx", prev / "calibration.json")
    calib = _calibrated(cli, registry)
    write_params(registry / "params.yaml", baseline=baseline_block("v0", "brier: 0.05"))
    monkeypatch.chdir(registry)  # release.core_dir (models/core) is relative to the registry
    result = _validate(cli, registry, "--calibration", calib, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["baseline"]["name"] == "v0"
    assert set(report["baseline"]["deltas"]) == {"brier"}
    assert report["baseline"]["deltas"]["brier"]["value"] < 0  # lower is better: an improvement
    # a bundle whose model was swapped after publication is refused
    linear_model(registry / "models" / "core" / "v0" / "models" / "model.onnx", W_TRUE)
    result = _validate(cli, registry, "--calibration", calib)
    assert result.code == 1 and "does not verify" in result.err and "model.onnx" in result.err
    write_params(registry / "params.yaml", baseline=baseline_block("v9"))
    result = _validate(cli, registry, "--calibration", calib)
    assert result.code == 1 and "no root digest is pinned" in result.err  # fail closed


# ---------------------------------------------------------------- other output kinds


def test_probability_column_and_features_outputs(cli, tmp_path) -> None:
    """[N, 2] probabilities (logit first) and a features output feeding the health stats."""
    # W_TRUE itself: softmax([-z, z])[1] = sigmoid(2 z), overconfident by 2 and far from
    # float32 saturation (p == 1.0 loses the logit)
    w = numpy_helper.from_array(W_TRUE.reshape(DIM, 1).astype(np.float32), "w")
    proj = numpy_helper.from_array(np.eye(DIM, 4, dtype=np.float32), "proj")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["z"]),
        helper.make_node("Neg", ["z"], ["nz"]),
        helper.make_node("Concat", ["nz", "z"], ["zz"], axis=1),
        helper.make_node("Softmax", ["zz"], ["probabilities"], axis=1),
        helper.make_node("MatMul", ["x", "proj"], ["features"]),
    ]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
               helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])]
    _save(tmp_path / "models" / "model.onnx", nodes, [w, proj], outputs=outputs)
    dataset(tmp_path / "data" / "val.npz", 3000, seed=1)
    dataset(tmp_path / "data" / "test.npz", 1500, seed=2)
    write_params(tmp_path / "params.yaml", output_type=None)  # the Softmax proves it
    result = _calibrate(cli, tmp_path, "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert record["probability"]["score_is_probability"] is True
    assert record["probability"]["temperature"] == pytest.approx(2.0, rel=0.15)
    calib = tmp_path / "analysis" / "calibration.json"
    result = _validate(cli, tmp_path, "--calibration", calib, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["model"]["contract"]["score_kind"] == "probability"
    with np.load(tmp_path / "data" / "test.npz") as npz:
        x = npz["x"]
    feats = x[:, :4].astype(np.float64)
    assert report["stats"]["mean_std"] == pytest.approx(float(feats.std(axis=0).mean()), rel=1e-6)
    assert report["stats"]["high_corr_frac"] == 0.0


# ---------------------------------------------------------------- the pipeline stages


def test_stages_write_the_reference_outputs_and_do_not_fail_on_gates(registry) -> None:
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    write_params(registry / "params.yaml", auc_bound=0.99)  # a gate that cannot pass

    def stage(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=registry, env=env,
                              capture_output=True, text=True, timeout=300)

    done = stage("calibrate")
    assert done.returncode == 0, done.stderr
    done = stage("validate")
    assert done.returncode == 0, done.stderr
    assert "gates failed" in done.stderr
    analysis = registry / "analysis"
    record = json.loads((analysis / "calibration.json").read_text())
    schemas.validate(record, "calibration")
    assert record["fit_split"]["path"] == "data/val.npz"
    report = json.loads((analysis / "validation_report.json").read_text())
    schemas.validate(report, "validation-report")
    assert report["passed"] is False
    assert report["model"]["path"] == "models/model.onnx"
    assert report["data"]["path"] == "data/test.npz"
    assert report["calibration"]["path"] == "analysis/calibration.json"
    flat = json.loads((analysis / "metrics.json").read_text())
    assert flat["auc"] == report["metrics"]["auc"]["value"] and flat["gates_passed"] is False
    for name in ("roc.csv", "pr.csv", "reliability.csv", "calibration_sweep.csv"):
        assert (analysis / "plots" / name).stat().st_size > 20, name
    # a calibration fit on the test split fails the stage (bad input, exit 2, one line)
    record["fit_split"]["sha256"] = sha256_file(registry / "data" / "test.npz")
    (analysis / "calibration.json").write_text(json.dumps(record))
    done = stage("validate")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "fit on the test split" in done.stderr


def test_calibrate_validate_and_gate_need_no_release_section(cli, registry) -> None:
    """gates: alone is enough to judge a model (issue 18): the report is the same as with a
    release: section; only promote needs one, and says so in one line (exit 2)."""
    calib = _calibrated(cli, registry)
    assert _validate(cli, registry, "--calibration", calib).code == 0
    with_release = json.loads((registry / "analysis/validation_report.json").read_text())
    params = registry / "params.yaml"
    text = params.read_text()
    params.write_text(text[:text.index("release:\n")])
    assert "release" not in params.read_text()
    assert _calibrate(cli, registry, out="analysis/cal2.json").code == 0
    assert (registry / "analysis/cal2.json").read_bytes() == calib.read_bytes()
    result = _validate(cli, registry, "--calibration", calib, out="analysis/r2.json")
    assert result.code == 0, result.err
    alone = json.loads((registry / "analysis/r2.json").read_text())
    assert alone["metrics"] == with_release["metrics"] and alone["passed"] is True
    assert cli("gate", registry / "analysis/r2.json", "--params", params).code == 0
    refused = cli("promote", "--params", params, "--root", registry)
    assert refused.code == 2 and refused.out == ""
    assert refused.err.count("\n") == 1 and "no release: section" in refused.err
