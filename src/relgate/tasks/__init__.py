"""Task kinds: one module per kind of model relgate governs (issue 14, point 6).

:func:`task_kind` says which kind params (or an ``--output-type`` flag) declare, and
:func:`validation_runner` gives that kind's validation: ``relgate validate`` and
``relgate promote`` (through :func:`relgate.validation.run_validation`) call it, so a new
kind is one new module plus one entry in :data:`KINDS`. The binary kind validates in
:mod:`relgate.tasks.binary` (its metric engine is :mod:`relgate.metrics`, its calibration
:func:`relgate.calibration.calibrate_model`); the multi-class kind in
:mod:`relgate.tasks.multiclass` (metrics), :mod:`relgate.tasks.multiclass_calibration`
(calibration) and :mod:`relgate.tasks.multiclass_validation` (validation); the kind ``none``
(no classifier score: gated on its contract, resource budgets and output health, with no
calibration) in :mod:`relgate.tasks.none`.

Interface of a task kind (validation and calibration are wired for both kinds):

* check labels and outputs: refuse (DataError, exit 2) labels outside the
  task's classes and outputs of the wrong shape or range; never clip silently;
* metrics with bootstrap: point values plus stratified-bootstrap percentile
  intervals, as :class:`relgate.metrics.MetricEstimate` (value None and a
  reason when the data cannot define a metric);
* paired deltas: candidate minus baseline on the very same resamples;
* calibrate: fit a probability map on the validation split (temperature);
* choose a threshold: e.g. the selective-prediction confidence threshold with
  the largest coverage that meets a target accuracy;
* plot data: rows for DVC plots (e.g. the confusion matrix).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relgate.errors import ParamsError

#: task kinds relgate validates, and the output types that imply each
KINDS = ("binary", "multiclass", "none")
_TYPES = {"logits": "multiclass", "probabilities": "multiclass", "logit": "binary",
          "probability": "binary", "features": "binary"}


def task_kind(params: Any, output_type: str | None = None) -> str:
    """The declared task kind: an ``--output-type`` flag's kind wins over ``task.kind``;
    binary when nothing is declared (the binary code then refuses an unproven type)."""
    if output_type is not None and output_type in _TYPES:
        return _TYPES[output_type]
    task = getattr(params, "task", None)
    return "binary" if task is None else str(task.kind)


def validation_runner(kind: str) -> Callable[..., Any]:
    """The validation function of *kind*: same keyword arguments as
    :func:`relgate.validation.run_validation`, returns a ValidationOutcome."""
    if kind == "binary":
        from relgate.tasks.binary import run_binary_validation

        return run_binary_validation
    if kind == "multiclass":
        from relgate.tasks.multiclass_validation import run_multiclass_validation

        return run_multiclass_validation
    if kind == "none":  # no classifier score: contract, budgets and output health
        from relgate.tasks.none import run_none_validation

        return run_none_validation
    raise ParamsError(f"unknown task kind {kind!r}", hint=f"use one of: {', '.join(KINDS)}")


def refuse_kind_none(kind: str, command: str) -> None:
    """A UsageError (exit 2) for *command*, which reads a classifier score, when the task
    kind is none (no score: ``relgate validate`` judges such a model)."""
    if kind == "none":
        from relgate.errors import UsageError

        raise UsageError(f"relgate {command}: task kind none has no classifier score to "
                         f"{'calibrate' if command == 'calibrate' else 'read'}",
                         hint="judge the model with relgate validate (contract, resource "
                              "budgets, output health)")


def calibration_runner(kind: str) -> Callable[..., Any] | None:
    """The calibration fit of *kind* (None only for an unknown kind).

    Same keyword arguments as :func:`relgate.calibration.calibrate_model`; returns an object
    with ``record``, ``notes`` and ``warnings`` like ``calibrate_model``'s outcome."""
    if kind == "binary":
        from relgate.calibration import calibrate_model

        return calibrate_model
    if kind == "multiclass":
        from relgate.tasks.multiclass_calibration import calibrate_multiclass_model

        return calibrate_multiclass_model
    refuse_kind_none(kind, "calibrate")
    return None
