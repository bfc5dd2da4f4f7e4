"""End-to-end fixtures: a producer registry with real git, real DVC and real remotes.

The producer is tests/support/registry.py's small registry (a linear ONNX model
with external data, a token-readout variant, val/test splits) plus a dvc.yaml
whose stages call the relgate CLI: calibrate -> validate -> promote. It has a
bare git remote on disk and a DVC remote (a local folder, or S3 on a moto
server). Publishing a release is what a release manager does: ``dvc repro``,
commit, tag ``core@<name>``, ``dvc push``, ``git push --tags``.

git and DVC run as subprocesses with an explicit environment (HOME, git and
DVC config inside the test's temp folders), so session-scoped fixtures do not
depend on the function-scoped ``sandbox_env``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relgate.distribution import dvc_command
from tests.support.registry import W_TRUE, linear_model, make_registry, write_params

DVC_YAML = """\
stages:
  calibrate:
    cmd: relgate calibrate --model models/model.onnx --data data/val.npz
      --out analysis/calibration.json
    deps: [models/model.onnx, models/model.onnx.data, data/val.npz]
    params: [calibrate]
    outs:
    - analysis/calibration.json:
        cache: false
  validate:
    cmd: relgate validate --model models/model.onnx --data data/test.npz
      --calibration analysis/calibration.json --out analysis/validation_report.json
    deps: [models/model.onnx, models/model.onnx.data, data/test.npz, analysis/calibration.json]
    params: [validate, gates]
    outs:
    - analysis/validation_report.json:
        cache: false
  promote:
    cmd: relgate promote
    deps: [models/model.onnx, models/model.onnx.data, models/readout.onnx, data/test.npz,
           analysis/calibration.json, analysis/validation_report.json]
    params: [release, gates]
    outs:
    # every bundle: cached (so dvc push uploads it) and persistent (never deleted before a
    # run), one output for all releases, as in the reference dvc.yaml
    - models/core:
        persist: true
    # the record that pins the bundle's root digest outside it: in git, and kept across
    # re-runs (promote does not rewrite it when the bundle is already published)
    - analysis/release_${release.name}.json:
        cache: false
        persist: true
artifacts:
  core:
    path: models/core
    type: model
"""

#: model weight scale per release: v1.1.0 is a different model (other bytes, other metrics)
SCALES = {"v1.0.0": 3.0, "v1.1.0": 2.0}


def tool_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment git, DVC and relgate run with: nothing read from the real home."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "GIT_", "DVC_")) and k != "PYTEST_CURRENT_TEST"}
    home.mkdir(parents=True, exist_ok=True)
    gitconfig = home / "gitconfig"
    if not gitconfig.exists():
        gitconfig.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    env.update({
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "CI": "1",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
        "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "relgate tests",
        "GIT_AUTHOR_EMAIL": "tests@relgate.invalid",
        "GIT_COMMITTER_NAME": "relgate tests",
        "GIT_COMMITTER_EMAIL": "tests@relgate.invalid",
        "OMP_NUM_THREADS": "1",
    })
    env.update(extra or {})
    return env


@dataclass
class Tools:
    """Runs git, DVC and relgate in child processes with one environment."""

    env: dict[str, str]

    def run(self, cmd: Sequence[object], cwd: Path, *, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, cmd))} (in {cwd}) exited "
                                 f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def git(self, *args: object, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["git", *args], cwd, check=check)

    def dvc(self, *args: object, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run([*dvc_command(), *args], cwd, check=check)

    def relgate(self, *args: object, cwd: Path,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "relgate", *args], cwd, check=check)


@dataclass
class Producer:
    """A registry repository, its bare git remote, its DVC remote, and what it has released."""

    tools: Tools
    root: Path
    origin: Path
    dvc_remote: str
    digests: dict[str, str] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def record(self, name: str) -> Path:
        return self.root / "analysis" / f"release_{name}.json"

    def publish(self, name: str) -> str:
        """Promote release *name* (a changed model), tag core@<name>, push data and git."""
        t0 = time.perf_counter()
        previous = sorted(self.digests)
        if previous:  # a new model under a new release name; splits and variant unchanged
            linear_model(self.root / "models" / "model.onnx", SCALES.get(name, 1.5) * W_TRUE)
            write_params(self.root, release=name)
        else:
            make_registry(self.root, release=name, scale=SCALES.get(name, 1.5))
        self.tools.dvc("repro", "-q", cwd=self.root)
        self.tools.git("add", "-A", cwd=self.root)
        self.tools.git("commit", "-q", "-m", f"release {name}", cwd=self.root)
        # annotated, as publish.yml makes them: GTO (dvc artifacts get) reads only annotated tags
        self.tools.git("tag", "-a", f"core@{name}", "-m", f"Registering artifact core version {name}",
                       cwd=self.root)
        self.tools.dvc("push", "-q", cwd=self.root)
        self.tools.git("push", "-q", "origin", "main", "--tags", cwd=self.root)
        import json

        record = json.loads(self.record(name).read_text())
        self.digests[name] = record["bundle"]["root_digest"]
        self.commits[name] = self.tools.git("rev-parse", "HEAD", cwd=self.root).stdout.strip()
        self.timings[f"publish {name}"] = time.perf_counter() - t0
        return self.digests[name]


def make_producer(base: Path, tools: Tools, *, dvc_remote: str,
                  remote_options: Mapping[str, str] | None = None,
                  releases: Sequence[str] = ("v1.0.0",)) -> Producer:
    """git init + dvc init a registry at base/producer, remotes configured, releases published."""
    t0 = time.perf_counter()
    root, origin = base / "producer", base / "origin.git"
    root.mkdir(parents=True)
    tools.git("init", "-q", "--bare", origin, cwd=base)
    tools.git("init", "-q", cwd=root)
    tools.dvc("init", "-q", cwd=root)
    (root / "dvc.yaml").write_text(DVC_YAML)
    tools.dvc("remote", "add", "-d", "store", dvc_remote, cwd=root)
    for key, value in (remote_options or {}).items():
        tools.dvc("remote", "modify", "store", key, value, cwd=root)
    tools.git("remote", "add", "origin", origin, cwd=root)
    tools.git("add", "-A", cwd=root)
    tools.git("commit", "-q", "-m", "registry: pipeline and remotes", cwd=root)
    producer = Producer(tools=tools, root=root, origin=origin, dvc_remote=dvc_remote)
    producer.timings["setup"] = time.perf_counter() - t0
    for name in releases:
        producer.publish(name)
    return producer


@pytest.fixture(scope="session")
def e2e_tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return Tools(env=tool_env(tmp_path_factory.mktemp("e2e-home")))


@pytest.fixture(scope="session")
def producer(tmp_path_factory: pytest.TempPathFactory, e2e_tools: Tools) -> Producer:
    """A registry with a local-folder DVC remote that released v1.0.0, then v1.1.0."""
    base = tmp_path_factory.mktemp("registry")
    return make_producer(base, e2e_tools, dvc_remote=str(base / "dvc-remote"),
                         releases=("v1.0.0", "v1.1.0"))


# --------------------------------------------------------------------------- S3 on moto


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def moto_command(port: int) -> list[str]:
    beside = Path(sys.executable).parent / "moto_server"
    if beside.is_file():
        return [str(beside), "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class MotoServer:
    endpoint: str
    process: subprocess.Popen[bytes]

    def client(self) -> object:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto S3 server on 127.0.0.1 at a free port; always stopped, even when a test fails."""
    pytest.importorskip("moto")
    pytest.importorskip("boto3")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    port = free_port()
    env = {**tool_env(tmp_path_factory.mktemp("moto-home")), **S3_ENV}
    with open(log, "wb") as sink:
        proc = subprocess.Popen(moto_command(port), stdout=sink, stderr=subprocess.STDOUT,
                                env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"moto server exited {proc.returncode}: {log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"moto server did not listen on {port}: {log.read_text()}")
            time.sleep(0.1)
        yield MotoServer(endpoint=f"http://127.0.0.1:{port}", process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
