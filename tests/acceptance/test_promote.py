"""relgate promote on a real registry: reproduce, gate, publish; refusals; crashes; races."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relgate import schemas
from relgate.bundle import verify_bundle
from relgate.jsonio import read_json, write_json
from tests.support.registry import W_TRUE, linear_model, make_registry, prepare

BUNDLE = Path("models/core/v1.0.0")


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = make_registry(tmp_path / "reg")
    prepare(root)
    return root


def promote(root: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relgate", "promote", *map(str, args)], cwd=root,
                          capture_output=True, text=True, timeout=300)


def test_promote_publishes_a_verified_bundle_with_its_evidence(registry: Path, cli) -> None:
    proc = promote(registry)
    assert proc.returncode == 0, proc.stderr
    assert "published" in proc.stdout
    bundle = registry / BUNDLE
    assert sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()) == [
        "README.md", "calibration.json", "manifest.json", "models/model.onnx",
        "models/model.onnx.data", "models/readout.onnx", "release.json", "validation_report.json"]
    result = verify_bundle(bundle)
    assert result.ok
    record = read_json(bundle / "release.json")
    schemas.validate(record, "release")
    assert [a["role"] for a in record["artifacts"]] == ["promoted", "variant"]
    assert {f["path"] for f in record["artifacts"][0]["files"]} == {"model.onnx", "model.onnx.data"}
    assert record["tag"] == "core@v1.0.0"
    assert record["reproduced"]["auc"]["delta"] == 0.0
    mirror = read_json(registry / "analysis/release_v1.0.0.json")
    schemas.validate(mirror, "release")
    assert mirror["bundle"]["root_digest"] == result.root_digest
    assert (bundle / "validation_report.json").read_bytes() == (
        registry / "analysis/validation_report.json").read_bytes()
    card = (bundle / "README.md").read_text()
    assert "relgate verify models/core/v1.0.0" in card and "| auc" in card
    assert all(not os.access(p, os.W_OK) or os.geteuid() == 0 for p in bundle.rglob("*") if p.is_file())
    assert all((p.stat().st_mode & 0o222) == 0 for p in bundle.rglob("*") if p.is_file())
    assert cli("verify", bundle, "--root-digest", result.root_digest).code == 0


def test_promoting_twice_with_identical_content_is_a_noop(registry: Path) -> None:
    assert promote(registry).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in (registry / BUNDLE).rglob("*")}
    again = promote(registry)
    assert again.returncode == 0, again.stderr
    assert "already published with identical content" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (registry / BUNDLE).rglob("*")} == before


def test_same_name_with_changed_content_is_refused(registry: Path) -> None:
    assert promote(registry).returncode == 0
    linear_model(registry / "models/model.onnx", 2.5 * W_TRUE)
    prepare(registry)  # honest new evidence for a different model, same release name
    proc = promote(registry)
    assert proc.returncode == 1
    assert "already published" in proc.stderr and "different content" in proc.stderr
    assert verify_bundle(registry / BUNDLE).ok


def test_model_changed_after_validation_is_refused(registry: Path) -> None:
    linear_model(registry / "models/model.onnx", 2.0 * W_TRUE)
    proc = promote(registry)
    assert proc.returncode == 1
    assert "models/model.onnx changed after validation" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (registry / "models/core").exists() or not any((registry / "models/core").iterdir())


def test_report_with_edited_auc_is_refused_naming_the_metric(registry: Path) -> None:
    path = registry / "analysis/validation_report.json"
    report = read_json(path)
    report["metrics"]["auc"]["value"] += 0.01
    report["stats"]["auc"] = report["metrics"]["auc"]["value"]
    write_json(path, report)
    # the calibration and model are untouched, so the sha256 checks pass; the metric must not
    proc = promote(registry)
    assert proc.returncode == 1
    assert "auc moved by -0.01" in proc.stderr
    assert not (registry / BUNDLE).exists()


def test_failing_gates_are_refused_and_nothing_is_published(registry: Path) -> None:
    text = (registry / "params.yaml").read_text().replace("value: 0.7", "value: 0.99")
    (registry / "params.yaml").write_text(text)
    proc = promote(registry)
    assert proc.returncode == 1
    assert "gates failed" in proc.stderr and "auc" in proc.stderr
    assert not (registry / BUNDLE).exists()


def test_missing_evidence_is_bad_input(registry: Path) -> None:
    (registry / "analysis/validation_report.json").unlink()
    proc = promote(registry)
    assert proc.returncode == 2
    assert "analysis/validation_report.json" in proc.stderr and "Traceback" not in proc.stderr


KILL = """
from relgate.numeric_env import pin_process
pin_process()  # as the relgate console entry does, before numpy loads (same float paths)
import os, signal, sys
import relgate.bundle as bundle, relgate.hashing as hashing
where = sys.argv[1]
orig_publish, orig_copy = bundle.publish_bundle, hashing.copy_and_hash
copies = []
def copy(src, dst):
    copies.append(dst)
    if where == "during-copy" and len(copies) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return orig_copy(src, dst)
def publish(target, build, **kw):
    def step(name):
        if name == where:
            os.kill(os.getpid(), signal.SIGKILL)
    return orig_publish(target, build, on_step=step, **kw)
bundle.publish_bundle, hashing.copy_and_hash = publish, copy
from relgate.cli import main
sys.exit(main(["promote"]))
"""


@pytest.mark.parametrize("where", ["during-copy", "built", "synced", "locked", "renamed"])
def test_sigkill_during_promotion_leaves_no_bundle_or_a_complete_one(registry: Path, where: str) -> None:
    proc = subprocess.run([sys.executable, "-c", KILL, where], cwd=registry, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    bundle = registry / BUNDLE
    if where == "renamed":
        assert verify_bundle(bundle).ok
    else:
        assert not bundle.exists()
    after = promote(registry)
    assert after.returncode == 0, after.stderr
    assert verify_bundle(bundle).ok
    leftovers = [p.name for p in bundle.parent.iterdir() if p.name != "v1.0.0"]
    assert leftovers == [], leftovers


def test_two_promotions_started_together_publish_exactly_once(registry: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "relgate", "promote", "--json"], cwd=registry,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    created = [json.loads(out)["created"] for out, _ in outs]
    assert sorted(created) == [False, True]
    assert verify_bundle(registry / BUNDLE).ok


def test_release_override_and_json_output(registry: Path) -> None:
    proc = promote(registry, "--release", "v1.0.1", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["name"] == "v1.0.1" and out["created"] is True
    assert verify_bundle(registry / "models/core/v1.0.1").ok
    # the record inside the bundle says v1.0.1 everywhere, its recorded params included
    record = json.loads((registry / "models/core/v1.0.1/release.json").read_text())
    assert record["name"] == "v1.0.1"
    assert record["provenance"]["params"]["release"]["name"] == "v1.0.1"
    bad = promote(registry, "--release", "../escape")
    assert bad.returncode == 2 and "release.name" in bad.stderr


def test_baseline_gate_against_the_previous_release(registry: Path) -> None:
    assert promote(registry).returncode == 0
    # a weaker candidate, judged "no worse than v1.0.0"
    text = (registry / "params.yaml").read_text().replace("name: v1.0.0", "name: v1.1.0")
    text = text.replace("release:\n", "  baseline:\n    release: v1.0.0\n    max_drop:\n      auc: 0.01\n"
                        "release:\n", 1)
    (registry / "params.yaml").write_text(text)
    rng_weights = W_TRUE * 3.0
    rng_weights[:8] = 0.0  # drops half the signal
    linear_model(registry / "models/model.onnx", rng_weights)
    prepare(registry)
    proc = promote(registry)
    assert proc.returncode == 1
    assert "baseline" in proc.stderr and "auc" in proc.stderr
    assert not (registry / "models/core/v1.1.0").exists()


def test_a_fresh_checkout_rebuilds_the_released_bundle_byte_for_byte(registry: Path) -> None:
    """The bundle is a function of the evidence: re-promoting elsewhere gives the pinned digest."""
    import shutil
    import time

    assert promote(registry).returncode == 0
    mirror = registry / "analysis/release_v1.0.0.json"
    pin = read_json(mirror)["bundle"]["root_digest"]
    pinned_bytes = mirror.read_bytes()
    # another clone: the git-tracked evidence and pin, no bundle (it lives in the DVC remote)
    clone = registry.parent / "clone"
    shutil.copytree(registry, clone, ignore=shutil.ignore_patterns("core"))
    time.sleep(1.1)  # a later second: a timestamp in the bundle would show
    proc = promote(clone)
    assert proc.returncode == 0, proc.stderr
    assert verify_bundle(clone / BUNDLE, expected_root_digest=pin).ok
    assert (clone / "analysis/release_v1.0.0.json").read_bytes() == pinned_bytes  # untouched


def test_an_edited_ungated_field_of_the_report_is_refused(registry: Path) -> None:
    path = registry / "analysis/validation_report.json"
    report = read_json(path)
    report["metrics"]["pr_auc"]["value"] = 0.99  # no gate reads pr_auc
    write_json(path, report)
    proc = promote(registry)
    assert proc.returncode == 1
    assert "metrics.pr_auc.value" in proc.stderr
    prepare(registry)  # honest evidence again, then an edited count
    report = read_json(path)
    report["data"]["n"] += 1
    write_json(path, report)
    proc = promote(registry)
    assert proc.returncode == 1 and "data.n: reported" in proc.stderr
    assert not (registry / BUNDLE).exists()


def _another_machine(pin: dict) -> None:
    """Edit a pin as if its bundle had been built on an AMD EPYC with onnxruntime 1.19.2."""
    pin["provenance"]["environment"]["cpu"] = {"vendor": "AuthenticAMD", "model": "AMD EPYC 7B13",
                                               "flags": ["avx2"]}
    pin["provenance"]["environment"]["packages"]["onnxruntime"] = "1.19.2"
    pin["provenance"]["packages"]["onnxruntime"] = "1.19.2"  # so its release.json differs
    pin["bundle"]["root_digest"] = "ab" * 32


def test_the_pin_records_the_host_environment_the_bundle_does_not(
        registry: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from relgate.numeric_env import host_environment

    monkeypatch.chdir(registry)
    assert cli("promote").code == 0
    pin = read_json(registry / "analysis/release_v1.0.0.json")
    assert pin["provenance"]["environment"] == host_environment()
    assert set(pin["provenance"]["environment"]["cpu"]) == {"vendor", "model", "flags"}
    assert "environment" not in read_json(registry / BUNDLE / "release.json")["provenance"]


def test_a_pin_built_on_another_machine_names_the_likely_cause_and_the_ways_out(
        registry: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh checkout on another machine cannot rebuild the pinned bytes: the refusal names
    the files, what differs between the machines, and the two ways out."""
    import shutil

    monkeypatch.chdir(registry)
    assert cli("promote").code == 0
    mirror = registry / "analysis/release_v1.0.0.json"
    pin = read_json(mirror)
    _another_machine(pin)
    write_json(mirror, pin)
    pinned = mirror.read_bytes()
    shutil.rmtree(registry / BUNDLE.parent)  # a fresh clone: the bundle lives in the remote
    res = cli("promote")
    assert res.code == 1, res.err
    line = res.err.strip()
    assert len(line.splitlines()) == 1, line
    assert "different content: README.md, release.json" in line, line
    assert "CPU differs: pinned on AMD EPYC 7B13 (avx2), this machine" in line, line
    assert "1.19.2 pinned" in line and "onnxruntime" in line, line
    assert "dvc pull models/core" in line and "new release.name" in line, line
    assert mirror.read_bytes() == pinned
    assert not (registry / BUNDLE).exists()


def test_an_old_pin_without_an_environment_still_reads_and_rebuilds(
        registry: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.chdir(registry)
    assert cli("promote").code == 0
    mirror = registry / "analysis/release_v1.0.0.json"
    pin = read_json(mirror)
    del pin["provenance"]["environment"]  # as written by relgate before it recorded one
    write_json(mirror, pin)
    schemas.validate(pin, "release")
    shutil.rmtree(registry / BUNDLE.parent)
    res = cli("promote")
    assert res.code == 0, res.err
    assert verify_bundle(registry / BUNDLE, expected_root_digest=pin["bundle"]["root_digest"]).ok
    pin["provenance"]["packages"]["onnxruntime"] = "1.19.2"  # now one that does not rebuild
    pin["bundle"]["root_digest"] = "ab" * 32
    write_json(mirror, pin)
    shutil.rmtree(registry / BUNDLE.parent)
    res = cli("promote")
    assert res.code == 1
    assert "1.19.2 pinned" in res.err and "records no host environment" in res.err


def test_what_the_record_cannot_say_is_said(registry: Path) -> None:
    """No seed in params: the record says null, not the default 0. No git repository: the
    release stands, but promote warns that the record names no commit (and --json says so)."""
    text = (registry / "params.yaml").read_text()
    assert "\nseed: 0\n" in text
    (registry / "params.yaml").write_text(text.replace("\nseed: 0\n", "\n", 1))
    proc = promote(registry, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "relgate: warning:" in proc.stderr and "names no git_commit" in proc.stderr
    assert any("names no git_commit" in w for w in json.loads(proc.stdout)["warnings"])
    record = json.loads((registry / BUNDLE / "release.json").read_text())
    assert record["provenance"]["seed"] is None
    mirror = json.loads((registry / "analysis" / "release_v1.0.0.json").read_text())
    assert mirror["provenance"]["git_commit"] is None
