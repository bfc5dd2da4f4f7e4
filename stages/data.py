"""Stage ``data``: a deterministic synthetic sensor-anomaly data set.

``python -m stages.data`` reads ``params.yaml`` (``seed`` and the ``data:``
section) and writes ``data/{train,val,test}.npz`` (keys ``x`` float32
``[N, L]``, ``input_tokens`` int64 ``[N, 32]``, ``y`` int8 0/1) and
``analysis/data_report.json`` (counts per split and anomaly kind, sha256 of
each split).

Why synthetic: the registry must reproduce from a fresh clone with no
download. Why this shape of task: a "normal" vibration-like signal has real
variety (2-4 harmonics of a random fundamental, random phases and harmonic
mix, random gain, slight frequency wobble and amplitude modulation, slow
drift, white sensor noise), and anomalies of five kinds are injected at a
random strength whose weak end is hard to tell from noise, so a good small
model lands around AUC 0.93-0.98 rather than 1.0 and the gates mean something.

Determinism: each split draws from its own ``numpy.random.Generator`` seeded
with ``(seed, split index)``; labels are an exact count (``round(share * n)``)
in a random order; files are written with fixed zip timestamps, so the same
params give byte-identical files (and the same DVC hashes).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.hashing import sha256_file
from relgate.jsonio import write_json
from relgate.params import load_params
from stages.common import PARAMS_FILE, require, run_stage, save_npz, section_value
from stages.tokens import N_FRAMES, waveform_to_tokens

KINDS = ("spike", "dropout", "clipping", "freq_shift", "chirp")
SPLITS = ("train", "val", "test")
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """The ``data:`` section of params.yaml, typed and range-checked."""

    n_train: int = 6000
    n_val: int = 1000
    n_test: int = 2000
    length: int = 1600
    anomaly_share: float = 0.3
    kinds: tuple[str, ...] = KINDS
    noise: tuple[float, float] = (0.05, 0.3)
    severity: float = 1.0
    out_dir: str = "data"
    report: str = "analysis/data_report.json"

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> DataSpec:
        known = {f for f in cls.__dataclass_fields__}
        extra = sorted(set(section) - known)
        require(not extra, "data", f"has unknown key(s) {', '.join(extra)}")
        d = cls()
        spec = cls(
            n_train=section_value(section, "data", "n_train", d.n_train, int),
            n_val=section_value(section, "data", "n_val", d.n_val, int),
            n_test=section_value(section, "data", "n_test", d.n_test, int),
            length=section_value(section, "data", "length", d.length, int),
            anomaly_share=float(section_value(section, "data", "anomaly_share", d.anomaly_share,
                                              (int, float))),
            kinds=tuple(section_value(section, "data", "kinds", d.kinds, tuple)),
            noise=tuple(float(v) for v in section_value(section, "data", "noise", d.noise, tuple)),  # type: ignore[arg-type]
            severity=float(section_value(section, "data", "severity", d.severity, (int, float))),
            out_dir=section_value(section, "data", "out_dir", d.out_dir, str),
            report=section_value(section, "data", "report", d.report, str),
        )
        for name in ("n_train", "n_val", "n_test"):
            require(getattr(spec, name) >= 2, f"data.{name}", "must be at least 2")
        require(spec.length >= 4 * N_FRAMES and spec.length % N_FRAMES == 0, "data.length",
                f"must be a multiple of {N_FRAMES} and at least {4 * N_FRAMES}")
        require(0.0 <= spec.anomaly_share <= 1.0, "data.anomaly_share", "must be within [0, 1]")
        require(len(spec.kinds) > 0 and set(spec.kinds) <= set(KINDS), "data.kinds",
                f"must be a non-empty list drawn from {', '.join(KINDS)}")
        require(len(spec.noise) == 2 and 0.0 <= spec.noise[0] <= spec.noise[1], "data.noise",
                "must be [low, high] with 0 <= low <= high")
        require(spec.severity > 0, "data.severity", "must be > 0")
        return spec

    def size(self, split: str) -> int:
        return int(getattr(self, f"n_{split}"))


# --------------------------------------------------------------------- signals


def _normal(rng: np.random.Generator, n: int, noise: tuple[float, float]
            ) -> tuple[FloatArray, FloatArray, FloatArray, dict[str, Any]]:
    """One normal signal as (oscillation, slow part, noise) plus its parameters.

    Kept as parts so that an anomaly can act on the oscillation only (a dropout
    silences the vibration, not the sensor's noise floor).
    """
    t = np.arange(n, dtype=np.float64) / n
    f0 = rng.uniform(12.0, 60.0)  # cycles per window
    wobble = rng.uniform(0.0, 0.012) * np.sin(2 * np.pi * rng.uniform(0.2, 1.5) * t
                                              + rng.uniform(0, 2 * np.pi))
    n_harm = int(rng.integers(2, 5))
    decay = rng.uniform(0.2, 0.7)
    amps = decay ** np.arange(n_harm) * rng.uniform(0.6, 1.0, n_harm)
    amps[0] = 1.0
    phases = rng.uniform(0, 2 * np.pi, n_harm)
    am = 1.0 + rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t
                                               + rng.uniform(0, 2 * np.pi))
    params = {"f0": f0, "wobble": wobble, "amps": amps, "phases": phases, "am": am}
    osc = _oscillation(t, np.full(n, f0) * (1.0 + wobble), amps, phases) * am
    slow = (rng.uniform(-0.4, 0.4) * np.sin(2 * np.pi * rng.uniform(0.1, 0.8) * t
                                            + rng.uniform(0, 2 * np.pi))
            + rng.uniform(-0.3, 0.3) * (t - 0.5))
    sigma = rng.uniform(*noise)
    return osc, slow, sigma * rng.standard_normal(n), params


def _oscillation(t: FloatArray, freq: FloatArray, amps: FloatArray, phases: FloatArray
                 ) -> FloatArray:
    """Sum of harmonics of an instantaneous frequency (cycles per window), phase-continuous."""
    phase = 2 * np.pi * np.cumsum(freq) / t.size
    harmonics = np.arange(1, amps.size + 1)[:, None]
    out: FloatArray = np.sum(amps[:, None] * np.sin(harmonics * phase + phases[:, None]), axis=0)
    return out


def _inject(rng: np.random.Generator, kind: str, osc: FloatArray, p: Mapping[str, Any],
            severity: float) -> FloatArray:
    """Return the oscillation with one anomaly of *kind*; strength is random, sometimes faint."""
    n = osc.size
    t = np.arange(n, dtype=np.float64) / n
    s = rng.uniform(0.0, 1.0) * severity
    peak = float(np.max(np.abs(osc)))
    out = osc.copy()
    if kind == "spike":
        # Sharp transients (an impact, an electrical glitch): 1-3 of them,
        # a few samples long, decaying exponentially.
        for _ in range(int(rng.integers(1, 4))):
            tau = rng.uniform(0.7, 2.5)
            width = int(np.ceil(5 * tau))
            start = int(rng.integers(0, n - width))
            amp = (0.6 + 2.4 * s) * peak * rng.choice([-1.0, 1.0])
            out[start:start + width] += amp * np.exp(-np.arange(width) / tau)
    elif kind == "dropout":
        width = int(rng.integers(n // 40, n // 8))
        start = int(rng.integers(0, n - width))
        out[start:start + width] *= max(0.0, 0.7 - 0.7 * s)
    elif kind == "clipping":
        level = (0.7 - 0.45 * min(s, 1.0)) * peak
        out = np.clip(out, -level, level) if rng.uniform() < 0.5 else np.minimum(out, level)
    elif kind == "freq_shift":
        t0 = rng.uniform(0.2, 0.8)
        delta = (0.06 + 0.3 * s) * rng.choice([-1.0, 1.0])
        freq = p["f0"] * (1.0 + p["wobble"]) * np.where(t >= t0, 1.0 + delta, 1.0)
        out = _oscillation(t, freq, p["amps"], p["phases"]) * p["am"]
    elif kind == "chirp":
        t0 = rng.uniform(0.0, 0.5)
        delta = (0.1 + 0.5 * s) * rng.choice([-1.0, 1.0])
        ramp = np.clip((t - t0) / (1.0 - t0), 0.0, None)
        freq = p["f0"] * (1.0 + p["wobble"]) * (1.0 + delta * ramp)
        out = _oscillation(t, freq, p["amps"], p["phases"]) * p["am"]
    else:  # pragma: no cover - DataSpec.from_params refuses unknown kinds
        raise ValueError(kind)
    return out


def make_split(spec: DataSpec, *, seed: int, split: str) -> dict[str, npt.NDArray[Any]]:
    """Generate one split: ``x`` float32 [n, L], ``input_tokens`` int64 [n, 32], ``y`` int8, ``kind``.

    ``kind`` (int8 index into ``spec.kinds``, -1 for normal) is for the data
    report only; it is not written to the split files.
    """
    n = spec.size(split)
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split)]))
    n_anom = round(spec.anomaly_share * n)
    y = np.zeros(n, dtype=np.int8)
    y[:n_anom] = 1
    y = y[rng.permutation(n)]
    kind = np.full(n, -1, dtype=np.int8)
    kind[y == 1] = rng.integers(0, len(spec.kinds), size=n_anom)
    x = np.empty((n, spec.length), dtype=np.float32)
    for i in range(n):
        osc, slow, noise, p = _normal(rng, spec.length, spec.noise)
        if y[i]:
            osc = _inject(rng, spec.kinds[kind[i]], osc, p, spec.severity)
        gain = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        offset = rng.uniform(-0.5, 0.5)
        x[i] = (gain * (osc + slow + noise) + offset).astype(np.float32)
    return {"x": x, "input_tokens": waveform_to_tokens(x), "y": y, "kind": kind}


def split_summary(spec: DataSpec, arrays: Mapping[str, npt.NDArray[Any]]) -> dict[str, Any]:
    y, kind = arrays["y"], arrays["kind"]
    return {
        "n": int(y.size),
        "anomalies": int(y.sum()),
        "anomaly_share": float(y.mean()),
        "by_kind": {k: int(np.sum(kind == i)) for i, k in enumerate(spec.kinds)},
    }


def main() -> int:
    params = load_params(PARAMS_FILE)
    spec = DataSpec.from_params(params.data)
    started = time.perf_counter()
    out = Path(spec.out_dir)
    report: dict[str, Any] = {"schema_version": 1, "seed": params.seed, "length": spec.length,
                              "kinds": list(spec.kinds), "splits": {}}
    for split in SPLITS:
        arrays = make_split(spec, seed=params.seed, split=split)
        path = out / f"{split}.npz"
        save_npz(path, {k: arrays[k] for k in ("x", "input_tokens", "y")})
        report["splits"][split] = {"path": path.as_posix(), "sha256": sha256_file(path),
                                   **split_summary(spec, arrays)}
    write_json(spec.report, report)
    sizes = ", ".join(f"{s} {report['splits'][s]['n']}" for s in SPLITS)
    print(f"data: wrote {sizes} samples to {out}/ in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_stage("data", main)
