"""The numeric environment the reference pipeline's bytes depend on: pinned, and described.

Why: torch, MKL, OpenBLAS and numpy pick their CPU kernels at run time from the
CPU's features (and from environment variables), and each choice changes the
last bits of a float, hence a trained checkpoint's bytes. A stage that computes
with floats calls :func:`pin_process` before numpy, torch or onnxruntime load:
it overrides every setting below, whatever the caller's environment says, so an
AVX-512 Intel and an AVX2 AMD machine run the same code paths.

* ATen's vectorised kernels at the AVX2 level (``ATEN_CPU_CAPABILITY``);
* MKL's conditional numerical reproducibility at the COMPATIBLE branch, the
  one that gives the same results on Intel and AMD (``MKL_CBWR=AVX2`` is
  silently AUTO on AMD: measured);
* oneDNN capped at AVX2 (train also switches oneDNN off: its blocking follows
  the cache sizes, so equal ISAs can still sum in different orders);
* numpy's SIMD dispatch at x86-64-v3 (AVX2, FMA) and OpenBLAS's Haswell kernels;
* one thread everywhere (summation order follows the thread count).

:func:`host_environment` describes the machine and the pins, for reports and
release records: where bytes cannot match (another architecture, another
package version), a refusal can name the likely cause.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

#: Thread counts: pinned on every machine (summation order follows the thread count).
THREAD_ENV: Mapping[str, str] = {
    "MKL_NUM_THREADS": "1",
    "MKL_DYNAMIC": "FALSE",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}

#: CPU code paths: pinned on x86-64 machines with AVX2 and FMA (x86-64-v3), the floor the
#: reference pipeline supports. Elsewhere (ARM, older x86) these names mean nothing or make
#: numpy refuse to load, so only the threads are pinned and bytes are not expected to match.
X86_64_V3_ENV: Mapping[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "NPY_ENABLE_CPU_FEATURES": "X86_V3",
    "OPENBLAS_CORETYPE": "Haswell",
}


def _is_x86_64_v3(flags: set[str]) -> bool:
    return platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma"} <= flags


#: Variables that change numeric code paths and have no pinned value: removed.
CLEARED_ENV: tuple[str, ...] = (
    "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "MKL_CBWR_BRANCH",
    "ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE",
    "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_L2_SIZE", "OPENBLAS_DEFAULT_NUM_THREADS",
    "GOTO_NUM_THREADS", "KMP_AFFINITY", "ORT_DISABLE_AVX512",
)

#: Libraries that read the settings when they load: pinning after them needs a fresh process.
NUMERIC_MODULES: tuple[str, ...] = ("numpy", "torch", "onnxruntime", "scipy", "sklearn")

_REEXEC_MARK = "RELGATE_NUMERIC_PINNED"

#: Packages whose version can change the bytes of a stage output.
RECORDED_PACKAGES: tuple[str, ...] = ("relgate", "numpy", "onnx", "onnxruntime", "onnxscript", "torch")

#: CPU flags that decide which numeric kernels a library may pick (recorded, compared).
NUMERIC_FLAGS: tuple[str, ...] = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "sve", "sve2",
)


def _host_pins() -> dict[str, str]:
    flags = set(_cpu_flags())
    return {**THREAD_ENV, **(X86_64_V3_ENV if _is_x86_64_v3(flags) else {})}


def _cpu_flags(path: str = "/proc/cpuinfo") -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return value.split()
    except OSError:
        pass
    return []


#: What this machine pins: the threads everywhere, the CPU code paths on x86-64-v3.
PINNED_ENV: Mapping[str, str] = _host_pins()

#: Whether this machine's CPU code paths are pinned (x86-64-v3), i.e. bytes match across CPUs.
CPU_PATHS_PINNED: bool = set(X86_64_V3_ENV) <= set(PINNED_ENV)


def pinned_settings() -> dict[str, Any]:
    """The pins as a JSON-safe record (what reports and release records carry)."""
    return {"env": dict(sorted(PINNED_ENV.items())), "cleared": sorted(CLEARED_ENV),
            "threads": 1, "torch": {"deterministic_algorithms": True, "mkldnn": False}}


def environment_is_pinned(environ: Mapping[str, str] | None = None) -> bool:
    """True when *environ* (default: this process's) already has every pin and no cleared variable."""
    env = os.environ if environ is None else environ
    return (all(env.get(k) == v for k, v in PINNED_ENV.items())
            and not any(k in env for k in CLEARED_ENV))


def pinned_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of *environ* with the pins applied (what a pinned child process should get)."""
    env = dict(os.environ if environ is None else environ)
    for key in CLEARED_ENV:
        env.pop(key, None)
    env.update(PINNED_ENV)
    return env


def pin_process() -> None:
    """Pin this process's numeric environment, before numpy, torch or onnxruntime load.

    When none of them is loaded yet, the environment is changed in place (the
    libraries read it when they load). When one already is, the process is
    replaced by a fresh copy of itself under the pinned environment, once: a
    setting read at load time cannot be changed afterwards.
    """
    if environment_is_pinned():
        return
    loaded = [m for m in NUMERIC_MODULES if m in sys.modules]
    if not loaded:
        for key in CLEARED_ENV:
            os.environ.pop(key, None)
        os.environ.update(PINNED_ENV)
        return
    if os.environ.get(_REEXEC_MARK):  # a re-exec that still is not pinned: do not loop
        raise RuntimeError("relgate: could not pin the numeric environment")
    env = pinned_environ()
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)  # noqa: S606 (our own argv)


def cpu_info(path: str = "/proc/cpuinfo") -> dict[str, Any]:
    """Vendor, model name and the numerics-relevant ISA flags of this CPU (Linux; else what platform says)."""
    vendor = model = None
    flags: set[str] = set()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "vendor_id" and vendor is None:
                    vendor = value
                elif key in ("model name", "Model") and model is None:
                    model = value
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                if vendor and model and flags:
                    break
    except OSError:
        pass
    return {"vendor": vendor or platform.processor() or None,
            "model": model or None,
            "flags": [f for f in NUMERIC_FLAGS if f in flags]}


def host_environment() -> dict[str, Any]:
    """What bytes may depend on here: architecture, CPU, the numeric pins, package versions."""
    from relgate.provenance import package_versions

    return {"machine": platform.machine(), "system": platform.system(), "cpu": cpu_info(),
            "numeric": pinned_settings(), "pinned": environment_is_pinned(),
            "packages": package_versions(RECORDED_PACKAGES)}


def environment_differences(pinned: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """What differs between a recorded host environment and this one, most likely cause first."""
    out: list[str] = []
    if pinned.get("machine") != here.get("machine"):
        out.append(f"CPU architecture differs: pinned on {pinned.get('machine')}, "
                   f"this machine {here.get('machine')}")
    pp, hp = pinned.get("packages") or {}, here.get("packages") or {}
    for name in sorted(set(pp) | set(hp)):
        if name != "relgate" and pp.get(name) != hp.get(name):
            out.append(f"{name} {hp.get(name, 'absent')} here vs {pp.get(name, 'absent')} pinned")
    if (pinned.get("numeric") or {}) != (here.get("numeric") or {}):
        out.append("the pinned numeric settings differ (another relgate version)")
    pc, hc = pinned.get("cpu") or {}, here.get("cpu") or {}
    if (pc.get("vendor"), pc.get("model"), pc.get("flags")) != (
            hc.get("vendor"), hc.get("model"), hc.get("flags")):
        def cpu(c: Mapping[str, Any]) -> str:
            return f"{c.get('model') or c.get('vendor') or 'unknown'} ({' '.join(c.get('flags') or [])})"
        out.append(f"CPU differs: pinned on {cpu(pc)}, this machine {cpu(hc)}")
    return out
