"""Tiny benchmark harness: medians of repeated runs and ratios against a baseline.

Timings are noisy on shared machines, so every case measures its baseline in
the same run, interleaved with ours, and reports medians and the ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_time(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(ours: Callable[[], Any], baseline: Callable[[], Any], *, repeats: int = 5,
            warmup: int = 1) -> tuple[float, float]:
    """Median seconds of ours and baseline, measured interleaved in the same run."""
    for _ in range(warmup):
        ours()
        baseline()
    t_ours, t_base = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        baseline()
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_base.append(t2 - t1)
    return statistics.median(t_ours), statistics.median(t_base)


def line(case: str, ours: float, baseline: float, baseline_name: str, *, target: str,
         unit: str = "s", ratio: float | None = None) -> str:
    r = ours / baseline if ratio is None else ratio
    return (f"{case}: relgate {ours:.4g}{unit} (median) vs {baseline_name} {baseline:.4g}{unit}"
            f" -> ratio {r:.3f} (target {target})")
