"""No core module imports a reporter (README 'Development'): only relgate.cli, the commands
and relgate.report itself may import relgate.report; core modules reach progress bars
through relgate.progress, which the CLI fills."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "relgate"
RENDERING = {"cli.py", "__main__.py"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_core_module_imports_a_reporter() -> None:
    core = [p for p in SRC.rglob("*.py")
            if p.relative_to(SRC).parts[0] not in ("report", "commands")
            and p.name not in RENDERING]
    assert len(core) > 20  # the walk found the package
    offenders = {str(p.relative_to(SRC)): sorted(m for m in _imports(p)
                                                 if m == "relgate.report"
                                                 or m.startswith("relgate.report."))
                 for p in core}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_a_library_caller_gets_no_bar_and_the_cli_installs_them() -> None:
    from relgate import progress

    with progress.byte_bar(10**9) as sink:
        assert sink is None or callable(sink)
    from relgate.cli import _install_progress

    _install_progress()
    assert progress._BARS["bytes"] is not None and progress._BARS["steps"] is not None
    assert progress.enabled() is False  # tests run without a terminal, with CI=1
