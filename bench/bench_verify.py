"""relgate verify vs openssl dgst -sha256: two 1 GiB files, one 2 GiB file, peak memory.

Each case runs the real CLI (``python -m relgate verify DIR``, start-up included)
in a child process, interleaved with the baseline (``openssl dgst -sha256`` on
the same files one after the other), after one warm-up round of each so the
page cache is warm for both. Peak memory is ru_maxrss of ``relgate verify``
started from a small wrapper process: Linux carries the RSS high-water mark
of the process that forks across exec, so a child spawned straight from this
(numpy-laden) bench would report the bench's own peak. Files are created
under /tmp and deleted afterwards (about 4 GiB).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import line

GIB = 1024**3
BLOCK = 64 * 1024**2
TARGET_TWO = 0.65
TARGET_ONE = 1.1
TARGET_RSS_MIB = 150


def _write_file(path: Path, size: int, seed: int) -> None:
    import numpy as np

    block = np.random.default_rng(seed).bytes(BLOCK)
    with open(path, "wb") as fh:
        for i in range(size // BLOCK):
            fh.write(f"{seed:08d}{i:08d}".encode() + block[16:])


def _run(cmds: list[list[str]]) -> tuple[float, float, int]:
    """Run commands one after the other: (wall seconds, CPU seconds, max RSS KiB of any)."""
    cpu, rss = 0.0, 0
    t0 = time.perf_counter()
    for cmd in cmds:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}: {err}")
        if proc.stderr:
            proc.stderr.close()
        cpu += usage.ru_utime + usage.ru_stime
        rss = max(rss, usage.ru_maxrss)
    return time.perf_counter() - t0, cpu, rss


_WRAPPER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
)


def _peak_rss_kib(cmd: list[str]) -> int:
    """ru_maxrss (KiB) of *cmd*, run as the grandchild of a small wrapper."""
    out = subprocess.run([sys.executable, "-S", "-c", _WRAPPER, *cmd], capture_output=True,
                         text=True, check=True).stdout.split()
    if out[0] != "0":
        raise RuntimeError(f"{cmd[:4]} exited {out[0]}")
    return int(out[1])


def _case(name: str, folder: Path, target: float, repeats: int) -> tuple[float, int]:
    files = sorted(str(p) for p in folder.iterdir() if p.name != "manifest.json")
    ours = [[sys.executable, "-m", "relgate", "verify", str(folder)]]
    base = [["openssl", "dgst", "-sha256", f] for f in files]
    _run(ours)  # warm-up: page cache and imports, for both
    _run(base)
    o_wall, o_cpu, b_wall, b_cpu = [], [], [], []
    for _ in range(repeats):
        w, c, _ = _run(ours)
        o_wall.append(w)
        o_cpu.append(c)
        w, c, _ = _run(base)
        b_wall.append(w)
        b_cpu.append(c)
    ow, bw = statistics.median(o_wall), statistics.median(b_wall)
    print(line(name, ow, bw, "openssl dgst -sha256 (sequential)", target=f"<= {target}"),
          f"[CPU s: relgate {statistics.median(o_cpu):.3g}, openssl {statistics.median(b_cpu):.3g};"
          f" runs relgate {', '.join(f'{x:.3g}' for x in o_wall)};"
          f" openssl {', '.join(f'{x:.3g}' for x in b_wall)}]",
          "PASS" if ow / bw <= target else "MISS", flush=True)
    return ow / bw, _peak_rss_kib(ours[0])


def main(repeats: int = 3) -> None:
    from relgate.manifest import write_manifest

    load = os.getloadavg()[0]
    print(f"cores {os.cpu_count()}, load average {load:.2f} before the run "
          "(other processes on the machine make wall-clock ratios noisy); page cache warm",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="relgate-bench-verify-", dir="/tmp") as tmp:
        two, one = Path(tmp, "two"), Path(tmp, "one")
        two.mkdir()
        one.mkdir()
        _write_file(two / "a.bin", GIB, 1)
        _write_file(two / "b.bin", GIB, 2)
        _write_file(one / "big.bin", 2 * GIB, 3)
        write_manifest(two)
        write_manifest(one)
        _, rss_two = _case("verify two 1 GiB files", two, TARGET_TWO, repeats)
        _, rss_one = _case("verify one 2 GiB file", one, TARGET_ONE, repeats)
    rss_mib = max(rss_two, rss_one) / 1024
    print(f"peak memory of relgate verify (ru_maxrss, child process): {rss_mib:.1f} MiB "
          f"(target < {TARGET_RSS_MIB} MiB) {'PASS' if rss_mib < TARGET_RSS_MIB else 'MISS'}",
          flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
