"""Seed 004's job through the real CLI: several small torch runs (and snapshot sets), exported
with torch.onnx.export, scored by onnxruntime and ranked by ``relgate compare --by f1 --then
precision``; every ranked number is checked against scikit-learn on the same outputs."""

from __future__ import annotations

import io
import itertools
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.onnx_factory import write_npz
from tests.support.torch_runs import export_onnx, tabular, train_mlp

PARAMS = """\
schema_version: 1
seed: 0
task:
  kind: binary
  output: logit
  output_type: logit
evaluate:
  threads: 1
  batch_size: 512
calibrate:
  scales: [1.0]
  offsets: [0.0]
  method: platt
  threshold:
    strategy: max_f1
  ece_bins: 10
validate:
  bootstrap:
    resamples: 300
    confidence: 0.95
    seed: 5
  ece_bins: 10
gates:
  mode: all
  rules:
  - metric: auc
    op: '>='
    value: 0.5
release:
  name: test-release
  promoted:
    path: models/a.onnx
"""


def _torch_run(x: np.ndarray, y: np.ndarray, *, seed: int, epochs: int,
               snapshots: tuple[int, ...]) -> list[bytes]:
    """A tiny MLP trained with a fixed seed; the ONNX export at each epoch in *snapshots*."""
    return [export_onnx(net) for net in train_mlp(x, y, seed=seed, epochs=epochs,
                                                  snapshots=snapshots)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/{a,b,c}.onnx (last epoch), models/b_ep*.onnx snapshots, val and test splits."""
    root = tmp_path_factory.mktemp("compare")
    (root / "models").mkdir()
    x_tr, y_tr = tabular(1500, 0)
    for name, seed, epochs in (("a", 0, 60), ("b", 1, 60), ("c", 2, 8)):
        snaps = (40, 50, 60) if name == "b" else (epochs,)
        models = _torch_run(x_tr, y_tr, seed=seed, epochs=epochs, snapshots=snaps)
        (root / "models" / f"{name}.onnx").write_bytes(models[-1])
        for epoch, model in zip(snaps[:-1], models[:-1], strict=True):
            (root / "models" / f"{name}_ep{epoch}.onnx").write_bytes(model)
    for split, n, seed in (("val", 1200, 1), ("test", 1500, 2)):
        x, y = tabular(n, seed)
        write_npz(root / "data" / f"{split}.npz", x=x, y=y)
    (root / "params.yaml").write_text(PARAMS)
    return root


def _calibrate(cli: Any, root: Path, name: str, data: str = "val") -> str:
    out = f"analysis/cal_{name}_{data}.json"
    result = cli("calibrate", "--model", root / f"models/{name}.onnx", "--data",
                 root / f"data/{data}.npz", "--out", root / out, "--params", root / "params.yaml")
    assert result.code == 0, result.err
    return out


def _compare(cli: Any, root: Path, *args: object) -> Any:
    return cli("compare", *args, "--data", root / "data/test.npz", "--params",
               root / "params.yaml")


def _sklearn(root: Path, snapshot: dict[str, Any]) -> dict[str, float]:
    """f1 / precision / recall by scikit-learn on onnxruntime's outputs at the snapshot's
    threshold (the calibration's formula applied when it has one)."""
    import onnxruntime as ort
    from sklearn import metrics as skm

    from relgate.calibration import apply_calibration, sigmoid

    with np.load(root / "data/test.npz") as d:
        x, y = d["x"], d["y"]
    cal = None
    if snapshot["calibration"] is not None:
        cal = json.loads(Path(snapshot["calibration"]["path"]).read_text())
        x = (x * cal["input"]["scale"] + cal["input"]["offset"]).astype(np.float32)
    sess = ort.InferenceSession(snapshot["model"]["path"], providers=["CPUExecutionProvider"])
    logit = np.asarray(sess.run(["logit"], {"x": x})[0], dtype=np.float64).ravel()
    prob = sigmoid(logit) if cal is None else apply_calibration(logit, cal)
    pred = (prob >= snapshot["threshold"]).astype(int)
    return {"f1": skm.f1_score(y, pred), "precision": skm.precision_score(y, pred),
            "recall": skm.recall_score(y, pred)}


def test_seed_004_runs_ranked_by_f1_then_precision_with_stability(cli: Any, runs: Path) -> None:
    cal_a = _calibrate(cli, runs, "a")
    m = runs / "models"
    specs = [f"a={m / 'a.onnx'}:{runs / cal_a}",
             f"b={m / 'b.onnx'},{m / 'b_ep40.onnx'},{m / 'b_ep50.onnx'}",
             f"c={m / 'c.onnx'}",
             f"a_copy={m / 'a.onnx'}:{runs / cal_a}"]
    result = _compare(cli, runs, *specs, "--by", "f1", "--then", "precision,recall", "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    from relgate import schemas

    schemas.validate(record, "compare")
    rows = {r["name"]: r for r in record["candidates"]}
    assert [r["rank"] for r in record["candidates"]] == [1, 2, 3, 4]
    for row in record["candidates"]:
        expected = [_sklearn(runs, s) for s in row["snapshots"]]
        for snap, want in zip(row["snapshots"], expected, strict=True):
            for metric in ("f1", "precision", "recall"):
                assert abs(snap["metrics"][metric] - want[metric]) <= 1e-12
            assert len(snap["model"]["sha256"]) == 64
        for metric in ("f1", "precision", "recall"):  # a set is ranked by its mean
            mean = float(np.mean([w[metric] for w in expected]))
            assert abs(row["metrics"][metric]["value"] - mean) <= 1e-12
    # each at its own threshold: the calibrated one at its calibration's, the others at 0.5
    cal_record = json.loads((runs / cal_a).read_text())
    assert rows["a"]["snapshots"][0]["threshold"] == cal_record["threshold"]["value"]
    assert rows["a"]["snapshots"][0]["threshold_source"] == "calibration"
    assert rows["c"]["snapshots"][0]["threshold"] == 0.5
    from relgate.hashing import sha256_file

    assert rows["a"]["snapshots"][0]["calibration"]["sha256"] == sha256_file(runs / cal_a)
    assert record["data"]["sha256"] == sha256_file(runs / "data/test.npz")
    # the stability column of the snapshot set: mean, std, min-max of f1 over its snapshots
    f1s = [_sklearn(runs, s)["f1"] for s in rows["b"]["snapshots"]]
    stab = rows["b"]["stability"]
    assert stab["snapshots"] == 3 and stab["metric"] == "f1"
    assert abs(stab["mean"] - np.mean(f1s)) <= 1e-12
    assert abs(stab["std"] - np.std(f1s, ddof=1)) <= 1e-12
    assert (stab["min"], stab["max"]) == (min(f1s), max(f1s))
    assert rows["b"]["pick"]["model"] == str(m / "b.onnx")  # a set ships its first snapshot
    assert rows["a"]["stability"] is None
    # the same model twice is one tie group, with a zero paired delta
    assert rows["a"]["group"] == rows["a_copy"]["group"]
    assert rows["a"]["delta_vs_leader"] == rows["a_copy"]["delta_vs_leader"]
    assert record["leader"] == "a" and rows["a_copy"]["tied_with_leader"]
    assert rows["a_copy"]["delta_vs_leader"]["f1"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    # ordering: groups ascending; within a group precision (then recall) decides
    order = record["candidates"]
    assert [r["group"] for r in order] == sorted(r["group"] for r in order)
    for one, two in itertools.pairwise(order):
        if one["group"] == two["group"]:
            assert one["metrics"]["precision"]["value"] >= two["metrics"]["precision"]["value"]
        else:  # a new group is never better on f1 than the one before
            assert one["metrics"]["f1"]["value"] >= two["metrics"]["f1"]["value"]
    # the under-trained run is worse than the leader beyond the interval
    assert rows["c"]["group"] > 1 and not rows["c"]["tied_with_leader"]
    assert rows["c"]["delta_vs_leader"]["f1"]["ci_high"] < 0
    assert record["data"]["sha256"] and record["data"]["n"] == 1500

    text = _compare(cli, runs, *specs, "--by", "f1", "--then", "precision")
    assert text.code == 0, text.err
    assert "tied with the leader" in text.out and "f1 across snapshots" in text.out
    assert f"{stab['mean']:.4f} ± {stab['std']:.4f}" in text.out
    md = _compare(cli, runs, *specs, "--by", "f1", "--then", "precision", "--format", "md")
    assert md.code == 0 and md.out.count("\n| ") == 5  # header and four rows
    pick = _compare(cli, runs, *specs, "--by", "f1", "--then", "precision", "--pick")
    assert pick.code == 0
    winner = json.loads(_compare(cli, runs, *specs, "--by", "f1", "--then", "precision",
                                 "--json").out)["winner"]
    want = rows[winner]["pick"]
    assert pick.out == "\t".join(v for v in (winner, want["model"], want["calibration"]) if v) + "\n"


def test_validation_reports_are_candidates_checked_by_sha256(cli: Any, runs: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(runs)
    cal_b = _calibrate(cli, runs, "b")
    result = cli("validate", "--model", "models/b.onnx", "--data", "data/test.npz",
                 "--calibration", cal_b, "--out", "analysis/report_b.json",
                 "--params", "params.yaml")
    assert result.code in (0, 1), result.err
    out = runs / "analysis" / "cmp.json"
    ok = _compare(cli, runs, "b=analysis/report_b.json", "c=models/c.onnx", "--out", out)
    assert ok.code == 0, ok.err
    record = json.loads(out.read_text())
    snap = next(r for r in record["candidates"] if r["name"] == "b")["snapshots"][0]
    report = json.loads((runs / "analysis/report_b.json").read_text())
    assert snap["threshold_source"] == "report" and snap["threshold"] == report["threshold"]
    assert snap["report"]["path"] == "analysis/report_b.json"
    assert snap["model"]["sha256"] == report["model"]["sha256"]
    assert abs(snap["metrics"]["f1"] - report["metrics"]["f1"]["value"]) <= 1e-12
    out.unlink()

    # a report of another split: one line, exit 2, nothing written
    cli("validate", "--model", "models/c.onnx", "--data", "data/val.npz", "--out",
        "analysis/report_c_val.json", "--params", "params.yaml")
    bad = _compare(cli, runs, "b=analysis/report_b.json", "c=analysis/report_c_val.json",
                   "--out", out)
    assert bad.code == 2 and "evaluated on another split" in bad.err
    assert len(bad.err.strip().splitlines()) == 1 and bad.out == "" and not out.exists()

    # a report whose model was replaced after validation
    report["model"]["sha256"] = "0" * 64
    (runs / "analysis/report_edited.json").write_text(json.dumps(report))
    edited = _compare(cli, runs, "b=analysis/report_edited.json", "c=models/c.onnx")
    assert edited.code == 2 and "does not have the sha256" in edited.err

    # a calibration fit on the test split itself
    cal_test = _calibrate(cli, runs, "c", data="test")
    fit = _compare(cli, runs, f"c={runs / 'models/c.onnx'}:{runs / cal_test}",
                   "b=models/b.onnx", "--out", out)
    assert fit.code == 2 and "fit on the test split" in fit.err and not out.exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["a=models/a.onnx", "b"], "expected NAME="),
    (["a=models/a.onnx", "b=models/b.txt"], "neither MODEL.onnx"),
    (["a=models/a.onnx", "b=models/b.onnx,"], "empty snapshot"),
    (["a=models/a.onnx", "b=models/b.onnx", "--by", "f2"], "unknown metric 'f2'"),
    (["a=models/a.onnx", "b=models/b.onnx", "--then", "precision,accuracy_at_k"],
     "unknown metric"),
    (["a=models/a.onnx"], "at least two candidates"),
    (["a=models/a.onnx", "a=models/b.onnx"], "given twice"),
    (["a=models/a.onnx", "b=models/missing.onnx"], "not found"),
])
def test_bad_input_is_one_line_and_exit_2(cli: Any, runs: Path, monkeypatch: pytest.MonkeyPatch,
                                          args: list[str], needle: str) -> None:
    monkeypatch.chdir(runs)
    result = _compare(cli, runs, *args)
    assert result.code == 2, (result.code, result.err)
    assert needle in result.err and result.out == ""
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


MC_PARAMS = PARAMS.replace("  kind: binary\n  output: logit\n  output_type: logit\n",
                           "  kind: multiclass\n  output: logits\n  output_type: logits\n"
                           "  top_k: [2]\n").replace("    path: models/a.onnx", "    path: m.onnx")


def _torch_classes(x: np.ndarray, y: np.ndarray, *, seed: int, epochs: int) -> bytes:
    """A tiny 3-class MLP (logits [N, 3]) trained with a fixed seed, exported to ONNX."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 8),), buf, dynamo=False, input_names=["x"],
                          output_names=["logits"],
                          dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})
    return buf.getvalue()


def test_multiclass_runs_ranked_by_macro_f1(cli: Any, tmp_path: Path) -> None:
    import onnxruntime as ort
    from sklearn import metrics as skm

    from relgate.tasks.multiclass import softmax

    rng = np.random.default_rng(3)
    centers = rng.normal(size=(3, 8)) * 1.2

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        return (centers[y] + rng.normal(size=(n, 8))).astype(np.float32), y.astype(np.int64)

    x_tr, y_tr = split(1200)
    x_te, y_te = split(900)
    write_npz(tmp_path / "test.npz", x=x_te, y=y_te)
    (tmp_path / "params.yaml").write_text(MC_PARAMS)
    for name, seed, epochs in (("long", 0, 80), ("short", 1, 3), ("mid", 2, 80)):
        (tmp_path / f"{name}.onnx").write_bytes(_torch_classes(x_tr, y_tr, seed=seed,
                                                               epochs=epochs))
    result = cli("compare", *(f"{n}={tmp_path / n}.onnx" for n in ("long", "short", "mid")),
                 f"same={tmp_path / 'long.onnx'}", "--data", tmp_path / "test.npz", "--params",
                 tmp_path / "params.yaml", "--by", "macro_f1", "--then", "accuracy,top2_accuracy",
                 "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert record["task"] == "multiclass" and record["by"] == "macro_f1"
    for row in record["candidates"]:
        snap = row["snapshots"][0]
        sess = ort.InferenceSession(snap["model"]["path"], providers=["CPUExecutionProvider"])
        prob = softmax(np.asarray(sess.run(["logits"], {"x": x_te})[0], dtype=np.float64))
        pred = prob.argmax(axis=1)
        assert abs(snap["metrics"]["macro_f1"] - skm.f1_score(y_te, pred, average="macro")) \
            <= 1e-12
        assert abs(snap["metrics"]["accuracy"] - skm.accuracy_score(y_te, pred)) <= 1e-12
        top2 = skm.top_k_accuracy_score(y_te, prob, k=2, labels=[0, 1, 2])
        assert abs(snap["metrics"]["top2_accuracy"] - top2) <= 1e-12
        assert snap["threshold_source"] == "argmax"
    rows = {r["name"]: r for r in record["candidates"]}
    assert rows["long"]["group"] == rows["same"]["group"]
    assert rows["short"]["group"] > 1 and rows["short"]["rank"] == 4
    assert record["data"]["support"] == np.bincount(y_te).tolist()
