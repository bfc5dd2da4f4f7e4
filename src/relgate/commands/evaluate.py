"""relgate evaluate: score an eval set with a model and write the scores (.npz).

A multi-class task (``task.kind: multiclass`` in --params, or ``--output-type logits |
probabilities``) writes ``prob`` [N, K] float64 (calibrated with --calibration), ``y``
(class indices, int64), ``pred`` (argmax, int64; -1 where a calibration's "no conclusive"
threshold leaves the row unanswered) and ``output`` (the raw [N, K] output, float64).
"""

from __future__ import annotations

import argparse
from typing import Any

from relgate.commands._options import add_model_selection
from relgate.errors import EXIT_OK

HELP = ("score an eval set (.npz, Parquet or CSV) with an ONNX model; writes score, y (and "
        "features) to an .npz")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL.onnx", help="the ONNX model")
    parser.add_argument("--data", required=True, metavar="DATA.npz",
                        help="the eval set (.npz, .parquet or .csv): the model's input names "
                             "plus y (0/1 labels); a table's columns as --params eval_data "
                             "maps them")
    parser.add_argument("--out", required=True, metavar="SCORES.npz",
                        help="where to write score (float64), y (int8) and features (if any)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="onnxruntime intra-op threads, fixed so scores are bit-identical "
                             "across runs (default: evaluate.threads from --params, else 1)")
    parser.add_argument("--batch-size", type=int, metavar="B",
                        help="rows per onnxruntime call when the batch dim is dynamic "
                             "(default: evaluate.batch_size from --params, else 256)")
    add_model_selection(parser)
    parser.add_argument("--scale", type=float, default=1.0, metavar="S",
                        help="float inputs are fed as x * S + O (default: %(default)s)")
    parser.add_argument("--offset", type=float, default=0.0, metavar="O",
                        help="see --scale (default: %(default)s)")
    parser.add_argument("--calibration", metavar="CALIBRATION.json",
                        help="apply a calibration: its input scale/offset, and write calibrated "
                             "prob and decision (1, 0, -1 inconclusive) beside score")
    parser.add_argument("--params", metavar="FILE",
                        help="params file: evaluate: settings, the contract: to check and "
                             "eval_data: (a table's label and input columns)")


def run(args: argparse.Namespace) -> int:
    import math
    import time

    from relgate.errors import UsageError
    from relgate.onnxmodel import check_contract, load_contract
    from relgate.params import DEFAULT_BATCH
    from relgate.report import console, progress_enabled
    from relgate.report.contract import progress_bar, render_evaluated
    from relgate.scoring import Scorer, write_scores

    threads, batch_size, spec, task = 1, DEFAULT_BATCH, None, None
    table = None
    if args.params:
        from relgate.params import load_params

        params = load_params(args.params)
        threads, batch_size, spec, task = (params.evaluate.threads, params.evaluate.batch_size,
                                           params.contract, params.task)
        table = params.eval_data
    from relgate.tasks import refuse_kind_none, task_kind

    refuse_kind_none(task_kind(params if args.params else None, args.output_type), "evaluate")
    multiclass = task_kind(params if args.params else None, args.output_type) == "multiclass"
    threads = threads if args.threads is None else args.threads
    batch_size = batch_size if args.batch_size is None else args.batch_size
    if threads < 1 or batch_size < 1:
        raise UsageError("--threads and --batch-size must be at least 1", hint="e.g. --threads 1")
    if not (math.isfinite(args.scale) and math.isfinite(args.offset)):
        raise UsageError("--scale and --offset must be finite numbers", hint="e.g. --scale 1.0")
    if multiclass:
        return _run_multiclass(args, params if args.params else None, threads, batch_size)

    contract = load_contract(args.model, input_name=args.input_name,
                             output_name=args.output_name, positive_index=args.positive_index,
                             task=task, output_type=args.output_type, reducer=args.reducer)
    if spec is not None:
        check_contract(contract, spec)
    if contract.score_kind == "features" and contract.reducer is None \
            and contract.positive_index is None:
        from relgate.errors import ModelError

        raise ModelError(f"{args.model}: output {contract.score_output!r} is features [N, D]; "
                         "how it becomes one score is not declared",
                         hint="set task.output_type: features with task.reducer in --params, "
                              "or pass --output-type features --reducer mean|max|max_abs|l2")
    calibration = None
    if args.calibration:
        from relgate.calibration import load_calibration
        from relgate.onnxmodel import model_digest
        from relgate.validation import check_calibration_model

        if (args.scale, args.offset) != (1.0, 0.0):
            raise UsageError("--calibration sets the input scale/offset; drop --scale/--offset",
                             hint="the calibration's input.scale and input.offset are used")
        calibration = load_calibration(args.calibration)
        check_calibration_model(calibration, model_sha256=model_digest(args.model).sha256,
                                calibration_source=args.calibration)
        if calibration.get("task") is not None:
            from relgate.errors import DataError

            raise DataError(f"{args.calibration}: a multi-class calibration, but the task is "
                            "binary", hint="evaluate with the multi-class params (task.kind: "
                                           "multiclass)")
        args.scale = float(calibration["input"]["scale"])
        args.offset = float(calibration["input"]["offset"])
    scorer = Scorer(args.model, threads=threads, batch_size=batch_size, contract=contract,
                    table=table)
    started = time.perf_counter()
    if progress_enabled():
        with progress_bar("scoring") as update:
            result = scorer.score(args.data, scale=args.scale, offset=args.offset,
                                  progress=update)
    else:
        result = scorer.score(args.data, scale=args.scale, offset=args.offset)
    seconds = time.perf_counter() - started
    extra: dict[str, Any] | None = None
    if calibration is not None:
        from relgate.calibration import apply_calibration, decide

        prob = apply_calibration(result.scores, calibration)
        extra = {"prob": prob, "decision": decide(prob, calibration)}
    write_scores(args.out, result, extra)
    n_pos = int(result.y.sum())
    render_evaluated({"n": result.n, "n_pos": n_pos, "n_neg": result.n - n_pos,
                      "model": args.model, "score_output": contract.score_output,
                      "score_kind": contract.score_kind, "seconds": seconds, "out": args.out},
                     console())
    return EXIT_OK


def _run_multiclass(args: argparse.Namespace, params: Any, threads: int, batch_size: int) -> int:
    """The multi-class evaluate (module docstring)."""
    import time

    import numpy as np

    from relgate.errors import DataError, UsageError
    from relgate.jsonio import atomic_write
    from relgate.params import Params
    from relgate.report import console, progress_enabled
    from relgate.report.contract import progress_bar
    from relgate.report.multiclass_calibration import render_multiclass_evaluated
    from relgate.tasks import multiclass as mc
    from relgate.tasks import multiclass_calibration as mcal
    from relgate.tasks.multiclass_validation import MatrixScorer, resolve_contract

    if (args.scale, args.offset) != (1.0, 0.0):
        raise UsageError("--scale/--offset apply to binary tasks only",
                         hint="a multi-class model is scored on its inputs as they are")
    if params is None:
        raise UsageError("a multi-class evaluate needs --params (its task: section)",
                         hint="pass --params params.yaml")
    assert isinstance(params, Params)
    contract = resolve_contract(args.model, params=params, input_name=args.input_name,
                                output_name=args.output_name, positive_index=args.positive_index,
                                output_type=args.output_type, reducer=args.reducer)
    kind = str(contract.output_type)
    calibration = None
    if args.calibration:
        from relgate.calibration import load_calibration
        from relgate.onnxmodel import model_digest
        from relgate.validation import check_calibration_model

        calibration = load_calibration(args.calibration)
        check_calibration_model(calibration, model_sha256=model_digest(args.model).sha256,
                                calibration_source=args.calibration)
    scorer = MatrixScorer(args.model, threads=threads, batch_size=batch_size,
                          input_name=args.input_name, contract=contract,
                          table=params.eval_data)
    started = time.perf_counter()
    if progress_enabled():
        with progress_bar("scoring") as update:
            out, y = scorer.matrix(args.data, progress=update)
    else:
        out, y = scorer.matrix(args.data)
    seconds = time.perf_counter() - started
    k = int(out.shape[1])
    if not np.all(np.isfinite(out)):
        raise DataError(f"{args.model}: the model produced NaN or infinite outputs",
                        hint="relgate validate reports which rows")
    mc.check_labels(y, k)
    if calibration is not None:
        mcal.check_multiclass_calibration(calibration, n_classes=k, output_type=kind,
                                          source=args.calibration)
    try:
        prob = mcal.calibrated_probabilities(out, kind, calibration)
    except DataError as exc:
        raise DataError(f"{args.model}: output {contract.score_output!r} is declared {kind}, "
                        f"but {exc.message}", hint=exc.hint) from None
    pred = np.argmax(prob, axis=1).astype(np.int64)
    _, threshold = mcal.selective_threshold(calibration)
    inconclusive = None
    if threshold is not None:
        unanswered = prob[np.arange(pred.size), pred] < threshold
        pred[unanswered] = -1
        inconclusive = int(np.count_nonzero(unanswered))
    arrays = {"prob": prob, "y": y.astype(np.int64), "pred": pred,
              "output": np.asarray(out, dtype=np.float64)}
    atomic_write(args.out, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]
    names = (params.task.classes if params.task is not None else None) or \
        [str(i) for i in range(k)]
    if len(names) != k:
        names = [str(i) for i in range(k)]
    labelled = np.bincount(y, minlength=k)
    predicted = np.bincount(pred[pred >= 0], minlength=k)
    counts = [(names[c], int(labelled[c]), int(predicted[c])) for c in range(k)]
    render_multiclass_evaluated({"n": int(y.size), "n_classes": k, "model": args.model,
                                 "score_output": contract.score_output, "output_type": kind,
                                 "calibrated": calibration is not None, "seconds": seconds,
                                 "out": args.out, "inconclusive": inconclusive,
                                 "threshold": threshold}, counts, console())
    return EXIT_OK
