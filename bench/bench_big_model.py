"""A big model end to end: every command's time, peak RSS and reads of its external data.

Issue 16 ("Benchmarks" and point 3, "one read of every byte"): a model with GIB (env
``RELGATE_BENCH_GIB``, default 2) GiB of external data, of seed 001's form: ``audio_codes``
int64 [1, 16, 128] in, ``features`` [1, 512] out (the mean over codebooks and frames of rows
gathered from one embedding table, the whole of ``codec.onnx.data``; one vector per sample,
so that ``evaluate --output-type features --reducer mean`` can score it too), released with task
kind none. The bench builds it, a 24-sample eval set and a real registry (git, DVC, a local
DVC remote, a bare git origin, the release tagged and pushed) in a temporary folder under
/tmp that it removes at the end; nothing of it is committed and no default test builds it.

Measured for ``inspect``, ``evaluate``, ``validate``, ``promote`` (publishing: the bundle
and its release record removed first; already published: run again on the identical
bundle), ``verify`` (with the root digest) and ``fetch`` (by name and tag from the git
origin, through the DVC remote), each in a fresh process:

* time ÷ ``openssl dgst -sha256`` of the data file, **the named baseline**, measured in the
  same round;
* peak RSS ÷ model bytes (the .onnx file plus its data): ``ru_maxrss`` of the waited-for
  children of a small wrapper process (Linux carries the RSS high-water mark of a process
  that forks across exec, so a child spawned straight from this bench would report the
  bench's own peak);
* full reads of the data file: the bytes the command and its children read (``rchar`` of
  the wrapper's ``/proc/self/io``, which takes in every reaped child's, less the wrapper's
  own before the start) ÷ the data file's size. ``rchar`` counts ``read``,
  ``copy_file_range`` and ``sendfile``, and everything the command reads (Python modules,
  git, the eval set), but not pages a process maps (onnxruntime may map external data);
  openssl's row is the yardstick (1 read).

The page cache is warm (one warm-up round first): the ratios measure work, not the disk.
REPEATS rounds (env ``RELGATE_BENCH_REPEATS``, default 3), interleaved, medians. Targets:
promote publishing <= 2.5 x openssl, already published <= 2.0 x; peak RSS of validate and
promote <= 1.1 x model bytes + 300 MiB. The disk needs about 6 x GIB free.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from relgate.distribution import dvc_command  # noqa: E402
from tests.e2e.conftest import tool_env  # noqa: E402
from tests.e2e.test_task_none_release import DVC_YAML  # noqa: E402  (the same two stages)

GIB = float(os.environ.get("RELGATE_BENCH_GIB", "2"))
REPEATS = int(os.environ.get("RELGATE_BENCH_REPEATS", "3"))
MIB = 1024 * 1024
DIMS, CODEBOOKS, FRAMES, CODE_VOCAB, N = 512, 16, 128, 1024, 24
CHUNK = 64 * MIB
#: issue 16's targets: time ÷ openssl, and peak RSS <= FACTOR x model bytes + EXTRA_MIB
TIME_TARGETS = {"promote publishing": 2.5, "promote already published": 2.0}
RSS_FACTOR, RSS_EXTRA_MIB = 1.1, 300
RSS_GATED = ("validate", "promote publishing", "promote already published")

PARAMS = f"""\
schema_version: 1
seed: 0
task: {{kind: none, output: features}}
evaluate: {{threads: 1}}
contract:
  inputs: [{{name: audio_codes, dtype: int64, shape: [1, {CODEBOOKS}, {FRAMES}]}}]
  outputs: [{{name: features, dtype: float32, shape: [1, {DIMS}]}}]
resources:
  max_memory_mb: 1000000
  max_load_seconds: 1000000
  max_latency_ms: 1000000
  latency: {{batch_size: 1, percentile: 95, runs: 5, warmup: 1}}
  max_model_bytes: 1000000000000
gates:
  mode: all
  rules:
  - {{metric: mean_std, op: '>', value: 0.01}}
release:
  name: v0.1.0
  promoted: {{path: models/codec.onnx, description: big codec features (bench)}}
  data: data/test.npz
"""


#: a fresh, small Python that runs a command (stdout discarded, stderr passed on) and prints
#: its exit code, the peak RSS (KiB) of its waited-for children, the bytes they read and its
#: wall seconds
_WRAPPER = ("import resource, subprocess, sys, time\n"
            "def rchar():\n"
            "    with open('/proc/self/io') as f:\n"
            "        return int(next(l for l in f if l.startswith('rchar:')).split()[1])\n"
            "r0 = rchar()\n"
            "t0 = time.perf_counter()\n"
            "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
            "wall = time.perf_counter() - t0\n"
            "read = rchar() - r0\n"
            "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, read, wall)\n")


def big_codec_model(folder: Path, gib: float) -> Path:
    """``codec.onnx`` + ``codec.onnx.data``: an embedding table of *gib* GiB (rows of
    DIMS float32, a fixed normal pattern repeated), written in chunks, never held whole."""
    from onnx import TensorProto, helper, numpy_helper

    rows = int(gib * 1024 ** 3) // (DIMS * 4)
    nbytes = rows * DIMS * 4
    folder.mkdir(parents=True, exist_ok=True)
    chunk = np.random.default_rng(6).standard_normal(CHUNK // 4, dtype=np.float32).tobytes()
    with open(folder / "codec.onnx.data", "wb") as f:
        left = nbytes
        while left:
            f.write(chunk[:min(left, CHUNK)])
            left -= min(left, CHUNK)
    table = TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[rows, DIMS],
                        data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "codec.onnx.data"), ("offset", "0"),
                       ("length", str(nbytes))):
        entry = table.external_data.add()
        entry.key, entry.value = key, value
    # one float per 4 KiB page of the table (every other row), at indices offset by a zero
    # computed from the codes' values: nothing folds at load time and every page is read on
    # each run, so the table stays resident as a real model's weights do
    pages = np.stack([np.arange(0, rows, 2, dtype=np.int64),
                      np.zeros((rows + 1) // 2, dtype=np.int64)], axis=1)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "audio_codes"], ["emb"], axis=0),
         helper.make_node("ReduceMean", ["emb", "axes"], ["mean"], keepdims=0),
         helper.make_node("ReduceMin", ["audio_codes"], ["low"], keepdims=0),
         helper.make_node("Sub", ["low", "low"], ["zero"]),
         helper.make_node("Add", ["pages", "zero"], ["idx"]),
         helper.make_node("GatherND", ["table", "idx"], ["touched"]),
         helper.make_node("ReduceSum", ["touched"], ["sum"], keepdims=0),
         helper.make_node("Cast", ["zero"], ["zero_f"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["sum", "zero_f"], ["nothing"]),
         helper.make_node("Add", ["mean", "nothing"], ["features"])],
        "codec",
        [helper.make_tensor_value_info("audio_codes", TensorProto.INT64, [1, CODEBOOKS, FRAMES])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, DIMS])],
        initializer=[table, numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
                     numpy_helper.from_array(pages, "pages")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="relgate-bench")
    model.ir_version = 10
    path = folder / "codec.onnx"
    path.write_bytes(model.SerializeToString())
    return path


class Registry:
    """The producer registry, its origin and its DVC remote, with git and DVC sandboxed."""

    def __init__(self, top: Path) -> None:
        self.top, self.root, self.origin = top, top / "registry", top / "origin.git"
        self.env = tool_env(top / "home")
        self.root.mkdir()

    def run(self, *cmd: object, cwd: Path | None = None) -> str:
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd or self.root, env=self.env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode:
            raise SystemExit(f"{' '.join(map(str, cmd))} exited {proc.returncode}: "
                             f"{proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def build(self) -> Path:
        """Model, eval set, params and stages; ``dvc repro``; commit, tag, push (untimed)."""
        git, dvc = ("git",), tuple(dvc_command())
        self.run(*git, "init", "-q", "--bare", self.origin, cwd=self.top)
        self.run(*git, "init", "-q")
        self.run(*dvc, "init", "-q")
        self.run(*dvc, "remote", "add", "-d", "store", self.top / "dvc-remote")
        self.run(*git, "remote", "add", "origin", self.origin)
        model = big_codec_model(self.root / "models", GIB)
        codes = np.random.default_rng(1).integers(0, CODE_VOCAB, size=(N, CODEBOOKS, FRAMES),
                                                  dtype=np.int64)
        (self.root / "data").mkdir()
        np.savez(self.root / "data" / "test.npz", audio_codes=codes,
                 y=np.arange(N, dtype=np.int8) % 2)
        (self.root / "params.yaml").write_text(PARAMS)
        (self.root / "dvc.yaml").write_text(DVC_YAML)
        self.run(*dvc, "add", "-q", "models/codec.onnx", "models/codec.onnx.data",
                 "data/test.npz")
        self.run(*dvc, "repro", "-q")
        self.run(*git, "add", "-A")
        self.run(*git, "commit", "-q", "-m", "release v0.1.0")
        self.run(*git, "tag", "-a", "core@v0.1.0", "-m", "release core v0.1.0")
        self.run(*dvc, "push", "-q")
        self.run(*git, "push", "-q", "origin", "HEAD", "--tags")
        # the DVC cache is not needed any more (the remote serves fetch): free the disk
        shutil.rmtree(self.root / ".dvc" / "cache", ignore_errors=True)
        return model

    def measure(self, cmd: list[str]) -> dict[str, float]:
        """One run of *cmd* in the registry under the wrapper: wall s, peak RSS, bytes read."""
        proc = subprocess.run([sys.executable, "-I", "-c", _WRAPPER, *cmd], cwd=self.root,
                              env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        fields = (proc.stdout.strip().splitlines() or ["?"])[-1].split()
        if proc.returncode or len(fields) != 4 or fields[0] != "0":
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-2000:]}")
        return {"wall": float(fields[3]), "rss": int(fields[1]) * 1024, "read": int(fields[2])}


def main() -> None:
    free = shutil.disk_usage("/tmp").free
    need = int(6 * GIB * 1024 ** 3) + 512 * MIB
    if free < need:  # skipped, said so: the other cases of bench/run.py still run
        print(f"NOT RUN: /tmp has {free / 1024 ** 3:.1f} GiB free; the bench needs "
              f"{need / 1024 ** 3:.1f} GiB (set RELGATE_BENCH_GIB lower)", flush=True)
        return
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} before the run; "
          f"/tmp {free / 1024 ** 3:.0f} GiB free; {GIB} GiB of external data; warm-up round "
          f"+ {REPEATS} interleaved rounds, medians", flush=True)
    with tempfile.TemporaryDirectory(prefix="relgate-bench-big-", dir="/tmp") as tmp:
        reg = Registry(Path(tmp))
        model = reg.build()
        data = model.with_name(model.name + ".data")
        size = data.stat().st_size
        nbytes = model.stat().st_size + size
        record = reg.root / "analysis" / "release_v0.1.0.json"
        bundle = reg.root / "models" / "core" / "v0.1.0"
        fetched = reg.top / "fetched"
        py = [sys.executable, "-m", "relgate"]

        def pinned() -> str:
            return str(json.loads(record.read_text())["bundle"]["root_digest"])

        def publishing() -> list[str]:
            shutil.rmtree(bundle)
            record.unlink()
            return [*py, "promote"]

        def fetch() -> list[str]:
            shutil.rmtree(fetched, ignore_errors=True)
            return [*py, "fetch", str(reg.origin), "v0.1.0", "--rev", "core@v0.1.0",
                    "-o", str(fetched)]

        cases = {
            "openssl dgst -sha256": lambda: ["openssl", "dgst", "-sha256", str(data)],
            "inspect": lambda: [*py, "inspect", "models/codec.onnx", "--json",
                                "--params", "params.yaml"],
            "evaluate": lambda: [*py, "evaluate", "--model", "models/codec.onnx", "--data",
                                 "data/test.npz", "--out", str(reg.top / "scores.npz"),
                                 "--output", "features", "--output-type", "features",
                                 "--reducer", "mean"],
            "validate": lambda: [*py, "validate", "--model", "models/codec.onnx", "--data",
                                 "data/test.npz", "--out", "analysis/validation_report.json"],
            "promote publishing": publishing,
            "promote already published": lambda: [*py, "promote"],
            "verify": lambda: [*py, "verify", str(bundle), "--root-digest", pinned()],
            "fetch": fetch,
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
        for round_ in range(REPEATS + 1):  # round 0 warms the page cache, not counted
            for name, cmd in cases.items():
                got = reg.measure(cmd())
                if round_:
                    runs[name].append(got)
        shutil.rmtree(fetched, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    base = med("openssl dgst -sha256", "wall")
    print(f"model {nbytes / MIB:.0f} MiB ({size / MIB:.0f} MiB in codec.onnx.data); "
          f"openssl dgst -sha256 of the data file {base:.2f} s (median)", flush=True)
    print("| command | time s | ÷ openssl | peak RSS MiB | ÷ model bytes | full reads | "
          "target |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in cases:
        ratio, rss = med(name, "wall") / base, med(name, "rss")
        goals = []
        if name in TIME_TARGETS:
            goals.append(f"time ≤ {TIME_TARGETS[name]}: "
                         + ("PASS" if ratio <= TIME_TARGETS[name] else "MISS"))
        if name in RSS_GATED:
            limit = RSS_FACTOR * nbytes + RSS_EXTRA_MIB * MIB
            goals.append(f"RSS ≤ {limit / MIB:.0f} MiB: " + ("PASS" if rss <= limit else "MISS"))
        print(f"| `{name}` | {med(name, 'wall'):.2f} | {ratio:.2f} | {rss / MIB:.0f} | "
              f"{rss / nbytes:.2f} | {med(name, 'read') / size:.2f} | "
              f"{'; '.join(goals) or '-'} |", flush=True)
    print("runs (s): " + "; ".join(f"{name} " + ", ".join(f"{r['wall']:.2f}" for r in v)
                                   for name, v in runs.items()), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f} (timings are noisy above "
          f"{os.cpu_count()})", flush=True)


if __name__ == "__main__":
    main()
