"""Staying inside the caller's memory (issue 16, "Stay inside the budget").

* **An inherited address-space limit** (``ulimit -v``: RLIMIT_AS set by the parent, inherited
  by relgate and its probe child). Where the model fits, ``inspect``, ``evaluate`` and
  ``validate`` pass under it, with the limit set hard or soft only; where the model's 128 MiB
  of weights cannot fit beside Python and onnxruntime, relgate says in one line that it ran
  out of that limit (exit 2), names it, and writes nothing: in the guarded probe child
  (which lowers its own cap to the inherited one, never raises it), while protobuf parses
  an inline model ("Arena alloc failed"), while onnx.checker reads it (``std::bad_alloc``)
  or while onnxruntime loads it in-process. It never blames the model ("not a valid ONNX
  file", "onnx.checker rejects", "malformed or hostile").
* **A baseline comparison holds one onnxruntime session at a time**, binary and
  multi-class: ``validate --baseline`` on two models of 128 MiB each peaks below
  ``validate`` alone + 0.6 x the model's bytes (holding both sessions costs + 0.9 x).

Limits are set from what a Python with numpy and onnxruntime measures here (VmSize), so the
tests hold on any machine; peak RSS is ``ru_maxrss`` of a small wrapper's child, never timing.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.adversarial.conftest import assert_clean_failure
from tests.support.ballast import MIB, W_CLASSES, ballast_model, peak_rss, python_vmsize_mb
from tests.support.registry import DIM, W_TRUE, make_registry

MODEL_MB = 128
#: what relgate itself needs on top of Python + numpy + onnxruntime to validate a tiny model
#: is about 25 MiB; this leaves room for that, never for 128 MiB of weights (nor for the
#: probe child, which starts as that Python and loads the weights)
ROOM_MB = 40
#: words that blame the model; a model that does not fit the caller's limit is none of these
BLAME = ("not a valid ONNX", "corrupt", "rejects the model", "malformed", "hostile",
         "cannot load it:")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry (params, test split) plus ``big/ext.onnx`` (+ ``.data``), ``big/inline.onnx``
    and ``big/prev/prev.onnx`` (a second external model, the baseline), 128 MiB of weights
    each."""
    root = make_registry(tmp_path_factory.mktemp("memory"))
    ballast_model(root / "big" / "ext.onnx", MODEL_MB, external=True)
    ballast_model(root / "big" / "inline.onnx", MODEL_MB, external=False)
    ballast_model(root / "big" / "prev" / "prev.onnx", MODEL_MB, scale=2.0, external=True)
    return root


@pytest.fixture(scope="module")
def base_mb() -> int:
    """VmSize (MiB) of a Python that imported numpy and onnxruntime, measured here."""
    return python_vmsize_mb()


def _limited(soft_mb: int, *, hard_mb: int | None = None) -> Callable[[], None]:
    def lower() -> None:
        hard = soft_mb if hard_mb is None else hard_mb
        resource.setrlimit(resource.RLIMIT_AS, (soft_mb * MIB, hard * MIB))
    return lower


def _relgate(root: Path, limit: Callable[[], None] | None, *args: object
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relgate", *map(str, args)], cwd=root,
                          capture_output=True, text=True, timeout=300, preexec_fn=limit)


def _want(root: Path) -> np.ndarray:
    with np.load(root / "data" / "test.npz") as npz:
        return npz["x"].astype(np.float64) @ (3 * W_TRUE).astype(np.float32).astype(np.float64)


# ---------------------------------------------------------------- an inherited ulimit -v


@pytest.mark.parametrize("soft_only", [False, True], ids=["hard-and-soft", "soft-only"])
def test_a_model_that_fits_the_inherited_limit_passes(big: Path, base_mb: int, tmp_path: Path,
                                                      soft_only: bool) -> None:
    """Under ulimit -v with room for the weights (2x them + 256 MiB above Python and
    onnxruntime; far below the 1 GiB + 4x the model the probe asks for by default), the
    external-data model is inspected, evaluated and validated; set soft only (hard 1 GiB
    above it), the soft limit is the one respected (validate), and no limit is raised."""
    limit = base_mb + 2 * MODEL_MB + 256
    lower = _limited(limit, hard_mb=limit + 1024 if soft_only else None)
    model = big / "big" / "ext.onnx"

    if not soft_only:
        inspected = _relgate(big, lower, "inspect", model, "--json")
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["size"] > MODEL_MB * MIB

        scored = _relgate(big, lower, "evaluate", "--model", model, "--data", "data/test.npz",
                          "--out", tmp_path / "scores.npz")
        assert scored.returncode == 0, scored.stderr
        with np.load(tmp_path / "scores.npz") as npz:
            np.testing.assert_allclose(npz["score"], _want(big), rtol=1e-5, atol=1e-5)

    validated = _relgate(big, lower, "validate", "--model", model, "--data", "data/test.npz",
                         "--out", tmp_path / "report.json")
    assert validated.returncode == 0, validated.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["metrics"]["auc"]["value"] > 0.8


def test_an_inline_model_that_fits_the_inherited_limit_validates(big: Path, base_mb: int,
                                                                 tmp_path: Path) -> None:
    """Inline weights are parsed by protobuf, checked and loaded (about 3x their size at the
    peak); with room for 4x plus 256 MiB, validate passes under the limit."""
    limit = base_mb + 4 * MODEL_MB + 256
    done = _relgate(big, _limited(limit), "validate", "--model", big / "big" / "inline.onnx",
                    "--data", "data/test.npz", "--out", tmp_path / "report.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "report.json").read_text())["passed"]


def _assert_names_the_limit(done: subprocess.CompletedProcess[str], limit_mb: int,
                            out: Path) -> None:
    line = assert_clean_failure(done)
    assert "ulimit -v" in line and f"{limit_mb} M" in line, line
    assert not any(word in line for word in BLAME), line
    assert not out.exists() and not any(out.parent.iterdir()), "nothing half-written"


@pytest.mark.parametrize("command", ["evaluate", "validate"])
def test_weights_that_cannot_fit_the_inherited_limit_are_refused_for_the_limit(
        big: Path, base_mb: int, tmp_path: Path, command: str) -> None:
    """128 MiB of external weights under a limit that holds Python, onnxruntime and relgate
    but not them: the guarded probe child, capped at the inherited limit (its own default,
    1 GiB + 4x the model above what it starts with, would not fit), runs out first and says
    so in one line naming the limit (exit 2); no report, no scores."""
    limit = base_mb + ROOM_MB
    out = tmp_path / "out" / ("scores.npz" if command == "evaluate" else "report.json")
    out.parent.mkdir()
    done = _relgate(big, _limited(limit), command, "--model", big / "big" / "ext.onnx",
                    "--data", "data/test.npz", "--out", out)
    _assert_names_the_limit(done, limit, out)
    assert "onnxruntime ran out of the inherited address-space limit" in done.stderr


#: (extra MiB above Python + onnxruntime as a fraction of the model, what must have run out).
#: An inline model is read (1x), parsed by protobuf (1x more), checked by onnx.checker (its
#: own copy) and loaded by onnxruntime: here parsing runs out below about 1.4x and the
#: checker from about 1.6x to 2.4x; where exactly is the allocator's business, so the second
#: case only asks that one of the stages is named.
STAGES = [(0.3, ("out of memory parsing it",)),
          (2.0, ("out of memory parsing it", "out of memory while onnx.checker read it",
                 "out of memory while onnxruntime loaded the model",
                 "onnxruntime ran out of the inherited"))]


@pytest.mark.parametrize(("fraction", "stages"), STAGES, ids=["while-parsing", "later"])
def test_inline_weights_that_cannot_fit_are_refused_for_the_limit_not_as_corrupt(
        big: Path, base_mb: int, tmp_path: Path, fraction: float,
        stages: tuple[str, ...]) -> None:
    """An inline model under limits that run out while protobuf parses it ("Arena alloc
    failed"), while onnx.checker reads it (std::bad_alloc) or while onnxruntime loads it: each
    is the caller's limit, named as such, never "not a valid ONNX file" or "rejects"."""
    limit = base_mb + int(fraction * MODEL_MB)
    out = tmp_path / "out" / "report.json"
    out.parent.mkdir()
    done = _relgate(big, _limited(limit), "validate", "--model", big / "big" / "inline.onnx",
                    "--data", "data/test.npz", "--out", out)
    _assert_names_the_limit(done, limit, out)
    assert any(stage in done.stderr for stage in stages), done.stderr


def test_inspect_of_inline_weights_that_cannot_fit_names_the_limit(big: Path,
                                                                   base_mb: int) -> None:
    """inspect parses the model too: out of the limit, it says so (exit 2), not "corrupt"."""
    done = _relgate(big, _limited(base_mb + ROOM_MB), "inspect", big / "big" / "inline.onnx")
    line = assert_clean_failure(done)
    assert "ulimit -v" in line and not any(word in line for word in BLAME), line


# ---------------------------------------------------------------- one session at a time

def _peak_rss(root: Path, *args: object) -> tuple[int, int]:
    return peak_rss([sys.executable, "-m", "relgate", *map(str, args)], root, timeout=300)


def _model_bytes(model: Path) -> int:
    return sum(p.stat().st_size for p in model.parent.glob(model.name + "*"))


def _alone_and_paired(root: Path, model: Path, prev: Path, out: Path) -> tuple[int, int]:
    """Peak RSS of validate alone and of validate --baseline (both must finish, exit 0/1)."""
    code, alone = _peak_rss(root, "validate", "--model", model, "--data", "data/test.npz",
                            "--out", out / "alone.json")
    assert code in (0, 1)
    code, paired = _peak_rss(root, "validate", "--model", model, "--data", "data/test.npz",
                             "--baseline", prev, "--out", out / "paired.json")
    assert code in (0, 1)
    nbytes = _model_bytes(model)
    assert alone > nbytes, "the test model must keep its weights resident"
    assert paired < alone + 0.6 * nbytes, (
        f"peak RSS {paired / MIB:.0f} MiB with a baseline vs {alone / MIB:.0f} MiB alone "
        f"(model {nbytes / MIB:.0f} MiB): both onnxruntime sessions were held at once")
    return alone, paired


def test_a_baseline_comparison_never_holds_two_sessions(big: Path, tmp_path: Path) -> None:
    """validate --baseline scores the candidate, releases its session (keeping the scores),
    then scores the baseline: its peak RSS stays below validate alone + 0.6 x the model's
    bytes (holding both sessions costs a whole model more), and the comparison is made."""
    model, prev = big / "big" / "ext.onnx", big / "big" / "prev" / "prev.onnx"
    _alone_and_paired(big, model, prev, tmp_path)
    report = json.loads((tmp_path / "paired.json").read_text())
    assert report["passed"] and report["baseline"]["name"] == "prev"
    # the candidate (3 x W) ranks exactly as the baseline (2 x W): a zero AUC delta
    assert report["baseline"]["deltas"]["auc"]["value"] == pytest.approx(0.0, abs=1e-12)


MULTICLASS_PARAMS = """\
schema_version: 1
seed: 0
task: {kind: multiclass, output: logits, output_type: logits}
evaluate: {threads: 1, batch_size: 256}
calibrate: {scales: [1.0], offsets: [0.0], method: none, threshold: {strategy: fixed, value: 0.5},
  ece_bins: 10}
validate: {bootstrap: {resamples: 40, confidence: 0.9, seed: 3}, ece_bins: 10}
gates: {mode: all, rules: [{metric: accuracy, op: '>=', value: 0.5}]}
release: {name: v1.0.0, promoted: {path: models/model.onnx, description: three classes},
  tolerance: 1.0e-9}
"""


def test_a_multiclass_baseline_comparison_never_holds_two_sessions(tmp_path: Path) -> None:
    """The same for a three-class model (logits [N, 3]): the candidate's session is closed
    before the baseline's is made, and the accuracy delta is numpy's."""
    root = tmp_path / "mc"
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, DIM)).astype(np.float32)
    logits = x.astype(np.float64) @ W_CLASSES
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.int64)
    (root / "data").mkdir(parents=True)
    np.savez(root / "data" / "test.npz", x=x, y=y)
    (root / "params.yaml").write_text(MULTICLASS_PARAMS)
    model = ballast_model(root / "models" / "model.onnx", MODEL_MB, external=True, classes=3)
    prev = ballast_model(root / "prev" / "prev.onnx", MODEL_MB, scale=-1.0, external=True,
                         classes=3)
    _alone_and_paired(root, model, prev, tmp_path)
    report = json.loads((tmp_path / "paired.json").read_text())
    assert report["baseline"]["name"] == "prev"
    want = np.mean(np.argmax(logits, 1) == y) - np.mean(np.argmax(-logits, 1) == y)
    assert report["baseline"]["deltas"]["accuracy"]["value"] == pytest.approx(want, abs=1e-12)
