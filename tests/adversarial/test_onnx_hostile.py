"""Hostile ONNX models: external data entries that lie, and models that exhaust onnxruntime.

Traversal, absolute paths, symlinked files and parents, hard links, missing or truncated
data files are in tests/unit/test_onnxmodel.py (``test_hostile_file_is_one_line_model_error``,
``test_digest_and_probe_refuse_before_reading``, ``test_no_python_level_open_outside_the_model
_folder``). Here: the external-data entries themselves (keys, repeats, number syntax, ranges),
and models that make onnxruntime allocate without bound -- contained in the guarded child
process, exit 2 in one line, relgate's own memory untouched.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from relgate import onnxmodel as om
from relgate.errors import ModelError
from tests.adversarial.conftest import assert_clean_failure
from tests.support import onnx_factory as f
from tests.support.registry import readout_model

LENGTH = str(f.WAVE * 4)


def with_entries(folder: Path, entries: list[tuple[str, str]]) -> Path:
    """external_model's model (data file written, offset 0) with its weight's external-data
    entries replaced by *entries*; an outside/secret FIFO next to the folder as a trap."""
    path = f.external_model(folder, "ext.onnx.data")
    outside = folder.parent / "outside"
    outside.mkdir(exist_ok=True)
    if not (outside / "secret").exists():
        os.mkfifo(outside / "secret")
    model = onnx.load(str(path), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.name == "w")
    del tensor.external_data[:]
    for key, value in entries:
        e = tensor.external_data.add()
        e.key, e.value = key, value
    path.write_bytes(model.SerializeToString())
    return path


GOOD = [("location", "ext.onnx.data"), ("offset", "0"), ("length", LENGTH)]

ENTRY_CASES: dict[str, tuple[list[tuple[str, str]], str]] = {
    "unknown-key": ([*GOOD, ("basepath", "/")], "'basepath' is not allowed"),
    "empty-key": ([*GOOD, ("", "x")], "'' is not allowed"),
    "repeated-location-bad-first": ([("location", "../outside/secret"), *GOOD],
                                    "'location' appears twice"),
    "repeated-location-bad-last": ([*GOOD, ("location", "../outside/secret")],
                                   "'location' appears twice"),
    "repeated-offset": ([*GOOD, ("offset", "64")], "'offset' appears twice"),
    "offset-underscore": ([("location", "ext.onnx.data"), ("offset", "0_0")], "plain decimal"),
    "offset-space": ([("location", "ext.onnx.data"), ("offset", " 0")], "plain decimal"),
    "offset-plus": ([("location", "ext.onnx.data"), ("offset", "+0")], "plain decimal"),
    "offset-hex": ([("location", "ext.onnx.data"), ("offset", "0x0")], "plain decimal"),
    "offset-arabic-digit": ([("location", "ext.onnx.data"), ("offset", "\u0660")],
                            "plain decimal"),
    "offset-negative": ([("location", "ext.onnx.data"), ("offset", "-4")], "plain decimal"),
    "length-10k-digits": ([("location", "ext.onnx.data"), ("length", "9" * 10_000)],
                          "plain decimal"),
    "offset-past-2^64": ([("location", "ext.onnx.data"), ("offset", str(2**64)),
                          ("length", LENGTH)], "outside the"),
    "offset-past-the-end": ([("location", "ext.onnx.data"), ("offset", "4096"),
                             ("length", LENGTH)], "outside the"),
    "length-longer-than-tensor": ([("location", "ext.onnx.data"), ("length", "99999")],
                                  "does not match"),
    "no-location": ([("offset", "0"), ("length", LENGTH)], "external data location"),
}


@pytest.mark.parametrize("case", sorted(ENTRY_CASES))
def test_lying_external_data_entries_are_refused_before_any_data_is_read(
        tmp_path: Path, cli, case: str) -> None:
    entries, fragment = ENTRY_CASES[case]
    path = with_entries(tmp_path / "m", entries)
    for fn in (om.external_data_files, om.model_digest, om.load_contract, om.probe_session):
        with pytest.raises(ModelError) as info:
            fn(path)
        assert fragment in info.value.one_line(), (fn.__name__, info.value.one_line())
    line = assert_clean_failure(cli("inspect", path), (2,))
    assert fragment in line


def test_checksum_is_an_allowed_key(tmp_path: Path) -> None:
    """The four keys of the ONNX spec stay accepted (checksum is informative)."""
    path = with_entries(tmp_path / "m", [*GOOD, ("checksum", "0" * 40)])
    assert [e.path for e in om.external_data_files(path)] == ["ext.onnx.data"]


# ----------------------------------------------------------------------------- exhaustion


def _scorer_model(folder: Path, nodes: list[onnx.NodeProto],
                  inits: list[onnx.TensorProto]) -> Path:
    graph = helper.make_graph(
        nodes, "hungry", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", f.WAVE])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def huge_constant_model(folder: Path) -> Path:
    """A 2 KB model that asks for a 256 GiB constant (ConstantOfShape [2^36])."""
    one = numpy_helper.from_array(np.array([1.0], dtype=np.float32))
    return _scorer_model(folder, [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=one),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
        helper.make_node("ReduceSum", ["x", "axis"], ["xs"], keepdims=1),
        helper.make_node("Add", ["xs", "total"], ["score"]),
    ], [_i64("shape", [2**36]), _i64("axis", [1])])


def per_sample_blowup_model(folder: Path) -> Path:
    """A model that expands each sample to [1600, 2^20] floats (6.7 GB per row) at run time:
    nothing is constant, so it loads fine and only running it allocates."""
    return _scorer_model(folder, [
        helper.make_node("Unsqueeze", ["x", "axis2"], ["x3"]),
        helper.make_node("Expand", ["x3", "shape"], ["big"]),
        helper.make_node("ReduceSum", ["big", "axis"], ["s1"], keepdims=0),
        helper.make_node("ReduceSum", ["s1", "axis"], ["score"], keepdims=1),
    ], [_i64("shape", [1, f.WAVE, 2**20]), _i64("axis", [1]), _i64("axis2", [2])])


HUNGRY = {"huge-constant": huge_constant_model, "per-sample-blowup": per_sample_blowup_model}


@pytest.mark.parametrize("kind", sorted(HUNGRY))
def test_a_model_that_allocates_without_bound_is_stopped_in_the_probe(tmp_path: Path,
                                                                      kind: str) -> None:
    path = HUNGRY[kind](tmp_path / kind)
    om.load_contract(path)  # a well-formed model: only running it is hostile
    with pytest.raises(ModelError) as info:
        om.probe_session(path)
    line = info.value.one_line()
    assert "memory limit" in line and "one sample of zeros" in line, line


def _capped_memory() -> None:  # pragma: no cover - runs in the child before exec
    cap = 6 * 1024**3  # a safety net: if the probe let it through, fail instead of swapping
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


@pytest.mark.parametrize("kind", sorted(HUNGRY))
def test_commands_refuse_a_hungry_model_in_one_line(tmp_path: Path, kind: str) -> None:
    """Through the CLI in a real process: exit 2, one line on stderr (onnxruntime's own
    error log silenced), and the message comes from the probe, not from relgate running out."""
    path = HUNGRY[kind](tmp_path / kind)
    data = f.write_npz(tmp_path / "d.npz", x=np.zeros((4, f.WAVE), np.float32),
                       y=np.array([0, 1, 0, 1], np.int8))
    for argv in (["inspect", path, "--check-runtime"],
                 ["evaluate", "--model", path, "--data", data, "--out", tmp_path / "s.npz"]):
        proc = subprocess.run([sys.executable, "-m", "relgate", *map(str, argv)],
                              capture_output=True, text=True, timeout=300,
                              preexec_fn=_capped_memory)
        line = assert_clean_failure(proc, (2,))
        assert "one sample of zeros" in line, line
    assert not (tmp_path / "s.npz").exists()


def test_onnxruntime_run_errors_on_hostile_data_are_one_line(tmp_path: Path) -> None:
    """Token ids beyond the embedding table: onnxruntime fails in-process at run time (the
    probe's zeros were fine); its C++ error log must not add lines to relgate's stderr."""
    model = readout_model(tmp_path / "readout.onnx", vocab=64)
    tokens = np.full((8, 32), 1_000_000, dtype=np.int64)
    data = f.write_npz(tmp_path / "t.npz", input_tokens=tokens, y=np.array([0, 1] * 4, np.int8))
    proc = subprocess.run([sys.executable, "-m", "relgate", "evaluate", "--model", str(model),
                           "--data", str(data), "--out", str(tmp_path / "s.npz")],
                          capture_output=True, text=True, timeout=300)
    line = assert_clean_failure(proc, (2,))
    assert "onnxruntime failed on samples" in line
    assert not (tmp_path / "s.npz").exists()
