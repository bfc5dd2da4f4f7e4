"""evaluate: relgate's scoring path vs the best raw onnxruntime loop, and its peak memory.

Case: a ~100k-parameter 1-D CNN (exported by torch) over 50k samples of [1600] float32
(320 MB), 2 threads.

* Throughput: ``Scorer.score`` (what ``relgate evaluate``, calibrate, validate and promote
  run; it streams the .npz from disk in chunks) vs a raw ``InferenceSession.run`` loop over
  the array already in memory, with the same session settings and the raw loop's best
  batch size (searched on 5k samples), and relgate at its default batch size.
  Medians (and best-of) of interleaved rounds; target ratio >= 0.9 (throughput of
  relgate / throughput of the raw loop).
* Memory: ``relgate evaluate`` runs as a child process; its peak resident set size is the
  kernel's high-water mark (``VmHWM`` in /proc, interpreter and onnxruntime included),
  polled until it exits. Target: below 1.5x the input array's size.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from harness import line  # noqa: E402

N, L, THREADS, WIDTH = 50_000, 1600, 2, 32
BATCHES = (16, 64, 256, 1024, 4096)
ROUNDS = 4


def _raw_session(model: Path) -> object:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def _raw_loop(sess: object, x: np.ndarray, batch: int) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in range(0, x.shape[0], batch):
        out[i : i + batch] = sess.run(["score"], {"x": x[i : i + batch]})[0]  # type: ignore[attr-defined]
    return out


def _peak_rss_of(cmd: list[str]) -> tuple[int, float, int]:
    """Run *cmd*; return (exit code, wall seconds, peak RSS in bytes).

    The peak is the child's VmHWM (the kernel's high-water mark of its resident set, reset
    by exec) polled every 10 ms until it exits. ``ru_maxrss`` from wait4 is not used: it
    keeps the parent's resident set copied at fork time, before exec.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status = Path(f"/proc/{proc.pid}/status")
    peak = 0
    while proc.poll() is None:
        try:
            for row in status.read_text().splitlines():
                if row.startswith("VmHWM:"):
                    peak = max(peak, int(row.split()[1]) * 1024)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.01)
    proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(proc.stderr.read().decode() if proc.stderr else "", file=sys.stderr)
    return proc.returncode, wall, peak


def main() -> None:
    from relgate.params import DEFAULT_BATCH
    from relgate.scoring import Scorer
    from tests.support import onnx_factory as f

    with tempfile.TemporaryDirectory(prefix="relgate-bench-") as tmp:
        root = Path(tmp)
        model = f.torch_cnn(root / "model", width=WIDTH, name="cnn.onnx")
        params = f.cnn_parameter_count(WIDTH)
        x = np.random.default_rng(0).normal(0, 0.5, size=(N, L)).astype(np.float32)
        y = (np.arange(N) % 2).astype(np.int8)
        data = f.write_npz(root / "eval.npz", x=x, y=y)
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
              flush=True)
        print(f"model: 1-D CNN, {params} parameters, torch export with .onnx.data; data: "
              f"{N} x [{L}] float32 ({x.nbytes / 1e6:.0f} MB, uncompressed .npz); "
              f"{THREADS} threads", flush=True)

        sess = _raw_session(model)
        search = {}
        for b in BATCHES:
            _raw_loop(sess, x[:5000], b)
            t0 = time.perf_counter()
            _raw_loop(sess, x[:5000], b)
            search[b] = time.perf_counter() - t0
        best = min(search, key=lambda b: search[b])
        print("raw loop batch search (5k samples): "
              + ", ".join(f"{b}: {s:.2f}s" for b, s in search.items()) + f" -> best {best}",
              flush=True)

        scorer = Scorer(model, threads=THREADS, batch_size=best)
        head = {"x": x[:5000], "y": y[:5000]}
        same = np.array_equal(scorer.score(head).scores, _raw_loop(sess, x[:5000], best))
        assert same, "relgate's scores differ from the raw loop's"
        default = Scorer(model, threads=THREADS, batch_size=DEFAULT_BATCH)
        runs: dict[str, list[float]] = {"ours": [], "default": [], "raw": []}
        fns = {"ours": lambda: scorer.score(data), "default": lambda: default.score(data),
               "raw": lambda: _raw_loop(sess, x, best)}
        for _ in range(ROUNDS):  # interleaved: load from other processes hits all alike
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in runs.items()}
        paired = statistics.median(r / o for r, o in zip(runs["raw"], runs["ours"], strict=True))
        low = {k: min(v) for k, v in runs.items()}
        print(line(f"evaluate throughput (batch {best}, from disk vs in memory)", med["ours"],
                   med["raw"], "raw InferenceSession.run loop",
                   target=">= 0.9 throughput ratio", ratio=med["raw"] / med["ours"]),
              flush=True)
        print(f"  throughput ratio (raw time / relgate time): median of {ROUNDS} "
              f"{med['raw'] / med['ours']:.3f}, best-of-{ROUNDS} {low['raw'] / low['ours']:.3f}, "
              f"median of paired rounds {paired:.3f};"
              f" relgate {N / med['ours']:,.0f} samples/s, raw loop {N / med['raw']:,.0f} "
              "samples/s; scores bit-identical (first 5k): yes", flush=True)
        print(f"  at relgate's default batch size {DEFAULT_BATCH}: ratio median "
              f"{med['raw'] / med['default']:.3f}, best-of {low['raw'] / low['default']:.3f}",
              flush=True)

        out = root / "scores.npz"
        cmd = [sys.executable, "-m", "relgate", "evaluate", "--model", str(model), "--data",
               str(data), "--out", str(out), "--threads", str(THREADS), "--batch-size",
               str(best)]
        code, wall, peak = _peak_rss_of(cmd)
        _, _, idle = _peak_rss_of([sys.executable, "-c",
                                   "import onnxruntime, relgate.scoring, relgate.cli"])
        size = N * L * 4
        print(f"evaluate memory: peak RSS {peak / 1e6:.0f} MB = {peak / size:.2f}x the input "
              f"array ({size / 1e6:.0f} MB) (target < 1.5x); interpreter + onnxruntime alone "
              f"{idle / 1e6:.0f} MB; method: VmHWM of the `relgate evaluate` child process, "
              f"polled until exit; exit {code}; end-to-end {wall:.1f}s", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f} (timings are noisy above "
              f"{os.cpu_count()})", flush=True)
        if code != 0:
            raise SystemExit("relgate evaluate failed")


if __name__ == "__main__":
    main()
