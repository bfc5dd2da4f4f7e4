"""Small helpers shared by the reference pipeline's stages.

Why they exist: every stage must turn a known error into one line and an exit
code (as the CLI does), write its data files byte-for-byte reproducibly, and
read them back without pickles. Nothing here knows about a particular model.
"""

from __future__ import annotations

import io
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.errors import EXIT_INTERRUPTED, DataError, ParamsError, RelgateError
from relgate.jsonio import atomic_write_bytes
from relgate.numeric_env import pin_process

PARAMS_FILE = "params.yaml"
# A fixed timestamp for every zip member (the earliest a zip header can hold):
# np.savez stamps members with the current local time, so the same arrays would
# give different bytes, and a different DVC hash, on every run.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def run_stage(stage: str, main: Callable[[], int | None]) -> None:
    """Run a stage's ``main`` and exit: a RelgateError is one line and its exit code.

    A stage started some other way than ``python -m stages.<name>`` (which pins in
    ``stages/__init__``) is re-started once under the pinned numeric environment.
    """
    pin_process()
    try:
        code = main()
    except RelgateError as exc:
        sys.stderr.write(f"stages.{stage}: error: {exc.one_line()}\n")
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        sys.stderr.write(f"stages.{stage}: interrupted\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    raise SystemExit(int(code or 0))


def save_npz(path: str | Path, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """Write an uncompressed ``.npz`` that ``np.load`` reads, with reproducible bytes.

    Same layout as ``np.savez`` (one ``<key>.npy`` member per array, stored, not
    deflated), but members are written in sorted key order with a fixed
    timestamp and no pickles, and the file is replaced atomically.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with zf.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]),
                                          allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | Path, keys: tuple[str, ...]) -> dict[str, npt.NDArray[Any]]:
    """Read the named arrays of an ``.npz`` (no pickles); a missing file or key is a DataError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)} (has {', '.join(npz.files)})",
                    hint="re-run the data stage (dvc repro data)",
                )
            return {k: npz[k] for k in keys}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file", hint="run the data stage first") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})", hint="re-run the data stage") from None


def section_value(section: Mapping[str, Any], name: str, key: str, default: Any,
                  kind: type | tuple[type, ...]) -> Any:
    """``section[key]`` (or *default*), refusing a value of the wrong type with a ParamsError."""
    value = section.get(key, default)
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
    if not ok:
        want = " or ".join(t.__name__ for t in _as_tuple(kind))
        raise ParamsError(f"params.yaml: {name}.{key} must be {want}, got {value!r}",
                          hint=f"fix {name}.{key} in params.yaml")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def require(condition: bool, name: str, message: str) -> None:
    """Raise a ParamsError naming the key when a params value is out of range."""
    if not condition:
        raise ParamsError(f"params.yaml: {name} {message}", hint=f"fix {name} in params.yaml")


def rankdata(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    starts = np.r_[True, sorted_v[1:] != sorted_v[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, v.size])
    avg = first + (counts + 1) / 2.0
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = avg[group]
    return ranks


def spearman(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Spearman rank correlation (Pearson on average ranks); nan if either side is constant."""
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = float(np.sqrt(np.dot(ra, ra) * np.dot(rb, rb)))
    return float(np.dot(ra, rb) / denom) if denom > 0 else float("nan")

