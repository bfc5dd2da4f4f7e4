"""Stage ``validate``: the validation report of the promoted model on the test split.

``python -m stages.validate`` reads ``params.yaml`` once and calls the same
function as ``relgate validate`` (reading the output as ``task:`` declares), with
the calibration from the calibrate stage applied. It writes

* ``analysis/validation_report.json`` (``release.report``; schema ``validation-report``);
* ``analysis/metrics.json``: flat metrics for ``dvc metrics show/diff``
  (``auc``, ``auc_ci_low``, ``auc_ci_high``, ``pr_auc``, ``f1``, ``precision``,
  ``recall``, ``ece``, ``brier``, health stats, ``threshold``, ``gates_passed``, ``n``);
* ``analysis/plots/{roc,pr,reliability}.csv`` for ``dvc plots``.

When ``gates.baseline.release`` names a previous release, its bundle
(``<release.core_dir>/<release>/``) is scored on the same test split and the
paired deltas go into the report's ``baseline`` block for the "no worse than"
gates.

Failing gates do **not** fail this stage (exit 0, with a line on stderr). The
report records the verdict (``passed: false`` and the reasons) and
``relgate promote`` refuses such a model; failing the stage instead would make
DVC discard the evidence a reviewer and CI need to see why, and would stop
``dvc repro`` from recording metrics to diff against. ``relgate validate``
(the CLI) does exit 1 on failing gates, for CI jobs that want a hard stop.
Bad input (a calibration fit on the test split, a model that breaks the
declared contract, unreadable data) still fails the stage with exit 2.
"""

from __future__ import annotations

import sys

from relgate.jsonio import write_json
from relgate.params import load_params
from relgate.validation import baseline_for_params, flat_metrics, run_validation, write_plots
from stages.common import PARAMS_FILE, run_stage

METRICS_FILE = "analysis/metrics.json"
PLOTS_DIR = "analysis/plots"


def main() -> int:
    params = load_params(PARAMS_FILE)
    spec = params.release
    outcome = run_validation(spec.promoted.path, spec.data, params=params,
                             calibration_path=spec.calibration, split="test",
                             baseline=baseline_for_params(params))
    report = outcome.report
    for warning in report["task"]["warnings"]:  # doubts about params' task: (also in the report)
        sys.stderr.write(f"validate: warning: {warning}\n")
    write_json(spec.report, report)
    write_json(METRICS_FILE, flat_metrics(report))
    write_plots(outcome, PLOTS_DIR, bins=params.validate.ece_bins)
    auc = report["metrics"].get("auc", {})
    verdict = "passed" if report["passed"] else "FAILED"
    print(f"validate: {spec.promoted.path} on {spec.data}: auc {_fmt(auc.get('value'))} "
          f"[{_fmt(auc.get('ci_low'))}, {_fmt(auc.get('ci_high'))}], gates {verdict}; "
          f"wrote {spec.report}, {METRICS_FILE}, {PLOTS_DIR}/")
    if not report["passed"]:
        sys.stderr.write("validate: gates failed (recorded in the report; relgate promote will "
                         "refuse this model): " + "; ".join(report["reasons"]) + "\n")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    run_stage("validate", main)
