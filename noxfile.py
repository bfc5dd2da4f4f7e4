"""Developer tasks. `nox` alone runs the default test session (what CI runs).

Sessions: tests (default), lint, typecheck, pipeline, bench, e2e, fuzz.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
DEV = ".[dev,pipeline]"
ENV = {"CI": "1", "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _install(session: nox.Session) -> None:
    session.install("-e", DEV)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit, acceptance and the fast end-to-end tests (excludes @slow)."""
    _install(session)
    session.run("pytest", "-m", "not slow", *session.posargs, env=ENV)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the package, stages, tests and benchmarks."""
    session.install("ruff")
    session.run("ruff", "check", "src", "stages", "tests", "bench", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/relgate."""
    _install(session)
    session.run("mypy")


@nox.session(python=PYTHON)
def pipeline(session: nox.Session) -> None:
    """The full reference pipeline end to end in a temp git repo (minutes)."""
    _install(session)
    session.run("pytest", "-m", "slow", "tests/e2e/test_pipeline.py", *session.posargs,
                env={**ENV, "RELGATE_FULL_PIPELINE": "1"})


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """Every end-to-end test, slow ones included (real git, DVC, local and S3 remotes)."""
    _install(session)
    session.run("pytest", "tests/e2e", *session.posargs, env=ENV)


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """Longer property-based fuzzing of the untrusted-input readers."""
    _install(session)
    session.run("pytest", "tests/adversarial", "-m", "not slow or slow", *session.posargs,
                env={**ENV, "RELGATE_FUZZ_RANDOM": "1",
                     "RELGATE_FUZZ_EXAMPLES": os.environ.get("RELGATE_FUZZ_EXAMPLES", "5000")})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: medians and ratios against baselines measured in the same run."""
    _install(session)
    session.run("python", "bench/run.py", *session.posargs, env={"CI": "1"})
