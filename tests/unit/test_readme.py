"""README.md keeps its promises: the test command CI runs, and the real PR summary."""

from __future__ import annotations

from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_runs_exactly_the_test_command_the_readme_gives() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = "python -m pip install nox && nox"
    assert command in ci.splitlines()
    assert command in README


def test_readme_shows_the_real_pull_request_summary() -> None:
    golden = (REPO_ROOT / "tests" / "golden" / "pr_summary.md").read_text(encoding="utf-8")
    assert golden.rstrip() in README


def test_readme_documents_every_command() -> None:
    from relgate.cli import command_modules

    for module in command_modules():
        name = module.__name__.rsplit(".", 1)[-1]
        assert f"relgate {name} " in README, name
