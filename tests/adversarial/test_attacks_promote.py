"""Attacks on promotion (issue 13): a forged bundle at the target, racing promoters, files
swapped under promote while it reads them, and a report whose verdict or environment lies.

Every case runs the real promote (real onnxruntime, real files, real processes); the
writer that swaps files is a separate process, so the swap is truly concurrent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relgate.bundle import force_rmtree, verify_bundle
from relgate.errors import RelgateError
from relgate.jsonio import read_json, write_json
from relgate.manifest import write_manifest
from tests.adversarial.conftest import assert_clean_failure
from tests.support.registry import W_TRUE, linear_model

BUNDLE = Path("models/core/v1.0.0")
PIN = Path("analysis/release_v1.0.0.json")
REPORT = Path("analysis/validation_report.json")


def promote(root: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relgate", "promote", *map(str, args)], cwd=root,
                          capture_output=True, text=True, timeout=300)


def writable(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def forge(bundle: Path) -> None:
    """Rewrite release.json and README.md inside a real bundle and rebuild its manifest."""
    writable(bundle)
    record = read_json(bundle / "release.json")
    record["metrics"]["auc"]["value"] = 0.999
    write_json(bundle / "release.json", record)
    card = (bundle / "README.md").read_text() + "\nApproved for production.\n"
    (bundle / "README.md").write_text(card)
    write_manifest(bundle)
    for p in bundle.rglob("*"):
        if p.is_file():
            p.chmod(0o444)
    assert verify_bundle(bundle).ok  # consistent: only the pin (or a rebuild) can tell


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# --------------------------------------------------------------------------- break 1


@pytest.mark.parametrize("pinned", [True, False], ids=["with-pin", "pin-lost"])
def test_a_forged_bundle_at_the_target_is_refused_naming_the_files(
        registry: Path, pinned: bool, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real models, report and calibration, with release.json and README.md rewritten
    (auc 0.999, "approved for production") and the manifest rebuilt: not "already published"."""
    monkeypatch.chdir(registry)
    assert cli("promote").code == 0
    pin_bytes = (registry / PIN).read_bytes()
    forge(registry / BUNDLE)
    if not pinned:
        (registry / PIN).unlink()  # a new name, or a record lost after a kill
    before = snapshot(registry / BUNDLE)
    res = cli("promote")
    line = assert_clean_failure(res, (1,))
    assert "release.json" in line and "README.md" in line, line
    assert "identical" not in res.out
    assert snapshot(registry / BUNDLE) == before  # never "repaired" in place
    if pinned:
        assert (registry / PIN).read_bytes() == pin_bytes
    else:
        assert not (registry / PIN).exists(), "a pin was derived from the forged bundle"


RACER = r"""
import os, sys, time
from relgate.cli import main
import relgate.release  # noqa: F401  (everything heavy is imported before the start line)
import relgate.validation, relgate.onnxmodel, relgate.scoring, onnxruntime  # noqa: F401
open(sys.argv[2] + ".ready", "w").close()
while not os.path.exists("go"):
    time.sleep(0.001)
sys.exit(main(["promote", "--params", sys.argv[1]]))
"""


def test_racing_promoters_with_different_records_exactly_one_wins(registry: Path) -> None:
    """Two promoters of one name whose release.json differ (another artifact description):
    one publishes, the other refuses naming release.json, and the git-tracked pin describes
    the winner's params, never the loser's."""
    for n in range(2):
        if n:
            force_rmtree(registry / "models/core")
            (registry / PIN).unlink()
            (registry / "go").unlink()
        text = (registry / "params.yaml").read_text()
        for who in ("a", "b"):
            (registry / f"params_{who}.yaml").write_text(
                text.replace("linear scorer on 16 features", f"linear scorer, build {who}"))
            (registry / f"params_{who}.yaml.ready").unlink(missing_ok=True)
        procs = {who: subprocess.Popen([sys.executable, "-c", RACER, f"params_{who}.yaml",
                                        f"params_{who}.yaml"], cwd=registry,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for who in ("a", "b")}
        deadline = time.monotonic() + 120
        while not all((registry / f"params_{w}.yaml.ready").exists() for w in procs):
            assert time.monotonic() < deadline, "racers did not start"
            time.sleep(0.01)
        (registry / "go").touch()
        outs = {w: p.communicate(timeout=300) for w, p in procs.items()}
        codes = {w: p.returncode for w, p in procs.items()}
        assert sorted(codes.values()) == [0, 1], (codes, outs)
        winner = next(w for w, c in codes.items() if c == 0)
        loser = next(w for w, c in codes.items() if c == 1)
        line = assert_clean_failure(subprocess.CompletedProcess([], 1, outs[loser][0],
                                                                outs[loser][1]), (1,))
        assert "release.json" in line, line
        record = read_json(registry / BUNDLE / "release.json")
        pin = read_json(registry / PIN)
        want = f"linear scorer, build {winner}"
        assert record["artifacts"][0]["description"] == want
        assert pin["artifacts"][0]["description"] == want
        assert pin["provenance"]["params"]["release"]["promoted"]["description"] == want
        assert pin["bundle"]["root_digest"] == verify_bundle(registry / BUNDLE).root_digest


# --------------------------------------------------------------------------- break 2

SWAPPER = r"""
import os, shutil, sys, time
target, a, b, stop = sys.argv[1:5]
tmp = target + ".swap-tmp"
n = 0
open(stop + ".started", "w").close()
while not os.path.exists(stop):
    shutil.copyfile(a if n % 2 == 0 else b, tmp)
    os.replace(tmp, target)
    n += 1
print(n)
"""


def _evidence_for(registry: Path, what: str, side: Path) -> tuple[Path, Path, Path]:
    """(the swapped path, the honest version, the failing version) and a report that pairs the
    honest version's numbers with the failing version's sha256: only a promoter that hashes
    one version and evaluates the other could accept it."""
    from relgate.hashing import sha256_file
    from relgate.onnxmodel import model_digest

    report = read_json(registry / REPORT)
    if what == "data":
        target = registry / "data/test.npz"
        good, bad = side / "good.npz", side / "bad.npz"
        shutil.copyfile(target, good)
        with np.load(good) as z:
            x, y = z["x"], z["y"]
        np.savez(bad, x=x, y=np.random.default_rng(7).permutation(y))  # same counts, no signal
        report["data"]["sha256"] = sha256_file(bad)
    else:
        target = registry / "models/model.onnx.data"
        good = side / "good" / "model.onnx.data"
        good.parent.mkdir()
        shutil.copyfile(target, good)
        shutil.copyfile(registry / "models/model.onnx", side / "good" / "model.onnx")
        bad_model = linear_model(side / "bad" / "model.onnx", -3.0 * W_TRUE)  # auc ~0.1
        bad = bad_model.with_name("model.onnx.data")
        assert (side / "bad/model.onnx").read_bytes() == (registry / "models/model.onnx").read_bytes()
        digest = model_digest(bad_model)
        report["model"]["sha256"] = digest.sha256
        report["model"]["files"] = [f.to_dict() for f in digest.files]
        calibration = read_json(registry / "analysis/calibration.json")
        calibration["model"]["sha256"] = digest.sha256  # the fit, claimed for the failing weights
        write_json(registry / "analysis/calibration.json", calibration)
        report["calibration"]["sha256"] = sha256_file(registry / "analysis/calibration.json")
    write_json(registry / REPORT, report)
    return target, good, bad


@pytest.mark.parametrize("what", ["data", "model"])
def test_a_file_swapped_while_promote_reads_it_never_publishes_what_was_not_hashed(
        registry: Path, tmp_path: Path, what: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A separate writer swaps the test split (or the model's weights) between an honest
    version and one on which the model fails, 50 times over while promote runs. The report
    claims the honest numbers for the failing bytes: every try must be refused."""
    from relgate.params import load_params
    from relgate.release import promote as promote_in_process

    side = tmp_path / "side"
    side.mkdir()
    target, good, bad = _evidence_for(registry, what, side)
    monkeypatch.chdir(registry)
    params = load_params(registry / "params.yaml")
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", SWAPPER, str(target), str(good), str(bad),
                               str(stop)], stdout=subprocess.PIPE, text=True)
    published: list[str] = []
    refused: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not Path(str(stop) + ".started").exists():
            assert time.monotonic() < deadline and writer.poll() is None, "writer did not start"
            time.sleep(0.01)
        for _ in range(50):
            try:
                result = promote_in_process(params, root=registry)
            except RelgateError as exc:
                refused.append(exc.one_line())
                continue
            record = read_json(result.path / "release.json")
            published.append(f"try published {record['artifacts'][0]['sha256'][:12]} with data "
                             f"{record['evidence']['data']['sha256'][:12]}, gates passed")
            force_rmtree(registry / "models/core")
            (registry / PIN).unlink(missing_ok=True)
    finally:
        stop.touch()
        swaps = int(writer.communicate(timeout=60)[0] or 0)
    assert swaps > 50, swaps  # the writer really was swapping during the tries
    assert published == [], published
    assert len(refused) == 50
    assert not (registry / "models/core/v1.0.0").exists()


OPEN_COUNTER = r"""
import json, os, sys
opened = []
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        opened.append(os.fsdecode(args[0]))
sys.addaudithook(hook)
from relgate.cli import main
code = main(["promote"])
print(json.dumps({"code": code, "opened": opened}))
"""

EVIDENCE = ["models/model.onnx", "models/model.onnx.data", "models/readout.onnx", "data/test.npz",
            "analysis/calibration.json", "analysis/validation_report.json"]


def test_each_evidence_file_is_opened_once_by_its_path(registry: Path) -> None:
    """What is hashed is what is evaluated and published: every evidence file (model, its
    external data, variant, test split, calibration, report) is opened by its original path
    exactly once; everything after reads the private staged copy."""
    proc = subprocess.run([sys.executable, "-c", OPEN_COUNTER], cwd=registry, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] == 0

    def original(p: str, rel: str) -> bool:
        if os.path.isabs(p) or "/" in p:
            return os.path.normpath(os.path.join(registry, p)) == str(registry / rel)
        return p == Path(rel).name  # opened relative to the model's folder descriptor

    counts = {rel: sum(original(p, rel) for p in out["opened"]) for rel in EVIDENCE}
    assert counts == dict.fromkeys(EVIDENCE, 1), counts
    assert verify_bundle(registry / BUNDLE).ok


# --------------------------------------------------------------------------- the report can lie


def _edit_passed(r: dict[str, Any]) -> str:
    r["passed"] = False
    r["reasons"] = ["rejected by the review board"]
    return "passed"


def _edit_gates(r: dict[str, Any]) -> str:
    r["gates"]["results"][0]["reason"] = "auc approved for production by the review board"
    return "gates.results[0].reason"


def _edit_gate_bound(r: dict[str, Any]) -> str:
    r["gates"]["results"][0]["bound"] = 0.5
    return "gates.results[0].bound"


def _edit_environment(r: dict[str, Any]) -> str:
    r["environment"]["onnxruntime"] = "0.0.1-certified"
    return "environment.onnxruntime"


def _drop_environment_key(r: dict[str, Any]) -> str:
    r["environment"].pop("numpy")
    return "environment.numpy"


EDITS = {"passed": _edit_passed, "gates-reason": _edit_gates, "gates-bound": _edit_gate_bound,
         "environment": _edit_environment, "environment-key": _drop_environment_key}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_report_whose_verdict_or_environment_was_edited_is_refused_naming_the_field(
        registry: Path, edit: str, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundle carries the report byte for byte (so that it rebuilds byte for byte), so a
    report whose verdict, gates or environment differ from the re-computed ones is refused."""
    path = registry / REPORT
    report = read_json(path)
    field = EDITS[edit](report)
    write_json(path, report)
    monkeypatch.chdir(registry)
    line = assert_clean_failure(cli("promote"), (1,))
    assert field in line, line
    assert not (registry / BUNDLE).exists()
    assert not (registry / PIN).exists()
