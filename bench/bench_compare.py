"""relgate compare: 4 candidates on 10^5 rows against a loop of scikit-learn on the same number of
resamples; and the whole command (ONNX scoring included) with its peak RSS."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness import compare, line
from relgate.compare import paired_metrics

N = 100_000
RESAMPLES = 200
NAMES = ("f1", "precision", "recall")


def _probs(seed: int) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(N) < 0.3).astype(np.int64)
    signal = 1.5 * y + rng.normal(size=N)
    probs = [np.round(1.0 / (1.0 + np.exp(-(k * signal + rng.normal(scale=0.3, size=N) - 1.0))), 4)
             for k in (1.0, 1.1, 0.9, 1.2)]
    return y, probs, [0.5, 0.45, 0.55, 0.5]


def case_engine() -> str:
    """f1, precision, recall of 4 candidates, each at its own threshold, on 200 shared resamples
    of 10^5 rows, vs a loop of sklearn's precision_recall_fscore_support (the three at once)."""
    from sklearn.metrics import precision_recall_fscore_support

    y, probs, thresholds = _probs(0)

    def ours() -> object:
        return paired_metrics(y, probs, thresholds, NAMES, resamples=RESAMPLES, seed=0)

    def baseline() -> object:
        rng = np.random.default_rng(0)
        preds = [p >= t for p, t in zip(probs, thresholds, strict=True)]
        out = []
        for _ in range(RESAMPLES):
            idx = rng.integers(0, N, N)
            out.append([precision_recall_fscore_support(y[idx], pred[idx], average="binary",
                                                        zero_division=0)[:3] for pred in preds])
        return np.asarray(out)

    t_ours, t_base = compare(ours, baseline, repeats=3, warmup=0)
    return line(f"compare engine 4 candidates x {RESAMPLES} resamples x n=1e5", t_ours, t_base,
                "loop of sklearn precision_recall_fscore_support", target="<= 0.1")


def _linear(path: Path, w: np.ndarray, b: float) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z0"]), helper.make_node("Add", ["z0", "b"], ["z"]),
         helper.make_node("Flatten", ["z"], ["logit"], axis=1)],
        "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.size])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])],
        initializer=[numpy_helper.from_array(w.reshape(-1, 1).astype(np.float32), "w"),
                     numpy_helper.from_array(np.array([b], dtype=np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


PARAMS = """\
schema_version: 1
seed: 0
task: {kind: binary, output: logit, output_type: logit}
evaluate: {threads: 1, batch_size: 4096}
validate:
  bootstrap: {resamples: RESAMPLES, confidence: 0.95, seed: 0}
  ece_bins: 15
gates:
  mode: all
  rules: [{metric: auc, op: '>=', value: 0.5}]
release: {name: r, promoted: {path: a.onnx}}
""".replace("RESAMPLES", str(RESAMPLES))


def case_command() -> str:
    """``relgate compare`` of 4 ONNX candidates on 10^5 rows (scoring included), in a child
    process: median wall time over 3 runs and the child's peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(1)
        x = rng.normal(size=(N, 16)).astype(np.float32)
        w = rng.normal(size=16)
        y = (rng.random(N) < 1.0 / (1.0 + np.exp(-(x @ w - 0.5)))).astype(np.int64)
        np.savez(root / "test.npz", x=x, y=y)
        for i, scale in enumerate((1.0, 0.7, 1.3, 0.4)):
            _linear(root / f"m{i}.onnx", w * scale + rng.normal(scale=0.1, size=16), -0.5)
        (root / "params.yaml").write_text(PARAMS)
        cmd = [sys.executable, "-m", "relgate", "compare", *(f"m{i}=m{i}.onnx" for i in range(4)),
               "--data", "test.npz", "--params", "params.yaml", "--by", "f1", "--then",
               "precision,recall", "--json"]
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False,
                                  env={**os.environ, "CI": "1"})
            times.append(time.perf_counter() - t0)
            assert done.returncode == 0, done.stderr
        winner = json.loads(done.stdout)["winner"]
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return (f"relgate compare 4 x n=1e5 ({RESAMPLES} resamples, scoring included): "
            f"{sorted(times)[1]:.3g}s (median of 3), peak RSS {rss_mb:.0f} MiB, winner {winner}")


def main() -> None:
    for case in (case_engine, case_command):
        print(case(), flush=True)


if __name__ == "__main__":
    main()
