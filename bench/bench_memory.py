"""Peak RSS of validate, validate --baseline and promote vs onnxruntime alone, per model byte.

Issue 16 ("Stay inside the budget"): peak RSS of ``validate`` and ``promote`` <= 1.1 x the
model's bytes + 300 MiB, and a baseline comparison never holds two onnxruntime sessions
(``validate --baseline`` <= ``validate`` + 0.6 x the model's bytes; both sessions at once
cost + 1 x).

The model is a linear scorer carrying MODEL_MB (env ``RELGATE_BENCH_MODEL_MB``, default 256)
of weights, a ballast the graph reads at run time so that onnxruntime keeps all of it
resident, as a real model's weights are; the baseline release is a second model of the same
size. Both forms are measured: weights in an external ``.onnx.data`` file (as big models
ship) and inline initializers (parsed by protobuf and onnx.checker too). They are built in
a temporary folder, never committed.

The named baseline, measured in the same run, interleaved: **onnxruntime alone**, a fresh
Python that creates an ``InferenceSession`` of the same model (same settings: one thread,
CPU provider) and runs the same 2000 samples through it in batches of 256, what any
evaluation of the model must at least hold. Each command runs in its own process; its peak
RSS is ``ru_maxrss`` of it and its waited-for children (the guarded probe child among them,
whichever is larger), read by a small wrapper process: Linux carries the RSS high-water mark
of a process that forks across exec, so a child spawned straight from this bench would
report the bench's own peak. Medians of 3 runs (RSS varies little; the medians guard against
a stray run).

``promote publishing`` removes the bundle and its pin first; ``promote already published``
runs it again on an identical bundle.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from harness import line  # noqa: E402
from tests.support.ballast import ballast_model  # noqa: E402
from tests.support.ballast import peak_rss as child_peak_rss  # noqa: E402
from tests.support.registry import DIM, W_TRUE  # noqa: E402

MODEL_MB = int(os.environ.get("RELGATE_BENCH_MODEL_MB", "256"))
MIB = 1024 * 1024
REPEATS = 3
#: the issue's target: peak RSS <= TARGET_FACTOR x model bytes + TARGET_EXTRA_MIB
TARGET_FACTOR, TARGET_EXTRA_MIB = 1.1, 300
#: a baseline comparison may add at most this many model bytes over validate alone
TARGET_BASELINE_EXTRA = 0.6


def model_bytes(path: Path) -> int:
    """The .onnx file plus its external data file, if any."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


PARAMS = """\
schema_version: 1
seed: 0
task: {kind: binary, output: score, output_type: logit}
evaluate: {threads: 1, batch_size: 256}
calibrate: {scales: [1.0], offsets: [0.0], method: none, threshold: {strategy: fixed, value: 0.5},
  ece_bins: 10}
validate: {bootstrap: {resamples: 200, confidence: 0.9, seed: 3}, ece_bins: 10}
gates: {mode: all, rules: [{metric: auc, op: '>=', value: 0.5}]}
release: {name: v1.0.0, promoted: {path: models/model.onnx, description: bench}, tolerance: 1.0e-9}
"""

#: onnxruntime alone: one session of the model, the eval set run through it in batches
_ORT_ALONE = """\
import sys
import numpy as np, onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
session = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
with np.load(sys.argv[2]) as npz:
    x = npz["x"]
for i in range(0, len(x), 256):
    session.run(None, {"x": x[i:i + 256]})
"""

def peak_rss(cmd: list[str], cwd: Path, *, ok: tuple[int, ...] = (0,)) -> int:
    """Peak RSS in bytes of *cmd* (and of its waited-for children, the probe among them)."""
    code, nbytes = child_peak_rss(cmd, cwd)
    if code not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed ({code})")
    return nbytes


def main() -> None:
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} before the run; "
          f"model {MODEL_MB} MiB of weights; medians of {REPEATS} runs", flush=True)
    for external in (True, False):
        case(external)


def _registry(root: Path, external: bool) -> tuple[Path, Path]:
    model = ballast_model(root / "models" / "model.onnx", MODEL_MB, scale=3.0,
                          external=external)
    base = ballast_model(root / "prev" / "model.onnx", MODEL_MB, scale=2.0, external=external)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, DIM)).astype(np.float32)
    y = (rng.random(2000) < 1 / (1 + np.exp(-x @ W_TRUE))).astype(np.int8)
    (root / "data").mkdir()
    np.savez(root / "data" / "test.npz", x=x, y=y)
    (root / "params.yaml").write_text(PARAMS)
    return model, base


def case(external: bool) -> None:
    form = "external data" if external else "inline initializers"
    with tempfile.TemporaryDirectory(prefix="relgate-bench-memory-", dir="/tmp") as tmp:
        root = Path(tmp)
        model, base = _registry(root, external)
        nbytes = model_bytes(model)
        py = sys.executable
        validate = [py, "-m", "relgate", "validate", "--model", "models/model.onnx",
                    "--data", "data/test.npz"]
        report = root / "analysis" / "validation_report.json"

        def publishing() -> list[str]:
            shutil.rmtree(root / "models" / "core", ignore_errors=True)
            (root / "analysis" / "release_v1.0.0.json").unlink(missing_ok=True)
            return [py, "-m", "relgate", "promote"]

        cases: dict[str, Callable[[], list[str]]] = {
            "onnxruntime alone": lambda: [py, "-I", "-c", _ORT_ALONE, str(model),
                                          "data/test.npz"],
            "validate": lambda: [*validate, "--out", str(report)],
            "validate --baseline": lambda: [*validate, "--baseline", str(base),
                                            "--out", "analysis/paired.json"],
            "promote publishing": publishing,
            "promote already published": lambda: [py, "-m", "relgate", "promote"],
        }
        runs: dict[str, list[int]] = {name: [] for name in cases}
        for _ in range(REPEATS):  # interleaved: each round runs every case once
            for name, cmd in cases.items():
                runs[name].append(peak_rss(cmd(), root, ok=(0, 1) if "validate" in name
                                           else (0,)))
        med = {name: statistics.median(v) for name, v in runs.items()}
        alone = med["onnxruntime alone"]
        target = TARGET_FACTOR * nbytes + TARGET_EXTRA_MIB * MIB
        print(f"-- model {nbytes / MIB:.0f} MiB of {form}; onnxruntime alone (InferenceSession "
              f"load + run of the same model and eval set) peaks at {alone / MIB:.0f} MiB = "
              f"{alone / nbytes:.2f} x model bytes", flush=True)
        for name in list(cases)[1:]:
            peak = med[name]
            print(line(f"{name} peak RSS", peak / MIB, alone / MIB, "onnxruntime alone",
                       target=f"<= {TARGET_FACTOR} x model + {TARGET_EXTRA_MIB} MiB "
                              f"= {target / MIB:.0f} MiB", unit=" MiB"),
                  f"[{peak / nbytes:.2f} x model bytes; runs "
                  f"{', '.join(f'{v / MIB:.0f}' for v in runs[name])} MiB]",
                  "PASS" if peak <= target else "MISS", flush=True)
        extra = (med["validate --baseline"] - med["validate"]) / nbytes
        print(f"validate --baseline over validate: +{extra:.2f} x model bytes "
              f"(target <= {TARGET_BASELINE_EXTRA}; holding both sessions: + 1)",
              "PASS" if extra <= TARGET_BASELINE_EXTRA else "MISS", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
