"""promote reads every evidence byte once (issue 16, point 3).

A model whose 64 MiB of weights sit in ``model.onnx.data`` (tests/support/ballast.py) is
validated, then promoted (publishing) and promoted again (already published), in this
process. The bytes read meanwhile (``rchar`` of /proc/self/io, which takes in the guarded
probe child once it is reaped) are counted against the data file's size: the staged copy is
hashed while it is copied and evaluated from there, so publishing reads the data file once
(onnxruntime maps it, which ``rchar`` does not count) and "already published" reads it once
more, to verify the bundle already at the target. Before, the re-evaluation hashed the staged
copy a second time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.ballast import ballast_model
from tests.support.registry import DIM, W_TRUE

MB = 64
PARAMS = """\
schema_version: 1
seed: 0
task: {kind: binary, output: score, output_type: logit}
evaluate: {threads: 1, batch_size: 256}
calibrate: {scales: [1.0], offsets: [0.0], method: none, threshold: {strategy: fixed, value: 0.5},
  ece_bins: 10}
validate: {bootstrap: {resamples: 50, confidence: 0.9, seed: 3}, ece_bins: 10}
gates: {mode: all, rules: [{metric: auc, op: '>=', value: 0.5}]}
release: {name: v1.0.0, promoted: {path: models/model.onnx, description: one read}, tolerance: 1.0e-9}
"""


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ballast_model(tmp_path / "models" / "model.onnx", MB, external=True)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, DIM)).astype(np.float32)
    y = (rng.random(500) < 1 / (1 + np.exp(-x @ W_TRUE))).astype(np.int8)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "test.npz", x=x, y=y)
    (tmp_path / "params.yaml").write_text(PARAMS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_promote_reads_the_model_data_once_and_publishes_what_it_hashed(
        registry: Path, cli: Any) -> None:
    data = registry / "models" / "model.onnx.data"
    size = data.stat().st_size
    done = cli("validate", "--model", "models/model.onnx", "--data", "data/test.npz",
               "--out", "analysis/validation_report.json")
    assert done.code == 0, done.err

    before = _rchar()
    done = cli("promote")
    publishing = (_rchar() - before) / size
    assert done.code == 0, done.err
    published = registry / "models" / "core" / "v1.0.0" / "models" / "model.onnx.data"
    assert hashlib.sha256(published.read_bytes()).hexdigest() == \
        hashlib.sha256(data.read_bytes()).hexdigest()
    assert 1.0 <= publishing < 1.5, f"publishing read the data file {publishing:.2f} times"

    before = _rchar()
    done = cli("promote")
    again = (_rchar() - before) / size
    assert done.code == 0 and "already published" in done.out + done.err, done.err
    assert 2.0 <= again < 2.5, f"already published read the data file {again:.2f} times"
