"""The CLI on degraded edges (issue 13): a stdout pipe the reader closed, and paths or disks
the OS refuses, which must end in one line and exit 2, never a traceback or exit 3.

A command whose output could not be written because the reader closed stdout exits 141
(128 + SIGPIPE, what a shell reports for a command a closed pipe killed), with no traceback
and at most one line on stderr. The command still finishes its work: a promotion whose
message could not be printed has published a complete bundle that verifies, and the stderr
line says the command succeeded. A command that wrote nothing to stdout lost nothing and
keeps its own code. The pipes are real: the reader closes its end before the command starts,
or after reading the first bytes of an output larger than the pipe.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adversarial.conftest import assert_clean_failure
from tests.conftest import run_relgate

F_SETPIPE_SZ = 1031  # linux/fcntl.h; the smallest pipe is one page
PIPE_BYTES = 4096


def _run_into_closed_pipe(*argv: object, cwd: Path, when: str = "before",
                          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run relgate with stdout a pipe whose reader goes away ``before`` the command starts,
    or ``while`` it writes: after reading the first bytes of an output larger than the pipe."""
    read_end, write_end = os.pipe()
    if when == "before":
        os.close(read_end)
    else:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "relgate", *map(str, argv)], cwd=cwd,
                                stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    if when == "while":
        first = os.read(read_end, 64)  # blocks until the command has started writing
        os.close(read_end)
        assert first, "the command wrote nothing"
    _, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def _assert_pipe_closed(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr
    assert result.returncode == 141, (result.returncode, result.stderr)
    lines = [ln for ln in result.stderr.splitlines()
             if ln.strip() and not ln.startswith("relgate: warning:")]  # said before the pipe
    assert len(lines) <= 1, result.stderr
    return lines[0] if lines else ""


@pytest.fixture(scope="module")
def published(registry_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry copy with v1.0.0 promoted (real promote, in a child process)."""
    import shutil

    root = tmp_path_factory.mktemp("published") / "reg"
    shutil.copytree(registry_template, root, symlinks=True)
    proc = run_relgate("promote", "--root", root, "--params", root / "params.yaml", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="module")
def noisy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with 300 planted files: verify refuses it with a report far larger than a pipe."""
    from relgate.manifest import write_manifest

    bundle = tmp_path_factory.mktemp("noisy") / "b"
    bundle.mkdir()
    (bundle / "a.txt").write_bytes(b"a")
    write_manifest(bundle)
    for i in range(300):
        (bundle / f"planted-{i:03d}-{'x' * 40}.bin").write_bytes(b"p")
    return bundle


def test_closed_stdout_is_141_before_any_output(published: Path) -> None:
    bundle = published / "models/core/v1.0.0"
    report = published / "analysis/validation_report.json"
    commands: list[list[object]] = [
        ["--version"], ["--help"], ["promote", "--help"], ["schema", "list"],
        ["schema", "show", "params"], ["schema", "check", report, "--kind", "validation-report"],
        ["inspect", published / "models/model.onnx"],
        ["inspect", published / "models/model.onnx", "--json"],
        ["verify", bundle], ["verify", bundle, "--json"],
        ["releases", published], ["releases", published, "--json"],
        ["gate", report, "--params", published / "params.yaml"],
        ["report", report], ["report", report, "--format", "json"],
    ]
    failures = {}
    for argv in commands:
        result = _run_into_closed_pipe(*argv, cwd=published)
        try:
            line = _assert_pipe_closed(result)
            assert "exit 0" in line, line  # the command itself succeeded; only its output was lost
        except AssertionError as exc:
            failures[" ".join(map(str, argv[:2]))] = str(exc)[:300]
    assert failures == {}


def test_closed_stdout_is_141_while_writing(noisy_bundle: Path, tmp_path: Path) -> None:
    """The reader takes 64 bytes and leaves while the command still has pages to write."""
    assert len(subprocess.run([sys.executable, "-m", "relgate", "schema", "show", "params"],
                              capture_output=True, check=True).stdout) > PIPE_BYTES + 1024
    failures = {}
    for argv, finished in ((["schema", "show", "params"], "exit 0"),
                           (["verify", noisy_bundle], "exit 1"),
                           (["verify", noisy_bundle, "--json"], "exit 1")):
        result = _run_into_closed_pipe(*argv, cwd=tmp_path, when="while")
        try:
            assert finished in _assert_pipe_closed(result)
        except AssertionError as exc:
            failures[" ".join(map(str, argv))] = str(exc)[:300]
    assert failures == {}


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_promote_into_a_closed_pipe_publishes_and_says_so(registry: Path, as_json: bool) -> None:
    """The publication happened: exit 141 says only that the pipe closed, the stderr line says
    the promotion succeeded, and the bundle is complete and verifies against its pin."""
    argv = ["promote", "--root", registry, "--params", registry / "params.yaml"]
    result = _run_into_closed_pipe(*argv, *(["--json"] if as_json else []), cwd=registry)
    line = _assert_pipe_closed(result)
    assert "succeeded" in line and "exit 0" in line, line
    record = json.loads((registry / "analysis/release_v1.0.0.json").read_text())
    pinned = run_relgate("verify", registry / "models/core/v1.0.0", "--root-digest",
                         record["bundle"]["root_digest"], cwd=registry)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    again = run_relgate(*argv, cwd=registry)  # the promotion is complete: a re-run is a no-op
    assert again.returncode == 0 and "already published" in again.stdout, again.stdout


def test_a_refusal_that_prints_nothing_keeps_its_code(registry: Path) -> None:
    """A gate that fails says why on stderr and writes nothing to stdout: no output was lost,
    so the closed pipe changes nothing (exit 1, as a shell would report it); nothing is
    published."""
    (registry / "params.yaml").write_text(
        (registry / "params.yaml").read_text().replace("value: 0.7", "value: 0.99"))
    result = _run_into_closed_pipe("promote", "--root", registry, "--params",
                                   registry / "params.yaml", cwd=registry)
    assert "gates failed" in assert_clean_failure(result, (1,))
    assert not (registry / "models/core/v1.0.0").exists()


# ------------------------------------------------------------------ bad paths (issue 13, audit)

LONG = "x" * 300  # one component beyond NAME_MAX: ENAMETOOLONG from every path probe


def _long_name_cases(root: Path) -> dict[str, list[object]]:
    """Where a path the OS refuses reached a pathlib probe (is_dir, exists, resolve) that
    raised OSError: exit 3, "internal error", before cli.py mapped OSError to bad input."""
    model, test, cal = root / "models/model.onnx", root / "data/test.npz", \
        root / "analysis/calibration.json"
    validate = ["validate", "--model", model, "--data", test, "--calibration", cal,
                "--out", root / "out/r.json"]
    return {
        "report": ["report", root / LONG],
        "report --baseline": ["report", root / "analysis/validation_report.json", "--baseline",
                              root / LONG],
        "promote --root": ["promote", "--root", root / LONG, "--params", root / "params.yaml"],
        "validate --baseline": [*validate, "--baseline", root / LONG],
    }


def test_a_path_the_os_refuses_is_bad_input_not_a_crash(registry: Path, cli, in_dir) -> None:
    failures = {}
    with in_dir(registry):
        for name, argv in _long_name_cases(registry).items():
            try:
                line = assert_clean_failure(cli(*argv), (2,))
                assert "File name too long" in line and LONG[:40] in line, line
            except AssertionError as exc:
                failures[name] = str(exc)[:300]
    assert failures == {}
    assert not (registry / "out").exists() and not (registry / "models/core").exists()


def test_a_full_disk_is_bad_input_and_leaves_nothing_half_written(registry: Path) -> None:
    """A file size limit (EFBIG, as ENOSPC) while writing every kind of output: exit 2, one
    line naming the file, no partial file and no staging folder left behind."""
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))

    model, test, val = "models/model.onnx", "data/test.npz", "data/val.npz"
    commands = {
        "evaluate --out": ["evaluate", "--model", model, "--data", test, "--out", "out/s.npz"],
        "calibrate --out": ["calibrate", "--model", model, "--data", val, "--out", "out/c.json"],
        "validate --out": ["validate", "--model", model, "--data", test, "--calibration",
                           "analysis/calibration.json", "--out", "out/r.json"],
        "manifest": ["manifest", "analysis"],
        "promote": ["promote"],
    }
    failures = {}
    for name, argv in commands.items():
        proc = subprocess.run([sys.executable, "-m", "relgate", *argv], cwd=registry,
                              capture_output=True, text=True, preexec_fn=limited, timeout=300)
        try:
            line = assert_clean_failure(proc, (2,))
            assert "File too large" in line, line
        except AssertionError as exc:
            failures[name] = str(exc)[:300]
    assert failures == {}
    assert not (registry / "out").exists() or not any((registry / "out").iterdir())
    assert not (registry / "analysis/manifest.json").exists()
    assert not (registry / "models/core").exists() or not any((registry / "models/core").iterdir())
    assert sorted(p.name for p in (registry / "analysis").iterdir()) == [
        "calibration.json", "validation_report.json"]


def test_relgate_itself_under_a_tiny_memory_limit_is_bad_input_not_a_crash(tmp_path: Path) -> None:
    """Under a `ulimit -v` too small to load onnxruntime, the command says so in one line (exit 2)."""
    from tests.support.onnx_factory import token_model

    model = token_model(tmp_path)

    def limit() -> None:
        cap = 64 * 1024 * 1024  # too little to load numpy and onnxruntime
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    proc = subprocess.run([sys.executable, "-m", "relgate", "inspect", str(model)], preexec_fn=limit,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "out of memory under the inherited address-space limit of 64 MiB" in lines[0]
