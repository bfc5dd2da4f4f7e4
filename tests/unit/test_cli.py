"""The CLI frame: help, version, exit codes, light imports, help text everywhere."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from relgate import __version__
from relgate.cli import build_parser, command_modules

HEAVY = ("onnxruntime", "torch", "onnx", "sklearn", "dvc")


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from relgate.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_version(cli) -> None:
    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"relgate {__version__}"


def test_no_command_prints_help_and_exits_2(cli) -> None:
    result = cli()
    assert result.code == 2 and "usage: relgate" in result.out


def test_unknown_command_is_usage_error(cli) -> None:
    result = cli("frobnicate")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1


def _walk(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{path} {name} has no help text"
                yield from _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


def test_every_option_has_help_text() -> None:
    missing = [f"{path}: {a.option_strings or a.dest}" for path, a in _walk(build_parser(), "relgate")
               if not a.help]
    assert missing == []


def test_every_command_module_follows_the_contract() -> None:
    for module in command_modules():
        assert isinstance(module.HELP, str) and module.HELP
        assert callable(module.configure) and callable(module.run)


def test_traceback_flag_shows_the_trace(cli, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    plain = cli("schema", "check", bad, "--kind", "manifest")
    assert plain.code == 2 and "Traceback" not in plain.err
    traced = cli("--traceback", "schema", "check", bad, "--kind", "manifest")
    assert traced.code == 2 and "Traceback" in traced.err


@pytest.mark.parametrize("argv", [["schema", "show", "manifest"], ["schema", "list"]])
def test_schema_show_and_list(cli, argv) -> None:
    result = cli(*argv)
    assert result.code == 0 and "manifest" in result.out


def test_keyboard_interrupt_exits_130(tmp_path) -> None:
    code = (
        "import relgate.commands.schema as s\n"
        "def boom(args):\n    raise KeyboardInterrupt\n"
        "s.run = boom\n"
        "from relgate.cli import main\n"
        "raise SystemExit(main(['schema', 'list']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 130 and "interrupted" in proc.stderr


@pytest.mark.parametrize("line_buffering", [True, False])
def test_stdout_guard_keeps_line_buffering(line_buffering: bool) -> None:
    """On a terminal stdout is line-buffered: a line written through the guard (which writes
    to the binary buffer itself) must reach the file at once, as it did before."""
    import io

    from relgate.cli import _StdoutGuard

    raw = io.BytesIO()
    stream = io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=1 << 16), encoding="utf-8",
                              line_buffering=line_buffering)
    guard = _StdoutGuard(stream)
    guard.write("first line\nsecond")
    assert raw.getvalue() == (b"first line\nsecond" if line_buffering else b"")
    guard.flush()
    assert raw.getvalue() == b"first line\nsecond" and not guard.pipe_closed
