"""A model whose weights really stay resident (memory tests and bench/bench_memory.py).

onnxruntime folds constants and may never touch unused initializers, so a model of N MiB of
weights is not N MiB of RSS by itself; this one reads every page of its ballast on each run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support.registry import DIM, W_TRUE

MIB = 1024 * 1024
#: three classes' weights for the multi-class ballast model (columns), a fixed pattern
W_CLASSES = np.stack([W_TRUE, -W_TRUE, np.cos(np.arange(DIM))], axis=1)

def ballast_model(path: Path, mb: int, *, scale: float = 3.0, external: bool,
                  classes: int = 0) -> Path:
    """``x [batch, 16] -> score [batch, 1]``: ``x @ (scale * W_TRUE)`` plus the sum of one
    float per 4 KiB page of a *mb* MiB zero ballast, gathered at indices offset by a zero
    computed from x. Nothing folds at load time and every page is read at run time, so the
    ballast stays resident in the session as a real model's weights do; the scores are
    exactly the linear model's. *external*: the ballast lives in ``<name>.data``. *classes*:
    ``logits [batch, classes]`` instead, ``x @ (scale * W_CLASSES)`` plus the same zero."""
    n = mb * MIB // 4
    if classes:
        w = (scale * W_CLASSES[:, :classes]).astype(np.float32)
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    else:
        w = (scale * W_TRUE).astype(np.float32).reshape(DIM, 1)
        out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]),
         helper.make_node("Shape", ["x"], ["n"], start=0, end=1),
         helper.make_node("Sub", ["n", "n"], ["zero"]),
         helper.make_node("Add", ["pages", "zero"], ["idx"]),
         helper.make_node("Gather", ["ballast", "idx"], ["g"]),
         helper.make_node("ReduceSum", ["g"], ["s"], keepdims=1),
         helper.make_node("Add", ["xw", "s"], [out.name])], "ballast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM])], [out],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(np.arange(0, n, 1024, dtype=np.int64), "pages"),
                     numpy_helper.from_array(np.zeros(n, np.float32), "ballast")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="relgate-tests")
    model.ir_version = 10
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=path.name + ".data",
                        size_threshold=1024 * 1024)
    else:
        onnx.save_model(model, str(path))
    return path


def python_vmsize_mb() -> int:
    """VmSize (MiB) of a fresh Python that imported numpy and onnxruntime, measured here:
    what an address-space limit must at least hold (the probe child starts as this)."""
    code = ("import numpy, onnxruntime\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmSize:')][0].split()[1])")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return int(out.stdout) // 1024


#: a fresh, small Python that runs a command and prints its exit code and peak RSS (KiB): a
#: forked child starts with its parent's RSS high-water mark, so the parent must be one that
#: never held much (not pytest, not a bench that built the models)
_PEAK_RSS_WRAPPER = ("import resource, subprocess, sys\n"
                     "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
                     "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def peak_rss(cmd: list[str], cwd: Path, *, timeout: float = 600) -> tuple[int, int]:
    """Exit code and peak RSS in bytes of *cmd* and its waited-for children (the guarded
    probe child among them: whichever is larger)."""
    out = subprocess.run([sys.executable, "-I", "-c", _PEAK_RSS_WRAPPER, *cmd], cwd=cwd,
                         capture_output=True, text=True, check=True, timeout=timeout)
    code, kib = (int(v) for v in out.stdout.split())
    return code, kib * 1024


def wide_model(path: Path, *, width: int = 262144, scale: float = 3.0) -> Path:
    """``x [batch, 16] -> score [batch, 1]``: the mean over *width* columns of
    ``x @ (scale * W_TRUE)`` repeated *width* times, so the score is exactly the linear
    model's while each sample needs ``4 * width`` bytes of activations (1 MiB at the
    default): a batch's memory grows with its size, as a dynamic-batch model's does. The
    16 x width weights (16 MiB) are external data."""
    w = np.repeat((scale * W_TRUE).astype(np.float32)[:, None], width, axis=1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["wide"]),
         helper.make_node("ReduceMean", ["wide", "axes"], ["score"], keepdims=1)], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="relgate-tests")
    model.ir_version = 10
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return path
