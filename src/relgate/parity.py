"""Parity: does the model a team deploys (torch) compute what the gated ONNX model computes?

Why: a release may ship a TorchScript or ``torch.export`` file next to the ONNX model that
relgate evaluated and gated. Parity links the two: both run on the same samples and their
declared outputs are compared, so what is deployed is what was gated (seed 003 section
6.3: "the export matches the original, correlation > 0.995").

* **Samples.** The first ``samples`` rows of the data (all rows when it has fewer): a
  prefix, not a random draw, so the export stage and ``relgate parity`` see the same
  rows for the same N and nothing depends on a seed.
* **Inputs.** The ONNX model's inputs, fed by name to onnxruntime (the session settings of
  :mod:`relgate.scoring`) and positionally, in the ONNX input order, to the reference. A
  calibration's input scale/offset is applied to float inputs of both, as deployed.
* **Reference.** A TorchScript archive (``torch.jit.load``) or a ``torch.export`` program
  (``torch.export.load``, a ``.pt2``). The file is inspected as a zip before torch sees
  it, and nothing is ever unpickled by Python: a ``torch.save`` pickle (a state dict or a
  whole module) is refused with a hint, and so is a ``.pt2`` member that torch would
  unpickle without ``weights_only`` (opaque / custom objects, legacy pickled weights),
  that holds native code (AOTInductor), or that is not part of the format, and a program
  whose JSON torch would turn into Python (``guards_code`` beyond shape guards, symbolic
  expressions beyond shape arithmetic: sympy evaluates them). The bytes are read once:
  what is checked is what is hashed and what torch loads. TorchScript's
  own loader is C++: it resolves a pickle's globals to TorchScript types only (a
  ``__reduce__`` naming ``os.system`` is refused by torch itself). torch runs with a
  pinned thread count, deterministic algorithms and oneDNN off, restored afterwards.
* **Numbers.** The declared output (``task.output`` / ``output_type``) of both, same shape
  required: the largest absolute difference, the Pearson correlation of the flattened
  outputs (None when a side is constant), Spearman's rank correlation, and the decision
  agreement: binary, the calibration's decision (threshold and inconclusive band on the
  calibrated probability) or, without a calibration, probability >= 0.5 on the declared
  type (a logit >= 0); multi-class, the argmax. A non-finite output fails closed.
* **Gates.** Each bound set in ``parity:`` is a gate; a value that is undefined fails it.

promote calls :func:`check_parity` (a fresh comparison) and :func:`record_differences`
(the reported record against the fresh one); see :func:`check_parity`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import posixpath
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from relgate.errors import DataError, ModelError, ParamsError
from relgate.params import Params

RECORD_KIND = "parity"
#: what a reference file is, as the record names it
FORMATS = ("torchscript", "torch.export")
#: largest reference file relgate opens (a zip's central directory is read before torch)
MAX_REFERENCE_BYTES = 4 * 1024**3
#: absolute tolerance for a reported parity number against a fresh one (promote)
DEFAULT_TOLERANCE = 1e-9

FloatArray = npt.NDArray[np.float64]


# ------------------------------------------------------------------ the comparison


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Two outputs compared: None where a number is undefined (a constant side, NaN)."""

    n: int
    shape: tuple[int, ...]
    nonfinite: int
    max_abs_diff: float | None
    correlation: float | None
    spearman: float | None
    agreement: float | None = None

    def metrics(self) -> dict[str, float | None]:
        return {"max_abs_diff": self.max_abs_diff, "correlation": self.correlation,
                "spearman": self.spearman, "agreement": self.agreement}


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def rankdata(values: npt.ArrayLike) -> FloatArray:
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


def pearson(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Pearson correlation of the flattened arrays (numpy's corrcoef); nan when undefined."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return float("nan")
    if float(np.ptp(x)) == 0.0 or float(np.ptp(y)) == 0.0:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(x, y)[0, 1])


def compare_outputs(reference: npt.ArrayLike, candidate: npt.ArrayLike, *,
                    decisions: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
                    what: str = "the ONNX model") -> Comparison:
    """Compare two outputs of the same shape (ModelError otherwise); *decisions*, when
    given, are the two models' decisions per sample, and agreement is the share equal."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ModelError(f"{what} returns shape {list(cand.shape)}, the reference "
                         f"{list(ref.shape)}", hint="parity compares outputs of the same shape: "
                         "declare the matching output (task.output) or re-export")
    if ref.ndim == 0 or ref.shape[0] == 0:
        raise DataError("parity needs at least one sample", hint="use --samples 1 or more")
    bad = int(np.count_nonzero(~np.isfinite(ref)) + np.count_nonzero(~np.isfinite(cand)))
    max_abs: float | None = None
    if bad == 0:
        max_abs = float(np.max(np.abs(ref - cand)))
    agreement = None
    if decisions is not None and bad == 0:
        da, db = (np.asarray(d).ravel() for d in decisions)
        agreement = float(np.mean(da == db))
    return Comparison(n=int(ref.shape[0]), shape=tuple(int(s) for s in ref.shape),
                      nonfinite=bad, max_abs_diff=max_abs,
                      correlation=_finite_or_none(pearson(ref, cand)),
                      spearman=None if bad else _finite_or_none(spearman(ref, cand)),
                      agreement=agreement)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def gate_reasons(c: Comparison, *, max_abs_diff: float | None = None,
                 min_correlation: float | None = None, min_agreement: float | None = None,
                 min_spearman: float | None = None) -> list[str]:
    """Why parity fails (empty: it passes). A bound left None is not gated; an undefined
    value fails its bound; non-finite outputs always fail."""
    out: list[str] = []
    if c.nonfinite:
        out.append(f"parity: the outputs hold {c.nonfinite} non-finite value(s) (NaN or inf); "
                   "parity is undefined and fails closed")
    rules: list[tuple[str, str, str, float | None, float | None]] = [
        ("max_abs_diff", "max_abs_diff", "<=", max_abs_diff, c.max_abs_diff),
        ("correlation", "min_correlation", ">=", min_correlation, c.correlation),
        ("agreement", "min_agreement", ">=", min_agreement, c.agreement),
        ("spearman", "min_spearman", ">=", min_spearman, c.spearman),
    ]
    for name, key, op, bound, value in rules:
        if bound is None:
            continue
        if value is None or not math.isfinite(value):
            if not c.nonfinite:
                out.append(f"parity {name} is undefined on these outputs (a constant output or "
                           f"no decisions), so the gate {name} {op} {_fmt(bound)} fails closed")
            else:
                out.append(f"parity {name} is undefined, so the gate {name} {op} "
                           f"{_fmt(bound)} fails closed")
            continue
        ok = value <= bound if op == "<=" else value >= bound
        if not ok:
            neg = ">" if op == "<=" else "<"
            out.append(f"parity {name} {_fmt(value)} {neg} {_fmt(bound)} (bound {key})")
    return out


# ------------------------------------------------------------------ the reference file


def _members(raw: bytes, path: Path) -> tuple[str, list[str]]:
    """The zip's common folder and its member names relative to it (ModelError otherwise)."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        raise ModelError(f"{path}: not a TorchScript or torch.export archive (not a zip: "
                         "a legacy torch.save pickle, or not a torch file); refused without "
                         "loading", hint=_EXPORT_HINT) from None
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1 or any("/" not in n for n in names):
        raise ModelError(f"{path}: not a torch archive (members are not in one folder)",
                         hint=_EXPORT_HINT)
    top = tops.pop()
    return top, [n.split("/", 1)[1] for n in names]


_EXPORT_HINT = ("export TorchScript (torch.jit.script(model).save(path)) or a torch.export "
                "program (torch.export.save(torch.export.export(model, args), path.pt2)); "
                "relgate never unpickles a checkpoint")


def read_reference(path: str | os.PathLike[str]) -> bytes:
    """The reference's bytes, read once: what is checked, hashed and loaded is the same."""
    p = Path(path)
    st = os.stat(p)  # FileNotFoundError: the CLI's one line
    if not p.is_file():
        raise ModelError(f"{p}: not a regular file", hint="point --reference at a file")
    if st.st_size > MAX_REFERENCE_BYTES:
        raise ModelError(f"{p}: {st.st_size} bytes, over relgate's limit of "
                         f"{MAX_REFERENCE_BYTES}", hint="parity takes reference models up to "
                         f"{MAX_REFERENCE_BYTES // 1024**3} GiB")
    return p.read_bytes()


def reference_format(path: str | os.PathLike[str], *, label: str | None = None,
                     data: bytes | None = None) -> str:
    """'torchscript' or 'torch.export', judged from the archive's members alone; anything
    else is refused (ModelError, exit 2) before torch opens it. *label* names the file in
    messages (default: the path); *data* is its bytes when already read."""
    p = Path(label) if label is not None else Path(path)
    raw = read_reference(path) if data is None else data
    top, names = _members(raw, p)
    has = set(names)
    if "archive_format" in has:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            fmt = zf.read(f"{top}/archive_format")
        if fmt.strip() != b"pt2":
            raise ModelError(f"{p}: a torch package of format {fmt[:20]!r}, not a torch.export "
                             "program", hint=_EXPORT_HINT)
        _check_pt2(raw, top, names, p)
        return "torch.export"
    if "constants.pkl" in has and "data.pkl" in has and any(n.startswith("code/") for n in has):
        return "torchscript"
    if "data.pkl" in has:
        raise ModelError(f"{p}: {_diagnose_pickle(raw)}; refused without unpickling it",
                         hint=_EXPORT_HINT)
    raise ModelError(f"{p}: not a TorchScript or torch.export archive", hint=_EXPORT_HINT)


def _diagnose_pickle(raw: bytes) -> str:
    """What a torch.save file holds, told with weights_only loading (which runs no code)."""
    import torch

    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception:  # the weights-only unpickler refuses what would need code to load
        return ("a torch.save pickle that needs code execution to load (a whole nn.Module, "
                "or a hostile file)")
    if isinstance(obj, Mapping):
        return ("a torch.save pickle of a dict (a state dict or a checkpoint: weights without "
                "the code that runs them)")
    return f"a torch.save pickle of a {type(obj).__name__}"


def _weights_only(data: bytes) -> bool:
    import torch

    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # refused by the weights-only unpickler, or not a torch file
        return False
    return True


_PT2_FIXED = {"archive_format", "archive_version", "byteorder", ".data/version",
              ".data/serialization_id", "version", ".format_version", ".storage_alignment"}


def _check_pt2(raw: bytes, top: str, names: Sequence[str], p: Path) -> None:
    """Refuse a .pt2 member torch.export.load would unpickle without weights_only, run as
    native code, or not know: an allow-list of the format's members (*p* names the file)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        def read(name: str) -> bytes:
            return zf.read(f"{top}/{name}")

        allowed: set[str] = set(_PT2_FIXED)
        for name in names:
            if name.startswith("data/aotinductor/"):
                raise ModelError(f"{p}: holds AOTInductor native code ({name}); refused",
                                 hint="save the program without AOTInductor artifacts")
            if name.startswith("models/") and name.endswith(".json"):
                _check_program_json(read(name), f"{p}: {name}")
                allowed.add(name)
            if name.startswith("extra/"):
                allowed.add(name)  # returned as strings, never executed
        for kind, folder in (("weights", "data/weights/"), ("constants", "data/constants/")):
            for cfg in [n for n in names if n.startswith(folder) and n.endswith("_config.json")]:
                allowed.add(cfg)
                try:
                    config = json.loads(read(cfg))["config"]
                    items = list(config.items())
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise ModelError(f"{p}: {cfg} is not a valid torch.export config",
                                     hint=_EXPORT_HINT) from None
                for fqn, meta in items:
                    path_name = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
                    member = posixpath.join(folder, path_name)
                    if not path_name or "/" in path_name or member not in names:
                        raise ModelError(f"{p}: {cfg} names a missing {kind} file for {fqn!r}",
                                         hint=_EXPORT_HINT)
                    if kind == "constants" and not path_name.startswith("tensor_"):
                        raise ModelError(f"{p}: constant {fqn!r} is a pickled object "
                                         f"({path_name}), which torch loads without "
                                         "weights_only; refused", hint=_EXPORT_HINT)
                    if meta.get("use_pickle") and not _weights_only(read(member)):
                        raise ModelError(f"{p}: {kind} {fqn!r} is a pickle that needs code "
                                         "execution to load; refused", hint=_EXPORT_HINT)
                    allowed.add(member)
        for name in names:
            if name.startswith("data/sample_inputs/"):
                if not _weights_only(read(name)):
                    raise ModelError(f"{p}: {name} is a pickle that needs code execution to "
                                     "load; refused", hint=_EXPORT_HINT)
                allowed.add(name)
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise ModelError(f"{p}: member {unknown[0]!r} is not part of a torch.export program "
                         f"({len(unknown)} unknown); refused", hint=_EXPORT_HINT)


#: a shape guard torch turns into Python and runs on every call: L['x'].size()[1] == 12
_GUARD = re.compile(r"L\['[A-Za-z_][A-Za-z0-9_]*'\](\[[0-9]+\])*\.(size|stride)\(\)\[[0-9]+\]"
                    r" (==|!=|<=|>=|<|>) -?[0-9]+")
#: names a symbolic expression (parsed by torch with sympy, which evaluates it) may use
_SYM_NAME = re.compile(r"[a-z]{1,4}[0-9]+|Max|Min|Mod|FloorDiv|CeilToInt|FloorToInt|PythonMod|"
                       r"CleanDiv|IntTrueDiv|TruncToInt|TruncToFloat|Abs|Eq|Ne|Lt|Le|Gt|Ge|"
                       r"And|Or|Not|True|False|oo|Symbol|Integer|Rational|Float|Add|Mul|Pow|"
                       r"positive|negative|nonnegative|nonpositive|integer|real|finite|zero")
#: a symbol's name in srepr form, as torch writes it: Symbol('s77', positive=True, ...)
_SYM_QUOTED = re.compile(r"'[a-z]{1,4}[0-9]+'")
_SYM_TEXT = re.compile(r"[A-Za-z0-9_ +\-*/%()<>=!,.]*")


def _check_expr(text: str, where: str) -> None:
    plain = _SYM_QUOTED.sub("s0", text)
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", plain)
    if not _SYM_TEXT.fullmatch(plain) or "__" in plain or \
            not all(_SYM_NAME.fullmatch(n) for n in names):
        raise ModelError(f"{where}: symbolic expression {text[:60]!r} is not a plain shape "
                         "expression (torch would evaluate it as Python); refused",
                         hint=_EXPORT_HINT)


def _check_program_json(data: bytes, where: str) -> None:
    """Refuse what torch.export.load would turn into Python and run: guards_code other than
    plain shape comparisons (it runs on every call: measured, a payload there runs) and
    symbolic expressions beyond shape arithmetic (parsed by sympy, which evaluates them)."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise ModelError(f"{where}: not JSON", hint=_EXPORT_HINT) from None
    if not isinstance(doc, dict):
        raise ModelError(f"{where}: not a torch.export program", hint=_EXPORT_HINT)
    guards = doc.get("guards_code", [])
    if not isinstance(guards, list) or not all(
            isinstance(g, str) and _GUARD.fullmatch(g) for g in guards):
        raise ModelError(f"{where}: guards_code holds Python that is not a shape guard; refused",
                         hint=_EXPORT_HINT)
    for key in (doc.get("range_constraints") or {}):
        _check_expr(str(key), where)
    stack: list[Any] = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str":
                    if not isinstance(value, str):
                        raise ModelError(f"{where}: expr_str is not text", hint=_EXPORT_HINT)
                    _check_expr(value, where)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


@dataclass(frozen=True)
class Reference:
    """A loaded reference model: its format and what to call."""

    path: Path
    format: str
    module: Callable[..., Any]
    sha256: str
    size: int


def load_reference(path: str | os.PathLike[str], *, label: str | None = None) -> Reference:
    """Check the file (:func:`reference_format`), then load it with torch, on the CPU."""
    import torch

    p = Path(path)
    raw = read_reference(p)
    fmt = reference_format(p, label=label, data=raw)
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            if fmt == "torchscript":
                module: Callable[..., Any] = torch.jit.load(  # type: ignore[no-untyped-call]
                    io.BytesIO(raw), map_location="cpu")
            else:
                module = torch.export.load(io.BytesIO(raw)).module()
    except Exception as exc:  # torch raises several types for a file it cannot read
        text = " ".join(str(exc).split())[:200]
        raise ModelError(f"{label or p}: torch cannot load this {fmt} file: {type(exc).__name__}: {text}",
                         hint=_EXPORT_HINT) from None
    if fmt == "torchscript":  # an exported program's module is already in the mode it was exported in
        module.eval()  # type: ignore[attr-defined]
    return Reference(path=p, format=fmt, module=module,
                     sha256=hashlib.sha256(raw).hexdigest(), size=len(raw))


@contextlib.contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """Pinned threads, deterministic algorithms and oneDNN off (stages.train's settings),
    restored on exit so a caller's own torch settings survive."""
    import torch

    mkldnn: Any = torch.backends.mkldnn
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             bool(mkldnn.enabled))
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    mkldnn.enabled = False
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        mkldnn.enabled = saved[2]


def reference_outputs(module: Callable[..., Any], inputs: Sequence[np.ndarray], *,
                      batch_size: int, output: str, output_index: int,
                      where: str = "the reference") -> np.ndarray:
    """The reference's output on *inputs* (positional, in batches), as one array.

    A tuple/list result gives its element ``output_index`` (the declared output's position
    among the ONNX outputs), a dict its key ``output``."""
    import torch

    parts: list[np.ndarray] = []
    n = int(inputs[0].shape[0])
    with torch.no_grad():
        for start in range(0, n, batch_size):
            args = [torch.from_numpy(np.ascontiguousarray(a[start:start + batch_size]))
                    for a in inputs]
            try:
                result = module(*args)
            except Exception as exc:  # the reference's own failure on these inputs
                text = " ".join(str(exc).split())[:200]
                raise ModelError(f"{where} failed on samples {start}..{min(n, start + batch_size) - 1}: "
                                 f"{type(exc).__name__}: {text}",
                                 hint="the reference takes the ONNX model's inputs, in order") from None
            parts.append(_pick(result, output, output_index, where))
    return np.concatenate(parts)


def _pick(result: Any, output: str, index: int, where: str) -> np.ndarray:
    import torch

    if isinstance(result, dict):
        if output not in result:
            raise ModelError(f"{where} returns a dict without {output!r} (keys "
                             f"{', '.join(map(repr, list(result)[:5]))})",
                             hint="return the declared output under its ONNX name")
        result = result[output]
    elif isinstance(result, (tuple, list)):
        if index >= len(result):
            raise ModelError(f"{where} returns {len(result)} outputs; the declared output "
                             f"{output!r} is ONNX output #{index}",
                             hint="return the outputs in the ONNX model's order")
        result = result[index]
    if not isinstance(result, torch.Tensor):
        raise ModelError(f"{where} returns a {type(result).__name__}, not a tensor",
                         hint="the reference must return tensors")
    return np.asarray(result.detach().cpu().numpy())


# ------------------------------------------------------------------ the decisions


def _binary_scores(contract: Any, raw: np.ndarray, where: str) -> FloatArray:
    """The positive-class score from the declared output, as relgate.scoring reads it."""
    out = np.asarray(raw, dtype=np.float64)
    idx = contract.positive_index
    if contract.score_kind == "score":
        if contract.output_type == "logit" and out.ndim == 2 and out.shape[1] == 2 \
                and idx is not None:
            return np.asarray(out[:, idx] - out[:, 1 - idx], dtype=np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            return np.asarray(out[:, 0], dtype=np.float64)
        if out.ndim == 1:
            return out
    elif contract.score_kind == "probability" or contract.reducer in (None, "column"):
        col = idx if idx is not None else 1
        if out.ndim == 2 and col < out.shape[1]:
            return np.asarray(out[:, col], dtype=np.float64)
    elif out.ndim == 2:
        reducer = contract.reducer or "mean"
        if reducer == "mean":
            return np.asarray(out.mean(axis=1), dtype=np.float64)
        if reducer == "max":
            return np.asarray(out.max(axis=1), dtype=np.float64)
        if reducer == "max_abs":
            return np.asarray(np.abs(out).max(axis=1), dtype=np.float64)
        if reducer == "l2":
            return np.asarray(np.sqrt((out * out).sum(axis=1)), dtype=np.float64)
    raise ModelError(f"{where}: output {contract.score_output!r} of shape {list(out.shape)} "
                     "gives no binary score", hint="check task.output and task.output_type")


@dataclass(frozen=True, kw_only=True)
class DecisionRule:
    """How outputs become decisions: ``argmax``, ``calibration`` or ``probability >= 0.5``."""

    kind: str
    threshold: float | None
    calibration: Mapping[str, Any] | None = None

    def decide(self, contract: Any, raw: np.ndarray, where: str) -> np.ndarray:
        from relgate.calibration import apply_calibration, decide, uncalibrated_probability

        if self.kind == "argmax":
            out = np.asarray(raw)
            if out.ndim != 2:
                raise ModelError(f"{where}: a multi-class output must be [N, K], got "
                                 f"{list(out.shape)}", hint="check task.output")
            return np.asarray(np.argmax(out, axis=1))
        scores = _binary_scores(contract, raw, where)
        if self.calibration is not None:
            with np.errstate(all="ignore"):
                return decide(apply_calibration(scores, self.calibration), self.calibration)
        is_prob = contract.output_type == "probability"
        with np.errstate(all="ignore"):
            prob = uncalibrated_probability(scores, score_is_probability=is_prob)
        return np.asarray(prob >= 0.5)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.kind, "threshold": self.threshold}


def decision_rule(kind: str, calibration: Mapping[str, Any] | None) -> DecisionRule:
    """argmax for multi-class; else the calibration's decision, or 0.5 on the declared type."""
    if kind == "multiclass":
        return DecisionRule(kind="argmax", threshold=None)
    if calibration is not None:
        return DecisionRule(kind="calibration",
                            threshold=float(calibration["threshold"]["value"]),
                            calibration=calibration)
    return DecisionRule(kind="probability >= 0.5", threshold=0.5)


# ------------------------------------------------------------------ the record


@dataclass(frozen=True, kw_only=True)
class ParityOutcome:
    """The parity record (schema-valid) and the reasons it fails (empty: it passes)."""

    record: dict[str, Any]
    reasons: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """What a parity run reads; paths as the user gave them (labels) and resolved."""

    reference: Path
    model: Path
    data: Path
    samples: int
    calibration: Path | None = None
    labels: Mapping[str, str] | None = None


def _ref_entry(path: Path, label: str) -> dict[str, Any]:
    from relgate.hashing import sha256_file

    return {"path": label, "size": os.stat(path).st_size, "sha256": sha256_file(path)}


def run_parity(params: Params, inputs: Inputs) -> ParityOutcome:
    """Run both models on the same samples and judge them by ``params.parity``'s bounds."""
    from relgate import schemas
    from relgate.calibration import load_calibration
    from relgate.numeric_env import RECORDED_PACKAGES
    from relgate.onnxmodel import load_contract, model_digest, require_output_type
    from relgate.provenance import package_versions
    from relgate.scoring import get_scorer
    from relgate.tasks import task_kind

    if inputs.samples < 1:
        raise ParamsError(f"parity samples must be >= 1, got {inputs.samples}",
                          hint="use --samples 1 or more")
    labels = dict(inputs.labels or {})
    label = {k: labels.get(k, str(getattr(inputs, k))) for k in ("reference", "model", "data")}
    kind = task_kind(params)
    reference = load_reference(inputs.reference, label=label["reference"])
    contract = load_contract(inputs.model, task=params.task)
    if kind != "multiclass":
        require_output_type(contract, inputs.model)
    calibration = None
    cal_entry = None
    if inputs.calibration is not None and kind != "multiclass":
        calibration = load_calibration(inputs.calibration)
        cal_entry = _ref_entry(inputs.calibration,
                               labels.get("calibration", str(inputs.calibration)))
    rule = decision_rule(kind, calibration)
    threads, batch = params.evaluate.threads, params.evaluate.batch_size
    if kind == "multiclass":  # labels are class labels, not 0/1 (parity does not use them)
        from relgate.tasks.multiclass_validation import MatrixScorer

        scorer: Any = MatrixScorer(inputs.model, threads=threads, batch_size=batch,
                                   contract=contract, table=params.eval_data)
    else:
        scorer = get_scorer(inputs.model, threads=threads, batch_size=batch, contract=contract,
                            table=params.eval_data)
    ev = scorer.data(inputs.data)
    n = min(inputs.samples, ev.n)
    rows = ev.take(scorer.input_names, np.arange(n))
    feeds = [_transformed(rows[name], calibration) for name in scorer.input_names]
    output = contract.score_output
    out_names = [o.name for o in contract.outputs]
    onnx_out = _onnx_outputs(scorer, dict(zip(scorer.input_names, feeds, strict=True)), output,
                             batch, label["model"])
    with deterministic_torch(threads):
        ref_out = reference_outputs(reference.module, feeds, batch_size=batch, output=output,
                                    output_index=out_names.index(output),
                                    where=label["reference"])
    decisions = None
    if np.all(np.isfinite(ref_out)) and np.all(np.isfinite(onnx_out)) \
            and ref_out.shape == onnx_out.shape:
        decisions = (rule.decide(contract, ref_out, label["reference"]),
                     rule.decide(contract, onnx_out, label["model"]))
    comparison = compare_outputs(ref_out, onnx_out, decisions=decisions, what=label["model"])
    spec = params.parity
    bounds = {"max_abs_diff": None if spec is None else spec.max_abs_diff,
              "min_correlation": None if spec is None else spec.min_correlation,
              "min_agreement": None if spec is None else spec.min_agreement}
    reasons = gate_reasons(comparison, **bounds)
    digest = model_digest(inputs.model)
    record: dict[str, Any] = {
        "schema_version": 1,
        "kind": RECORD_KIND,
        "reference": {"path": label["reference"], "size": reference.size,
                      "sha256": reference.sha256, "format": reference.format},
        "model": {"path": label["model"], "sha256": digest.sha256,
                  "files": [f.to_dict() for f in digest.files]},
        "data": {**_ref_entry(inputs.data, label["data"]), "rows": ev.n},
        "samples": {"n": comparison.n, "requested": inputs.samples, "selection": "first"},
        "task": kind,
        "output": {"name": output, "type": contract.output_type,
                   "shape": list(comparison.shape)},
        "decision": {**rule.to_dict(), "calibration": cal_entry},
        "metrics": {"max_abs_diff": comparison.max_abs_diff,
                    "correlation": comparison.correlation, "spearman": comparison.spearman,
                    "agreement": comparison.agreement, "nonfinite": comparison.nonfinite},
        "bounds": bounds,
        "passed": not reasons,
        "reasons": reasons,
        "environment": {"threads": threads, "batch_size": batch,
                        "packages": package_versions(RECORDED_PACKAGES)},
    }
    schemas.validate(record, RECORD_KIND, source="parity record")
    return ParityOutcome(record=record, reasons=tuple(reasons))


def _transformed(x: np.ndarray, calibration: Mapping[str, Any] | None) -> np.ndarray:
    """x * scale + offset in x's dtype for a float input, as relgate.scoring applies it."""
    if calibration is None or x.dtype.kind != "f":
        return np.ascontiguousarray(x)
    scale = float(calibration["input"]["scale"])
    offset = float(calibration["input"]["offset"])
    if scale == 1.0 and offset == 0.0:
        return np.ascontiguousarray(x)
    with np.errstate(over="ignore", invalid="ignore"):
        out: np.ndarray = np.multiply(x, x.dtype.type(scale))
        np.add(out, out.dtype.type(offset), out=out)
    return out


def _onnx_outputs(scorer: Any, feeds: Mapping[str, np.ndarray], output: str, batch: int,
                  where: str) -> np.ndarray:
    """The declared output from onnxruntime, in batches (a fixed batch of k padded)."""
    n = int(next(iter(feeds.values())).shape[0])
    k = scorer.fixed_batch
    step = batch if k is None else k
    parts: list[np.ndarray] = []
    for start in range(0, n, step):
        part = {name: a[start:start + step] for name, a in feeds.items()}
        m = next(iter(part.values())).shape[0]
        if k is not None and m < k:
            part = {name: np.concatenate([a, np.repeat(a[-1:], k - m, axis=0)])
                    for name, a in part.items()}
        try:
            out = scorer.session.run([output], part)[0]
        except Exception as exc:  # onnxruntime's own error on these inputs
            text = " ".join(str(exc).split())[:200]
            raise ModelError(f"{where}: onnxruntime failed on samples {start}..{start + m - 1}: "
                             f"{text}", hint="check the data against the model (relgate "
                             "inspect)") from None
        if not isinstance(out, np.ndarray):
            raise ModelError(f"{where}: output {output!r} is not a tensor "
                             f"({type(out).__name__})", hint="parity compares tensor outputs; "
                             "export with zipmap: False")
        parts.append(out[:m])
    return np.concatenate(parts)


# ------------------------------------------------------------------ params and promote


def resolve_inputs(params: Params, root: str | os.PathLike[str], *,
                   reference: str | None = None, model: str | None = None,
                   data: str | None = None, samples: int | None = None,
                   calibration: str | None = None) -> Inputs:
    """What to compare: flags over ``parity:`` over the release's defaults, relative to
    *root*. The calibration is ``release.calibration`` when that file exists."""
    spec = params.parity
    ref = reference if reference is not None else (None if spec is None else spec.reference)
    if ref is None:
        raise ParamsError(f"{params.source}: no parity reference: no --reference and no "
                          "parity.reference", hint="pass --reference models/deploy.pt or add "
                          "parity: {reference: ...} to params.yaml")
    mdl = model if model is not None else params.release.promoted.path
    dat = data if data is not None else (
        spec.data if spec is not None and spec.data is not None else params.release.data)
    n = samples if samples is not None else (256 if spec is None else spec.samples)
    base = Path(root).absolute()  # scoring caches eval sets by absolute path: no relative paths
    cal_label = calibration
    if cal_label is None and (base / params.release.calibration).is_file():
        cal_label = params.release.calibration
    return Inputs(reference=base / ref, model=base / mdl, data=base / dat, samples=n,
                  calibration=None if cal_label is None else base / cal_label,
                  labels={"reference": ref, "model": mdl, "data": dat,
                          **({"calibration": cal_label} if cal_label else {})})


def check_parity(params: Params, root: str | os.PathLike[str]) -> ParityOutcome:
    """A fresh parity record for ``params.parity`` (ParamsError when there is none).

    How promote uses it (after the release's own gates)::

        if params.parity is not None:
            fresh = check_parity(params, root)
            reported = read_json(root / params.parity.record)
            schemas.validate(reported, "parity", source=params.parity.record)
            problems = record_differences(reported, fresh.record)
            if problems:   # edited or stale: NotReproduced (exit 1)
                ...
            if fresh.reasons:  # a parity gate fails: GateFailed (exit 1)
                ...
            # ship params.parity.record (the reported bytes) in the bundle
    """
    if params.parity is None:
        raise ParamsError(f"{params.source}: no parity: section",
                          hint="add parity: {reference: ...} to params.yaml")
    return run_parity(params, resolve_inputs(params, root))


#: record keys whose values must be equal (inputs, the rule, what was compared)
_EXACT = (("reference", "sha256"), ("reference", "format"), ("model", "sha256"),
          ("data", "sha256"), ("samples", "n"), ("output", "name"), ("output", "shape"),
          ("decision", "rule"), ("decision", "threshold"), ("bounds",), ("passed",),
          ("metrics", "nonfinite"))
_NUMBERS = ("max_abs_diff", "correlation", "spearman", "agreement")


def record_differences(reported: Mapping[str, Any], fresh: Mapping[str, Any], *,
                       tolerance: float = DEFAULT_TOLERANCE) -> list[str]:
    """Why a reported parity record is not the fresh one: an input's sha256, the rule or
    the samples differ (stale), or a number is off by more than *tolerance* (edited)."""
    out: list[str] = []
    for keys in _EXACT:
        a: Any = reported
        b: Any = fresh
        for k in keys:
            a = a.get(k) if isinstance(a, Mapping) else None
            b = b.get(k) if isinstance(b, Mapping) else None
        if a != b:
            out.append(f"parity {'.'.join(keys)}: reported {_short(a)}, re-run {_short(b)}")
    rc = (reported.get("decision") or {}).get("calibration") or {}
    fc = (fresh.get("decision") or {}).get("calibration") or {}
    if rc.get("sha256") != fc.get("sha256"):
        out.append(f"parity decision.calibration.sha256: reported {_short(rc.get('sha256'))}, "
                   f"re-run {_short(fc.get('sha256'))}")
    for name in _NUMBERS:
        a = (reported.get("metrics") or {}).get(name)
        b = (fresh.get("metrics") or {}).get(name)
        if a is None and b is None:
            continue
        if a is None or b is None or not isinstance(a, (int, float)) \
                or abs(float(a) - float(b)) > tolerance:
            out.append(f"parity metrics.{name}: reported {_short(a)}, re-run {_short(b)} "
                       f"(tolerance {tolerance:g})")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."
