"""Metrics: exact AUC and bootstrap intervals against scikit-learn, measured in the same run."""

from __future__ import annotations

import numpy as np

from harness import compare, line
from relgate import metrics


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ~30% positives and scores rounded to 4 decimals (realistic ties)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    scores = np.round(1.0 / (1.0 + np.exp(-(rng.normal(size=n) + 1.5 * y))), 4)
    return y, scores


def case_auc() -> str:
    """ROC AUC on 10^6 scores vs sklearn.metrics.roc_auc_score (target ratio <= 0.35)."""
    from sklearn.metrics import roc_auc_score

    y, s = _data(1_000_000, 0)
    ours, theirs = metrics.roc_auc(y, s), roc_auc_score(y, s)
    assert abs(ours - theirs) < 1e-12, (ours, theirs)
    t_ours, t_base = compare(lambda: metrics.roc_auc(y, s), lambda: roc_auc_score(y, s),
                             repeats=7)
    return line("auc n=1e6", t_ours, t_base, "sklearn roc_auc_score", target="<= 0.35")


def case_bootstrap() -> str:
    """1000 bootstrap resamples of AUC on 10^5 samples vs a loop calling sklearn (target <= 0.2)."""
    from sklearn.metrics import roc_auc_score

    y, s = _data(100_000, 1)
    resamples = 1000

    def ours() -> object:
        return metrics.bootstrap_metric(y, s, "auc", resamples=resamples, seed=0)

    def baseline() -> object:
        rng = np.random.default_rng(0)
        values = []
        for _ in range(resamples):
            idx = rng.integers(0, y.size, y.size)
            values.append(roc_auc_score(y[idx], s[idx]))
        return np.quantile(values, [0.025, 0.975])

    t_ours, t_base = compare(ours, baseline, repeats=3, warmup=0)
    return line("bootstrap auc 1000 x n=1e5", t_ours, t_base, "loop of sklearn roc_auc_score",
                target="<= 0.2")


def case_report() -> str:
    """Every binary report metric (evaluate_metrics) with 200 resamples on 10^5 samples vs a loop
    of sklearn's roc_auc_score and f1_score on the same number of resamples (binary metrics
    must not get slower: issue 14)."""
    from sklearn.metrics import f1_score, roc_auc_score

    y, s = _data(100_000, 2)
    resamples = 200

    def ours() -> object:
        return metrics.evaluate_metrics(y, s, 0.5, resamples=resamples, seed=0)

    def baseline() -> object:
        rng = np.random.default_rng(0)
        values = []
        for _ in range(resamples):
            idx = rng.integers(0, y.size, y.size)
            values.append((roc_auc_score(y[idx], s[idx]), f1_score(y[idx], s[idx] >= 0.5)))
        return np.quantile(values, [0.025, 0.975], axis=0)

    t_ours, t_base = compare(ours, baseline, repeats=3, warmup=0)
    return line("report metrics 200 x n=1e5", t_ours, t_base,
                "loop of sklearn roc_auc_score + f1_score", target="no slower than before")


def main() -> None:
    for case in (case_auc, case_bootstrap, case_report):
        print(case(), flush=True)


if __name__ == "__main__":
    main()
