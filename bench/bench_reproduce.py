"""relgate reproduce vs plain git clone + dvc repro --force, on a tiny-params reference pipeline.

Baseline: what a careful user would type by hand in the same run: ``git clone`` the registry
into a temp folder and ``dvc repro --force`` there (its own DVC cache). Ours: ``relgate
reproduce`` on the same registry, which does that and then compares every output with dvc.lock
and the released bundle with its pin. Both run interleaved after one warm-up each; the ratio of
medians is the cost of the comparison and the isolation (target <= 1.15). Peak RSS: the
largest process of the run, from wait4 (Linux counts the waited-for descendants: DVC and the
stages, the train stage being the largest).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import line

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET = 1.15
REPEATS = 3


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "CI": "1", "DVC_NO_ANALYTICS": "1", "TMPDIR": str(tmp),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and the command's own peak RSS (KiB), via wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return seconds, usage.ru_maxrss


def main() -> None:
    from tests.e2e.test_pipeline import TINY, make_registry, run

    with tempfile.TemporaryDirectory(prefix="bench-reproduce-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "t").mkdir()
        env = _env(tmp / "t")
        registry = make_registry(tmp / "registry", TINY)
        run("dvc", "repro", cwd=registry)
        run("git", "add", "-A", cwd=registry)
        run("git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "run", cwd=registry)

        def ours() -> tuple[float, int]:
            return _timed([sys.executable, "-m", "relgate", "reproduce", "--registry", str(registry)],
                          registry, env)

        def baseline() -> tuple[float, int]:
            clone = tmp / "clone"
            shutil.rmtree(clone, ignore_errors=True)
            t_clone, _ = _timed(["git", "clone", "-q", str(registry), str(clone)], tmp, env)
            t_repro, rss = _timed([*_dvc(), "repro", "--force"], clone, env)
            shutil.rmtree(clone, ignore_errors=True)
            return t_clone + t_repro, rss

        ours()
        baseline()
        t_ours, t_base, rss_ours = [], [], []
        for _ in range(REPEATS):
            s, rss = ours()
            t_ours.append(s)
            rss_ours.append(rss)
            t_base.append(baseline()[0])
        m_ours, m_base = statistics.median(t_ours), statistics.median(t_base)
        print(line("reproduce tiny pipeline", m_ours, m_base, "git clone + dvc repro --force",
                   target=f"<= {TARGET}"))
        print(f"reproduce tiny pipeline: peak RSS {max(rss_ours) / 1024:.0f} MiB (the largest process "
              f"of the run, a stage); runs ours {[f'{t:.1f}' for t in t_ours]} "
              f"baseline {[f'{t:.1f}' for t in t_base]} s")


def _dvc() -> list[str]:
    from relgate.distribution import dvc_command

    return dvc_command()


if __name__ == "__main__":
    main()
