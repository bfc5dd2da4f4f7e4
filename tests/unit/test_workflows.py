"""GitHub Actions workflows and the composite action: schema-valid, zizmor-clean, least privilege.

Static checks run the same tools a reviewer would (check-jsonschema with its vendored GitHub
schemas, zizmor offline); the direct YAML checks pin the project's own rules (STYLE.md item 16)
so a later edit cannot quietly drop them. The shell steps that carry logic (base-branch params,
release tag derivation, idempotent tagging) are run for real against temp git repositories.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = REPO_ROOT / ".github" / "workflows"
WORKFLOWS = sorted([*WORKFLOW_DIR.glob("*.yml"), *WORKFLOW_DIR.glob("*.yaml")])
ACTION = REPO_ROOT / "action.yml"
ALL_FILES = [*WORKFLOWS, ACTION]
CREDENTIALED_WORKFLOW = "publish.yml"

PINNED_USES = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:/[^@\s]+)?@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(REPO_ROOT).as_posix() for p in paths]


def tool(name: str) -> str:
    """The tool installed next to this interpreter (the venv), else the one on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the dev extra: pip install -e '.[dev]'")
    return found


def offline_env() -> dict[str, str]:
    """No tokens, so nothing could authenticate to GitHub even if a tool tried."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN"}}
    env["ZIZMOR_OFFLINE"] = "true"
    return env


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def triggers(workflow: dict[Any, Any]) -> set[str]:
    """Event names of a workflow (PyYAML reads the bare key ``on`` as True)."""
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on}
    if isinstance(on, list):
        return set(on)
    assert isinstance(on, dict), f"unreadable 'on': {on!r}"
    return set(on)


def steps_of(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(job id or 'action', step) for every step of a workflow or of the composite action."""
    data = load(path)
    if path == ACTION:
        for step in data["runs"]["steps"]:
            yield "action", step
        return
    for job_id, job in data["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def step_named(path: Path, fragment: str) -> dict[str, Any]:
    matches = [s for _, s in steps_of(path) if fragment in str(s.get("name", ""))]
    assert len(matches) == 1, f"{path.name}: expected one step named like {fragment!r}"
    return matches[0]


def uses_of(path: Path, prefix: str) -> list[dict[str, Any]]:
    return [s for _, s in steps_of(path) if str(s.get("uses", "")).startswith(prefix)]


# --- the files are there and the tools accept them -------------------------------------------


def test_expected_files_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release-gate.yml", "publish.yml"}
    assert ACTION.is_file()


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_workflow_matches_github_schema(path: Path) -> None:
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True, text=True, timeout=120, env=offline_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_action_matches_github_schema() -> None:
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", str(ACTION)],
        capture_output=True, text=True, timeout=120, env=offline_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    """The schema check can fail: a job with steps that are not a list is refused."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps: nope\n")
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(bad)],
        capture_output=True, text=True, timeout=120, env=offline_env(),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr


def zizmor(*paths: Path) -> list[dict[str, Any]]:
    """zizmor's findings, offline, strictest persona; repository config and ignore comments off."""
    proc = subprocess.run(
        [tool("zizmor"), "--offline", "--no-config", "--no-ignores", "--persona", "auditor",
         "--format", "json", "--no-exit-codes", "--no-progress", *map(str, paths)],
        capture_output=True, text=True, timeout=120, env=offline_env(), cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    findings = json.loads(proc.stdout)
    assert isinstance(findings, list)
    return findings


def above_informational(findings: list[dict[str, Any]]) -> list[str]:
    return [
        f"{f['ident']} ({f['determinations']['severity']}): {f['desc']} at "
        + ", ".join(
            f"{loc['symbolic']['key']['Local']['verbatim_path']}:"
            f"{loc['concrete']['location']['start_point']['row'] + 1}"
            for loc in f.get("locations", []) if "Local" in loc["symbolic"]["key"]
        )
        for f in findings
        if f["determinations"]["severity"] != "Informational"
    ]


def test_zizmor_finds_nothing_above_informational() -> None:
    assert above_informational(zizmor(*ALL_FILES)) == []


def test_zizmor_audit_is_not_vacuous(tmp_path: Path) -> None:
    """The same invocation flags an unpinned action and a template injection."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
        "    permissions: {}\n    steps:\n      - uses: actions/checkout@v4\n"
        "        with: {persist-credentials: false}\n"
        "      - run: echo \"${{ github.event.pull_request.title }}\"\n"
    )
    idents = {f["ident"] for f in zizmor(bad) if f["determinations"]["severity"] != "Informational"}
    assert {"unpinned-uses", "template-injection"} <= idents


# --- direct rules (STYLE.md item 16) ---------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_permissions_empty_at_top_and_explicit_per_job(path: Path) -> None:
    data = load(path)
    assert data.get("permissions") == {}, "top-level permissions must be {}"
    for job_id, job in data["jobs"].items():
        assert isinstance(job.get("permissions"), dict), f"job {job_id}: no explicit permissions"
        for scope, level in job["permissions"].items():
            if level == "write":
                assert (path.name, job_id, scope) in {("publish.yml", "tag", "contents"),
                                                      ("publish.yml", "sign", "id-token")}, (
                    f"{path.name} job {job_id}: {scope}: write is not allowed here"
                )


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_bash_is_the_default_shell(path: Path) -> None:
    assert load(path).get("defaults", {}).get("run", {}).get("shell") == "bash"


def test_composite_action_steps_use_bash() -> None:
    data = load(ACTION)
    assert data["runs"]["using"] == "composite"
    run_steps = [s for _, s in steps_of(ACTION) if "run" in s]
    assert run_steps
    assert all(s.get("shell") == "bash" for s in run_steps)


@pytest.mark.parametrize("path", ALL_FILES, ids=ids(ALL_FILES))
def test_every_uses_is_pinned_to_a_commit_with_a_version_comment(path: Path) -> None:
    seen = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        m = USES_LINE.match(line)
        if m is None:
            continue
        seen += 1
        ref = m["ref"].strip("'\"")
        if ref.startswith("./"):
            continue
        assert PINNED_USES.match(ref), f"{path.name}: not pinned to a 40-hex commit: {ref}"
        assert re.match(r"^\s+#\s*v\d", m["rest"]), f"{path.name}: no '# vX': {line.strip()}"
    parsed = [s for _, s in steps_of(path) if "uses" in s]
    assert seen == len(parsed), "every uses: must sit on its own line as 'uses: ref # vX'"


def test_each_action_is_pinned_to_one_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for path in ALL_FILES:
        for _, step in steps_of(path):
            if "uses" in step:
                name, _, sha = step["uses"].partition("@")
                pins.setdefault(name, set()).add(sha)
    assert pins, "no actions used at all?"
    assert {k: v for k, v in pins.items() if len(v) > 1} == {}


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_every_checkout_drops_credentials(path: Path) -> None:
    checkouts = uses_of(path, "actions/checkout@")
    assert checkouts, f"{path.name}: no checkout step"
    for step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_no_pull_request_target(path: Path) -> None:
    assert "pull_request_target" not in triggers(load(path))
    assert "pull_request_target" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", ALL_FILES, ids=ids(ALL_FILES))
def test_secrets_only_in_publish(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    uses_secrets = [e for e in EXPRESSION.findall(text) if re.search(r"\bsecrets\b", e)]
    if path.name != CREDENTIALED_WORKFLOW:
        assert uses_secrets == [], f"{path.name} must hold no credentials"
        assert "github.token" not in text
        return
    # In publish.yml: only in the publish job (never in the job that can write), only in step env.
    data = load(path)
    for job_id, job in data["jobs"].items():
        job_text = yaml.safe_dump(job)
        if job_id != "publish":
            assert "secrets." not in job_text, f"job {job_id} must not see secrets"
    for job_id, step in steps_of(path):
        for key, value in step.items():
            if key != "env":
                assert "secrets." not in str(value), f"{job_id}: secrets outside step env"
    assert data["jobs"]["publish"].get("environment"), "secrets belong to a deployment environment"
    assert "secrets." not in yaml.safe_dump(data["jobs"]["publish"].get("env", {}))


@pytest.mark.parametrize("path", ALL_FILES, ids=ids(ALL_FILES))
def test_no_expressions_inside_run_scripts(path: Path) -> None:
    """Values reach scripts through env, so nothing a PR controls is spliced into shell code."""
    for job_id, step in steps_of(path):
        if "run" in step:
            assert "${{" not in step["run"], f"{job_id}/{step.get('name')}: expression in run"


# --- what each workflow is for ---------------------------------------------------------------


def test_ci_runs_the_nox_sessions_on_push_and_pull_request() -> None:
    path = WORKFLOW_DIR / "ci.yml"
    assert {"push", "pull_request"} <= triggers(load(path))
    runs = [s["run"] for _, s in steps_of(path) if "run" in s]
    assert "python -m pip install nox" in runs
    assert "nox -s tests lint typecheck" in runs


def test_release_gate_judges_with_the_base_branch_code_and_params() -> None:
    path = WORKFLOW_DIR / "release-gate.yml"
    data = load(path)
    assert triggers(data) == {"pull_request"}
    jobs = data["jobs"]
    assert set(jobs) == {"reproduce", "judge"}
    assert jobs["judge"]["needs"] == "reproduce"
    for job in jobs.values():
        assert job["permissions"] == {"contents": "read"}
    # the judge job never checks out or runs the pull request's code
    judge_steps = jobs["judge"]["steps"]
    (checkout,) = [s for s in judge_steps if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout["with"]["ref"] == "${{ github.base_ref }}"
    runs = "\n".join(s.get("run", "") for s in judge_steps)
    assert "dvc repro" not in runs and "pip install -e" not in runs
    install = step_named(path, "Install the judge")
    assert "python -m pip install --quiet ." in install["run"]
    judged = step_named(path, "Re-validate the candidate")
    assert 'params="$GITHUB_WORKSPACE/params.yaml"' in judged["run"]
    # baselines, the test split and the calibration's fit split: checked against what the
    # base checkout pins, never against the candidate's own files (tests/adversarial/
    # test_attacks_judge.py runs this step against forged uploads)
    assert '--pins "$GITHUB_WORKSPACE"' in judged["run"]
    assert "--baseline-root-digest" not in judged["run"]
    gate = step_named(path, "Gate with")
    assert gate["run"].rstrip().endswith(
        '"$JUDGE" gate "$RUNNER_TEMP/judged-report.json" --params params.yaml')
    summary = step_named(path, "summary")
    assert "--params params.yaml" in summary["run"]
    assert '>> "$GITHUB_STEP_SUMMARY"' in summary["run"]
    # the PR's code runs only in `reproduce`, which hands over files, not code
    assert "dvc repro validate" in step_named(path, "Reproduce")["run"]
    (upload,) = uses_of(path, "actions/upload-artifact@")
    assert upload["with"]["name"] == "candidate"
    # the split the calibration was fit on travels too, so the judge can check its pin
    assert {"data/test.npz", "data/val.npz"} <= set(upload["with"]["path"].split())
    (download,) = uses_of(path, "actions/download-artifact@")
    assert download["with"]["name"] == "candidate"


def test_release_gate_caches_dvc_cache_and_site_cache() -> None:
    path = WORKFLOW_DIR / "release-gate.yml"
    job = load(path)["jobs"]["reproduce"]
    (cache,) = uses_of(path, "actions/cache@")
    cached = cache["with"]["path"].split()
    assert ".dvc/cache" in cached
    site = job["env"]["DVC_SITE_CACHE_DIR"]
    assert site.startswith("${{ github.workspace }}/")
    assert site.removeprefix("${{ github.workspace }}/") in cached


def test_publish_tags_with_write_only_in_the_tag_job() -> None:
    path = WORKFLOW_DIR / CREDENTIALED_WORKFLOW
    data = load(path)
    on = data.get("on", data.get(True))
    assert set(on) == {"push", "workflow_dispatch"}
    assert on["push"]["branches"] == ["main"]
    assert data["concurrency"]["cancel-in-progress"] is False
    assert data["jobs"]["publish"]["permissions"] == {"contents": "read"}
    assert data["jobs"]["tag"]["permissions"] == {"contents": "write"}
    assert data["jobs"]["tag"]["needs"] == "publish"
    runs = [s.get("run", "") for _, s in steps_of(path)]
    order = [next(i for i, r in enumerate(runs) if needle in r)
             for needle in ("dvc repro", "relgate promote", "relgate verify", "dvc push")]
    assert order == sorted(order), "repro, promote, verify, push: in that order"
    tag_job_text = yaml.safe_dump(data["jobs"]["tag"])
    assert "relgate" not in tag_job_text.replace("relgate-root-digest", "")
    assert "dvc " not in tag_job_text


def test_keyless_signing_gets_id_token_in_the_sign_job_only() -> None:
    """Sigstore keyless signing (issue 17): only the sign job may mint an OIDC token; it runs
    no pipeline, sees no secret and cannot write; it signs the bundle the publish job verified,
    after checking it against that job's root digest, and checks its own signature."""
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            if (job.get("permissions") or {}).get("id-token") is not None:
                assert (path.name, job_id) == (CREDENTIALED_WORKFLOW, "sign"), (path.name, job_id)
    data = load(WORKFLOW_DIR / CREDENTIALED_WORKFLOW)
    sign = data["jobs"]["sign"]
    assert sign["permissions"] == {"contents": "read", "id-token": "write"}
    assert sign["needs"] == "publish"
    assert "vars.RELGATE_KEYLESS_SIGNING" in sign["if"]
    text = yaml.safe_dump(sign)
    assert "secrets." not in text and "dvc " not in text and "environment" not in sign
    runs = "\n".join(s.get("run", "") for s in sign["steps"])
    order = [runs.index(needle) for needle in ("relgate verify \"$BUNDLE\" --root-digest",
                                               "relgate sign \"$BUNDLE\" --sigstore",
                                               "--identity", "--issuer https://token.actions")]
    assert order == sorted(order)
    uploads = [s for s in data["jobs"]["publish"]["steps"]
               if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert len(uploads) == 1 and uploads[0]["if"] == sign["if"]


def test_action_inputs_reach_the_script_through_env() -> None:
    data = load(ACTION)
    inputs = data["inputs"]
    assert {"command", "path", "params"} <= set(inputs)
    assert inputs["params"]["default"] == "params.yaml"
    run = step_named(ACTION, "Run relgate")
    assert run["env"]["RELGATE_COMMAND"] == "${{ inputs.command }}"
    assert run["env"]["RELGATE_PATH"] == "${{ inputs.path }}"
    assert run["env"]["RELGATE_PARAMS"] == "${{ inputs.params }}"


# --- the shell and Python the steps run, executed for real -----------------------------------


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True, timeout=60).stdout


def run_step(script: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a step's script the way Actions does for ``shell: bash`` (bash -eo pipefail),
    with this interpreter's folder first on PATH (as setup-python would put it)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd, env={**os.environ, "PATH": path, **env}, capture_output=True, text=True,
        timeout=120,
    )


@pytest.fixture
def origin_and_clone(tmp_path: Path) -> tuple[Path, Path]:
    """A bare 'origin' with one commit on main, and a clone of it (the runner's checkout)."""
    origin = tmp_path / "origin.git"
    git("init", "--bare", "-b", "main", str(origin), cwd=tmp_path)
    clone = tmp_path / "work"
    git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
    (clone / "params.yaml").write_text("gates: base\n")
    git("add", "params.yaml", cwd=clone)
    git("commit", "-q", "-m", "base", cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    return origin, clone


PARAMS = """schema_version: 1
gates:
  mode: all
  rules:
    - {{metric: auc, op: ">=", value: 0.85}}
release:
  name: "{name}"
  promoted: {{path: models/model.onnx}}
"""


@pytest.mark.parametrize(
    ("name", "record_tag", "expected"),
    [
        ("sensor-1.2.0", None, "sensor@v1.2.0"),
        ("Sensor_Anomaly-v2.0.1-rc.1", None, "sensor-anomaly@v2.0.1-rc.1"),
        ("1.10", None, "core@v1.10.0"),
        ("nightly", "core@v3.0.0", "core@v3.0.0"),
    ],
)
def test_release_tag_from_record_or_name(
    tmp_path: Path, name: str, record_tag: str | None, expected: str
) -> None:
    (tmp_path / "params.yaml").write_text(PARAMS.format(name=name))
    bundle = tmp_path / "models" / "core" / name
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text(json.dumps({"root_digest": "ab" * 32}))
    (bundle / "release.json").write_text(json.dumps({"name": name, **(
        {"tag": record_tag} if record_tag else {})}))
    out = tmp_path / "github-output"
    step = step_named(WORKFLOW_DIR / CREDENTIALED_WORKFLOW, "release name, tag")
    proc = run_step(step["run"], cwd=tmp_path, env={"GITHUB_OUTPUT": str(out)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert outputs == {"release": name, "bundle": f"models/core/{name}", "tag": expected,
                       "root-digest": "ab" * 32}
    assert subprocess.run(["git", "check-ref-format", f"refs/tags/{expected}"]).returncode == 0


@pytest.mark.parametrize(
    ("record_tag", "expected"),
    [(None, "core/v1.1-Omega-Calibrated"),  # an older record: the params template, filled
     ("core/v1.1-Omega-Calibrated", "core/v1.1-Omega-Calibrated")],
)
def test_release_tag_from_the_params_template(
    tmp_path: Path, record_tag: str | None, expected: str
) -> None:
    """Seed 000's ``release.tag: core/{name}``: the tag is read from params with relgate, not
    derived from the name in the GTO scheme (which would give ``core@v1.1.0-Omega-Calibrated``)."""
    name = "v1.1-Omega-Calibrated"
    (tmp_path / "params.yaml").write_text(
        PARAMS.format(name=name) + '  tag: "core/{name}"\n')
    bundle = tmp_path / "models" / "core" / name
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text(json.dumps({"root_digest": "ef" * 32}))
    (bundle / "release.json").write_text(json.dumps({"name": name, **(
        {"tag": record_tag} if record_tag else {})}))
    out = tmp_path / "github-output"
    step = step_named(WORKFLOW_DIR / CREDENTIALED_WORKFLOW, "release name, tag")
    proc = run_step(step["run"], cwd=tmp_path, env={"GITHUB_OUTPUT": str(out)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert outputs["tag"] == expected
    assert subprocess.run(["git", "check-ref-format", f"refs/tags/{expected}"]).returncode == 0


def test_release_without_version_or_tag_is_refused(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(PARAMS.format(name="nightly"))
    bundle = tmp_path / "models" / "core" / "nightly"
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text(json.dumps({"root_digest": "cd" * 32}))
    (bundle / "release.json").write_text(json.dumps({"name": "nightly"}))
    out = tmp_path / "github-output"
    step = step_named(WORKFLOW_DIR / CREDENTIALED_WORKFLOW, "release name, tag")
    proc = run_step(step["run"], cwd=tmp_path, env={"GITHUB_OUTPUT": str(out)})
    assert proc.returncode == 1
    assert "::error title=publish::release name 'nightly' has no version" in proc.stdout
    assert not out.exists()


def test_tag_step_tags_once_then_skips_identical_and_refuses_different(
    origin_and_clone: tuple[Path, Path],
) -> None:
    origin, clone = origin_and_clone
    step = step_named(WORKFLOW_DIR / CREDENTIALED_WORKFLOW, "Create the tag")
    head = git("rev-parse", "HEAD", cwd=clone).strip()
    env = {"TAG": "sensor@v1.2.0", "RELEASE": "sensor-1.2.0", "ROOT_DIGEST": "ab" * 32,
           "GITHUB_TOKEN": "not-a-real-token", "GITHUB_SHA": head,
           "GITHUB_SERVER_URL": "https://github.com"}

    first = run_step(step["run"], cwd=clone, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"::notice title=publish::tagged {head} as sensor@v1.2.0" in first.stdout
    assert git("rev-parse", "refs/tags/sensor@v1.2.0^{commit}", cwd=origin).strip() == head
    message = git("for-each-ref", "--format=%(contents)", "refs/tags/sensor@v1.2.0", cwd=origin)
    assert f"relgate-root-digest: {'ab' * 32}" in message.splitlines()

    # A fresh runner: a new clone without the tag, same bundle -> clean no-op.
    fresh = clone.parent / "fresh"
    git("clone", "-q", "--no-tags", str(origin), str(fresh), cwd=clone.parent)
    again = run_step(step["run"], cwd=fresh, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already names this bundle" in again.stdout

    other = run_step(step["run"], cwd=fresh, env={**env, "ROOT_DIGEST": "cd" * 32,
                                                  "TAG": "sensor@v1.2.0"})
    assert other.returncode == 1
    assert "exists but does not name bundle" in other.stdout

    bad = run_step(step["run"], cwd=fresh, env={**env, "TAG": "bad..tag"})
    assert bad.returncode == 1
    assert "not a valid tag name" in bad.stdout
    assert git("tag", "--list", cwd=origin).split() == ["sensor@v1.2.0"]


def test_action_refuses_an_unknown_command(tmp_path: Path) -> None:
    step = step_named(ACTION, "Run relgate")
    out = tmp_path / "github-output"
    proc = run_step(step["run"], cwd=tmp_path, env={
        "RELGATE_COMMAND": "rm -rf", "RELGATE_PATH": "x", "RELGATE_PARAMS": "params.yaml",
        "RELGATE_BASELINE": "", "RUNNER_TEMP": str(tmp_path), "GITHUB_OUTPUT": str(out),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    })
    assert proc.returncode == 2
    assert "::error title=relgate::input 'command' must be gate, verify or report" in proc.stdout


def test_the_tag_publish_writes_is_the_pin_fetch_reads(origin_and_clone: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    """When a commit has no release record, relgate fetch verifies against the digest in the
    annotated tag: the line publish.yml's tag step writes is the one it reads."""
    from relgate.distribution import pin_from_tag

    origin, clone = origin_and_clone
    step = step_named(WORKFLOW_DIR / CREDENTIALED_WORKFLOW, "Create the tag")
    digest = "0123456789abcdef" * 4
    env = {"TAG": "core@v1.2.0", "RELEASE": "v1.2.0", "ROOT_DIGEST": digest,
           "GITHUB_TOKEN": "not-a-real-token", "GITHUB_SHA": git("rev-parse", "HEAD", cwd=clone).strip(),
           "GITHUB_SERVER_URL": "https://github.com"}
    proc = run_step(step["run"], cwd=clone, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    consumer = tmp_path / "consumer"
    git("clone", "-q", "--no-checkout", str(origin), str(consumer), cwd=tmp_path)
    pin = pin_from_tag(consumer, "v1.2.0")
    assert pin is not None and pin.root_digest == digest
    assert pin.source == "annotated tag core@v1.2.0"
