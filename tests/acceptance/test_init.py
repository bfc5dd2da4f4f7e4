"""relgate init (issue 18, point 1): from a fresh repository with a model and two splits to a
verified bundle with ``relgate init`` then ``dvc repro``, for a skl2onnx model with ZipMap,
a torch-exported model with ``.onnx.data`` and a multi-class model. Metrics are checked
against scikit-learn on the same rows; refusals write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

from relgate.params import parse_yaml
from tests.adversarial.conftest import assert_clean_failure
from tests.conftest import CliResult
from tests.support.torch_runs import tabular, train_mlp

#: dvc, and the relgate the stages call, from this interpreter's environment
ENV = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                             os.environ.get("PATH", "")])}


def _run(root: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=root, capture_output=True, text=True, env=ENV)


def _relgate(root: Path, *args: str) -> CliResult:
    proc = subprocess.run([sys.executable, "-m", "relgate", *args], cwd=root,
                          capture_output=True, text=True, env=ENV)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _splits(root: Path, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for name, seed in (("train", 1), ("val", 2), ("test", 3)):
        x, y = tabular(500, seed)
        if k > 2:  # three classes from the same features
            y = np.digitize(x[:, 0] - x[:, 1], [-0.6, 0.6]).astype(np.int64)
        out[name] = (x, y)
        if name != "train":
            (root / "data").mkdir(parents=True, exist_ok=True)
            np.savez(root / "data" / f"{name}.npz", x=x, y=y)
    return out


def _sklearn_model(root: Path, splits: dict[str, Any]) -> LogisticRegression:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    x, y = splits["train"]
    model = LogisticRegression(max_iter=500).fit(x, y)
    (root / "models").mkdir(exist_ok=True)
    onx = to_onnx(model, initial_types=[("x", FloatTensorType([None, 8]))])  # ZipMap on
    (root / "models" / "model.onnx").write_bytes(onx.SerializeToString())
    return model


def _torch_model(root: Path, splits: dict[str, Any]) -> Any:
    import torch

    (net,) = train_mlp(*splits["train"], seed=0, epochs=60, snapshots=(60,))
    (root / "models").mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 8),), str(root / "models" / "model.onnx"),
                          input_names=["x"], output_names=["logit"], dynamo=True,
                          external_data=True,
                          dynamic_shapes={"input": {0: torch.export.Dim("batch", min=1)}})
    return net


def _fresh(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


def _init_and_repro(root: Path, *extra: str) -> CliResult:
    result = _relgate(root, "init", "--model", "models/model.onnx", "--val", "data/val.npz",
                      "--test", "data/test.npz", "--git", "--dvc", *extra)
    assert result.code == 0, result.err
    tracked = [p.relative_to(root).as_posix() for p in sorted((root / "models").iterdir())]
    added = _run(root, "dvc", "add", *tracked, "data/val.npz", "data/test.npz")  # as README says
    assert added.returncode == 0, added.stderr
    assert _run(root, "git", "add", "-A").returncode == 0
    commit = _run(root, "git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                  "commit", "-qm", "relgate init")
    assert commit.returncode == 0, commit.stderr
    repro = _run(root, "dvc", "repro")
    assert repro.returncode == 0, repro.stdout + repro.stderr
    verify = _relgate(root, "verify", "models/core/v0.1.0")
    assert verify.code == 0, verify.out + verify.err
    return result


def _metrics(root: Path) -> dict[str, Any]:
    return json.loads((root / "analysis" / "metrics.json").read_text())


@pytest.mark.e2e
def test_skl2onnx_zipmap_model_from_init_to_a_verified_bundle(tmp_path: Path) -> None:
    root = _fresh(tmp_path)
    splits = _splits(root, 2)
    model = _sklearn_model(root, splits)
    result = _init_and_repro(root)
    assert "ZipMap" in result.out
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["task"] == {"kind": "binary", "output": "output_probability",
                              "output_type": "probability"}
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert all(not d.endswith(".data") for s in stages.values() for d in s["deps"])
    assert all(s["cmd"].startswith("relgate ") for s in stages.values())
    x, y = splits["test"]
    assert _metrics(root)["auc"] == pytest.approx(roc_auc_score(y, model.predict_proba(x)[:, 1]),
                                                 abs=1e-6)
    record = json.loads((root / "analysis" / "release_v0.1.0.json").read_text())
    assert record["name"] == "v0.1.0"


@pytest.mark.e2e
def test_torch_model_with_external_data_from_init_to_a_verified_bundle(tmp_path: Path) -> None:
    import torch

    root = _fresh(tmp_path)
    splits = _splits(root, 2)
    net = _torch_model(root, splits)
    assert (root / "models" / "model.onnx.data").is_file()
    bare = _relgate(root, "init", "--model", "models/model.onnx", "--val", "data/val.npz",
                    "--test", "data/test.npz", "--git", "--dvc")
    assert "--output-type" in assert_clean_failure(bare)  # a logit is not proven: declare it
    assert not (root / "params.yaml").exists() and not (root / ".git").exists()
    _init_and_repro(root, "--output-type", "logit")
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for name in ("calibrate", "validate", "promote"):
        assert "models/model.onnx.data" in stages[name]["deps"]
    x, y = splits["test"]
    with torch.no_grad():
        logit = net(torch.from_numpy(x)).numpy().ravel()
    assert _metrics(root)["auc"] == pytest.approx(roc_auc_score(y, logit), abs=1e-6)
    manifest = json.loads((root / "models/core/v0.1.0/manifest.json").read_text())
    assert any(p.endswith("model.onnx.data") for p in manifest["files"])


@pytest.mark.e2e
def test_multiclass_model_from_init_to_a_verified_bundle(tmp_path: Path) -> None:
    root = _fresh(tmp_path)
    splits = _splits(root, 3)
    model = _sklearn_model(root, splits)
    binary = _relgate(root, "init", "--model", "models/model.onnx", "--val", "data/val.npz",
                      "--test", "data/test.npz", "--git", "--dvc")
    assert "--task multiclass" in assert_clean_failure(binary)
    _init_and_repro(root, "--task", "multiclass")
    params = parse_yaml((root / "params.yaml").read_text(), source="params.yaml")  # YAML 1.2: on
    assert params["task"]["kind"] == "multiclass"
    assert params["gates"]["rules"][0] == {"metric": "accuracy", "op": ">",
                                           "value": round(1 / 3, 6), "on": "ci_low"}
    x, y = splits["test"]
    assert _metrics(root)["accuracy"] == pytest.approx(accuracy_score(y, model.predict(x)),
                                                       abs=1e-12)
    assert (root / "analysis/plots/confusion.json").is_file()


@pytest.mark.e2e
def test_a_failing_gate_keeps_the_report_and_promote_refuses(tmp_path: Path) -> None:
    root = _fresh(tmp_path)
    _sklearn_model(root, _splits(root, 2))
    assert _relgate(root, "init", "--model", "models/model.onnx", "--val", "data/val.npz",
                    "--test", "data/test.npz", "--git", "--dvc").code == 0
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["gates"]["rules"] = [{"metric": "auc", "op": ">=", "value": 0.9999}]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    repro = _run(root, "dvc", "repro")
    assert repro.returncode != 0
    assert "failed to reproduce 'promote'" in repro.stderr
    report = json.loads((root / "analysis/validation_report.json").read_text())
    assert report["passed"] is False and any("auc" in r for r in report["reasons"])
    assert not (root / "models/core/v0.1.0").exists()


def test_refusals_write_nothing(tmp_path: Path) -> None:
    root = _fresh(tmp_path)
    _sklearn_model(root, _splits(root, 2))
    args = ("init", "--model", "models/model.onnx", "--val", "data/val.npz", "--test",
            "data/test.npz")
    assert "git init" in assert_clean_failure(_relgate(root, *args))  # no repository yet
    assert not any((root / n).exists() for n in ("params.yaml", "dvc.yaml", ".git"))
    _run(root, "git", "init", "-q")
    assert "dvc init" in assert_clean_failure(_relgate(root, *args))
    assert not (root / ".dvc").exists() and not (root / "params.yaml").exists()
    outside = tmp_path / "elsewhere.npz"
    outside.write_bytes((root / "data/val.npz").read_bytes())
    for bad, needle in [(("--val", str(outside)), "not inside the repository"),
                        (("--val", "data/test.npz"), "same file"),
                        (("--val", "data/missing.npz"), "not a regular file"),
                        (("--task", "binary", "--output-type", "logits"),
                         "not a binary output type"),
                        (("--output-type", "logits"), "proves it is a probability")]:
        argv = list(args)
        if bad[0] in argv:
            argv[argv.index(bad[0]) + 1] = bad[1]
        else:
            argv += list(bad)
        assert needle in assert_clean_failure(_relgate(root, *argv, "--dvc")), bad
    assert not (root / ".dvc").exists() and not (root / "params.yaml").exists()
    assert _relgate(root, *args, "--dvc").code == 0
    before = (root / "params.yaml").read_bytes()
    (root / "dvc.yaml").unlink()
    assert "params.yaml already exists" in assert_clean_failure(_relgate(root, *args))
    assert (root / "params.yaml").read_bytes() == before and not (root / "dvc.yaml").exists()
    assert _relgate(root, *args, "--force", "--release", "v0.2.0").code == 0
    assert yaml.safe_load((root / "params.yaml").read_text())["release"]["name"] == "v0.2.0"


def test_a_failed_second_write_leaves_neither_file(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while dvc.yaml is written: the params.yaml this call created goes too."""
    import relgate.jsonio
    from relgate.init import InitPlan, write_init

    real = relgate.jsonio.atomic_write_bytes

    def full_disk(path: Path, data: bytes) -> None:
        if Path(path).name == "dvc.yaml":
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(relgate.jsonio, "atomic_write_bytes", full_disk)
    plan = InitPlan(files={"params.yaml": "a: 1\n", "dvc.yaml": "stages: {}\n"})
    with pytest.raises(OSError):
        write_init(tmp_path, plan)
    assert not (tmp_path / "params.yaml").exists() and not (tmp_path / "dvc.yaml").exists()
