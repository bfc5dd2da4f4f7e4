"""Variants with their own evidence (issue 15.1), seed 000's job: a waveform model promoted
with a token-input variant, each with its own task, contract, calibration, report and gates,
both judged at promote and shipped in the bundle; a variant declared ``evaluated: false``
ships hashed and unjudged, and the card says so.

Real parts: the waveform model is exported by torch (weights in ``model.onnx.data``), the
token variant is ONNX built by hand, every command is the real CLI (calibrate and validate
in-process, promote as a user runs it: ``python -m relgate``), and what the bundle holds is
checked with hashlib against the files, not with relgate.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from relgate.bundle import verify_bundle
from relgate.jsonio import read_json
from tests.support.onnx_factory import WAVE, token_model, waveforms, write_npz
from tests.support.registry import readout_model, relgate

PARAMS = """\
schema_version: 1
seed: 0
task: {{kind: binary, output: score, output_type: logit}}
contract:
  inputs: [{{name: x, dtype: float32, shape: [null, {wave}]}}]
evaluate: {{threads: 1, batch_size: 128}}
calibrate:
  method: temperature
  threshold: {{strategy: max_f1}}
validate:
  bootstrap: {{resamples: 100, confidence: 0.9, seed: 3}}
gates:
  mode: all
  rules:
  - {{metric: auc, op: '>=', value: 0.9}}
release:
  name: {release}
  tag: core/{{name}}
  promoted: {{path: models/model.onnx, description: waveform detector (torch export)}}
  variants:
  - path: models/tokens.onnx
    name: tokens
    description: token input
    task: {{kind: binary, output: score, output_type: logit}}
    contract:
      inputs: [{{name: input_tokens, dtype: int64, shape: [null, 32]}}]
    calibrate: {{method: none, threshold: {{strategy: fixed, value: 0.5}}}}
    data: data/tokens_test.npz
    gates:
      mode: all
      rules:
      - {{metric: auc, op: '>=', value: {token_auc}}}
  - path: models/readout.onnx
    description: experimental readout
    evaluated: false
  tolerance: 1.0e-9
"""


def waveform_model(path: Path) -> Path:
    """``x [batch, 1600] -> score [batch]``: a torch Linear matched to the sine burst of
    :func:`waveforms`, exported by torch.onnx (weights in ``model.onnx.data``)."""
    import warnings

    import torch

    t = torch.arange(WAVE, dtype=torch.float32)

    class Detector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(WAVE, 1)
            with torch.no_grad():
                self.lin.weight.copy_((torch.sin(t / 7) / 200.0)[None, :])
                self.lin.bias.fill_(-2.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x).squeeze(-1)

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Detector().eval(), (torch.randn(2, WAVE),), str(path),
                          input_names=["x"], output_names=["score"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
                          dynamo=True, external_data=True, verbose=False)
    return path


def token_split(model: Path, n: int, seed: int) -> dict[str, np.ndarray]:
    """Random tokens labelled by the token model's own score (so its AUC is high, not 1)."""
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, 64, size=(n, 32), dtype=np.int64)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    z = sess.run(None, {"input_tokens": toks})[0].ravel().astype(np.float64)
    z = (z - z.mean()) / z.std()
    y = (rng.random(n) < 1 / (1 + np.exp(-4 * z))).astype(np.int64)
    return {"input_tokens": toks, "y": y}


def write_params(root: Path, *, release: str = "v1.1.0", token_auc: float = 0.7) -> None:
    (root / "params.yaml").write_text(PARAMS.format(wave=WAVE, release=release,
                                                   token_auc=token_auc))


def validate_all(root: Path) -> tuple[int, int]:
    """The pipeline's last stages, one per model: calibrate and validate, then the variant."""
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data",
                   "data/val.npz") == 0
    main = relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--calibration", "analysis/calibration.json")
    assert relgate(root, "calibrate", "--variant", "tokens", "--data",
                   "data/tokens_val.npz") == 0
    variant = relgate(root, "validate", "--variant", "tokens", "--calibration",
                      "analysis/variants/tokens/calibration.json")
    return main, variant


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seed000")
    waveform_model(root / "models" / "model.onnx")
    tokens = token_model(root / "models", name="tokens.onnx")
    readout_model(root / "models" / "readout.onnx")
    for split, seed in (("val", 1), ("test", 2)):
        x, y = waveforms(600, seed=seed)
        write_npz(root / "data" / f"{split}.npz", x=x, y=y)
        write_npz(root / "data" / f"tokens_{split}.npz", **token_split(tokens, 800, seed))
    write_params(root)
    assert validate_all(root) == (0, 0)
    return root


def promote(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relgate", "promote", *args], cwd=root,
                          capture_output=True, text=True, timeout=600)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_model_is_judged_on_its_own_evidence_and_both_ship(registry: Path) -> None:
    report = read_json(registry / "analysis/variants/tokens/validation_report.json")
    assert report["model"]["path"] == "models/tokens.onnx"
    assert report["data"]["sha256"] == sha256(registry / "data/tokens_test.npz")
    assert [g["metric"] for g in report["gates"]["results"]] == ["auc"]
    assert report["threshold"] == 0.5  # its own calibration (fixed 0.5), not the waveform's

    proc = promote(registry)
    assert proc.returncode == 0, proc.stderr
    bundle = registry / "models/core/v1.1.0"
    assert verify_bundle(bundle).ok
    for rel, source in [("variants/tokens/validation_report.json",
                         "analysis/variants/tokens/validation_report.json"),
                        ("variants/tokens/calibration.json",
                         "analysis/variants/tokens/calibration.json"),
                        ("validation_report.json", "analysis/validation_report.json"),
                        ("models/tokens.onnx", "models/tokens.onnx"),
                        ("models/readout.onnx", "models/readout.onnx"),
                        ("models/model.onnx.data", "models/model.onnx.data")]:
        assert sha256(bundle / rel) == sha256(registry / source), rel
    record = read_json(bundle / "release.json")
    arts = {a["path"]: a for a in record["artifacts"]}
    tokens, readout = arts["models/tokens.onnx"], arts["models/readout.onnx"]
    assert tokens["evaluated"] is True and readout["evaluated"] is False
    assert "evaluation" not in readout
    ev = tokens["evaluation"]
    assert ev["gates"]["passed"] is True
    assert ev["metrics"]["auc"]["value"] == pytest.approx(report["metrics"]["auc"]["value"],
                                                          abs=1e-9)
    assert ev["data"] == {"path": "data/tokens_test.npz",
                          "sha256": sha256(registry / "data/tokens_test.npz")}
    assert ev["report"]["sha256"] == sha256(bundle / "variants/tokens/validation_report.json")
    assert [i["name"] for i in tokens["contract"]["inputs"]] == ["input_tokens"]
    assert [i["name"] for i in arts["models/model.onnx"]["contract"]["inputs"]] == ["x"]
    card = (bundle / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in card.splitlines()
            if line.startswith("| tokens |") or line.startswith("| readout |")}
    assert "yes" in rows["tokens"] and "all: passed" in rows["tokens"]
    assert "auc " in rows["tokens"] and "data/tokens_test.npz" in rows["tokens"]
    assert "evaluated: false" in rows["readout"] and "never judged" in rows["readout"]
    # promoting the same evidence again rebuilds the same bundle (variant evidence included)
    again = promote(registry)
    assert again.returncode == 0 and "already published" in again.stdout, again.stderr


def _fresh(registry: Path, tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "reg"
    shutil.copytree(registry, root, ignore=shutil.ignore_patterns("core", "release_*.json"))
    return root


def test_a_variant_whose_gate_fails_blocks_promotion_by_name(registry: Path,
                                                            tmp_path: Path) -> None:
    root = _fresh(registry, tmp_path)
    write_params(root, release="v1.2.0", token_auc=0.999)
    assert relgate(root, "validate", "--variant", "tokens", "--calibration",
                   "analysis/variants/tokens/calibration.json") == 1  # the report is written
    proc = promote(root)
    assert proc.returncode == 1, proc.stderr
    assert "variant tokens: auc" in proc.stderr and ">= 0.999" in proc.stderr
    assert not (root / "models/core/v1.2.0").exists()
    assert not (root / "analysis/release_v1.2.0.json").exists()


def test_an_edited_variant_report_does_not_reproduce_and_names_the_variant(
        registry: Path, tmp_path: Path) -> None:
    root = _fresh(registry, tmp_path)
    write_params(root, release="v1.3.0")
    path = root / "analysis/variants/tokens/validation_report.json"
    report: dict[str, Any] = json.loads(path.read_text())
    report["metrics"]["auc"]["value"] += 0.01
    path.write_text(json.dumps(report))
    proc = promote(root)
    assert proc.returncode == 1
    assert proc.stderr.startswith("relgate: error: variant tokens: re-evaluation does not "
                                  "reproduce the report"), proc.stderr
    assert not (root / "models/core/v1.3.0").exists()


def test_a_variant_report_of_other_data_is_refused(registry: Path, tmp_path: Path) -> None:
    root = _fresh(registry, tmp_path)
    write_params(root, release="v1.4.0")
    np.savez(root / "data/tokens_test.npz", **token_split(root / "models/tokens.onnx", 800, 9))
    proc = promote(root)
    assert proc.returncode == 1
    assert "variant tokens: evidence does not match" in proc.stderr
    assert "data/tokens_test.npz is not the data the report was computed on" in proc.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["validate", "--variant", "nope"], "no variant named 'nope' (variants: tokens, readout)"),
    (["validate", "--variant", "readout"], "variant 'readout' is declared evaluated: false"),
    (["validate", "--variant", "tokens", "--model", "models/model.onnx"],
     "--model models/model.onnx is not variant 'tokens''s model (models/tokens.onnx)"),
    (["validate", "--data", "data/test.npz"], "--model is required (or --variant NAME)"),
    (["calibrate", "--variant", "readout", "--data", "data/val.npz"], "evaluated: false"),
])
def test_variant_options_refuse_bad_input_with_exit_2(registry: Path, tmp_path: Path,
                                                      args: list[str], words: str) -> None:
    root = _fresh(registry, tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "relgate", *args], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_multiclass_variant_of_a_binary_release_is_judged_as_multiclass(
        tmp_path: Path) -> None:
    """The promoted model's task never carries over: a 3-class variant (logits [N, 3]) of a
    binary release is validated and gated on its own multi-class metrics."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tests.support.registry import DIM, make_registry, prepare

    root = make_registry(tmp_path / "reg")
    rng = np.random.default_rng(7)
    w = rng.normal(size=(DIM, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["logits"])], "three",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", DIM])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save_model(model, str(root / "models/three.onnx"))
    x = rng.normal(size=(900, DIM)).astype(np.float32)
    y = np.argmax(x @ w + rng.gumbel(size=(900, 3)), axis=1).astype(np.int64)
    np.savez(root / "data/three_test.npz", x=x, y=y)
    text = (root / "params.yaml").read_text().replace(
        "  - path: models/readout.onnx\n    description: token readout (experimental)\n"
        "    evaluated: false\n",
        "  - path: models/three.onnx\n    task: {kind: multiclass, output: logits, "
        "output_type: logits}\n    data: data/three_test.npz\n    gates:\n      mode: all\n"
        "      rules: [{metric: accuracy, op: '>=', value: 0.6}]\n")
    assert "three.onnx" in text
    (root / "params.yaml").write_text(text)
    prepare(root)
    assert relgate(root, "validate", "--variant", "three") == 0
    report = read_json(root / "analysis/variants/three/validation_report.json")
    assert report["task"]["kind"] == "multiclass" and report["task"]["n_classes"] == 3
    from sklearn.metrics import accuracy_score

    assert report["metrics"]["accuracy"]["value"] == pytest.approx(
        accuracy_score(y, np.argmax(x @ w, axis=1)), abs=1e-12)
    proc = promote(root)
    assert proc.returncode == 0, proc.stderr
    record = read_json(root / "models/core/v1.0.0/release.json")
    ev = next(a for a in record["artifacts"] if a["path"] == "models/three.onnx")["evaluation"]
    assert ev["task"]["kind"] == "multiclass" and ev["calibration"] is None
    assert record["task"]["kind"] == "binary"
    card = (root / "models/core/v1.0.0/README.md").read_text()
    assert "| three | `models/three.onnx` | yes" in card and "argmax" in card
