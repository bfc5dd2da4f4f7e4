"""Task kinds: one module per kind of model relgate governs (issue 14, point 6).

Intended interface of a task kind (a plan, not yet a contract: only
:mod:`relgate.tasks.multiclass` exists, the binary code still lives in
:mod:`relgate.metrics` and :mod:`relgate.calibration`, and nothing in
validate, calibrate or promote calls this package yet):

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
