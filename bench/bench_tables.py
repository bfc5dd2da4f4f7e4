"""Tables: Parquet (and CSV) read + score vs the same rows read + scored from an .npz.

Issue 18 ("Done when"): Parquet read + score against .npz on 1e6 rows, ratio <= 1.3, with
peak memory reported.

Case: ROWS (env ``RELGATE_BENCH_ROWS``, default 1_000_000) rows of float32 ``x [N, 16]``
and 0/1 labels ``y``, scored by a linear ONNX model (``x @ w + b``, MatMul + Add,
``score [batch, 1]``), one onnxruntime thread, relgate's default batch size. The same rows
are written, in a temporary folder removed at the end, as:

* ``.npz`` (``np.savez``, uncompressed): **the named baseline**;
* Parquet, ``x`` as one ``FixedSizeList<float32>[16]`` column, ``y`` int64, pyarrow's
  default row groups and compression;
* Parquet, ``x`` as 16 scalar float32 columns ``x0`` .. ``x15`` assembled into ``[N, 16]``
  by a table spec (``EvalDataSpec(inputs={"x": ("x0", ..., "x15")})``);
* CSV (``pyarrow.csv.write_csv``) with the same 16 scalar columns, on the first CSV_ROWS
  rows only (CSV text is slow to write and parse), against an .npz of the same rows.

Each measurement is a fresh child process (``python -c``) that imports relgate.scoring,
creates the scorer (onnxruntime session, guarded probe child) and then calls
``score_dataset`` once on the file; the time of that call, read + score, is the measured
time (the session is created before it, identically for every form). The child runs under
a small wrapper process that reports ``ru_maxrss`` of its waited-for children (the child
and its probe child, whichever is larger): Linux carries the RSS high-water mark of a
process that forks across exec, so a child spawned straight from this bench would report
the bench's own peak. The wrapper also reports the child's CPU seconds (user + system), so
that a table reader using more than one core shows. Rounds are interleaved (every form once
per round, after one warm-up round), REPEATS rounds, medians; the ratio printed is
table / npz, target <= 1.3. The scores of every table form are checked to equal the npz
scores bit for bit (``np.array_equal``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from harness import line  # noqa: E402

ROWS = int(os.environ.get("RELGATE_BENCH_ROWS", "1000000"))
CSV_ROWS = min(ROWS, 100_000)
DIM = 16
REPEATS = 5
TARGET = 1.3
MIB = 1024 * 1024
COLS = tuple(f"x{i}" for i in range(DIM))

#: the measured child: session first, then one timed score_dataset call (read + score)
_CHILD = f"""\
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from relgate.params import EvalDataSpec
from relgate.scoring import get_scorer, score_dataset
model, data, spec, out = sys.argv[1:5]
table = EvalDataSpec(inputs={{"x": {COLS!r}}}) if spec == "cols" else None
get_scorer(model, threads=1, table=table)
t1 = time.perf_counter()
res = score_dataset(model, data, threads=1, table=table)
t2 = time.perf_counter()
if out != "-":
    np.save(out, res.scores)
print(json.dumps({{"setup": t1 - t0, "score": t2 - t1, "n": res.n}}))
"""

#: a fresh, small Python that runs a command and prints its exit code, peak RSS (KiB) of
#: its waited-for children, their CPU seconds and its wall seconds; the command's stdout
#: passes through before that last line
_WRAPPER = ("import resource, subprocess, sys, time\n"
            "t0 = time.perf_counter()\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "wall = time.perf_counter() - t0\n"
            "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
            "print(code, ru.ru_maxrss, ru.ru_utime + ru.ru_stime, wall, flush=True)\n")


def _model(path: Path) -> Path:
    """score = x @ w + b, x [batch, 16] float32 -> score [batch, 1]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.linspace(-1.0, 1.0, DIM, dtype=np.float32).reshape(DIM, 1) * np.float32(0.9)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["score"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(np.array([0.25], dtype=np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="relgate-bench")
    model.ir_version = 10
    onnx.save_model(model, str(path))
    return path


def _write(root: Path) -> dict[str, tuple[Path, str]]:
    """The eval sets by form: (path, child spec argument)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (ROWS, DIM)).astype(np.float32)
    y = (rng.random(ROWS) < 0.5).astype(np.int64)
    np.savez(root / "eval.npz", x=x, y=y)
    fsl = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM)
    pq.write_table(pa.table({"x": fsl, "y": pa.array(y)}), root / "eval.parquet")
    cols = {c: pa.array(x[:, i]) for i, c in enumerate(COLS)}
    pq.write_table(pa.table({**cols, "y": pa.array(y)}), root / "cols.parquet")
    np.savez(root / "small.npz", x=x[:CSV_ROWS], y=y[:CSV_ROWS])
    pcsv.write_csv(pa.table({c: v[:CSV_ROWS] for c, v in cols.items()} | {"y": y[:CSV_ROWS]}),
                   root / "cols.csv")
    return {"npz": (root / "eval.npz", "-"),
            "parquet FixedSizeList[16]": (root / "eval.parquet", "-"),
            "parquet 16 columns (spec)": (root / "cols.parquet", "cols"),
            f"npz {CSV_ROWS} rows": (root / "small.npz", "-"),
            f"csv 16 columns (spec), {CSV_ROWS} rows": (root / "cols.csv", "cols")}


class ChildFailed(Exception):
    pass


def _run(model: Path, data: Path, spec: str, out: str) -> dict[str, float]:
    cmd = [sys.executable, "-I", "-c", _WRAPPER, sys.executable, "-c", _CHILD, str(model),
           str(data), spec, out]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    rows = proc.stdout.strip().splitlines()
    if proc.returncode or len(rows) < 2 or rows[-1].split()[0] != "0":
        raise ChildFailed(f"child failed on {data.name}: "
                          f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    _, kib, cpu, wall = rows[-1].split()
    got: dict[str, float] = json.loads(rows[-2])
    got.update(rss=int(kib) * 1024, cpu=float(cpu), wall=float(wall))
    return got


def _row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_row_groups)


def main() -> None:
    import pyarrow as pa

    from relgate.params import DEFAULT_BATCH

    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} before the run; "
          f"pyarrow {pa.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="relgate-bench-tables-") as tmp:
        root = Path(tmp)
        model = _model(root / "linear.onnx")
        t0 = time.perf_counter()
        forms = _write(root)
        print(f"data: {ROWS} x [{DIM}] float32 + y int64 ({ROWS * (DIM * 4 + 8) / MIB:.0f} MiB) "
              f"written in {time.perf_counter() - t0:.1f}s; files: "
              + ", ".join(f"{p.name} {p.stat().st_size / MIB:.1f} MiB" for p, _ in forms.values())
              + f"; row groups: eval.parquet {_row_groups(root / 'eval.parquet')}, cols.parquet "
              f"{_row_groups(root / 'cols.parquet')}", flush=True)
        print(f"model: linear (MatMul + Add) x [batch, {DIM}] -> score [batch, 1]; threads 1, "
              f"batch size {DEFAULT_BATCH} (default); each run a fresh child process; "
              f"warm-up round + {REPEATS} interleaved rounds, medians", flush=True)

        scores: dict[str, np.ndarray] = {}
        for name, (path, spec) in forms.items():  # warm-up round (page cache), scores kept
            out = root / f"scores-{len(scores)}.npy"
            try:
                _run(model, path, spec, str(out))
            except ChildFailed as exc:  # reported, not measured; the other forms go on
                print(f"{name}: FAILED, not measured: {exc}", flush=True)
                continue
            scores[name] = np.load(out)
        failed = [name for name in forms if name not in scores]
        forms = {name: v for name, v in forms.items() if name in scores}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in forms}
        for _ in range(REPEATS):  # interleaved: each round runs every form once
            for name, (path, spec) in forms.items():
                try:
                    runs[name].append(_run(model, path, spec, "-"))
                except ChildFailed as exc:  # a flaky failure is reported, its round left out
                    print(f"{name}: a round FAILED: {exc}", flush=True)
                    runs[name].append({})

        def med(name: str, key: str) -> float:
            return statistics.median(r[key] for r in runs[name] if r)

        names = [*forms, *failed]
        pairs = [(names[0], n) for n in names[1:3]] + [(names[3], names[4])]
        pairs = [(b, n) for b, n in pairs if b in forms and n in forms]
        for base, name in pairs:
            t, tb = med(name, "score"), med(base, "score")
            ratio = t / tb
            paired = statistics.median(a["score"] / b["score"] for a, b in
                                       zip(runs[name], runs[base], strict=True) if a and b)
            print(line(f"{name} read + score", t, tb, base, target=f"<= {TARGET}"),
                  "PASS" if ratio <= TARGET else "MISS", flush=True)
            print(f"  median of paired rounds {paired:.3f}; runs "
                  + ", ".join(f"{r['score']:.3f}" for r in runs[name] if r) + " s vs "
                  + ", ".join(f"{r['score']:.3f}" for r in runs[base] if r)
                  + f" s; {med(name, 'n') / t:,.0f} rows/s vs "
                  f"{med(base, 'n') / tb:,.0f}", flush=True)
            rss, rss_b = med(name, "rss"), med(base, "rss")
            print(f"  peak RSS {rss / MIB:.0f} MiB vs {base} {rss_b / MIB:.0f} MiB -> ratio "
                  f"{rss / rss_b:.3f}; child CPU {med(name, 'cpu'):.2f}s vs "
                  f"{med(base, 'cpu'):.2f}s, child wall {med(name, 'wall'):.2f}s vs "
                  f"{med(base, 'wall'):.2f}s (setup: import + session {med(name, 'setup'):.2f}s)",
                  flush=True)
            same = np.array_equal(scores[name], scores[base])
            print(f"  scores equal to the {base} scores bit for bit (np.array_equal, "
                  f"{scores[name].shape[0]} rows): {'yes' if same else 'NO'}", flush=True)
            assert same, f"{name}: scores differ from the {base} scores"
        print(f"load average after: {os.getloadavg()[0]:.2f} (timings are noisy above "
              f"{os.cpu_count()})", flush=True)


if __name__ == "__main__":
    main()
