"""Stage ``calibrate``: fit the calibration of the promoted model on the validation split.

``python -m stages.calibrate`` reads ``params.yaml`` once (``task:``, ``calibrate:``,
``evaluate:``, ``contract:`` and the ``release:`` paths) and calls the same
function as ``relgate calibrate``: the input scale/offset sweep, temperature
or Platt scaling, the decision threshold and the optional "no conclusive"
band, all fit on ``data/val.npz`` only. It writes

* ``analysis/calibration.json`` (``release.calibration``; schema ``calibration``),
  which pins the model and the validation split by sha256;
* ``analysis/plots/calibration_sweep.csv``: the sweep in long format
  (``scale, offset, auc``) for a ``dvc plots`` heatmap.
"""

from __future__ import annotations

import sys
from pathlib import Path

from relgate.calibration import calibrate_model
from relgate.jsonio import atomic_write_bytes, write_json
from relgate.params import load_params
from relgate.validation import sweep_csv
from stages.common import PARAMS_FILE, run_stage

VAL_DATA = "data/val.npz"
PLOTS_DIR = "analysis/plots"


def main() -> int:
    params = load_params(PARAMS_FILE)
    model = params.release.promoted.path
    outcome = calibrate_model(model, VAL_DATA, params=params, split="val")
    write_json(params.release.calibration, outcome.record)
    atomic_write_bytes(Path(PLOTS_DIR) / "calibration_sweep.csv", sweep_csv(outcome.record))
    for note in outcome.notes:
        sys.stderr.write(f"calibrate: note: {note}\n")
    for warning in outcome.warnings:  # doubts about params' task: (a logit that looks like a p)
        sys.stderr.write(f"calibrate: warning: {warning}\n")
    rec = outcome.record
    prob, thr, ece = rec["probability"], rec["threshold"], rec["ece"]
    temp = "" if prob.get("temperature") is None else f" T={prob['temperature']:.4g}"
    scale, offset = rec["input"]["scale"], rec["input"]["offset"]
    print(f"calibrate: {model} on {VAL_DATA}: x*{scale:g}+{offset:g}, "
          f"{prob['method']}{temp}, threshold {thr['value']:.4g} ({thr['strategy']}), "
          f"ECE {_fmt(ece['before'])} -> {_fmt(ece['after'])}; wrote {params.release.calibration}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    run_stage("calibrate", main)
