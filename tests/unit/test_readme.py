"""README.md keeps its promises: the test command CI runs, and the real PR summary."""

from __future__ import annotations

import re
import tomllib

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


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _commands(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_quick_start_shows_exactly_the_commands_ci_and_the_pipeline_test_run() -> None:
    install_and_run, run_tests = _commands(_section("Quick start"))
    # the test command is the one .ci/run runs
    assert run_tests in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    # the first command installs an extra pyproject defines, then runs the pipeline as the
    # pipeline test does (plain `dvc repro`, from a fresh git checkout)
    m = re.fullmatch(r'python -m pip install -e "\.\[(\w+)\]" && (dvc repro)', install_and_run)
    assert m, install_and_run
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert m.group(1) in extras and any(dep.startswith("torch==") for dep in extras[m.group(1)])
    pipeline_test = (REPO_ROOT / "tests" / "e2e" / "test_pipeline.py").read_text(encoding="utf-8")
    assert 'run("dvc", "repro", cwd=root)' in pipeline_test


#: a timing or memory figure in prose or a table
FIGURE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:ms|s|min|minutes|seconds|MiB|GiB)\b")


def test_every_timing_or_memory_figure_names_its_command_or_its_machine() -> None:
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    sections = re.split(r"^#{2,4} .*$", prose, flags=re.M)
    unlabelled = []
    for section in sections:
        for paragraph in re.split(r"\n\s*\n", section):
            if not FIGURE.search(paragraph) or re.fullmatch(r"\s*\|.*", paragraph, flags=re.S):
                continue  # tables are labelled by the paragraph before them (checked below)
            said = paragraph.lower()
            if not (("measured" in said and ("machine" in said or "2-core" in said))
                    or re.search(r"`(?:nox|python bench/|relgate |dvc )[^`]*`", paragraph)):
                unlabelled.append(paragraph.strip()[:120])
    assert unlabelled == []
    bench = _section("Development").split("### Benchmarks", 1)[1]
    assert "`nox -s bench`" in bench and "this 2-core machine" in bench
