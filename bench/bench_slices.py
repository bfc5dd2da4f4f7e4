"""Gates per slice (issue 19): 10^6 rows, 100 slices, 1000 stratified resamples. The sliced
evaluation (every overall metric plus every per-slice metric and its simultaneous intervals)
against the unsliced one (every overall metric), measured in the same run; target ratio <= 3.
Peak RSS of each, in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness import compare, line
from relgate import slices as sl
from relgate.tasks import multiclass as mc

N, K, SLICES, RESAMPLES = 1_000_000, 10, 100, 1000
TOP_K = (3,)


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, sl.Partition]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, N)
    z = rng.normal(size=(N, K))
    z[np.arange(N), y] += 1.5
    region = np.array([f"r{i:03d}" for i in range(SLICES)])[rng.integers(0, SLICES, N)]
    return y, mc.softmax(z), sl.build_partition({"region": region}, ("region",), source="bench")


def unsliced(y: np.ndarray, p: np.ndarray) -> object:
    return mc.evaluate(y, p, top_k=TOP_K, resamples=RESAMPLES, seed=1)


def sliced(y: np.ndarray, p: np.ndarray, part: sl.Partition) -> object:
    overall = unsliced(y, p)
    table = sl.slice_metrics(y, [p], part, top_k=TOP_K, resamples=RESAMPLES, seed=1)
    everyone = range(SLICES)
    sims = {nm: sl.simultaneous(table.models[0].point[nm], table.models[0].boot.get(nm),
                                everyone, 0.95) for nm in table.names}
    return overall, table, sims


def case_ratio() -> str:
    y, p, part = _data()
    t_sliced, t_plain = compare(lambda: sliced(y, p, part), lambda: unsliced(y, p),
                                repeats=1, warmup=0)
    return line(f"evaluate n=1e6 K={K}, {SLICES} slices, {RESAMPLES} resamples (sliced = "
                "overall + per-slice + simultaneous; 1 timed run each)", t_sliced, t_plain,
                "unsliced evaluate", target="<= 3")


def _peak(which: str) -> None:
    def status(key: str) -> int:
        for row in Path("/proc/self/status").read_text().splitlines():
            if row.startswith(key):
                return int(row.split()[1]) * 1024
        raise RuntimeError(key)

    y, p, part = _data()
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS:")
    t0 = time.perf_counter()
    sliced(y, p, part) if which == "sliced" else unsliced(y, p)
    seconds = time.perf_counter() - t0
    grown = status("VmHWM:") - before
    print(f"{which} n=1e6 K={K} {RESAMPLES} resamples: {seconds:.4g}s; peak RSS growth "
          f"{grown / 2**20:.0f} MiB ({grown / p.nbytes:.2f} x the {p.nbytes / 2**20:.0f} MiB "
          "probability matrix)")


def case_memory() -> str:
    rows = []
    for which in ("unsliced", "sliced"):
        done = subprocess.run([sys.executable, __file__, "--peak", which], check=True,
                              capture_output=True, text=True)
        rows.append(done.stdout.strip())
    return "\n".join(rows)


def main() -> None:
    for case in (case_ratio, case_memory):
        print(case(), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--peak":
        _peak(sys.argv[2])
    else:
        main()
