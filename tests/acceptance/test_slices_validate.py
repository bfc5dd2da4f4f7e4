"""Gates per slice through ``relgate validate`` on a real skl2onnx export (issue 19, seed 003's
shape): a 4-class LogisticRegression with a ``region`` column in a Parquet eval set (and an
``.npz`` one). Gates: top-1 >= 0.8 on region=EU_SW, every region with n >= 50: min class
recall >= 0.6, top-1 gap across regions <= 0.1. Every per-slice number is scikit-learn's on
that slice's rows; bad slice input is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.adversarial.conftest import assert_clean_failure

REGIONS = {"EU_SW": 700, "EU_N": 650, "US": 700, "ASIA": 600, "AF": 20}
K, F = 4, 6

PARAMS = """\
schema_version: 1
task:
  kind: multiclass
  output_type: probabilities
  output: probabilities
  top_k: [1, 2]
evaluate:
  batch_size: 512
{eval_data}validate:
  bootstrap:
    resamples: 200
    confidence: 0.95
    seed: 7
  ece_bins: 10
gates:
  mode: all
  rules:
  - {{metric: accuracy, op: '>=', value: 0.5}}
slices:
  features: [region]
  min_support: 50
  rules:
  - {{metric: top1_accuracy, op: '>=', value: 0.8, slice: region=EU_SW}}
  - {{metric: min_class_recall, op: '>=', value: 0.6, slice: 'region=*'}}
  - {{metric: top1_accuracy, max_gap: 0.1, across: region}}
{extra}"""


@pytest.fixture(scope="module")
def seed003(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A fitted model, its ONNX export, a labelled test set with regions, and the model's
    own probabilities on it (onnxruntime, for the oracle)."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    centers = rng.normal(scale=1.3, size=(K, F))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, K, n)
        return (centers[y] + rng.normal(size=(n, F))).astype(np.float32), y.astype(np.int64)

    x_tr, y_tr = draw(3000)
    clf = LogisticRegression(max_iter=500).fit(x_tr, y_tr)
    onx = to_onnx(clf, initial_types=[("x", FloatTensorType([None, F]))],
                  options={id(clf): {"zipmap": False}}, target_opset={"": 18, "ai.onnx.ml": 3})
    folder = tmp_path_factory.mktemp("seed003")
    model = folder / "model.onnx"
    model.write_bytes(onx.SerializeToString())
    xs, ys, regions = [], [], []
    for name, n in REGIONS.items():
        x, y = draw(n)
        xs.append(x)
        ys.append(y)
        regions += [name] * n
    order = rng.permutation(sum(REGIONS.values()))
    x, y = np.concatenate(xs)[order], np.concatenate(ys)[order]
    region = np.array(regions)[order]
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    prob = np.asarray(sess.run(["probabilities"], {"x": x})[0], dtype=np.float64)
    return {"folder": folder, "model": model, "x": x, "y": y, "region": region, "prob": prob}


def _params(folder: Path, *, table: bool = False, extra: str = "") -> Path:
    eval_data = ("eval_data:\n  label: y\n  inputs:\n    x: [" +
                 ", ".join(f"f{i}" for i in range(F)) + "]\n") if table else ""
    path = folder / f"params_{'t' if table else 'n'}_{abs(hash(extra))}.yaml"
    path.write_text(PARAMS.format(eval_data=eval_data, extra=extra))
    return path


def _parquet(d: dict[str, Any]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, Any] = {f"f{i}": d["x"][:, i] for i in range(F)}
    cols["y"] = d["y"]
    cols["region"] = pa.array(d["region"].tolist()).dictionary_encode()
    path = d["folder"] / "test.parquet"
    pq.write_table(pa.table(cols), path)
    return path


def _validate(cli: Any, d: dict[str, Any], data: Path, params: Path) -> tuple[int, dict[str, Any]]:
    out = d["folder"] / "report.json"
    out.unlink(missing_ok=True)
    result = cli("validate", "--model", d["model"], "--data", data, "--params", params,
                 "--out", out)
    assert "Traceback" not in result.err, result.err
    assert out.exists(), result.err
    return result.code, json.loads(out.read_text())


def _sklearn(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    labels = list(range(K))
    pred = prob.argmax(axis=1)
    p, r, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out = {"accuracy": skm.accuracy_score(y, pred),
           "top1_accuracy": skm.top_k_accuracy_score(y, prob, k=1, labels=labels),
           "top2_accuracy": skm.top_k_accuracy_score(y, prob, k=2, labels=labels),
           "min_class_recall": r.min(), "min_class_f1": f1.min(),
           "brier": float(np.mean(np.sum((prob - np.eye(K)[y]) ** 2, axis=1))),
           "log_loss": skm.log_loss(y, prob / prob.sum(axis=1, keepdims=True), labels=labels)}
    for avg in ("macro", "weighted", "micro"):
        for name, fn in (("f1", skm.f1_score), ("precision", skm.precision_score),
                         ("recall", skm.recall_score)):
            out[f"{avg}_{name}"] = fn(y, pred, average=avg, labels=labels, zero_division=0)
    for c in range(K):
        out[f"class_{c}_precision"], out[f"class_{c}_recall"] = p[c], r[c]
        out[f"class_{c}_f1"] = f1[c]
    return out


def test_seed003_gates_per_region_match_sklearn_on_each_slice(cli: Any, seed003: dict[str, Any]
                                                              ) -> None:
    d = seed003
    code, report = _validate(cli, d, _parquet(d), _params(d["folder"], table=True))
    assert code == 0, report["reasons"]
    block = report["slices"]
    assert block["correction"].startswith("bootstrap max-statistic")
    part = block["partitions"][0]
    assert part["name"] == "region"
    rows = {r["key"]: r for r in part["slices"]}
    assert set(rows) == {f"region={r}" for r in REGIONS}
    checked = 0
    for name in REGIONS:
        row = rows[f"region={name}"]
        mask = d["region"] == name
        assert row["n"] == REGIONS[name] == int(mask.sum())
        assert row["support"] == np.bincount(d["y"][mask], minlength=K).tolist()
        assert row["gated"] is (REGIONS[name] >= 50)  # AF: reported, marked too small
        for metric, want in _sklearn(d["y"][mask], d["prob"][mask]).items():
            got = row["metrics"][metric]
            if got["value"] is None:  # a class absent from the small slice
                assert metric.startswith(("class_", "min_class")), (name, metric)
                continue
            tol = 1e-6 if metric == "log_loss" else 1e-12
            assert got["value"] == pytest.approx(float(want), abs=tol), (name, metric)
            assert got["ci_low"] <= got["value"] + 1e-12 <= got["ci_high"] + 2e-12, (name, metric)
            if row["gated"]:  # the simultaneous interval holds the marginal one
                assert got["sim_low"] <= got["ci_low"] + 1e-12
                assert got["sim_high"] >= got["ci_high"] - 1e-12
            checked += 1
    assert checked > 100
    # worst first, by the metric the first region rule gates
    order = [r["metrics"]["top1_accuracy"]["value"] for r in part["slices"]]
    assert order == sorted(order)
    results = {r["rule"]: r for r in block["results"]}
    every = next(r for r in results.values() if r.get("slice") == "region=*")
    assert every["too_small"] == ["region=AF"] and "region=AF" not in every["slices"]
    gap = next(r for r in results.values() if "across" in r)
    assert gap["on"] == "ci_high" and gap["gap"]["ci_high"] <= 0.1
    assert all(r["passed"] for r in block["results"])


def test_npz_slice_key_and_a_failing_region_named_in_the_reason(cli: Any,
                                                                seed003: dict[str, Any]) -> None:
    d = seed003
    data = d["folder"] / "test.npz"
    np.savez(data, x=d["x"], y=d["y"], region=d["region"], unused=np.arange(d["y"].size))
    params = _params(d["folder"], extra="  - {metric: accuracy, op: '>=', value: 0.99, "
                                        "slice: region=US}\n")
    code, report = _validate(cli, d, data, params)
    assert code == 1
    assert any("region=US" in r and "0.99" in r for r in report["reasons"])
    assert not any("region=EU_SW" in r for r in report["reasons"])


@pytest.mark.parametrize(("region", "message"), [
    ("nan", "NaN"), ("short", "has 2669 values but y has 2670"),
    ("object", "objects"), ("2d", "expected [N]"), ("missing", "not in the eval set")])
def test_bad_slice_columns_are_one_line_exit_2(cli: Any, seed003: dict[str, Any], region: str,
                                               message: str) -> None:
    d = seed003
    n = d["y"].size
    column: Any = {"nan": np.where(np.arange(n) == 5, np.nan, 1.0),
                   "short": d["region"][:-1],
                   "object": d["region"].astype(object),
                   "2d": np.stack([d["region"], d["region"]], axis=1)}.get(region)
    data = d["folder"] / f"bad_{region}.npz"
    arrays = {"x": d["x"], "y": d["y"]}
    if column is not None:
        arrays["region"] = column
    np.savez(data, **arrays, allow_pickle=True) if region == "object" else \
        np.savez(data, **arrays)
    result = cli("validate", "--model", d["model"], "--data", data, "--params",
                 _params(d["folder"]), "--out", d["folder"] / "bad.json")
    line = assert_clean_failure(result)
    assert message in line
    assert not (d["folder"] / "bad.json").exists()


def test_parquet_nulls_and_an_unknown_slice_value_are_refused(cli: Any,
                                                              seed003: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = seed003
    cols: dict[str, Any] = {f"f{i}": d["x"][:, i] for i in range(F)}
    cols["y"] = d["y"]
    values: list[str | None] = d["region"].tolist()
    values[3] = None
    cols["region"] = pa.array(values)
    data = d["folder"] / "nulls.parquet"
    pq.write_table(pa.table(cols), data)
    result = cli("validate", "--model", d["model"], "--data", data, "--params",
                 _params(d["folder"], table=True), "--out", d["folder"] / "bad.json")
    assert "1 null value" in assert_clean_failure(result)
    params = _params(d["folder"], table=True,
                     extra="  - {metric: accuracy, op: '>=', value: 0.5, slice: region=MARS}\n")
    result = cli("validate", "--model", d["model"], "--data", _parquet(d), "--params", params,
                 "--out", d["folder"] / "bad.json")
    line = assert_clean_failure(result)
    assert "no value 'MARS'" in line and "EU_SW" in line
    assert not (d["folder"] / "bad.json").exists()


def test_gate_and_summaries_rejudge_the_slice_rules(cli: Any, seed003: dict[str, Any]) -> None:
    """``relgate gate`` with stricter slice rules from another branch fails a report that
    passed; the PR summary of a slice-failing report says it fails and shows the table;
    the terminal report prints the per-slice table worst first."""
    d = seed003
    code, _ = _validate(cli, d, _parquet(d), _params(d["folder"], table=True))
    assert code == 0
    report = d["folder"] / "report.json"
    assert cli("gate", report, "--params", _params(d["folder"], table=True)).code == 0
    strict = _params(d["folder"], table=True,
                     extra="  - {metric: accuracy, op: '>=', value: 0.99, slice: region=US}\n")
    result = cli("gate", report, "--params", strict)
    assert result.code == 1 and "region=US" in result.out
    looser_gap = _params(d["folder"], table=True).read_text().replace("max_gap: 0.1",
                                                                       "max_gap: 0.001")
    (d["folder"] / "gap.yaml").write_text(looser_gap)
    result = cli("gate", report, "--params", d["folder"] / "gap.yaml")
    assert result.code == 1 and "gap across region" in result.out
    md = cli("report", report, "--format", "md")
    assert md.code == 0 and "Slices by region" in md.out and "too small" in md.out
    code, failing = _validate(cli, d, _parquet(d), strict)
    assert code == 1 and failing["passed"] is False
    md = cli("report", report, "--format", "md")
    assert "fails its gates" in md.out and "region=US" in md.out
    text = cli("report", report)
    assert "FAILED" in text.out and "region=US" in text.out
    assert "slices by region" in text.out and "too small" in text.out  # the per-slice table
    validate = cli("validate", "--model", d["model"], "--data", _parquet(d), "--params",
                   _params(d["folder"], table=True), "--out", d["folder"] / "terminal.json")
    assert validate.code == 0 and "slices by region" in validate.out
    assert "region=AF" in validate.out and "too small" in validate.out


def test_per_slice_baseline_guard_through_validation(seed003: dict[str, Any]) -> None:
    """The previous release scored on the same rows: per-slice paired deltas, recorded in the
    report; the same model as its own baseline drops nowhere."""
    from relgate import schemas
    from relgate.params import load_params
    from relgate.validation import Baseline, run_validation

    d = seed003
    data = d["folder"] / "base.npz"
    np.savez(data, x=d["x"], y=d["y"], region=d["region"])
    params = load_params(_params(d["folder"], extra="  max_drop: {accuracy: 0.0, brier: 0.0}\n"))
    out = run_validation(d["model"], data, params=params,
                         baseline=Baseline(name="v0", model_path=d["model"]))
    schemas.validate(out.report, "validation-report")
    block = out.report["slices"]
    guards = [r for r in block["results"] if r["metric"].endswith("vs baseline")]
    assert [g["passed"] for g in guards] == [True, True] and out.passed
    row = block["partitions"][0]["slices"][0]
    assert row["deltas"] == {"accuracy": 0.0, "brier": 0.0}
    alone = run_validation(d["model"], data, params=params)  # no previous release: fails closed
    assert not alone.passed
    assert any("no previous release" in r for r in alone.report["reasons"])


def test_a_binary_task_with_slices_is_refused(cli: Any, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("schema_version: 1\ngates:\n  mode: all\n  rules:\n"
                      "  - {metric: auc, op: '>=', value: 0.5}\nslices:\n  features: [region]\n")
    result = cli("validate", "--model", tmp_path / "m.onnx", "--data", tmp_path / "d.npz",
                 "--params", params)
    assert "multi-class" in assert_clean_failure(result)


def test_slice_columns_from_csv_bytes_and_bools(tmp_path: Path) -> None:
    from relgate.errors import DataError
    from relgate.slices import build_partition, read_slice_columns

    csv = tmp_path / "d.csv"
    csv.write_text("x,y,region\n1.0,0,EU\n2.0,1,US\n3.0,1,EU\n")
    cols = read_slice_columns(csv, ["region"], 3)
    assert cols["region"].tolist() == ["EU", "US", "EU"]
    csv.write_text("x,y,region\n1.0,0,EU\n2.0,1,\n3.0,1,EU\n")
    with pytest.raises(DataError, match="null"):
        read_slice_columns(csv, ["region"], 3)
    npz = tmp_path / "d.npz"
    np.savez(npz, y=np.array([0, 1, 1]), dev=np.array([b"ios", b"web", b"ios"]),
             flag=np.array([True, False, True]))
    cols = read_slice_columns(npz, ["dev", "flag"], 3)
    part = build_partition(cols, ("dev", "flag"), source="t")
    assert part.values == (("ios", "true"), ("web", "false"))


def test_a_table_swapped_after_scoring_is_not_sliced(seed003: dict[str, Any]) -> None:
    """The slice columns are read from the very file that was scored (its identity)."""
    from relgate.errors import DataError
    from relgate.scoring import EvalData
    from relgate.slices import read_slice_columns

    d = seed003
    path = _parquet(d)
    scored = EvalData.open(path, labels="multiclass")
    path.unlink()
    _parquet(d)  # same name, another file
    with pytest.raises(DataError, match="changed since it was opened"):
        read_slice_columns(path, ["region"], d["y"].size, identity=scored.identity)


@pytest.mark.parametrize("strict", [False, True], ids=["passes", "slice-fails"])
def test_promote_re_judges_the_slice_rules(seed003: dict[str, Any], tmp_path: Path,
                                           strict: bool) -> None:
    """promote re-evaluates with the params in force: a model that fails a slice rule is not
    published, whatever its overall gates say; one that passes them is."""
    import shutil

    from tests.support.registry import relgate

    d = seed003
    root = tmp_path / "reg"
    (root / "models").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(d["model"], root / "models" / "model.onnx")
    np.savez(root / "data" / "test.npz", x=d["x"], y=d["y"], region=d["region"])
    extra = "  - {metric: accuracy, op: '>=', value: 0.99, slice: region=US}\n" if strict else ""
    text = _params(d["folder"], extra=extra).read_text()
    text += "release:\n  name: v1.0.0\n  promoted:\n    path: models/model.onnx\n"
    (root / "params.yaml").write_text(text)
    assert relgate(root, "validate", "--model", "models/model.onnx", "--data",
                   "data/test.npz", "--out", "analysis/validation_report.json",
                   "--record-verdict") == 0
    code = relgate(root, "promote")
    assert code == (1 if strict else 0)
    assert (root / "models" / "core" / "v1.0.0").exists() is not strict
    if strict:
        return
    bundle = root / "models" / "core" / "v1.0.0"
    report = json.loads((root / "analysis" / "validation_report.json").read_text())
    record = json.loads((bundle / "release.json").read_text())
    assert [r["rule"] for r in record["slices"]["rules"]] == [
        r["rule"] for r in report["slices"]["results"]]
    assert record["slices"]["passed"] is True
    card = (bundle / "README.md").read_text()
    assert "## Gates per slice (passed)" in card
    for rule in record["slices"]["rules"]:  # every gated slice is named on the card
        assert rule["rule"] in card.replace("\\|", "|").replace("&lt;", "<")
        assert all(name in card for name in rule["slices"] + rule["too_small"])


def test_a_csv_without_the_slice_column_names_what_it_has(tmp_path: Path) -> None:
    from relgate.errors import DataError
    from relgate.slices import read_slice_columns

    csv = tmp_path / "d.csv"
    csv.write_text("x,y,device\n1.0,0,ios\n")
    with pytest.raises(DataError, match=r"'region'.* not in the eval set; it holds 'device', 'x'"):
        read_slice_columns(csv, ["region"], 1)


def test_a_plot_and_a_picture_per_sliced_metric(cli: Any, seed003: dict[str, Any],
                                                 tmp_path: Path) -> None:
    """validate --plots-dir writes one CSV per partition and judged metric (for dvc plots),
    row for row the report's slices; report --format html draws each as a bar chart with
    one bar per slice (too-small slices included, marked)."""
    import csv
    import re
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    d = seed003
    out, plots = tmp_path / "report.json", tmp_path / "plots"
    result = cli("validate", "--model", d["model"], "--data", _parquet(d), "--params",
                 _params(d["folder"], table=True), "--out", out, "--plots-dir", plots)
    assert result.code == 0, result.err
    report = json.loads(out.read_text())
    part = report["slices"]["partitions"][0]
    metrics = sorted({r["metric"] for r in report["slices"]["results"]})
    for metric in metrics:
        rows = list(csv.DictReader((plots / f"slices_region_{metric}.csv").read_text(
            encoding="utf-8").splitlines()))
        assert [r["slice"] for r in rows] == [s["key"] for s in part["slices"]]
        for row, sl in zip(rows, part["slices"], strict=True):
            want = sl["metrics"][metric]["value"]
            assert (row["value"] == "") if want is None else float(row["value"]) == want
            assert row["gated"] == str(sl["gated"]).lower() and int(row["n"]) == sl["n"]
    page = subprocess.run([sys.executable, "-m", "relgate", "report", str(out), "--format",
                           "html", "--plots-dir", str(plots)], capture_output=True, text=True)
    assert page.returncode == 0, page.stderr
    figures = dict(re.findall(r'<figure id="(slices_[a-z_0-9]+)">\s*(<svg.*?</svg>)',
                              page.stdout, re.S))
    assert set(figures) == {f"slices_region_{m}" for m in metrics}
    for metric in metrics:
        svg = ET.fromstring(figures[f"slices_region_{metric}"])
        bars = [g for g in svg.iter() if {"mark-rect", "role-mark"} <= set(
            (g.get("class") or "").split())]
        drawn = sum(1 for s in part["slices"] if s["metrics"][metric]["value"] is not None)
        assert len(bars) == 1 and len([p for p in bars[0] if p.tag.endswith("path")]) == drawn
