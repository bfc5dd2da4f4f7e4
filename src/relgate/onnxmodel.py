"""Safe loading of ONNX models made by other people's exporters, and their contract.

relgate must read any reasonable model and refuse hostile ones cleanly:

* **External data stays inside the model's folder.** Every tensor stored outside the
  ``.onnx`` file (``model.onnx.data`` as torch's exporter writes it) is checked before
  anything large is read: the location must be a relative path without ``..``, no
  component between the model's folder and the file may be a symlink, the file must be a
  regular file with a single hard link, and ``offset``/``length`` must fit inside it (and
  match the tensor's byte size). Only ``lstat`` is used for the checks, so nothing outside
  the folder is ever opened. The folder is the parent of the path given (not of a resolved
  symlink), which is where onnxruntime looks too.
* **onnx.checker runs by path**, because a ModelProto above 2 GiB cannot be checked in memory.
* **onnxruntime runs first in a child process** (:func:`probe_session`) with a time and an
  address-space limit: onnxruntime has crashed whole processes on fuzzed models, and such a
  model must end in a one-line error, not take relgate down with it.

The model's digest (:func:`model_digest`): when the model has no external data it is the
sha256 of the ``.onnx`` file itself (what ``sha256sum model.onnx`` prints); otherwise it is
the sha256 of the text made of one line ``"<sha256>  <relpath>\\n"`` per file (the ``.onnx``
and every external data file, paths relative to the model's folder in POSIX form, sorted by
path) -- the output of ``sha256sum`` over the sorted files, so it can be checked by hand.

onnx and onnxruntime are imported inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from relgate.errors import ModelError
from relgate.hashing import sha256_file

MAX_PROTO_BYTES = 2 * 1024**3  # protobuf cannot parse a message above 2 GiB
MAX_MESSAGE_CHARS = 300

InputKind = Literal["waveform", "tokens", "other"]
ScoreKind = Literal["score", "probability", "features"]

# ONNX TensorProto element types -> numpy-style names (others: the lowercased ONNX name).
_DTYPE_NAMES: dict[str, str] = {
    "FLOAT": "float32", "DOUBLE": "float64", "FLOAT16": "float16", "BFLOAT16": "bfloat16",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "BOOL": "bool", "STRING": "string", "COMPLEX64": "complex64", "COMPLEX128": "complex128",
}
# Spellings users write in params.yaml or copy from onnxruntime ("tensor(float)").
_DTYPE_ALIASES: dict[str, str] = {
    "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
    "float32": "float32", "float64": "float64", "float16": "float16", "bfloat16": "bfloat16",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64", "uint8": "uint8",
    "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
    "string": "string", "complex64": "complex64", "complex128": "complex128",
}
# Bytes per element for the fixed-size ONNX element types (sub-byte types are packed).
_ITEM_BITS: dict[str, int] = {
    "FLOAT": 32, "DOUBLE": 64, "FLOAT16": 16, "BFLOAT16": 16, "INT8": 8, "INT16": 16,
    "INT32": 32, "INT64": 64, "UINT8": 8, "UINT16": 16, "UINT32": 32, "UINT64": 64, "BOOL": 8,
    "COMPLEX64": 64, "COMPLEX128": 128, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8,
    "FLOAT8E5M2": 8, "FLOAT8E5M2FNUZ": 8, "FLOAT8E8M0": 8, "UINT4": 4, "INT4": 4,
    "FLOAT4E2M1": 4, "UINT2": 2, "INT2": 2,
}
_FLOAT_DTYPES = frozenset({"float32", "float64", "float16", "bfloat16"})
_INT_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})
_FEATURE_NAMES = ("features", "feats")


def _short(text: object) -> str:
    """First line-ish of a foreign error message, flattened and capped."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_MESSAGE_CHARS else flat[: MAX_MESSAGE_CHARS - 3] + "..."


# ---------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class TensorInfo:
    """One model input or output: name, element type and shape (symbolic dims kept)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...] | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype,
                "shape": None if self.shape is None else list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorInfo:
        shape = data.get("shape")
        return cls(name=data["name"], dtype=data["dtype"],
                   shape=None if shape is None else tuple(shape))

    def describe(self) -> str:
        return f"{self.name} {self.dtype} {format_shape(self.shape)}"


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    """One file of a model: path relative to the model's folder (POSIX), size, sha256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileEntry:
        return cls(path=data["path"], size=int(data["size"]), sha256=data["sha256"])


@dataclass(frozen=True, kw_only=True)
class ExternalDataFile:
    """An external data file of a model, already checked to be confined to its folder.

    ``path`` is relative to the model's folder (POSIX); ``abspath`` is where it lies;
    ``tensors`` counts the tensors stored in it.
    """

    path: str
    abspath: Path
    size: int
    tensors: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "tensors": self.tensors}


@dataclass(frozen=True, kw_only=True)
class ModelDigest:
    """The model's sha256 (see the module docstring) and every file it is made of."""

    sha256: str
    files: tuple[FileEntry, ...]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "files": [f.to_dict() for f in self.files]}


@dataclass(frozen=True, kw_only=True)
class ModelContract:
    """What a model expects and returns, and which output relgate scores with.

    ``input_kind`` describes the primary input (the first, or the one chosen with
    ``--input``): a float ``[N, L]`` (or ``[N, 1, L]``) waveform, integer ``[N, T]``
    tokens, or other. ``score_output`` is the output relgate reads a positive-class score
    from; ``score_kind`` says how: ``score`` (``[N]`` or ``[N, 1]``, used as is),
    ``probability`` (``[N, K]``, column ``positive_index``) or ``features`` (``[N, D]``:
    the mean over D, or column ``positive_index`` when one is given).
    """

    ir_version: int
    opsets: Mapping[str, int]
    producer: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    input_kind: InputKind
    score_output: str
    score_kind: ScoreKind
    positive_index: int | None
    primary_input: str | None = None
    #: what the output holds (logit, probability, features; None: neither declared nor
    #: proven), why relgate knows it, a features reducer and a ZipMap's class keys. They
    #: are not part of the contract record; the validation report records them as task.
    output_type: str | None = None
    type_reason: str = ""
    reducer: str | None = None
    class_keys: tuple[int | str, ...] | None = None

    def input(self, name: str) -> TensorInfo:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def output(self, name: str) -> TensorInfo:
        for t in self.outputs:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def features_output(self) -> str | None:
        """The ``features``/``feats`` output (``[N, D]``) used for health stats, if any."""
        if self.score_kind == "features":
            return self.score_output
        for t in self.outputs:
            if t.name != self.score_output and _is_features_name(t.name) and t.rank == 2 \
                    and t.dtype in _FLOAT_DTYPES:
                return t.name
        return None

    def task_dict(self, kind: str = "binary") -> dict[str, Any]:
        """The report's ``task`` block: what the output holds and why relgate knows it."""
        out: dict[str, Any] = {"kind": kind, "output": self.score_output,
                               "output_type": self.output_type, "reason": self.type_reason}
        if self.reducer is not None:
            out["reducer"] = self.reducer
        if self.class_keys is not None:
            out["class_keys"] = list(self.class_keys)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The record that ``common.schema.json#/$defs/contract`` describes."""
        return {
            "ir_version": self.ir_version,
            "opsets": dict(sorted(self.opsets.items())),
            "producer": self.producer,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "input_kind": self.input_kind,
            "score_output": self.score_output,
            "score_kind": self.score_kind,
            "positive_index": self.positive_index,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelContract:
        inputs = tuple(TensorInfo.from_dict(t) for t in data["inputs"])
        return cls(
            ir_version=int(data.get("ir_version", 0)),
            opsets=dict(data.get("opsets", {})),
            producer=str(data.get("producer", "")),
            inputs=inputs,
            outputs=tuple(TensorInfo.from_dict(t) for t in data["outputs"]),
            input_kind=data.get("input_kind", "other"),
            score_output=data.get("score_output", ""),
            score_kind=data.get("score_kind", "score"),
            positive_index=data.get("positive_index"),
            primary_input=inputs[0].name if inputs else None,
        )


def format_shape(shape: tuple[int | str | None, ...] | None) -> str:
    """``[N, 1600]``; ``?`` for an unknown dim; ``(unknown rank)`` for no shape."""
    if shape is None:
        return "(unknown rank)"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def normalize_dtype(name: str) -> str:
    """Canonical dtype name: ``float`` / ``tensor(float)`` / ``FLOAT`` -> ``float32``."""
    text = name.strip()
    if text.startswith("tensor(") and text.endswith(")"):
        text = text[7:-1]
    low = text.lower()
    return _DTYPE_ALIASES.get(low, _DTYPE_NAMES.get(text.upper(), low))


# ---------------------------------------------------------------- files and external data


def _model_file(path: str | os.PathLike[str]) -> Path:
    """The model path, checked to be a readable regular file of sane size."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ModelError(f"{p}: no such file", hint="check the model path") from None
    except OSError as exc:
        raise ModelError(f"{p}: cannot stat ({exc.strerror})", hint="check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelError(f"{p}: is a directory", hint="point at the .onnx file")
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{p}: not a regular file", hint="point at the .onnx file")
    if st.st_size == 0:
        raise ModelError(f"{p}: empty file, not an ONNX model", hint="re-export the model")
    if st.st_size > MAX_PROTO_BYTES:
        raise ModelError(
            f"{p}: {st.st_size} bytes, above the 2 GiB protobuf limit for an .onnx file",
            hint="export with external data (weights in a .onnx.data file)",
        )
    return p


def _load_proto(path: Path) -> Any:
    """Parse the ModelProto without touching external data."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError, RuntimeError from a hostile proto, ...
        if out_of_memory(exc):  # "Arena alloc failed": the memory, not the file
            raise memory_error(path, "parsing it") from None
        raise ModelError(
            f"{path}: not a valid ONNX file "
            f"({type(exc).__name__}: {_short(exc) or 'parse failed'})",
            hint="the file is truncated, corrupted or not ONNX; re-export or re-download it",
        ) from None


def _iter_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of a model (initializers, attributes, subgraphs, functions).

    Iterative rather than recursive so a hostile nesting depth cannot blow the stack.
    """
    graphs: list[Any] = [model.graph]
    nodes: list[Any] = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            g = graphs.pop()
            yield from g.initializer
            for sp in g.sparse_initializer:
                yield sp.values
                yield sp.indices
            nodes.extend(g.node)
            continue
        node = nodes.pop()
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            sparse = ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(
                a.sparse_tensors
            )
            for sp in sparse:
                yield sp.values
                yield sp.indices
            if a.HasField("g"):
                graphs.append(a.g)
            graphs.extend(a.graphs)


def _expected_nbytes(tensor: Any) -> int | None:
    import onnx

    try:
        type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
    except ValueError:
        return None
    bits = _ITEM_BITS.get(type_name)
    if bits is None:
        return None
    count = math.prod(int(d) for d in tensor.dims)
    return (count * bits + 7) // 8


def _confined(base: Path, location: str, *, model: Path, tensor: str) -> tuple[str, Path]:
    """Check one external data location against the confinement rules; lstat only."""
    where = f"{model}: tensor {tensor!r} external data location {location!r}"
    if not location or "\x00" in location or "\\" in location or "\n" in location:
        raise ModelError(f"{where} is not a plain relative path",
                         hint="external data must be a file next to the model")
    pure = PurePosixPath(location)
    if pure.is_absolute() or location.startswith("/") or (len(location) > 1 and location[1] == ":"):
        raise ModelError(f"{where} is an absolute path, outside the model's folder",
                         hint="external data must be a file in the model's folder")
    parts = [p for p in location.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ModelError(f"{where} contains '..', which leaves the model's folder",
                         hint="external data must be a file in the model's folder")
    if not parts:
        raise ModelError(f"{where} is empty", hint="re-export the model")
    current = base
    for i, part in enumerate(parts):
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            rel = "/".join(parts[: i + 1])
            raise ModelError(
                f"{model}: external data file {rel!r} is missing (tensor {tensor!r} needs "
                f"{location!r} next to the model)",
                hint="copy the model together with its data file(s) (e.g. model.onnx.data)",
            ) from None
        except OSError as exc:
            raise ModelError(f"{where}: cannot stat ({exc.strerror})",
                             hint="check the model folder") from None
        last = i == len(parts) - 1
        if stat.S_ISLNK(st.st_mode):
            link = "/".join(parts[: i + 1])
            what = "is a symlink" if last else f"goes through the symlink {link!r}"
            raise ModelError(f"{where} {what}; refusing to follow it out of the model's folder",
                             hint="replace the symlink with the real file")
        if not last and not stat.S_ISDIR(st.st_mode):
            raise ModelError(f"{where}: {'/'.join(parts[: i + 1])!r} is not a folder",
                             hint="re-export the model")
        if last:
            if not stat.S_ISREG(st.st_mode):
                raise ModelError(f"{where} is not a regular file", hint="re-export the model")
            if st.st_nlink > 1:
                raise ModelError(
                    f"{where} is a hard-linked file ({st.st_nlink} links); "
                    "it may be shared with a file outside the model's folder",
                    hint="copy the file (cp --no-preserve=links) instead of hard-linking it",
                )
    return "/".join(parts), current


# The keys the ONNX spec defines for external data (onnx.proto, TensorProto.external_data).
_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum"})
_DECIMAL = re.compile(r"[0-9]{1,20}")


def _external_info(p: Path, tensor: str, entries: Any) -> dict[str, str]:
    """The external data entries of a tensor: known keys only, each at most once.

    onnx and onnxruntime read a repeated key differently from a dict (and from each
    other), so a second ``location`` could point elsewhere than the one checked here.
    """
    info: dict[str, str] = {}
    for e in entries:
        if e.key not in _EXTERNAL_KEYS:
            raise ModelError(f"{p}: tensor {tensor!r} external data key {e.key[:40]!r} is not "
                             "allowed (only location, offset, length, checksum)",
                             hint="re-export the model")
        if e.key in info:
            raise ModelError(f"{p}: tensor {tensor!r} external data key {e.key!r} appears twice",
                             hint="re-export the model")
        info[e.key] = e.value
    return info


def external_data_files(path: str | os.PathLike[str]) -> list[ExternalDataFile]:
    """The external data files of a model, validated, sorted by relative path.

    Refuses (ModelError, exit 2, naming the file) a location that is absolute, contains
    ``..``, goes through or is a symlink, is hard-linked, is missing, or an
    offset/length outside the file -- all before any data file is opened.
    """
    p = _model_file(path)
    return _external_from_proto(p, _load_proto(p))


def _external_from_proto(p: Path, model: Any) -> list[ExternalDataFile]:
    import onnx

    base = p.parent
    found: dict[str, tuple[Path, int, int]] = {}
    try:
        tensors = list(_iter_tensors(model))
    except RecursionError:
        raise ModelError(f"{p}: graph nesting too deep",
                         hint="this is not a reasonable model") from None
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        name = t.name or "<unnamed>"
        info = _external_info(p, name, t.external_data)
        rel, full = _confined(base, info.get("location", ""), model=p, tensor=name)
        size = os.lstat(full).st_size
        where = f"{p}: tensor {name!r} in {rel!r}"
        if any(not _DECIMAL.fullmatch(info.get(k, "0")) for k in ("offset", "length")):
            raise ModelError(f"{where}: offset/length is not a plain decimal integer",
                             hint="re-export the model")
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
        expected = _expected_nbytes(t)
        if offset < 0 or (length is not None and length < 0):
            raise ModelError(f"{where}: negative offset or length", hint="re-export the model")
        if length is not None and expected is not None and length != expected:
            raise ModelError(
                f"{where}: length {length} does not match the tensor's {expected} bytes",
                hint="the model and its data file do not belong together; re-export it",
            )
        span = length if length is not None else (expected if expected is not None else 0)
        if offset + span > size:
            raise ModelError(
                f"{where}: bytes {offset}..{offset + span} lie outside the {size}-byte file",
                hint="the data file is truncated or belongs to another export; re-copy it",
            )
        _, _, count = found.get(rel, (full, size, 0))
        found[rel] = (full, size, count + 1)
    return [ExternalDataFile(path=rel, abspath=full, size=size, tensors=n)
            for rel, (full, size, n) in sorted(found.items())]


def model_digest(path: str | os.PathLike[str]) -> ModelDigest:
    """sha256 of the model and of each of its files (see the module docstring)."""
    p = _model_file(path)
    externals = external_data_files(p)
    entries = [FileEntry(path=p.name, size=os.stat(p).st_size, sha256=sha256_file(p))]
    for ext in externals:
        if ext.path == p.name:
            continue
        entries.append(FileEntry(path=ext.path, size=ext.size, sha256=sha256_file(ext.abspath)))
    entries.sort(key=lambda e: e.path)
    if len(entries) == 1:
        digest = entries[0].sha256
    else:
        text = "".join(f"{e.sha256}  {e.path}\n" for e in entries)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return ModelDigest(sha256=digest, files=tuple(entries))


# ---------------------------------------------------------------- the contract


def _value_info(vi: Any) -> TensorInfo:
    import onnx

    def type_name(tp: Any) -> tuple[str, tuple[int | str | None, ...] | None]:
        which = tp.WhichOneof("value")
        if which in ("tensor_type", "sparse_tensor_type"):
            tt = getattr(tp, which)
            try:
                elem = onnx.TensorProto.DataType.Name(tt.elem_type)
            except ValueError:
                elem = f"type{tt.elem_type}"
            dtype = _DTYPE_NAMES.get(elem, elem.lower())
            if which == "sparse_tensor_type":
                dtype = f"sparse({dtype})"
            if not tt.HasField("shape"):
                return dtype, None
            dims: list[int | str | None] = []
            for d in tt.shape.dim:
                kind = d.WhichOneof("value")
                dims.append(int(d.dim_value) if kind == "dim_value"
                            else (d.dim_param or None) if kind == "dim_param" else None)
            return dtype, tuple(dims)
        if which == "sequence_type":
            return f"sequence({type_name(tp.sequence_type.elem_type)[0]})", None
        if which == "map_type":
            try:
                key = onnx.TensorProto.DataType.Name(tp.map_type.key_type).lower()
            except ValueError:
                key = f"type{tp.map_type.key_type}"
            value = type_name(tp.map_type.value_type)[0]
            return f"map({_DTYPE_ALIASES.get(key, key)},{value})", None
        if which == "optional_type":
            return f"optional({type_name(tp.optional_type.elem_type)[0]})", None
        return "undefined", None

    dtype, shape = type_name(vi.type)
    return TensorInfo(name=vi.name, dtype=dtype, shape=shape)


def _is_features_name(name: str) -> bool:
    low = name.lower()
    return any(low == n or low.endswith(("_" + n, "." + n, "/" + n)) for n in _FEATURE_NAMES)


def _input_kind(t: TensorInfo) -> InputKind:
    if t.shape is None:
        return "other"
    if t.dtype in _FLOAT_DTYPES and (len(t.shape) == 2 or (len(t.shape) == 3 and t.shape[1] == 1)):
        return "waveform"
    if t.dtype in _INT_DTYPES and len(t.shape) == 2:
        return "tokens"
    return "other"


def _score_like(t: TensorInfo) -> bool:
    return t.dtype in _FLOAT_DTYPES and t.shape is not None and (
        len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1))


def _proba_like(t: TensorInfo) -> bool:
    return t.dtype in _FLOAT_DTYPES and t.shape is not None and len(t.shape) == 2 \
        and t.shape[1] == 2


def _kind_of(t: TensorInfo, positive_index: int | None) -> ScoreKind:
    """How to read a score out of an output the user named (its shape only)."""
    if _zipmap_like(t):
        return "probability"
    if _score_like(t) or (t.shape is None and positive_index is None):
        return "score"
    if _is_features_name(t.name) and t.rank == 2:
        return "features"
    return "probability"


def _zipmap_like(t: TensorInfo) -> bool:
    """A ``sequence(map(key, float))`` output: what skl2onnx's ZipMap returns."""
    return t.dtype.startswith("sequence(map(") and "float" in t.dtype


def _pick_output(outputs: tuple[TensorInfo, ...], where: str) -> tuple[TensorInfo, ScoreKind]:
    """Auto-pick the score output: score-like, else [N, 2] probability or a ZipMap, else
    features. This picks which output to read, never what its values mean (the type)."""
    def by_name(cands: list[TensorInfo], *words: str) -> TensorInfo | None:
        for w in words:
            for t in cands:
                if w in t.name.lower():
                    return t
        return cands[0] if cands else None

    pick = by_name([t for t in outputs if _score_like(t)], "score", "logit", "prob")
    if pick is not None:
        return pick, "score"
    pick = by_name([t for t in outputs if _proba_like(t) or _zipmap_like(t)], "prob")
    if pick is not None:
        return pick, "probability"
    feats = [t for t in outputs if _is_features_name(t.name) and t.rank == 2
             and t.dtype in _FLOAT_DTYPES]
    if feats:
        return feats[0], "features"
    listed = ", ".join(t.describe() for t in outputs) or "none"
    raise ModelError(
        f"{where}: no output looks like a score ([N] or [N, 1]), a probability ([N, 2] or a "
        f"ZipMap) or features ([N, D]); outputs: {listed}",
        hint="choose one with --output NAME (or task.output in params.yaml)",
    )


# ---------------------------------------------------------------- what the output means

#: ops that pass values through unchanged (a probability stays one)
_PASS_THROUGH = frozenset({"Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape", "Flatten"})
#: ai.onnx.ml classifiers whose second output is a probability matrix under these transforms
_ML_CLASSIFIERS = frozenset({"LinearClassifier", "TreeEnsembleClassifier", "SVMClassifier"})
_PROB_TRANSFORMS = frozenset({"LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"})
BINARY_TYPES = ("logit", "probability", "features")
REDUCERS = ("mean", "max", "max_abs", "l2", "column")


def proven_output_type(model: Any, output: str) -> tuple[str | None, str]:
    """What the graph proves about *output*: ``("probability", why)`` when a Sigmoid makes it,
    ``("probabilities", why)`` for a Softmax, a ZipMap or an ai.onnx.ml classifier's
    probability output; ``(None, why)`` otherwise. Value-preserving ops (Cast, Reshape...)
    are followed back; nothing else is inferred."""
    producers = {o: n for n in model.graph.node for o in n.output}
    name, via = output, ""
    for _ in range(64):
        node = producers.get(name)
        if node is None:
            return None, f"{output!r} is a graph input or initializer{via}"
        op = node.op_type
        if op == "Sigmoid":
            return "probability", f"produced by Sigmoid{via}"
        if op == "Softmax":
            return "probabilities", f"produced by Softmax{via}"
        if op == "ZipMap":
            return "probabilities", f"produced by ZipMap{via}"
        if op in _ML_CLASSIFIERS and len(node.output) > 1 and name == node.output[1]:
            transform = next((a.s.decode("utf-8", "replace") for a in node.attribute
                              if a.name == "post_transform"), "NONE")
            if transform in _PROB_TRANSFORMS:
                return "probabilities", f"produced by {op} (post_transform {transform}){via}"
            return None, f"produced by {op} (post_transform {transform}){via}"
        if op in _PASS_THROUGH and node.input:
            name, via = node.input[0], f" (through {op})" + via
            continue
        return None, f"produced by {op}{via}"
    return None, "produced by a long chain of reshapes"


def _zipmap_keys(model: Any, output: str) -> tuple[int | str, ...] | None:
    """The class keys of the ZipMap node that produces *output*, in their order."""
    for node in model.graph.node:
        if node.op_type == "ZipMap" and output in node.output:
            for a in node.attribute:
                if a.name == "classlabels_int64s":
                    return tuple(int(k) for k in a.ints)
                if a.name == "classlabels_strings":
                    return tuple(s.decode("utf-8", "replace") for s in a.strings)
    return None


def _declared_type(out: TensorInfo, task: Any, output_type: str | None) -> str | None:
    """The type declared for *out*: the flag, else ``task.output_type`` when the task names this
    output (or no output at all)."""
    if output_type is not None:
        return output_type
    if task is None or task.output_type is None:
        return None
    if task.output is not None and task.output != out.name:
        return None  # declared for another output than the one chosen with --output
    return str(task.output_type)


def _positive_column(p: Path, out: TensorInfo, task: Any, keys: tuple[int | str, ...] | None,
                     index: int | None, width: int | None) -> int | None:
    """The positive class's column: --positive-index, else task.positive (a column, a ZipMap
    key or a class name), else 1 for a two-column output (the key 1 for a ZipMap)."""
    if index is not None:
        return index
    positive = None if task is None else task.positive
    classes = None if task is None else task.classes
    if isinstance(positive, str) and keys is None:
        if classes is None or positive not in classes:
            raise ModelError(f"{p}: task.positive {positive!r} is not a class name",
                             hint="name a class of task.classes")
        return list(classes).index(positive)
    if keys is not None:
        want: int | str = 1 if positive is None else positive
        if want not in keys:
            raise ModelError(f"{p}: the ZipMap output {out.name!r} has class keys "
                             f"{list(keys)}, not the positive key {want!r}",
                             hint="set task.positive to the positive class's key")
        return keys.index(want)
    if positive is not None:
        return int(positive)
    return 1 if width in (2, None) else None


def load_contract(
    path: str | os.PathLike[str],
    *,
    input_name: str | None = None,
    output_name: str | None = None,
    positive_index: int | None = None,
    task: Any = None,
    output_type: str | None = None,
    reducer: str | None = None,
) -> ModelContract:
    """Load a model safely and describe its contract.

    Checks external data confinement, runs ``onnx.checker`` by path, then reads the
    inputs, outputs, opsets and picks the score output (overridable; ``task`` is the
    params' ``TaskSpec``, the flags win over it). The output's type comes from the flag or
    the task, else from what the graph proves (:func:`proven_output_type`), else stays None
    (:func:`require_output_type` refuses that). Anything wrong is a one-line ModelError
    (exit 2).
    """
    import onnx

    p = _model_file(path)
    model = _load_proto(p)
    _external_from_proto(p, model)
    try:
        onnx.checker.check_model(str(p))
    except Exception as exc:  # ValidationError, or anything the C++ side throws
        if out_of_memory(exc):
            raise memory_error(p, "while onnx.checker read it") from None
        raise ModelError(f"{p}: onnx.checker rejects the model: {_short(exc)}",
                         hint="fix or re-export the model") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_value_info(vi) for vi in model.graph.input if vi.name not in initializers)
    outputs = tuple(_value_info(vi) for vi in model.graph.output)
    if not inputs:
        raise ModelError(f"{p}: the model has no inputs", hint="this is not a scorer")
    if not outputs:
        raise ModelError(f"{p}: the model has no outputs", hint="this is not a scorer")
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    producer = " ".join(x for x in (model.producer_name, model.producer_version) if x)

    if input_name is None:
        primary = inputs[0]
    else:
        primary = next((t for t in inputs if t.name == input_name), None)  # type: ignore[assignment]
        if primary is None:
            raise ModelError(
                f"{p}: no input named {input_name!r}; inputs: "
                + ", ".join(t.describe() for t in inputs),
                hint="pick one of the listed inputs with --input",
            )
    wanted = output_name if output_name is not None else (None if task is None else task.output)
    if wanted is None:
        out, kind = _pick_output(outputs, str(p))
    else:
        found = next((t for t in outputs if t.name == wanted), None)
        if found is None:
            raise ModelError(
                f"{p}: no output named {wanted!r}; outputs: "
                + ", ".join(t.describe() for t in outputs),
                hint="pick one of the listed outputs with --output (or task.output)",
            )
        out = found
        if out.dtype not in _FLOAT_DTYPES and not _zipmap_like(out):
            raise ModelError(f"{p}: output {out.describe()} is not a float tensor",
                             hint="pick a score, probability or features output with --output")
        kind = _kind_of(out, positive_index)
    keys = _zipmap_keys(model, out.name) if _zipmap_like(out) else None
    if _zipmap_like(out) and keys is None:
        raise ModelError(f"{p}: output {out.describe()} is a sequence of maps not made by a "
                         "ZipMap node", hint="export with zipmap: False, or pick another output")
    proof, why = proven_output_type(model, out.name)
    declared = _declared_type(out, task, output_type)
    pos = positive_index
    red = reducer if reducer is not None else (None if task is None or declared is None
                                               or declared != task.output_type else task.reducer)
    binary = task is None or task.kind == "binary"
    if declared is None:
        resolved: str | None = None if proof is None else (
            "probability" if binary and proof == "probabilities" else proof)
        reason = why + (f" -> {resolved}" if resolved else " -> not proven (declare the type)")
        if proof == "probability" and out.rank not in (None, 1) and not _score_like(out):
            resolved, reason = None, why + " over several columns -> not proven (declare it)"
    else:
        resolved, reason = declared, f"declared {declared} ({why})"
        if proof is not None and declared in ("logit", "logits"):
            raise ModelError(f"{p}: output {out.name!r} is declared {declared!r}, but the graph "
                             f"proves it is a probability ({why})",
                             hint="declare output_type: probability (probabilities for "
                                  "multi-class), or pick the output before the "
                                  f"{why.split()[2]} with --output")
    if resolved is not None and binary and resolved not in BINARY_TYPES:
        raise ModelError(f"{p}: output_type {resolved!r} is a multi-class type; the task is binary",
                         hint="use logit, probability or features for kind: binary")
    if resolved == "features":
        if red is None:
            raise ModelError(f"{p}: output {out.name!r} is declared features but no reducer is "
                             "given", hint="set task.reducer (mean, max, max_abs, l2 or column) "
                                           "or --reducer")
        if out.dtype not in _FLOAT_DTYPES or out.rank not in (2, None):
            raise ModelError(f"{p}: output {out.describe()} is declared features, which are "
                             "[N, D] floats", hint="declare the type this output has")
        kind = "features"
        if red == "column":
            pos = _positive_column(p, out, task, None, positive_index, None)
            if pos is None:
                raise ModelError(f"{p}: reducer column needs the column",
                                 hint="set task.positive or --positive-index")
        elif positive_index is not None:
            raise ModelError(f"{p}: --positive-index applies to reducer column only",
                             hint="drop --positive-index, or use --reducer column")
    elif resolved in ("logit", "probability"):
        width = out.shape[-1] if out.shape else None
        if _score_like(out) and keys is None:
            kind = "score"
        elif keys is not None or (out.rank == 2 and out.dtype in _FLOAT_DTYPES):
            kind = "score" if resolved == "logit" else "probability"
            if resolved == "logit" and width != 2:
                raise ModelError(
                    f"{p}: output {out.describe()} is declared a binary logit, but one column of "
                    f"{width if isinstance(width, int) else 'K'} multi-class logits is not a "
                    "log-odds score (reading it as one gives wrong numbers)",
                    hint="declare task.kind: multiclass with output_type: logits, or export a "
                         "binary model")
            pos = _positive_column(p, out, task, keys, positive_index,
                                   width if isinstance(width, int) else None)
            if pos is None:
                raise ModelError(f"{p}: output {out.describe()} has more than two columns; "
                                 "which one is the positive class?",
                                 hint="set task.positive (or --positive-index), or declare "
                                      "task.kind: multiclass")
        else:
            raise ModelError(f"{p}: output {out.describe()} cannot be a binary "
                             f"{resolved}", hint="pick an [N], [N, 1] or [N, K] float output")
    pos = _check_positive_index(p, out, kind, pos, keys)
    return ModelContract(
        ir_version=int(model.ir_version),
        opsets=opsets,
        producer=producer,
        inputs=inputs,
        outputs=outputs,
        input_kind=_input_kind(primary),
        score_output=out.name,
        score_kind=kind,
        positive_index=pos,
        primary_input=primary.name,
        output_type=resolved,
        type_reason=reason,
        reducer=red if resolved == "features" else None,
        class_keys=keys,
    )


def require_output_type(contract: ModelContract, where: str | os.PathLike[str]) -> str:
    """The contract's output type, or a one-line refusal listing the outputs and the choices:
    relgate never guesses whether an output is a logit or a probability."""
    if contract.output_type is not None:
        return contract.output_type
    out = contract.output(contract.score_output)
    listed = ", ".join(t.describe() for t in contract.outputs)
    raise ModelError(
        f"{where}: what output {out.name!r} holds is not declared and the graph does not prove "
        f"it ({contract.type_reason}); outputs: {listed}",
        hint=f"declare it in params.yaml (task: {{kind: binary, output: {out.name}, "
             "output_type: logit | probability | features (with reducer: mean | max | max_abs "
             "| l2 | column)}) or pass --output-type",
    )


def _check_positive_index(
    p: Path, out: TensorInfo, kind: ScoreKind, index: int | None,
    keys: tuple[int | str, ...] | None = None,
) -> int | None:
    width: int | str | None = len(keys) if keys is not None else (
        out.shape[-1] if out.shape else None)
    if index is not None and index < 0:
        raise ModelError(f"{p}: --positive-index {index} is negative", hint="use 0, 1, ...")
    if kind == "probability":
        index = 1 if index is None else index
    if index is not None and isinstance(width, int) and (keys is not None or (
            out.rank and out.rank >= 2)) and index >= width:
        raise ModelError(
            f"{p}: --positive-index {index} is outside output {out.describe()}",
            hint=f"use an index below {width}",
        )
    if index is not None and kind == "score" and out.rank == 1:
        raise ModelError(f"{p}: output {out.describe()} has one value per sample; "
                         "--positive-index does not apply", hint="drop --positive-index")
    return index


def check_contract(contract: ModelContract, spec: Any) -> None:
    """Compare a model's contract with the one declared in params (``ContractSpec``).

    A declared dtype matches its aliases (``float`` = ``float32``); a declared integer dim
    must equal the model's; a declared string dim matches any symbolic (dynamic) dim,
    whatever its name, but not a fixed one; a declared null matches anything. On mismatch,
    a ModelError lists every difference as ``-declared +model``.
    """
    diffs: list[str] = []
    for side, declared, actual in (("input", spec.inputs, contract.inputs),
                                   ("output", spec.outputs, contract.outputs)):
        have = {t.name: t for t in actual}
        for want in declared:
            got = have.get(want.name)
            if got is None:
                names = ", ".join(have) or "none"
                diffs.append(f"{side} {want.name!r}: -declared +missing (model {side}s: {names})")
                continue
            if want.dtype is not None and normalize_dtype(want.dtype) != got.dtype:
                diffs.append(f"{side} {want.name!r} dtype: -{normalize_dtype(want.dtype)} "
                             f"+{got.dtype}")
            if want.shape is not None and not _shape_matches(tuple(want.shape), got.shape):
                diffs.append(f"{side} {want.name!r} shape: -{format_shape(tuple(want.shape))} "
                             f"+{format_shape(got.shape)}")
    if diffs:
        raise ModelError(
            f"the model does not keep the declared contract ({len(diffs)} difference"
            f"{'s' if len(diffs) > 1 else ''}): " + "; ".join(diffs),
            hint="fix the export, or update contract: in params.yaml if the change is intended",
        )


def _shape_matches(
    want: tuple[int | str | None, ...], got: tuple[int | str | None, ...] | None
) -> bool:
    if got is None or len(want) != len(got):
        return False
    for w, g in zip(want, got, strict=True):
        if w is None:
            continue
        if isinstance(w, int) and w != g:
            return False
        if isinstance(w, str) and isinstance(g, int):
            return False
    return True


# ---------------------------------------------------------------- guarded onnxruntime


def session_options(threads: int) -> Any:
    """Fixed onnxruntime settings so that repeated runs give bit-identical scores."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.use_deterministic_compute = True
    so.log_severity_level = 4
    return so


_PROBE_CODE = r"""
import os, resource, sys
path, threads, limit_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    import numpy as np
    import onnxruntime as ort
except (MemoryError, ImportError, OSError) as exc:  # e.g. under a tight inherited ulimit -v
    sys.stderr.write("IMPORT " + type(exc).__name__ + ": " + str(exc)[:300] + "\n")
    sys.exit(5)
with open("/proc/self/statm") as fh:
    used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
if limit_mb > 0:
    # Lower the address-space limit only: a limit inherited from the caller (ulimit -v)
    # stays in force when it is tighter, and is never raised (that would fail anyway).
    cap = used + limit_mb * 1024 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    for inherited in (soft, hard):
        if inherited != resource.RLIM_INFINITY:
            cap = min(cap, inherited)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.log_severity_level = 4
try:
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
except MemoryError:
    sys.stderr.write("MEMORY\n"); sys.exit(3)
except Exception as exc:
    text = " ".join(str(exc).split())
    tag = "MEMORY " if "bad_alloc" in text else "LOAD "
    sys.stderr.write(tag + type(exc).__name__ + ": " + text[:400] + "\n")
    sys.exit(3 if "bad_alloc" in text else 4)
sys.stdout.write("LOADED\n"); sys.stdout.flush()
# One sample of zeros, when every input's shape is known once dynamic dims are set to 1:
# fuzzed models crash at run time as well as at load time. An exception here is not
# fatal (the real data may be fine), nor is slowness; a crash is.
types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
         "tensor(int32)": np.int32, "tensor(float16)": np.float16, "tensor(bool)": np.bool_,
         "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}
feeds = {}
for i in sess.get_inputs():
    if i.type not in types or i.shape is None:
        feeds = None; break
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
    if np.prod(shape) > 64 * 1024 * 1024:
        feeds = None; break
    feeds[i.name] = np.zeros(shape, dtype=types[i.type])
if feeds is not None:
    try:
        sess.run(None, feeds)
    except MemoryError:
        sys.stderr.write("MEMORY\n"); sys.exit(3)
    except Exception as exc:  # running out of memory on ONE sample is fatal, not "slow"
        text = " ".join(str(exc).split())
        if "bad_alloc" in text or "Failed to allocate memory" in text:
            sys.stderr.write("MEMORY " + text[:400] + "\n"); sys.exit(3)
sys.exit(0)
"""


#: what running out of address space looks like in a child's error text
_MEMORY_WORDS = ("bad_alloc", "MemoryError", "Failed to allocate", "Cannot allocate memory",
                 "failed to map segment", "Resource temporarily unavailable",
                 "std::system_error")


def inherited_memory_limit_mb() -> int | None:
    """The address-space limit (``RLIMIT_AS``, ``ulimit -v``) this process runs under, in MB
    (the lower of soft and hard), or None when unlimited. Children inherit it; the probe
    never raises it."""
    import resource

    limits = [v for v in resource.getrlimit(resource.RLIMIT_AS) if v != resource.RLIM_INFINITY]
    return min(limits) // (1024 * 1024) if limits else None


#: what running out of memory looks like in an exception from protobuf ("Arena alloc
#: failed"), onnx.checker or onnxruntime (std::bad_alloc) in this process
_OOM_WORDS = ("bad_alloc", "Arena alloc failed", "Failed to allocate", "Cannot allocate memory")


def out_of_memory(exc: BaseException, words: tuple[str, ...] = _OOM_WORDS) -> bool:
    """Whether *exc* says the process ran out of memory (a MemoryError, or the words)."""
    return isinstance(exc, MemoryError) or any(w in str(exc) for w in words)


def memory_error(path: str | os.PathLike[str], doing: str) -> ModelError:
    """Running out of memory *doing* something with a model (exit 2): under an inherited
    address-space limit that limit is named (relgate never raises it), else the machine's
    memory. Neither says the file is corrupt: the same model loads with more memory."""
    inherited = inherited_memory_limit_mb()
    if inherited is not None:
        return ModelError(
            f"{path}: out of memory {doing}, under the inherited address-space limit "
            f"(ulimit -v) of {inherited} MB", hint=(
                f"the model does not fit in that limit (ulimit -v {inherited * 1024} KiB), "
                "which relgate never raises; raise it (or lift it) and try again"))
    return ModelError(f"{path}: out of memory {doing}",
                      hint="free memory or use a larger machine; a small model that needs this "
                           "much may be hostile")


def describe_child_failure(returncode: int, stderr: str, *, memory_mb: int,
                           inherited_mb: int | None = None) -> str:
    """Why the probe child failed, in words (a pure function of how it ended).

    Under an inherited address-space limit (*inherited_mb*), running out of memory is
    blamed on that limit, which the probe cannot raise, not on the model.
    """
    text = " ".join(stderr.split())
    memory = any(w in text for w in _MEMORY_WORDS)
    cap = (f"the inherited address-space limit (ulimit -v) of {inherited_mb} MB"
           if inherited_mb is not None else f"its {memory_mb} MB memory limit")
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGKILL:
            return f"onnxruntime was killed ({name}) while loading it, likely out of memory"
        if -returncode == signal.SIGABRT and (memory or "memory" in text.lower()):
            return f"onnxruntime ran out of {cap} loading it ({name})"
        if inherited_mb is not None and (memory or "memory" in text.lower()):
            return f"onnxruntime crashed ({name}) while loading it, out of {cap}"
        return f"onnxruntime crashed ({name}) while loading it"
    if returncode == 5 or text.startswith("IMPORT "):
        if memory or inherited_mb is not None:
            return f"the model probe could not start onnxruntime within {cap}: {_short(text)}"
        return f"the model probe could not import onnxruntime: {_short(text)}"
    if returncode == 3 or memory:
        return f"onnxruntime ran out of {cap} loading it"
    last = text.split("LOAD ", 1)[-1] if "LOAD " in text else text
    return f"onnxruntime cannot load it: {_short(last) or f'exit code {returncode}'}"


def default_memory_mb(total_bytes: int) -> int:
    """Address space the probe may add on top of the interpreter: 1 GiB + 4x the model."""
    return 1024 + 4 * math.ceil(total_bytes / 1024**2)


def probe_session(
    path: str | os.PathLike[str],
    *,
    timeout_s: float = 60,
    memory_mb: int | None = None,
    threads: int = 1,
) -> None:
    """Create the first onnxruntime session in a child process with time and memory limits.

    The child caps its address space (``RLIMIT_AS``: what it already uses plus
    *memory_mb*, by default 1 GiB + 4x the model's size, or the limit it inherits when that
    is lower: an inherited limit is respected, never raised), loads the model, and runs one
    sample of zeros when the input shapes allow. A crash, a timeout or running out of
    memory is a ModelError (exit 2) here instead of the end of relgate. Results are cached
    per process for unchanged files.
    """
    p = _model_file(path)
    externals = external_data_files(p)
    total = os.stat(p).st_size + sum(e.size for e in externals)
    limit = default_memory_mb(total) if memory_mb is None else int(memory_mb)
    key = (str(p.absolute()), _identity(p), *(_identity(e.abspath) for e in externals),
           limit, threads)
    _probe_cached(key, str(p), float(timeout_s), limit, threads)


def _identity(p: Path) -> tuple[int, int, int, int]:
    st = os.stat(p)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _probe_cached(
    key: tuple[Any, ...], path: str, timeout_s: float, limit: int, threads: int
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _PROBE_CODE, path, str(threads), str(limit)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, errors="replace", env=env,
        )
    except OSError as exc:
        raise ModelError(f"{path}: cannot start the model probe ({exc.strerror})",
                         hint="check the Python installation") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        if "LOADED" in out:
            return  # it loaded; only the sample run was slow (a big model), not a failure
        raise ModelError(
            f"{path}: onnxruntime did not load the model within {timeout_s:g} s",
            hint="the model may be hostile or far too large; check it, or raise the timeout",
        ) from None
    if proc.returncode != 0:
        inherited = inherited_memory_limit_mb()
        why = describe_child_failure(proc.returncode, err, memory_mb=limit, inherited_mb=inherited)
        if "LOADED" in out:
            why = why.replace("while loading it", "loading it").replace(
                "loading it", "running one sample of zeros through it")
        if inherited is not None and ("ulimit" in why or "memory" in why):
            hint = (f"relgate runs under ulimit -v {inherited * 1024} (KiB), which it never "
                    "raises; raise that limit (or lift it) and try again")
        elif "memory" in why:
            hint = "the model needs far more memory than its size suggests; it may be hostile"
        elif "import onnxruntime" in why:
            hint = "check the Python installation (pip install onnxruntime)"
        else:
            hint = ("the model is malformed or hostile; re-export it (relgate did not load it "
                    "in-process)")
        raise ModelError(f"{path}: {why}", hint=hint)


def make_session(path: str | os.PathLike[str], *, threads: int = 1) -> Any:
    """An in-process onnxruntime session with the fixed settings (call after the probe)."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), session_options(threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:
        if inherited_memory_limit_mb() is not None and out_of_memory(exc, _MEMORY_WORDS):
            raise memory_error(path, "while onnxruntime loaded the model") from None
        raise ModelError(f"{path}: onnxruntime cannot load the model: {_short(exc)}",
                         hint="re-export the model") from None


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """Everything ``relgate inspect`` reports: contract, files, digest, external data."""

    path: str
    contract: ModelContract
    digest: ModelDigest
    external: tuple[ExternalDataFile, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.digest.sha256,
            "size": self.digest.total_size,
            "files": [f.to_dict() for f in self.digest.files],
            "external_data": [e.to_dict() for e in self.external],
            "contract": self.contract.to_dict(),
            "features_output": self.contract.features_output,
            "task": self.contract.task_dict(),
        }


def inspect_model(
    path: str | os.PathLike[str],
    *,
    input_name: str | None = None,
    output_name: str | None = None,
    positive_index: int | None = None,
    task: Any = None,
    output_type: str | None = None,
    reducer: str | None = None,
) -> ModelInfo:
    """Load a model safely and gather its contract, files, digest and proposed task."""
    contract = load_contract(path, input_name=input_name, output_name=output_name,
                             positive_index=positive_index, task=task, output_type=output_type,
                             reducer=reducer)
    return ModelInfo(path=str(path), contract=contract, digest=model_digest(path),
                     external=tuple(external_data_files(path)))
