"""Metrics per slice (issue 19): slice columns read from the eval set, rows grouped once, every
per-slice metric from one resampling pass, and simultaneous intervals for a family of slices.

* **Columns.** A slice column is an eval-set column that is one value per row: an ``.npz``
  key (numeric, bool or fixed-width string; object arrays stay refused by the reader) or a
  Parquet/CSV column (numbers, bool, strings, a dictionary of strings). A NaN or a null, a
  length other than ``y``'s, a second dimension, or more than :data:`MAX_SLICES` distinct
  values are bad input (exit 2), never dropped rows. A key that is no model input and no
  declared slice column is ignored, as before.
* **One pass.** Rows are sorted once by (slice, true class); every bootstrap resample draws
  counts inside each (slice, class) cell (the stratified bootstrap, inside the slice), and
  each metric's per-slice values come from grouped sums of those counts
  (``np.add.reduceat`` over the sorted segments): no slice re-runs the evaluation.
* **Metrics.** The multi-class metrics of :mod:`relgate.tasks.multiclass` that are sums over
  rows: accuracy, top-k, per-class and averaged precision/recall/F1, min-class recall/F1,
  log loss, Brier, top-label ECE, coverage and selective accuracy. The one-vs-rest AUCs
  and classwise ECE are not computed per slice (a rule naming them fails closed).
* **Simultaneous intervals.** :func:`simultaneous` widens the intervals of a family of
  slices by the bootstrap max-statistic: ``c`` is the ``confidence`` quantile over resamples
  of ``max_s |b_s - v_s| / se_s`` and each slice gets ``v_s +- c * se_s`` (never narrower
  than its own percentile interval), so all of them hold together with that confidence
  (fifty healthy slices do not fail by chance).
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.errors import DataError
from relgate.metrics import bin_index, chunks, draw_counts, interval, ratio

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: distinct values a slice column may hold (a row id used as a slice is a mistake)
MAX_SLICES = 1000
CORRECTION = ("bootstrap max-statistic: v +- c * se, c the quantile of the largest "
              "standardized deviation across slices (studentized, two-sided)")
#: multi-class metrics that have no per-slice value
NOT_PER_SLICE = frozenset({"macro_auc", "weighted_auc", "classwise_ece"})


# ---------------------------------------------------------------- reading the columns


def read_slice_columns(path: str | os.PathLike[str], names: Sequence[str], n: int, *,
                       identity: Any = None) -> dict[str, np.ndarray]:
    """The named columns of the eval set at *path* as 1-D numpy arrays of length *n*.
    *identity* (a table's, as scored) must still be the file's: a file swapped since it
    was scored is refused rather than sliced."""
    from relgate import tables

    p = Path(path)
    fmt = tables.detect_format(p)
    raw = _npz_columns(p, names) if fmt == "npz" else _table_columns(p, fmt, names, identity)
    return {name: _checked(p, name, raw[name], n) for name in names}


def _npz_columns(p: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    from relgate.scoring import _parse_member, _read_whole

    size = p.stat().st_size
    found: dict[str, np.ndarray] = {}
    keys: list[str] = []
    with zipfile.ZipFile(p) as zf, open(p, "rb") as fh:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            keys.append(info.filename[:-4])
            if info.filename[:-4] in names:
                found[info.filename[:-4]] = _read_whole(p, _parse_member(p, zf, fh, info, size))
    _missing(p, names, found, keys)
    return found


def _missing(p: Path, names: Sequence[str], found: Mapping[str, Any], keys: Sequence[str]) -> None:
    absent = [nm for nm in names if nm not in found]
    if absent:
        raise DataError(f"{p}: slice column(s) {', '.join(map(repr, absent))} not in the eval "
                        f"set; it holds {', '.join(map(repr, sorted(keys))) or 'nothing'}",
                        hint="add the column, or fix slices.features in params.yaml")


def _table_columns(p: Path, fmt: str, names: Sequence[str], identity: Any = None
                   ) -> dict[str, np.ndarray]:
    import pyarrow as pa  # type: ignore[import-untyped]

    from relgate import tables

    with tables._opened(p, expect=identity) as (fh, _fd, _ident):
        try:
            if fmt == "parquet":
                import pyarrow.parquet as pq  # type: ignore[import-untyped]

                pf = pq.ParquetFile(fh)
                keys = list(pf.schema_arrow.names)
                _missing(p, names, {k: 1 for k in keys}, keys)
                table = pf.read(columns=list(names))
            else:
                import pyarrow.csv as pcsv  # type: ignore[import-untyped]

                with pcsv.open_csv(fh) as reader:  # the header only: which columns exist
                    keys = list(reader.schema.names)
                _missing(p, names, {k: 1 for k in keys}, keys)
                fh.seek(0)
                table = pcsv.read_csv(fh, convert_options=pcsv.ConvertOptions(
                    include_columns=list(names), column_types={nm: pa.string() for nm in names},
                    strings_can_be_null=True))
        except tables._arrow_errors() as exc:
            raise tables._arrow_error(p, exc, ()) from None
    out: dict[str, np.ndarray] = {}
    for nm in names:
        col = table.column(nm)
        if col.null_count:
            raise DataError(f"{p}: slice column {nm!r} holds {col.null_count} null value(s)",
                            hint="give every row a slice value (e.g. 'unknown'), never a null")
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.cast(t.value_type)
            t = t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            out[nm] = np.asarray(col.to_pylist(), dtype=str)
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            out[nm] = col.to_numpy()
        else:
            raise DataError(f"{p}: slice column {nm!r} has type {t}",
                            hint="a slice column holds strings, integers, floats or bools")
    return out


def _checked(p: Path, name: str, arr: np.ndarray, n: int) -> np.ndarray:
    where = f"{p}: slice column {name!r}"
    if arr.dtype.kind not in "biufUS":
        raise DataError(f"{where} has dtype {arr.dtype}",
                        hint="a slice column holds numbers, bools or fixed-width strings")
    if arr.ndim != 1:
        raise DataError(f"{where} has shape {list(arr.shape)}, expected [N]",
                        hint="a slice column is one value per row")
    if arr.shape[0] != n:
        raise DataError(f"{where} has {arr.shape[0]} values but y has {n}",
                        hint="one slice value per labelled row")
    if arr.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise DataError(f"{where} holds {bad} NaN or infinite value(s)",
                            hint="give every row a slice value, never NaN")
    return arr


# ---------------------------------------------------------------- partitions


@dataclass(frozen=True, kw_only=True)
class Partition:
    """The rows grouped by one feature or crossing: ``codes[i]`` is row i's slice."""

    features: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]  # per slice, one text value per feature
    codes: IntArray

    @property
    def name(self) -> str:
        return ",".join(self.features)

    def key(self, s: int) -> str:
        return ",".join(f"{f}={v}" for f, v in zip(self.features, self.values[s], strict=True))


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="backslashreplace")
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (np.integer, int)):
        return str(int(v))
    if isinstance(v, (np.floating, float)):
        return repr(float(v))
    return str(v)


def build_partition(columns: Mapping[str, np.ndarray], features: tuple[str, ...], *,
                    source: str) -> Partition:
    """Group the rows by *features* (one, or a crossing); only combinations that occur."""
    codes = np.zeros(next(iter(columns.values())).shape[0], dtype=np.int64)
    labels: list[list[str]] = []
    for f in features:
        uniq, inv = np.unique(columns[f], return_inverse=True)
        if uniq.size > MAX_SLICES:
            raise DataError(f"{source}: slice column {f!r} has {uniq.size} distinct values "
                            f"(more than {MAX_SLICES})",
                            hint="slice by a coarse group (region, device), not an id")
        codes = codes * uniq.size + inv.astype(np.int64).ravel()
        labels.append([_text(u) for u in uniq.tolist()])
    uniq_codes, inv = np.unique(codes, return_inverse=True)
    if uniq_codes.size > MAX_SLICES:
        raise DataError(f"{source}: crossing {','.join(features)} has {uniq_codes.size} "
                        f"slices (more than {MAX_SLICES})", hint="cross fewer or coarser features")
    values: list[tuple[str, ...]] = []
    sizes = [len(lab) for lab in labels]
    for c in uniq_codes.tolist():
        parts = []
        for size in reversed(sizes):
            parts.append(c % size)
            c //= size
        values.append(tuple(lab[i] for lab, i in zip(labels, reversed(parts), strict=True)))
    return Partition(features=features, values=tuple(values), codes=inv.astype(np.int64).ravel())


# ---------------------------------------------------------------- the engine


@dataclass(frozen=True, kw_only=True)
class SliceStats:
    """One model's metrics on every slice of a partition: points [S], resamples [R, S]."""

    point: dict[str, FloatArray]
    boot: dict[str, FloatArray]


@dataclass(frozen=True, kw_only=True)
class SliceTable:
    """A partition's slices: sizes, class supports, and each model's SliceStats."""

    partition: Partition
    n: IntArray  # [S]
    support: IntArray  # [S, K]
    names: tuple[str, ...]
    models: tuple[SliceStats, ...]
    reasons: dict[str, list[str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Layout:
    order: IntArray  # rows sorted by (slice, class)
    cell_starts: IntArray
    cell_ids: IntArray  # slice * K + class of each cell
    slice_starts: IntArray
    codes: IntArray  # slice of each row, in layout order


def _runs(keys: IntArray) -> tuple[IntArray, IntArray]:
    start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]).astype(np.int64)
    return start, keys[start]


@dataclass(frozen=True)
class _Model:
    correct: FloatArray
    pred_order: IntArray
    pred_starts: IntArray
    pred_ids: IntArray
    hits: dict[int, FloatArray]
    loss: FloatArray
    brier: FloatArray
    bin_order: IntArray
    bin_starts: IntArray
    bin_resid: FloatArray
    bin_slice_starts: IntArray
    covered: FloatArray | None
    covered_correct: FloatArray | None


def _model(lay: _Layout, y: IntArray, p: FloatArray, top_k: tuple[int, ...], bins: int,
           threshold: float | None) -> tuple[_Model, dict[str, Any]]:
    from relgate.tasks import multiclass as mc

    k = p.shape[1]
    r = mc._rows(y, p)
    o = lay.order
    codes = lay.codes
    pred = r.pred[o]
    correct = r.correct[o]
    conf = r.conf[o]
    pkey = codes * k + pred
    p_order = np.argsort(pkey, kind="stable")
    p_starts, p_ids = _runs(pkey[p_order])
    bkey = codes * bins + bin_index(conf, bins)
    b_order = np.argsort(bkey, kind="stable")
    b_starts, b_ids = _runs(bkey[b_order])
    b_slice_starts, _ = _runs(b_ids // bins)
    resid = (correct - conf)[b_order]
    cov = cc = None
    if threshold is not None:
        covered = conf >= threshold
        cov, cc = covered.astype(np.float64), (covered & correct).astype(np.float64)
    model = _Model(correct=correct.astype(np.float64), pred_order=p_order, pred_starts=p_starts,
                   pred_ids=p_ids, hits={kk: (r.true_rank[o] < kk).astype(np.float64)
                                         for kk in top_k},
                   loss=r.loss[o], brier=r.brier[o], bin_order=b_order, bin_starts=b_starts,
                   bin_resid=resid, bin_slice_starts=b_slice_starts, covered=cov,
                   covered_correct=cc)
    return model, {}


def _sums(m: _Model, lay: _Layout, counts: np.ndarray, s: int, k: int
          ) -> dict[str, np.ndarray]:
    """Grouped sums for [r, N] counts in layout order: tp and predicted [r, S, K], per-slice
    sums [r, S] of each row quantity, and the ECE gap [r, S]."""
    rows = counts.shape[0]
    out: dict[str, np.ndarray] = {}
    tp = np.zeros((rows, s * k))
    tp[:, lay.cell_ids] = np.add.reduceat(counts * m.correct, lay.cell_starts, axis=1)
    pr = np.zeros((rows, s * k))
    pr[:, m.pred_ids] = np.add.reduceat(np.take(counts, m.pred_order, axis=1), m.pred_starts,
                                        axis=1)
    out["tp"], out["predicted"] = tp.reshape(rows, s, k), pr.reshape(rows, s, k)
    for kk, hit in m.hits.items():
        out[f"hit{kk}"] = np.add.reduceat(counts * hit, lay.slice_starts, axis=1)
    out["loss"] = np.add.reduceat(counts * m.loss, lay.slice_starts, axis=1)
    out["brier"] = np.add.reduceat(counts * m.brier, lay.slice_starts, axis=1)
    gaps = np.add.reduceat(np.take(counts, m.bin_order, axis=1) * m.bin_resid, m.bin_starts,
                           axis=1)
    out["ece"] = np.add.reduceat(np.abs(gaps), m.bin_slice_starts, axis=1)
    if m.covered is not None and m.covered_correct is not None:
        out["covered"] = np.add.reduceat(counts * m.covered, lay.slice_starts, axis=1)
        out["covered_correct"] = np.add.reduceat(counts * m.covered_correct, lay.slice_starts,
                                                 axis=1)
    return out


def _metrics(sums: Mapping[str, np.ndarray], n: IntArray, support: IntArray,
             names: tuple[str, ...]) -> dict[str, FloatArray]:
    """Every per-slice metric [r, S] from grouped sums (the formulas of multiclass._from_counts)."""
    from relgate.tasks import multiclass as mc

    tp, predicted = sums["tp"], sums["predicted"]
    sup = support[None, :, :].astype(np.float64)
    nn = n[None, :].astype(np.float64)
    precision = ratio(tp, predicted)
    recall = ratio(tp, sup)
    f1 = ratio(2 * tp, predicted + sup)
    weights = sup / nn[:, :, None]
    micro = tp.sum(axis=2) / nn
    out: dict[str, FloatArray] = {"accuracy": micro}
    k = support.shape[1]
    for name, v in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"macro_{name}"] = v.mean(axis=2)
        out[f"micro_{name}"] = micro
        out[f"weighted_{name}"] = (v * weights).sum(axis=2)
        for c in range(k):
            out[mc.class_name(c, name)] = v[:, :, c]
    out["min_class_recall"] = recall.min(axis=2)
    out["min_class_f1"] = f1.min(axis=2)
    for key, v in sums.items():
        if key.startswith("hit"):
            out[mc.topk_name(int(key[3:]))] = v / nn
    out["log_loss"] = sums["loss"] / nn
    out["brier"] = sums["brier"] / nn
    out["ece"] = sums["ece"] / nn
    if "covered" in sums:
        cov = sums["covered"]
        out["coverage"] = cov / nn
        with np.errstate(invalid="ignore", divide="ignore"):
            out["selective_accuracy"] = np.where(cov > 0, sums["covered_correct"] / cov, np.nan)
    return {nm: out[nm] for nm in names}


def slice_names(k: int, top_k: Sequence[int], *, selective: bool) -> tuple[str, ...]:
    """The metrics computed per slice, in report order."""
    from relgate.tasks import multiclass as mc

    return tuple(nm for nm in mc.metric_names(k, top_k, selective=selective)
                 if nm not in NOT_PER_SLICE)


def slice_metrics(y: Any, probs: Sequence[FloatArray], partition: Partition, *,
                  top_k: Sequence[int] = (), ece_bins: int = 15, resamples: int = 1000,
                  seed: int = 0, thresholds: Sequence[float | None] | None = None
                  ) -> SliceTable:
    """Every per-slice metric of each model in *probs* (checked [N, K] probabilities of the
    same rows), over the same stratified resamples (paired: a delta is a difference)."""
    from relgate.tasks import multiclass as mc

    labels = np.asarray(y, dtype=np.int64)
    k = int(probs[0].shape[1])
    n_rows = labels.size
    if partition.codes.size != n_rows:
        raise DataError(f"slice partition {partition.name!r} has {partition.codes.size} rows, "
                        f"y has {n_rows}", hint="one slice value per labelled row")
    ks = tuple(sorted(set(int(t) for t in top_k)))
    ts = list(thresholds) if thresholds is not None else [None] * len(probs)
    names = slice_names(k, ks, selective=ts[0] is not None)
    n_slices = len(partition.values)
    cell = partition.codes * k + labels
    order = np.argsort(cell, kind="stable")
    cell_sorted = cell[order]
    cell_starts, cell_ids = _runs(cell_sorted)
    codes_sorted = partition.codes[order]
    slice_starts, _ = _runs(codes_sorted)
    lay = _Layout(order=order, cell_starts=cell_starts, cell_ids=cell_ids,
                  slice_starts=slice_starts, codes=codes_sorted)
    support = np.bincount(cell, minlength=n_slices * k).reshape(n_slices, k).astype(np.int64)
    n = support.sum(axis=1)
    models = [_model(lay, labels, q, ks, ece_bins, t)[0] for q, t in zip(probs, ts, strict=True)]
    ones = np.ones((1, n_rows), dtype=np.int32)
    points = [_metrics(_sums(m, lay, ones, n_slices, k), n, support, names) for m in models]
    boots: list[dict[str, list[FloatArray]]] = [{nm: [] for nm in names} for _ in models]
    if resamples:
        ends = np.r_[cell_starts[1:], n_rows]
        gens = [np.random.default_rng(sq) for sq in
                np.random.SeedSequence(seed).spawn(int(cell_starts.size))]
        for rows in chunks(resamples, n_rows):
            counts = np.empty((rows, n_rows), dtype=np.int32)
            for g, a, z in zip(gens, cell_starts.tolist(), ends.tolist(), strict=True):
                counts[:, a:z] = draw_counts(g, rows, z - a)
            for m, part in zip(models, boots, strict=True):
                for nm, v in _metrics(_sums(m, lay, counts, n_slices, k), n, support,
                                      names).items():
                    part[nm].append(v)
    stats = tuple(SliceStats(point={nm: v[0] for nm, v in pt.items()},
                             boot={nm: np.concatenate(v) for nm, v in bt.items() if v})
                  for pt, bt in zip(points, boots, strict=True))
    reasons = {nm: [mc._reason(nm, support[s]) for s in range(n_slices)] for nm in names}
    return SliceTable(partition=partition, n=n, support=support, names=names, models=stats,
                      reasons=reasons)


# ---------------------------------------------------------------- intervals


def marginal(boot: FloatArray | None, confidence: float, s: int
             ) -> tuple[float | None, float | None]:
    """Slice *s*'s own percentile interval (None when a resample is undefined)."""
    if boot is None:
        return None, None
    return interval(boot[:, s], confidence)


@dataclass(frozen=True, kw_only=True)
class Simultaneous:
    """Intervals that hold together over ``members`` with the given confidence."""

    members: tuple[int, ...]
    critical: float | None  # c of v +- c * se (None: no member varies)
    low: dict[int, float | None]
    high: dict[int, float | None]


def simultaneous(point: FloatArray, boot: FloatArray | None, members: Sequence[int],
                 confidence: float) -> Simultaneous:
    """The bootstrap max-statistic over *members* (module docstring): ``critical`` is the
    *confidence* quantile over resamples of ``max_s |b_s - v_s| / se_s`` (se: the standard
    deviation of slice s's resamples), and each slice gets ``v_s +- critical * se_s``,
    widened where needed to hold the slice's own percentile interval (a skewed slice keeps
    its longer tail). A member with an undefined point or resample gets no interval (its
    rules fail closed); one whose resamples never vary gets its point as both bounds."""
    idx = [int(s) for s in members]
    low: dict[int, float | None] = dict.fromkeys(idx)
    high: dict[int, float | None] = dict.fromkeys(idx)
    if boot is None or not idx or boot.shape[0] < 2:
        return Simultaneous(members=tuple(idx), critical=None, low=low, high=high)
    b = boot[:, idx]
    v = point[idx]
    ok = np.isfinite(v) & np.isfinite(b).all(axis=0)
    se = np.zeros(len(idx))
    se[ok] = b[:, ok].std(axis=0, ddof=1)
    vary = ok & (se > 0)
    critical: float | None = None
    if vary.any():
        z = np.abs(b[:, vary] - v[vary]) / se[vary]
        critical = float(np.quantile(z.max(axis=1), confidence))
    for j, s in enumerate(idx):
        if not ok[j]:
            continue
        c = 0.0 if critical is None else critical
        lo, hi = interval(b[:, j], confidence)
        low[s] = float(min(v[j] - c * se[j], v[j] if lo is None else lo))
        high[s] = float(max(v[j] + c * se[j], v[j] if hi is None else hi))
    return Simultaneous(members=tuple(idx), critical=critical, low=low, high=high)


def finite(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None
