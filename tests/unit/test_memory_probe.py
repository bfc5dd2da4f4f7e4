"""The guarded probe and the out-of-memory words under an inherited ``ulimit -v`` (issue 16).

The probe child lowers its own address-space cap to the lower of what it would set itself
(what it uses + 1 GiB + 4x the model) and the limit it inherits; it never raises one. The
case that tells the two apart is a *soft* limit under an unlimited hard one: raising the
soft limit is allowed there, so a probe that did would load a model that does not fit.
Each case runs ``probe_session`` for real, in a Python child started under the limit.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from relgate import onnxmodel as om
from tests.support.ballast import MIB, ballast_model, python_vmsize_mb
from tests.support.registry import W_TRUE, linear_model

#: probe_session in a child: prints OK or REFUSED <message>, and whether RLIMIT_AS changed
_CHILD = """\
import resource, sys
from relgate.errors import ModelError
from relgate.onnxmodel import probe_session
before = resource.getrlimit(resource.RLIMIT_AS)
try:
    probe_session(sys.argv[1])
    print("OK")
except ModelError as exc:
    print("REFUSED", exc.message, "|", exc.hint)
print("UNCHANGED" if resource.getrlimit(resource.RLIMIT_AS) == before else "CHANGED")
"""


@pytest.fixture(scope="module")
def base_mb() -> int:
    """VmSize (MiB) of a Python that imported numpy and onnxruntime, the probe child's start."""
    return python_vmsize_mb()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe")
    return {"small": linear_model(root / "small" / "model.onnx", 3 * W_TRUE),
            "big": ballast_model(root / "big" / "model.onnx", 128, external=True)}


def _probe_under(model: Path, soft_mb: int) -> list[str]:
    """Run the probe under a soft RLIMIT_AS of *soft_mb* MiB with the hard limit unlimited."""
    if resource.getrlimit(resource.RLIMIT_AS)[1] != resource.RLIM_INFINITY:
        pytest.skip("the tests already run under a hard address-space limit")

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (soft_mb * MIB, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, "-c", _CHILD, str(model)], capture_output=True,
                          text=True, timeout=120, preexec_fn=lower)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_probe_loads_a_model_that_fits_a_soft_inherited_limit(models: dict[str, Path],
                                                                   base_mb: int) -> None:
    """A soft limit of 128 MiB above the probe's start: far below the 1 GiB the probe would
    give itself, yet a small model loads and runs its sample; no limit is changed."""
    assert _probe_under(models["small"], base_mb + 128) == ["OK", "UNCHANGED"]


def test_the_probe_never_raises_a_soft_inherited_limit(models: dict[str, Path],
                                                       base_mb: int) -> None:
    """128 MiB of resident weights under a soft limit of 48 MiB above the probe's start, the
    hard limit unlimited: the probe could raise the soft limit, but keeps it, runs out, and
    the refusal names that limit (not the model)."""
    lines = _probe_under(models["big"], base_mb + 48)
    assert lines[-1] == "UNCHANGED"
    assert lines[0].startswith("REFUSED"), lines
    assert f"inherited address-space limit (ulimit -v) of {base_mb + 48} MB" in lines[0], lines
    assert "malformed" not in lines[0] and "hostile" not in lines[0], lines


def test_out_of_memory_recognises_the_libraries_words() -> None:
    """protobuf's arena, onnx.checker's and onnxruntime's bad_alloc, errno ENOMEM, MemoryError;
    a plain parse or load error is not memory."""
    assert om.out_of_memory(MemoryError())
    for text in ("Arena alloc failed", "std::bad_alloc", "Failed to allocate memory for x",
                 "[Errno 12] Cannot allocate memory"):
        assert om.out_of_memory(RuntimeError(text)), text
    for text in ("Error parsing message", "Protobuf parsing failed", "Type Error: x"):
        assert not om.out_of_memory(RuntimeError(text)), text


_MESSAGE = """\
import resource, sys
from relgate.onnxmodel import memory_error
err = memory_error("m.onnx", "parsing it")
print(err.message, "|", err.hint)
"""


@pytest.mark.parametrize("limit_mb", [None, 3000])
def test_memory_error_names_the_inherited_limit_when_there_is_one(limit_mb: int | None) -> None:
    """Under ulimit -v the message names it in MB and the hint in KiB (what ulimit -v
    takes); without one, the machine's memory. Neither calls the file corrupt."""
    def lower() -> None:
        if limit_mb is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_mb * MIB, limit_mb * MIB))

    if limit_mb is None and resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        pytest.skip("the tests already run under an address-space limit")
    done = subprocess.run([sys.executable, "-c", _MESSAGE], capture_output=True, text=True,
                          timeout=60, preexec_fn=lower, check=True)
    text = done.stdout.strip()
    assert text.startswith("m.onnx: out of memory parsing it"), text
    if limit_mb is None:
        assert "ulimit" not in text
    else:
        assert f"(ulimit -v) of {limit_mb} MB" in text and f"ulimit -v {limit_mb * 1024} KiB" in text
    assert "corrupt" not in text and "not a valid" not in text
