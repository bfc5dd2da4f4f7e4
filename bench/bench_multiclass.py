"""Multi-class metrics and bootstrap intervals against scikit-learn, measured in the same run."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from harness import compare, line
from relgate.tasks import multiclass as mc

TOP_K = (3, 5)


def _data(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities of noisy logits rounded to 3 decimals (ties), renormalised."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k)).astype(np.float64)
    z[np.arange(n), y] += 2.0
    p = np.round(mc.softmax(z), 3)
    p[:, 0] += 1.0 - p.sum(axis=1)  # exact-ish renormalisation keeps the ties
    np.clip(p, 0.0, 1.0, out=p)
    p /= p.sum(axis=1, keepdims=True)
    return y, p


def _sklearn_all(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The same point metrics by scikit-learn (brier and ECE have no multi-class sklearn
    function: numpy as in the tests' oracle)."""
    from sklearn import metrics as skm

    from relgate import metrics

    n, k = p.shape
    labels = list(range(k))
    pred = p.argmax(axis=1)
    out = {"accuracy": skm.accuracy_score(y, pred)}
    for avg in ("macro", "micro", "weighted"):
        for name, fn in (("f1", skm.f1_score), ("precision", skm.precision_score),
                         ("recall", skm.recall_score)):
            out[f"{avg}_{name}"] = fn(y, pred, average=avg, labels=labels, zero_division=0)
    _, rc, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out["min_class_recall"], out["min_class_f1"] = rc.min(), f1.min()
    for avg in ("macro", "weighted"):
        out[f"{avg}_auc"] = skm.roc_auc_score(y, p, multi_class="ovr", labels=labels, average=avg)
    for kk in TOP_K:
        out[mc.topk_name(kk)] = skm.top_k_accuracy_score(y, p, k=kk, labels=labels)
    out["log_loss"] = skm.log_loss(y, y_proba=p, labels=labels)
    skm.confusion_matrix(y, pred, labels=labels)
    d = p.copy()
    d[np.arange(n), y] -= 1.0
    out["brier"] = float(np.mean(np.einsum("ij,ij->i", d, d)))
    del d
    out["ece"] = metrics.ece((pred == y).astype(np.int8), p[np.arange(n), pred])
    out["classwise_ece"] = float(np.mean([metrics.ece((y == c).astype(np.int8), p[:, c])
                                          for c in range(k)]))
    return out


def case_point() -> str:
    """Every point metric on 10^6 x 100 vs scikit-learn computing the same set (target <= 0.5)."""
    y, p = _data(1_000_000, 100, 0)
    ours = mc.point_metrics(y, p, top_k=TOP_K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _sklearn_all(y, p)
    worst = max(abs((ours[m] or np.nan) - v) for m, v in theirs.items())
    assert worst < 1e-12, worst
    t_ours, t_base = compare(lambda: mc.point_metrics(y, p, top_k=TOP_K),
                             lambda: _sklearn_all(y, p), repeats=1, warmup=0)
    return line(f"point metrics n=1e6 K=100 (max |diff| {worst:.1e}, 1 timed run each)",
                t_ours, t_base, "sklearn (+numpy brier/ece)", target="<= 0.5")


def _sk_loop(y: np.ndarray, pred: np.ndarray, resamples: int) -> np.ndarray:
    from sklearn import metrics as skm

    labels = list(range(int(y.max()) + 1))
    rng = np.random.default_rng(0)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, y.size, y.size)
        yr, pr = y[idx], pred[idx]
        values.append((skm.accuracy_score(yr, pr),
                       skm.f1_score(yr, pr, average="macro", labels=labels, zero_division=0)))
    return np.quantile(np.array(values), [0.025, 0.975], axis=0)


def case_bootstrap() -> str:
    """1000 resamples of accuracy + macro_f1 on 10^5 x 100 vs a loop calling sklearn (<= 0.2)."""
    y, p = _data(100_000, 100, 1)
    pred = p.argmax(axis=1)
    resamples, loop_part = 1000, 100

    def ours() -> object:
        return mc.evaluate(y, p, resamples=resamples, metrics=("accuracy", "macro_f1"))

    t_ours, t_part = compare(ours, lambda: _sk_loop(y, pred, loop_part), repeats=1, warmup=0)
    t_base = t_part * resamples / loop_part
    return line(f"bootstrap accuracy+macro_f1 1000 x n=1e5 K=100 (sklearn loop timed on "
                f"{loop_part} resamples, x{resamples // loop_part} extrapolated)",
                t_ours, t_base, "loop of sklearn accuracy_score+f1_score", target="<= 0.2")


def case_bootstrap_all() -> str:
    """1000 resamples of every metric on 10^5 x 100 vs a loop of the sklearn set (informative)."""
    y, p = _data(100_000, 100, 1)
    resamples, loop_part = 1000, 3

    def theirs() -> None:
        rng = np.random.default_rng(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(loop_part):
                idx = rng.integers(0, y.size, y.size)
                _sklearn_all(y[idx], p[idx])

    t_ours, t_part = compare(lambda: mc.evaluate(y, p, resamples=resamples, top_k=TOP_K),
                             theirs, repeats=1, warmup=0)
    return line(f"bootstrap every metric 1000 x n=1e5 K=100 (sklearn set timed on {loop_part} "
                f"resamples, extrapolated)", t_ours, t_part * resamples / loop_part,
                "loop of the sklearn set", target="none set")


def _peak(metrics: str) -> None:
    """Child process: peak RSS growth of one 1000-resample call, relative to the matrix."""
    def status(key: str) -> int:
        for row in Path("/proc/self/status").read_text().splitlines():
            if row.startswith(key):
                return int(row.split()[1]) * 1024
        raise RuntimeError(key)

    y, p = _data(100_000, 100, 1)
    names = None if metrics == "all" else tuple(metrics.split(","))
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: data generation peaked higher
    before = status("VmRSS:")
    assert status("VmHWM:") <= before + 2**20, "could not reset the peak RSS"
    t0 = time.perf_counter()
    mc.evaluate(y, p, resamples=1000, top_k=TOP_K, metrics=names)
    seconds = time.perf_counter() - t0
    grown = status("VmHWM:") - before
    print(f"bootstrap {metrics} 1000 x n=1e5 K=100: {seconds:.4g}s; peak RSS growth "
          f"{grown / 2**20:.0f} MiB = {grown / p.nbytes:.2f} x the probability matrix "
          f"({p.nbytes / 2**20:.0f} MiB) (target <= 3)")


def case_memory() -> str:
    """Peak memory of 1000 resamples (accuracy+macro_f1, then every metric), in a fresh process."""
    rows = []
    for metrics in ("accuracy,macro_f1", "all"):
        done = subprocess.run([sys.executable, __file__, "--peak", metrics], check=True,
                              capture_output=True, text=True)
        rows.append(done.stdout.strip())
    return "\n".join(rows)


def main() -> None:
    for case in (case_point, case_bootstrap, case_bootstrap_all, case_memory):
        print(case(), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--peak":
        _peak(sys.argv[2])
    else:
        main()
