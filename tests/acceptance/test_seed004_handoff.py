"""Seed 004's job in one registry, as its author would run it with relgate: several small torch
runs ranked by ``relgate compare --by f1 --then precision`` (one run a set of snapshots, for
the stability check), the winner calibrated and validated, its TorchScript deploy model and a
``config.json`` carrying the threshold shipped as sidecars, parity between the ``.pt`` and the
gated ONNX gated, and the threshold surviving promote into the release record and the card.

Real parts: torch training with fixed seeds, torch.onnx.export, torch.jit.script, onnxruntime,
the relgate CLI; the winner is checked against scikit-learn's F1 on onnxruntime's outputs.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relgate.bundle import verify_bundle
from relgate.jsonio import read_json
from tests.support.onnx_factory import write_npz
from tests.support.registry import relgate
from tests.support.torch_runs import export_onnx, tabular, train_mlp

PARAMS = """\
schema_version: 1
seed: 0
task: {kind: binary, output: logit, output_type: logit}
evaluate: {threads: 1, batch_size: 512}
calibrate:
  method: platt
  threshold: {strategy: max_f1}
validate:
  bootstrap: {resamples: 200, confidence: 0.95, seed: 5}
gates:
  mode: all
  rules:
  - {metric: f1, op: '>=', value: 0.6}
  - {metric: auc, op: '>=', value: 0.75}
parity: {reference: models/deploy.pt, samples: 300, max_abs_diff: 1.0e-4, min_agreement: 0.99}
release:
  name: v0.4.0
  promoted: {path: models/model.onnx, description: 'the compare winner, exported to ONNX'}
  files:
  - {path: models/deploy.pt, description: 'TorchScript deploy model (what ships)'}
  - {path: models/config.json, description: deploy config with the release threshold}
  tolerance: 1.0e-9
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("seed004")
    (root / "runs").mkdir()
    x_tr, y_tr = tabular(1500, 0)
    nets: dict[str, Any] = {}
    for name, seed, epochs, snaps in (("r1", 0, 60, (60,)), ("r2", 1, 60, (40, 50, 60)),
                                      ("r3", 2, 6, (6,))):
        for i, net in enumerate(reversed(train_mlp(x_tr, y_tr, seed=seed, epochs=epochs,
                                                snapshots=snaps))):
            tag = name if i == 0 else f"{name}_s{i}"
            (root / "runs" / f"{tag}.onnx").write_bytes(export_onnx(net))
            nets[tag] = net
    for split, n, seed in (("val", 1200, 1), ("test", 1500, 2)):
        write_npz(root / "data" / f"{split}.npz", **dict(zip(("x", "y"), tabular(n, seed),
                                                              strict=True)))
    (root / "params.yaml").write_text(PARAMS)
    return root, nets


def _run(root: Path, *args: str) -> tuple[int, str]:
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = relgate(root, *args)
    return code, out.getvalue()


def test_runs_are_ranked_and_the_winner_ships_with_its_deploy_model_and_threshold(
        registry: tuple[Path, dict[str, Any]]) -> None:
    import onnxruntime as ort
    import torch
    from sklearn.metrics import f1_score

    root, nets = registry
    specs = ["r1=runs/r1.onnx", "r2=runs/r2.onnx,runs/r2_s1.onnx,runs/r2_s2.onnx",
             "r3=runs/r3.onnx"]
    code, out = _run(root, "compare", *specs, "--data", "data/test.npz", "--by", "f1",
                     "--then", "precision", "--json")
    assert code == 0
    ranked = json.loads(out)
    rows = {r["name"]: r for r in ranked["candidates"]}
    assert rows["r2"]["stability"]["snapshots"] == 3  # the snapshot-stability column
    assert rows["r1"]["stability"] is None
    winner = ranked["winner"]
    # the winner has the best F1 by scikit-learn on onnxruntime's outputs at 0.5
    with np.load(root / "data/test.npz") as d:
        x, y = d["x"], d["y"]

    def f1_of(path: str) -> float:
        sess = ort.InferenceSession(str(root / path), providers=["CPUExecutionProvider"])
        logit = sess.run(["logit"], {"x": x})[0].ravel()
        return float(f1_score(y, (logit >= 0.0).astype(int)))

    for row in rows.values():  # a snapshot set is ranked by its mean over the snapshots
        want = np.mean([f1_of(s["model"]["path"]) for s in row["snapshots"]])
        assert row["metrics"]["f1"]["value"] == pytest.approx(want, abs=1e-12)
    assert rows[ranked["leader"]]["metrics"]["f1"]["value"] == max(
        r["metrics"]["f1"]["value"] for r in rows.values())
    assert rows[winner]["rank"] == 1 and rows[winner]["group"] == 1
    assert winner != "r3" and rows["r3"]["rank"] == 3  # the under-trained run comes last
    code, picked = _run(root, "compare", *specs, "--data", "data/test.npz", "--by", "f1",
                        "--then", "precision", "--pick")
    assert code == 0 and picked.split("\t")[0].strip() == winner

    # hand the winner on: its ONNX is gated, its TorchScript ships, linked by parity
    pick = Path(rows[winner]["pick"]["model"]).stem
    (root / "models").mkdir(exist_ok=True)
    (root / "models/model.onnx").write_bytes((root / "runs" / f"{pick}.onnx").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(nets[pick]).save(str(root / "models/deploy.pt"))
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data",
                   "data/val.npz") == 0
    threshold = read_json(root / "analysis/calibration.json")["threshold"]["value"]
    assert threshold != 0.5
    (root / "models/config.json").write_text(json.dumps({"threshold": threshold}) + "\n")
    assert relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--calibration", "analysis/calibration.json") == 0
    assert relgate(root, "parity") == 0
    assert relgate(root, "promote") == 0

    bundle = root / "models/core/v0.4.0"
    assert verify_bundle(bundle).ok
    for rel in ("models/deploy.pt", "models/config.json", "models/model.onnx"):
        assert hashlib.sha256((bundle / rel).read_bytes()).hexdigest() == \
            hashlib.sha256((root / rel).read_bytes()).hexdigest()
    record = read_json(bundle / "release.json")
    assert record["threshold"] == threshold == record["calibration"]["threshold"]
    assert json.loads((bundle / "models/config.json").read_text())["threshold"] == threshold
    parity = read_json(bundle / "parity.json")
    assert parity["metrics"]["max_abs_diff"] <= 1e-4 and parity["passed"] is True
    card = (bundle / "README.md").read_text()
    assert f"| threshold | {threshold:.6g} on the calibrated probability" in card
    assert "TorchScript deploy model (what ships)" in card and "`parity.json`" in card
