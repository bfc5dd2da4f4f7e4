"""The numeric pin: it overrides the caller's environment, before numeric libraries load, and says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from relgate.numeric_env import (
    CLEARED_ENV,
    PINNED_ENV,
    cpu_info,
    environment_differences,
    environment_is_pinned,
    host_environment,
    pinned_environ,
)

# Prints what the libraries will see; NUMPY_FIRST imports numpy before pinning (forces a re-exec).
CHILD = """
import json, os, sys
if os.environ.get("NUMPY_FIRST"):
    import numpy
from relgate.numeric_env import pin_process
print("start", os.getpid(), flush=True)
pin_process()
import numpy
from numpy._core._multiarray_umath import __cpu_dispatch__ as d, __cpu_features__ as f
# what numpy dispatches to (a raw flag like AVX512F says what the CPU has, not what runs)
above_v3 = [k for k in d if k.startswith(("X86_V4", "AVX512")) and f.get(k)]
print(json.dumps({"pid": os.getpid(), "env": {k: os.environ.get(k) for k in %r},
                  "above_v3": above_v3}))
"""


def run_child(extra: dict[str, str]) -> tuple[list[str], dict[str, object]]:
    keys = sorted({*PINNED_ENV, *CLEARED_ENV})
    env = {**os.environ, **extra}
    proc = subprocess.run([sys.executable, "-c", CHILD % (keys,)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    return lines[:-1], json.loads(lines[-1])


def test_pinned_environ_overrides_the_callers_choices_and_drops_the_cleared_ones() -> None:
    outer = {"ATEN_CPU_CAPABILITY": "avx512", "OMP_NUM_THREADS": "8", "OPENBLAS_L2_SIZE": "1",
             "HOME": "/home/x"}
    env = pinned_environ(outer)
    assert {k: env[k] for k in PINNED_ENV} == dict(PINNED_ENV)
    assert "OPENBLAS_L2_SIZE" not in env and env["HOME"] == "/home/x"
    assert environment_is_pinned(env) and not environment_is_pinned(outer)


def test_pin_before_numpy_changes_the_environment_in_place() -> None:
    starts, seen = run_child({"OMP_NUM_THREADS": "4", "MKL_CBWR": "AUTO", "OPENBLAS_L2_SIZE": "9"})
    assert len(starts) == 1  # no second start: pinned in place
    assert {k: seen["env"][k] for k in PINNED_ENV} == dict(PINNED_ENV)  # type: ignore[index]
    assert all(seen["env"][k] is None for k in CLEARED_ENV)  # type: ignore[index]


def test_pin_after_numpy_loaded_restarts_the_process_once_under_the_pin() -> None:
    starts, seen = run_child({"NUMPY_FIRST": "1", "NPY_ENABLE_CPU_FEATURES": "AVX", "MKL_CBWR": "AUTO"})
    assert len(starts) == 2  # the first start, then the fresh copy under the pin (same pid: exec)
    assert starts[0] == starts[1] == f"start {seen['pid']}"
    assert seen["env"]["NPY_ENABLE_CPU_FEATURES"] == "X86_V3"  # type: ignore[index]
    assert seen["above_v3"] == []  # numpy dispatches at x86-64-v3 at most, whatever the CPU


def test_cpu_info_reads_vendor_model_and_the_numeric_flags(tmp_path: Path) -> None:
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
            "flags\t\t: fpu sse4_1 sse4_2 avx avx2 fma avx512f avx512bw amx_tile ht\n\n"
            "processor\t: 1\nvendor_id\t: GenuineIntel\n")
    (tmp_path / "cpuinfo").write_text(text)
    info = cpu_info(str(tmp_path / "cpuinfo"))
    assert info == {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Platinum 8480+",
                    "flags": ["sse4_1", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                              "amx_tile"]}
    assert cpu_info(str(tmp_path / "absent"))["flags"] == []


def test_differences_name_the_cpu_and_the_packages_that_differ() -> None:
    here = host_environment()
    assert here["numeric"]["env"] == dict(PINNED_ENV)
    assert environment_differences(here, here) == []
    pinned = json.loads(json.dumps(here))
    pinned["cpu"] = {"vendor": "GenuineIntel", "model": "Intel Xeon 8480+", "flags": ["avx2", "avx512f"]}
    pinned["packages"]["onnxruntime"] = "0.0.1"
    diffs = environment_differences(pinned, here)
    assert any(d.startswith("onnxruntime ") and "vs 0.0.1 pinned" in d for d in diffs)
    assert any(d.startswith("CPU differs: pinned on Intel Xeon 8480+ (avx2 avx512f)") for d in diffs)
    pinned["machine"] = "aarch64"
    assert environment_differences(pinned, here)[0].startswith("CPU architecture differs")
