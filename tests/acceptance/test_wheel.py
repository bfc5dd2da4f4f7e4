"""Test what users install: the built wheel carries the schemas and the CLI works from it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO_ROOT)],
        check=True, capture_output=True,
    )
    wheel = next(out.glob("relgate-*.whl"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    return target


def test_wheel_contains_every_schema(installed_wheel: Path) -> None:
    from relgate.schemas import KINDS

    for kind in (*KINDS, "common"):
        assert (installed_wheel / "relgate" / "schemas" / f"{kind}.schema.json").is_file()


def test_cli_from_the_wheel_finds_its_schemas(installed_wheel: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed_wheel)}
    example = REPO_ROOT / "tests/examples/manifest/positive/bundle.json"
    proc = subprocess.run(
        [sys.executable, "-c",
         "import relgate, sys; print(relgate.__file__); "
         "from relgate.cli import main; sys.exit(main(sys.argv[1:]))",
         "schema", "check", str(example), "--kind", "manifest"],
        env=env, capture_output=True, text=True, cwd=installed_wheel,
    )
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()[:2]
    assert first.startswith(str(installed_wheel))
    assert "valid manifest" in second


def test_wheel_has_console_script_entry_point(installed_wheel: Path) -> None:
    dist = next(installed_wheel.glob("relgate-*.dist-info"))
    assert "relgate = relgate.cli:entry" in (dist / "entry_points.txt").read_text()
