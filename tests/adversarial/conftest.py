"""Shared pieces of the adversarial suite: hostile files, a registry, and the failure contract.

The contract every hostile input is held to (SECURITY.md): relgate exits 1 (a governed
"no") or 2 (bad input), prints exactly one line on stderr, never a traceback and never
"internal error" (exit 3, relgate.cli's mark of a bug).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliResult
from tests.support.registry import make_registry, prepare

#: Examples per property test: small in the default run, large in ``nox -s fuzz``.
FUZZ_EXAMPLES = int(os.environ.get("RELGATE_FUZZ_EXAMPLES", "200"))
GIB = 1024**3


def assert_clean_failure(result: CliResult | Any, codes: Iterable[int] = (2,)) -> str:
    """The failure contract; returns the stderr line ("" for a refusal rendered on stdout).

    Exit 2 prints exactly one ``relgate: error:`` line; exit 1 prints that line or renders
    its reasons on stdout (verify, gate) with nothing on stderr. Works for CliResult and
    subprocess.CompletedProcess alike.
    """
    code = getattr(result, "code", getattr(result, "returncode", None))
    err = getattr(result, "err", getattr(result, "stderr", ""))
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    assert code in tuple(codes), (code, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code == 1 and not lines:
        out = getattr(result, "out", getattr(result, "stdout", ""))
        assert out.strip(), "a refusal must say why"
        return ""
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err[:2000]}"
    assert lines[0].startswith("relgate: error: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- hostile JSON

def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


#: name -> bytes (or a marker for special files) that every JSON reader must refuse.
HOSTILE_JSON: dict[str, bytes | str] = {
    "duplicate-key": b'{"kind": "validation-report", "kind": "release"}',
    "nan": b'{"schema_version": 1, "metrics": {"auc": {"value": NaN}}}',
    "infinity": b'{"schema_version": 1, "x": -Infinity}',
    "float-overflow": b'{"schema_version": 1, "x": 1e999}',
    "int-10k-digits": b'{"schema_version": ' + b"7" * 10_000 + b"}",
    "int-beyond-float": b'{"schema_version": 1' + b"0" * 400 + b"}",
    "depth-100k": _deep(100_000),
    "not-utf8": b'{"kind": "\xff\xfe"}',
    "empty": b"",
    "truncated": b'{"kind": "validation-report", "metrics": {',
    "not-an-object": b"[1, 2, 3]",
    "wrong-schema": b'{"schema_version": 1, "kind": "validation-report"}',
    "sparse-1gib": "sparse",
    "fifo": "fifo",
    "dev-zero-link": "devzero",
    "directory": "dir",
}

HOSTILE_YAML: dict[str, bytes | str] = {
    "duplicate-key": b"schema_version: 1\nseed: 1\nseed: 2\n",
    "depth-100k": b"seed: " + _deep(100_000) + b"\n",
    "flow-maps-2k": b"seed: " + b"{a: " * 2000 + b"1" + b"}" * 2000 + b"\n",
    "int-10k-digits": b"seed: " + b"9" * 10_000 + b"\n",
    "hex-int-5k-digits": b"seed: 0x" + b"f" * 5000 + b"\n",
    "python-object": b"seed: !!python/object/apply:os.system ['touch pwned']\n",
    "python-name": b"seed: !!python/name:os.system\n",
    "binary-tag": b"seed: !!binary aGVsbG8=\n",
    "set-tag": b"seed: !!set {a, b}\n",
    "timestamp": b"schema_version: 1\nseed: 2001-12-14t21:59:43.10-05:00\n",
    "aliases": b'a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n',
    "merge-key": b"base: &b {x: 1}\nother: {<<: *b}\n",
    "nan": b"schema_version: 1\nseed: .nan\n",
    "yes-no": b"schema_version: 1\nseed: yes\n",
    "octal-yaml11": b"schema_version: 1\nseed: 0777\n",
    "sexagesimal": b"schema_version: 1\nseed: 1:30\n",
    "complex-key": b"? [a, b]\n: 1\n",
    "nul": b"seed: 1\x00\n",
    "not-utf8": b"seed: \xff\n",
    "sparse-1gib": "sparse",
    "fifo": "fifo",
    "dev-zero-link": "devzero",
    "directory": "dir",
}


def make_hostile(path: Path, content: bytes | str) -> Path:
    """Create *path* as the hostile thing *content* names (bytes: a regular file).

    ``sparse`` is a 1 GiB file that uses no disk (truncate; ``sparse:N`` for N bytes: a
    model or eval set is hashed whole, so smaller ones keep the suite fast), ``fifo`` a named pipe
    (opening it for reading would block forever), ``devzero`` a symlink to /dev/zero
    (reading it never ends), ``dir`` a folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content.startswith("sparse"):  # "sparse" (1 GiB) or "sparse:<bytes>"
        with open(path, "wb") as fh:
            fh.write(b"{")
            fh.truncate(int(content.partition(":")[2] or GIB))
    elif content == "fifo":
        os.mkfifo(path)
    elif content == "devzero":
        path.symlink_to("/dev/zero")
    elif content == "dir":
        path.mkdir()
    else:  # pragma: no cover - a typo in a table
        raise ValueError(content)
    return path


def replace_with(path: Path, content: bytes | str) -> Path:
    """Swap the file at *path* for a hostile one (the folder stays writable)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.chmod(0o644) if not path.is_symlink() else None
        path.unlink()
    return make_hostile(path, content)


# --------------------------------------------------------------------------- registry

@pytest.fixture(scope="session")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared registry (models, splits, params, calibration and validation report)."""
    root = make_registry(tmp_path_factory.mktemp("template") / "reg")
    prepare(root)
    return root


@pytest.fixture
def registry(registry_template: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared registry."""
    root = tmp_path / "reg"
    shutil.copytree(registry_template, root, symlinks=True)
    return root


@pytest.fixture
def in_dir() -> Callable[[Path], Any]:
    """Run the CLI from a given folder: ``with in_dir(root): cli(...)``."""
    import contextlib

    @contextlib.contextmanager
    def chdir(path: Path) -> Any:
        here = Path.cwd()
        os.chdir(path)
        try:
            yield path
        finally:
            os.chdir(here)

    return chdir
