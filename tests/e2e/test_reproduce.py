"""relgate reproduce on small registries built in a temp folder: real git, real DVC, real stages.

The stages are tiny Python scripts (no torch), so each case is one fast ``dvc repro``: one
deterministic, one that writes random bytes, one whose metric drifts a little (within
tolerance) or a lot (beyond it), one that sleeps (to be interrupted).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

PARAMS = {
    "schema_version": 1,
    "gates": {"mode": "all", "rules": [{"metric": "auc", "op": ">=", "value": 0.5}]},
    "release": {"name": "r1", "promoted": {"path": "models/model.onnx"},
                "tolerance": {"auc": 1e-6}},
}

# metric.py: the "model quality" a stage reports; DRIFT scales a random term added to it.
METRIC = """\
import json, random, sys
drift = float(sys.argv[1])
value = 0.9 + drift * random.random()
json.dump({"auc": value, "n": 100, "name": "toy"}, open("metrics.json", "w"))
"""
GEN = """\
import hashlib, sys
open("data.bin", "wb").write(hashlib.sha256(b"seed 7").digest() * 1000)
"""
NOISE = "import os; open('noise.bin', 'wb').write(os.urandom(64))\n"
# sleeps only when asked (SLOW seconds): the registry is built fast, the reproduction is slow
SLEEP = "import os, time; time.sleep(float(os.environ.get('SLOW', 0))); open('slow.txt', 'w').write('x')\n"


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "CI": "1", "DVC_NO_ANALYTICS": "1", "TMPDIR": str(tmp),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def sh(*cmd: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def make_registry(root: Path, env: dict[str, str], *, drift: float = 0.0, noise: bool = False,
                  slow: bool = False) -> Path:
    """A git + DVC registry with a data stage and a metrics stage, reproduced and committed."""
    root.mkdir(parents=True)
    py = sys.executable
    stages: dict[str, object] = {
        "gen": {"cmd": f"{py} gen.py", "deps": ["gen.py"], "outs": ["data.bin"]},
        "evaluate": {"cmd": f"{py} metric.py {drift}", "deps": ["metric.py", "data.bin"],
                     "metrics": [{"metrics.json": {"cache": False}}]},
    }
    (root / "gen.py").write_text(GEN)
    (root / "metric.py").write_text(METRIC)
    if noise:
        (root / "noise.py").write_text(NOISE)
        stages["noise"] = {"cmd": f"{py} noise.py", "deps": ["noise.py"], "outs": ["noise.bin"]}
    if slow:
        (root / "slow.py").write_text(SLEEP)
        stages["slow"] = {"cmd": f"{py} slow.py", "deps": ["slow.py"], "outs": ["slow.txt"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=root, env=env)
    sh("dvc", "init", "-q", cwd=root, env=env)
    sh("dvc", "repro", "-q", cwd=root, env=env)
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "registry",
       cwd=root, env=env)
    return root


def reproduce(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relgate", "reproduce", "--registry", str(root),
                           *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)


def leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("relgate-reproduce-"))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "tmp").mkdir()
    return _env(tmp_path / "tmp")


def test_a_deterministic_registry_reproduces_byte_for_byte(tmp_path: Path, env: dict[str, str]) -> None:
    root = make_registry(tmp_path / "reg", env)
    proc = reproduce(root, env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["passed"] is True
    verdicts = {o["path"]: o["verdict"] for o in result["outputs"]}
    assert verdicts == {"data.bin": "identical", "metrics.json": "identical"}
    locked = yaml.safe_load((root / "dvc.lock").read_text())
    assert result["commit"] == subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, text=True,
                                              capture_output=True).stdout.strip()
    assert {o["locked_md5"] for o in result["outputs"]} == {
        o["md5"] for s in locked["stages"].values() for o in s["outs"]}
    assert leftovers(Path(env["TMPDIR"])) == []
    # the registry itself is untouched: no output rewritten, nothing new in git status
    assert subprocess.run(["git", "status", "--porcelain"], cwd=root, text=True,
                          capture_output=True).stdout == ""


def test_a_nondeterministic_stage_is_named_and_exits_1(tmp_path: Path, env: dict[str, str]) -> None:
    root = make_registry(tmp_path / "reg", env, noise=True)
    proc = reproduce(root, env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "NOT reproduced" in proc.stdout
    assert "problem: noise: noise.bin differs: bytes differ" in proc.stdout
    assert "data.bin\tidentical" in proc.stdout
    assert leftovers(Path(env["TMPDIR"])) == []


def test_a_metric_beyond_tolerance_is_named_with_its_difference(tmp_path: Path,
                                                                env: dict[str, str]) -> None:
    root = make_registry(tmp_path / "reg", env, drift=0.05)
    proc = reproduce(root, env, "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = {o["path"]: o for o in json.loads(proc.stdout)["outputs"]}
    metric = out["metrics.json"]
    assert metric["verdict"] == "differs" and metric["where"] == "auc"
    # both values lie in [0.9, 0.95] (the stage's drift), so the difference is at most 0.05,
    # and it is beyond release.tolerance.auc (1e-6)
    locked = json.loads((root / "metrics.json").read_text())["auc"]
    assert 0.9 <= locked <= 0.95
    assert 1e-6 < metric["largest_difference"] <= 0.05 + 1e-12
    md = reproduce(root, env, "--format", "md")
    assert md.returncode == 1
    assert "| evaluate | metrics.json | differs |" in md.stdout


def test_a_metric_within_tolerance_passes_and_says_so(tmp_path: Path, env: dict[str, str]) -> None:
    root = make_registry(tmp_path / "reg", env, drift=1e-9)  # below release.tolerance.auc 1e-6
    proc = reproduce(root, env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metric = {o["path"]: o for o in json.loads(proc.stdout)["outputs"]}["metrics.json"]
    assert metric["verdict"] == "within tolerance"
    assert 0 < metric["largest_difference"] <= 1e-6 and metric["where"] == "auc"


def test_a_release_tag_names_the_revision(tmp_path: Path, env: dict[str, str]) -> None:
    root = make_registry(tmp_path / "reg", env)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "tag", "-a", "core@v1.0.0", "-m", "r",
       cwd=root, env=env)
    (root / "metric.py").write_text(METRIC.replace("0.9", "0.8"))  # later, uncommitted work
    proc = reproduce(root, env, "core@v1.0.0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "at core@v1.0.0" in proc.stdout


@pytest.mark.parametrize("case", ["unknown-rev", "dirty", "no-lock", "not-git"])
def test_bad_input_is_one_line_exit_2_and_leaves_no_temp_folder(tmp_path: Path, env: dict[str, str],
                                                                case: str) -> None:
    if case == "not-git":
        root = tmp_path / "plain"
        root.mkdir()
    else:
        root = make_registry(tmp_path / "reg", env)
    args: tuple[str, ...] = ()
    if case == "unknown-rev":
        args = ("core@v9.9.9",)
    elif case == "dirty":
        (root / "gen.py").write_text(GEN + "# edited\n")
    elif case == "no-lock":
        sh("git", "rm", "-q", "dvc.lock", cwd=root, env=env)
        sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "drop lock",
           cwd=root, env=env)
    proc = reproduce(root, env, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("relgate: error: "), proc.stderr
    expected = {"unknown-rev": "unknown revision", "dirty": "uncommitted changes",
                "no-lock": "no dvc.lock", "not-git": "not a git repository"}[case]
    assert expected in lines[0]
    assert leftovers(Path(env["TMPDIR"])) == []


def test_ctrl_c_removes_the_temp_clone(tmp_path: Path, env: dict[str, str]) -> None:
    root = make_registry(tmp_path / "reg", env, slow=True)
    tmp = Path(env["TMPDIR"])
    proc = subprocess.Popen([sys.executable, "-m", "relgate", "reproduce", "--registry", str(root)],
                            cwd=root, env={**env, "SLOW": "60"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # as a terminal's foreground job: a test run started in the
                            # background (`pytest &`) has SIGINT ignored, and children inherit it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the slow stage runs inside the clone
        clones = leftovers(tmp)
        if clones and (tmp / clones[0] / "registry" / "dvc.lock").exists():
            break
        time.sleep(0.2)
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert leftovers(tmp) == []


def test_a_clone_left_by_a_killed_run_is_removed_by_the_next(tmp_path: Path,
                                                             env: dict[str, str]) -> None:
    root = make_registry(tmp_path / "reg", env)
    tmp = Path(env["TMPDIR"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True).stdout.strip()
    stale = tmp / f"relgate-reproduce-{dead}-abc123"
    (stale / "registry").mkdir(parents=True)
    assert reproduce(root, env).returncode == 0
    assert leftovers(tmp) == []


RAW_STAGE = """\
import hashlib
data = open("raw.csv", "rb").read()
open("digest.txt", "w").write(hashlib.sha256(data).hexdigest())
"""


def _registry_with_tracked_input(root: Path, env: dict[str, str], remote: Path | None) -> Path:
    """A registry whose stage reads raw.csv, an input tracked by `dvc add` (not a stage output)."""
    root.mkdir(parents=True)
    py = sys.executable
    (root / "raw.csv").write_text("a,b\n1,2\n3,4\n")
    (root / "digest.py").write_text(RAW_STAGE)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"digest": {
        "cmd": f"{py} digest.py", "deps": ["digest.py", "raw.csv"], "outs": ["digest.txt"]}}}))
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=root, env=env)
    sh("dvc", "init", "-q", cwd=root, env=env)
    sh("dvc", "add", "-q", "raw.csv", cwd=root, env=env)
    if remote is not None:
        sh("dvc", "remote", "add", "-d", "store", str(remote), cwd=root, env=env)
    sh("dvc", "repro", "-q", cwd=root, env=env)
    if remote is not None:
        sh("dvc", "push", "-q", cwd=root, env=env)
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "registry",
       cwd=root, env=env)
    return root


def test_tracked_inputs_are_pulled_from_the_registrys_cache(tmp_path: Path, env: dict[str, str]) -> None:
    root = _registry_with_tracked_input(tmp_path / "reg", env, remote=None)
    proc = reproduce(root, env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {o["path"]: o["verdict"] for o in json.loads(proc.stdout)["outputs"]} == {
        "digest.txt": "identical"}


def test_tracked_inputs_come_from_the_remote_when_the_cache_lacks_them(tmp_path: Path,
                                                                      env: dict[str, str]) -> None:
    remote = tmp_path / "remote"
    root = _registry_with_tracked_input(tmp_path / "reg", env, remote=remote)
    shutil.rmtree(root / ".dvc" / "cache")  # only the remote has raw.csv now
    proc = reproduce(root, env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.rmtree(remote)  # and with neither, the input cannot be fetched: bad input
    proc = reproduce(root, env)
    assert proc.returncode == 2 and "cannot fetch the registry's tracked inputs" in proc.stderr
    assert leftovers(Path(env["TMPDIR"])) == []
