"""relgate parity on real files: a small torch model (fixed seed) saved as TorchScript and as a
torch.export program, exported to ONNX by torch.onnx.export, run by torch and onnxruntime.

The numbers in the record are checked against numpy's on the same outputs; hostile and
broken references (pickles with a payload, a state dict, a .pt2 whose weight is a pickle
with a payload, a shape mismatch, NaN) are refused as the module docstring of
relgate.parity says.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from relgate import schemas
from relgate.jsonio import read_json

PARAMS = """\
schema_version: 1
seed: 0
task: {{kind: binary, output: score, output_type: logit}}
evaluate: {{threads: 1, batch_size: 64}}
gates:
  mode: all
  rules:
  - {{metric: auc, op: '>=', value: 0.5}}
release:
  name: v1.0.0
  promoted: {{path: models/model.onnx}}
{parity}"""

D = 12


def _net(seed: int = 0) -> Any:
    import torch

    torch.manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(D, 8)
            self.out = torch.nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.hidden(x))).squeeze(-1)

    return Net().eval()


def _onnx(net: Any) -> bytes:
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (torch.zeros(2, D),), dynamo=True,
                                    input_names=["x"], output_names=["score"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    verbose=False)
    assert program is not None
    return bytes(program.model_proto.SerializeToString())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch

    folder = tmp_path_factory.mktemp("parity-models")
    net = _net()
    with warnings.catch_warnings():  # torch 2.13: "torch.jit.script is deprecated"
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(folder / "deploy.pt"))
    torch.export.save(torch.export.export(net, (torch.zeros(4, D),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      str(folder / "deploy.pt2"))
    torch.save(net.state_dict(), str(folder / "state_dict.pt"))

    class Wide(torch.nn.Module):  # the same numbers as [N, 1]: a shape mismatch
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).unsqueeze(-1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Wide()).save(str(folder / "wide.pt"))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, D)).astype(np.float32)
    y = (rng.random(300) < 0.5).astype(np.int64)
    return {"folder": folder, "onnx": _onnx(net), "x": x, "y": y, "net": net}


def _root(tmp_path: Path, built: dict[str, Any], *, parity: str = "", onnx_bytes: bytes | None = None,
          x: np.ndarray | None = None) -> Path:
    root = tmp_path / "reg"
    for sub in ("models", "data"):
        (root / sub).mkdir(parents=True)
    (root / "models" / "model.onnx").write_bytes(onnx_bytes or built["onnx"])
    for name in ("deploy.pt", "deploy.pt2", "state_dict.pt", "wide.pt"):
        (root / "models" / name).write_bytes((built["folder"] / name).read_bytes())
    np.savez(root / "data" / "test.npz", x=built["x"] if x is None else x, y=built["y"])
    (root / "params.yaml").write_text(PARAMS.format(parity=parity))
    return root


def _run(root: Path, *args: object) -> tuple[int, str, str]:
    import contextlib

    from relgate.cli import main

    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["parity", *map(str, args)])
    finally:
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _both(built: dict[str, Any], x: np.ndarray, model: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.no_grad():
        ref = built["net"](torch.from_numpy(x)).numpy().astype(np.float64)
    sess = ort.InferenceSession(model or built["onnx"], providers=["CPUExecutionProvider"])
    return ref, np.asarray(sess.run(["score"], {"x": x})[0], dtype=np.float64)


PARITY = "parity: {reference: models/deploy.pt, samples: 200, max_abs_diff: 1.0e-4, " \
         "min_correlation: 0.995, min_agreement: 0.99}\n"


@pytest.mark.parametrize("reference", ["models/deploy.pt", "models/deploy.pt2"])
def test_parity_passes_with_the_numbers_numpy_computes(tmp_path: Path, built: dict[str, Any],
                                                       reference: str) -> None:
    root = _root(tmp_path, built, parity=PARITY)
    code, out, err = _run(root, "--reference", reference)
    assert code == 0, err + out
    assert "parity PASSED" in out
    record = read_json(root / "analysis" / "parity.json")
    schemas.validate(record, "parity")
    ref, onx = _both(built, built["x"][:200])
    assert record["metrics"]["max_abs_diff"] == float(np.max(np.abs(ref - onx)))
    assert record["metrics"]["correlation"] == pytest.approx(np.corrcoef(ref, onx)[0, 1], abs=1e-15)
    assert record["metrics"]["agreement"] == float(np.mean((ref >= 0) == (onx >= 0)))
    assert record["samples"] == {"n": 200, "requested": 200, "selection": "first"}
    assert record["reference"]["sha256"] == _sha(root / reference)
    assert record["reference"]["format"] == ("torchscript" if reference.endswith(".pt")
                                             else "torch.export")
    assert record["model"]["files"][0]["sha256"] == _sha(root / "models" / "model.onnx")
    assert record["data"]["sha256"] == _sha(root / "data" / "test.npz")
    assert record["decision"] == {"rule": "probability >= 0.5", "threshold": 0.5,
                                  "calibration": None}
    assert record["bounds"] == {"max_abs_diff": 1e-4, "min_correlation": 0.995,
                                "min_agreement": 0.99}
    assert "torch" in record["environment"]["packages"]


def test_a_perturbed_onnx_fails_the_max_abs_diff_gate(tmp_path: Path, built: dict[str, Any]) -> None:
    model = onnx.load_from_string(built["onnx"])
    init = next(t for t in model.graph.initializer if numpy_helper.to_array(t).ndim == 2)
    w = numpy_helper.to_array(init) + np.float32(0.01)
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    edited = model.SerializeToString()
    root = _root(tmp_path, built, parity=PARITY, onnx_bytes=edited)
    code, out, _ = _run(root)
    assert code == 1
    record = read_json(root / "analysis" / "parity.json")
    schemas.validate(record, "parity")
    ref, onx = _both(built, built["x"][:200], edited)
    assert record["metrics"]["max_abs_diff"] == float(np.max(np.abs(ref - onx))) > 1e-4
    assert record["passed"] is False
    assert any("max_abs_diff" in r and "> 0.0001" in r for r in record["reasons"])
    assert "max_abs_diff" in out


def _evil_pickle(marker: Path) -> bytes:
    import torch

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    buf = io.BytesIO()
    torch.save({"weight": Payload()}, buf)
    return buf.getvalue()


def test_a_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path,
                                                                  built: dict[str, Any]) -> None:
    root = _root(tmp_path, built, parity=PARITY)
    marker = tmp_path / "PAYLOAD_RAN"
    (root / "models" / "evil.pt").write_bytes(_evil_pickle(marker))
    code, out, err = _run(root, "--reference", "models/evil.pt")
    assert code == 2, err + out
    assert "needs code execution" in err and "never unpickles" in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists()
    assert not (root / "analysis").exists()


def test_torchscript_shaped_archive_with_a_payload_does_not_run_it(tmp_path: Path,
                                                                  built: dict[str, Any]) -> None:
    import pickle

    marker = tmp_path / "PAYLOAD_RAN"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    evil = pickle.dumps(Payload(), protocol=2)
    root = _root(tmp_path, built, parity=PARITY)
    src = zipfile.ZipFile(built["folder"] / "deploy.pt")
    with src, zipfile.ZipFile(root / "models" / "evil.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info, evil if info.filename.endswith(".pkl") else data)
    code, _, err = _run(root, "--reference", "models/evil.pt")
    assert code == 2 and "torch cannot load" in err
    assert not marker.exists()
    assert not (root / "analysis").exists()


def test_a_pt2_whose_weight_is_a_pickle_with_a_payload_is_refused(tmp_path: Path,
                                                                 built: dict[str, Any]) -> None:
    """torch.export.load unpickles a ``use_pickle`` weight with weights_only=False: it would
    run the payload (measured with torch 2.13); relgate refuses the member first."""
    marker = tmp_path / "PAYLOAD_RAN"
    evil = _evil_pickle(marker)
    root = _root(tmp_path, built, parity=PARITY)
    with zipfile.ZipFile(built["folder"] / "deploy.pt2") as src:
        config_name = next(n for n in src.namelist() if n.endswith("model_weights_config.json"))
        cfg = json.loads(src.read(config_name))
        first = next(iter(cfg["config"]))
        cfg["config"][first]["use_pickle"] = True
        target = config_name.rsplit("/", 1)[0] + "/" + cfg["config"][first]["path_name"]
        with zipfile.ZipFile(root / "models" / "evil2.pt2", "w") as dst:
            for info in src.infolist():
                data = src.read(info.filename)
                if info.filename == config_name:
                    data = json.dumps(cfg).encode()
                elif info.filename == target:
                    data = evil
                dst.writestr(info, data)
    code, _, err = _run(root, "--reference", "models/evil2.pt2")
    assert not marker.exists()
    assert code == 2, err
    assert "needs code execution" in err
    assert not (root / "analysis").exists()


def test_a_pt2_whose_guards_code_holds_a_payload_is_refused(tmp_path: Path,
                                                           built: dict[str, Any]) -> None:
    """torch turns a program's guards_code into Python that runs on every call (measured
    with torch 2.13: the payload runs at the first forward); relgate refuses it unread."""
    marker = tmp_path / "PAYLOAD_RAN"
    root = _root(tmp_path, built, parity=PARITY)
    with zipfile.ZipFile(built["folder"] / "deploy.pt2") as src, \
            zipfile.ZipFile(root / "models" / "guard.pt2", "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("models/model.json"):
                doc = json.loads(data)
                doc["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]
                data = json.dumps(doc).encode()
            dst.writestr(info, data)
    code, _, err = _run(root, "--reference", "models/guard.pt2")
    assert not marker.exists()
    assert code == 2 and "guards_code" in err
    assert not (root / "analysis").exists()


def test_a_state_dict_checkpoint_is_refused_with_the_export_hint(tmp_path: Path,
                                                                 built: dict[str, Any]) -> None:
    root = _root(tmp_path, built, parity=PARITY)
    code, _, err = _run(root, "--reference", "models/state_dict.pt")
    assert code == 2
    assert "state dict" in err and "torch.jit.script" in err and "torch.export" in err
    assert not (root / "analysis").exists()


def test_outputs_of_different_shapes_are_bad_input(tmp_path: Path, built: dict[str, Any]) -> None:
    root = _root(tmp_path, built, parity=PARITY)
    code, _, err = _run(root, "--reference", "models/wide.pt")
    assert code == 2
    assert "[200]" in err and "[200, 1]" in err
    assert not (root / "analysis").exists()


def test_nan_outputs_fail_closed(tmp_path: Path, built: dict[str, Any]) -> None:
    x = built["x"].copy()
    x[3, 0] = np.nan
    root = _root(tmp_path, built, parity="parity: {reference: models/deploy.pt, samples: 50}\n",
                 x=x)
    code, _, _ = _run(root)
    assert code == 1  # no bound is set, and still a NaN output fails
    record = read_json(root / "analysis" / "parity.json")
    schemas.validate(record, "parity")
    assert record["metrics"]["max_abs_diff"] is None and record["metrics"]["nonfinite"] == 2
    assert record["passed"] is False and "non-finite" in record["reasons"][0]


def test_check_parity_reproduces_the_record_and_catches_an_edit(tmp_path: Path,
                                                                built: dict[str, Any]) -> None:
    from relgate.params import load_params
    from relgate.parity import check_parity, record_differences

    root = _root(tmp_path, built, parity=PARITY)
    assert _run(root)[0] == 0
    reported = read_json(root / "analysis" / "parity.json")
    fresh = check_parity(load_params(root / "params.yaml"), root)
    assert fresh.passed and record_differences(reported, fresh.record) == []
    edited = json.loads(json.dumps(reported))
    edited["metrics"]["max_abs_diff"] = 0.0
    assert [d.split(":")[0] for d in record_differences(edited, fresh.record)] == \
        ["parity metrics.max_abs_diff"]
    (root / "models" / "deploy.pt").write_bytes((built["folder"] / "deploy.pt2").read_bytes())
    stale = check_parity(load_params(root / "params.yaml"), root)
    assert any(d.startswith("parity reference.sha256") for d in
               record_differences(reported, stale.record))


def test_the_calibrations_decision_is_compared_when_a_calibration_exists(
        tmp_path: Path, built: dict[str, Any]) -> None:
    from relgate.calibration import apply_calibration, decide
    from relgate.cli import main

    root = _root(tmp_path, built, parity=PARITY)
    here = Path.cwd()
    os.chdir(root)
    try:
        assert main(["calibrate", "--model", "models/model.onnx", "--data", "data/test.npz",
                     "--out", "analysis/calibration.json"]) == 0
    finally:
        os.chdir(here)
    calibration = read_json(root / "analysis" / "calibration.json")
    code, out, err = _run(root)
    assert code == 0, err + out
    record = read_json(root / "analysis" / "parity.json")
    assert record["decision"]["rule"] == "calibration"
    assert record["decision"]["threshold"] == calibration["threshold"]["value"]
    assert record["decision"]["calibration"]["sha256"] == _sha(root / "analysis" / "calibration.json")
    ref, onx = _both(built, built["x"][:200])
    same = decide(apply_calibration(ref, calibration), calibration) == \
        decide(apply_calibration(onx, calibration), calibration)
    assert record["metrics"]["agreement"] == float(np.mean(same))


MULTICLASS = """\
schema_version: 1
seed: 0
task: {kind: multiclass, output: logits, output_type: logits}
evaluate: {threads: 1, batch_size: 64}
gates:
  mode: all
  rules:
  - {metric: accuracy, op: '>=', value: 0.1}
release:
  name: v1.0.0
  promoted: {path: models/model.onnx}
parity: {reference: models/deploy.pt, samples: 100, min_agreement: 1.0}
"""


def test_multi_class_parity_compares_the_argmax(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(3)
    net = torch.nn.Linear(D, 3).eval()
    root = tmp_path / "mc"
    (root / "models").mkdir(parents=True)
    (root / "data").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(net).save(str(root / "models" / "deploy.pt"))
        program = torch.onnx.export(net, (torch.zeros(2, D),), dynamo=True, input_names=["x"],
                                    output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    verbose=False)
    assert program is not None
    (root / "models" / "model.onnx").write_bytes(program.model_proto.SerializeToString())
    x = np.random.default_rng(2).normal(size=(120, D)).astype(np.float32)
    np.savez(root / "data" / "test.npz", x=x, y=np.arange(120) % 3)
    (root / "params.yaml").write_text(MULTICLASS)
    code, out, err = _run(root)
    assert code == 0, err + out
    record = read_json(root / "analysis" / "parity.json")
    assert record["task"] == "multiclass" and record["decision"]["rule"] == "argmax"
    assert record["output"] == {"name": "logits", "type": "logits", "shape": [100, 3]}
    with torch.no_grad():
        ref = net(torch.from_numpy(x[:100])).numpy().astype(np.float64)
    sess = ort.InferenceSession(str(root / "models" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    onx = np.asarray(sess.run(["logits"], {"x": x[:100]})[0], dtype=np.float64)
    assert record["metrics"]["max_abs_diff"] == float(np.max(np.abs(ref - onx)))
    assert record["metrics"]["agreement"] == float(np.mean(ref.argmax(1) == onx.argmax(1)))


def _relgate(root: Path, *args: object) -> tuple[int, str]:
    import contextlib

    from relgate.cli import main

    err = io.StringIO()
    here = Path.cwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main([*map(str, args)])
    finally:
        os.chdir(here)
    return code, err.getvalue()


def test_promote_reruns_parity_ships_its_record_and_refuses_an_edited_or_failing_one(
        tmp_path: Path, built: dict[str, Any]) -> None:
    """promote re-runs parity on the model and test split it checked: the record must be the
    fresh one (an edited number is refused), its bounds must hold, and the record ships in the
    bundle as parity.json beside the TorchScript deploy model (a sidecar)."""
    from relgate.bundle import verify_bundle

    sidecar = "  files: [{path: models/deploy.pt, description: TorchScript deploy model}]\n"
    root = _root(tmp_path, built, parity=sidecar + PARITY)
    text = (root / "params.yaml").read_text().replace("value: 0.5", "value: 0.0")
    (root / "params.yaml").write_text(text)
    assert _relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                    "--out", "analysis/validation_report.json")[0] == 0
    code, err = _relgate(root, "promote")  # no parity record yet: bad input, nothing written
    assert code == 2 and "parity" in err, err
    assert not (root / "models" / "core").exists() or not any((root / "models" / "core").iterdir())
    assert _run(root)[0] == 0
    code, err = _relgate(root, "promote")
    assert code == 0, err
    bundle = root / "models" / "core" / "v1.0.0"
    shipped = (bundle / "parity.json").read_bytes()
    assert shipped == (root / "analysis" / "parity.json").read_bytes()
    record = read_json(bundle / "release.json")
    assert record["evidence"]["parity"] == {"path": "analysis/parity.json",
                                            "sha256": hashlib.sha256(shipped).hexdigest()}
    assert (bundle / "models" / "deploy.pt").read_bytes() == \
        (root / "models" / "deploy.pt").read_bytes()
    assert verify_bundle(bundle).ok
    assert "`parity.json` (sha256 `" + record["evidence"]["parity"]["sha256"][:16] in \
        (bundle / "README.md").read_text()
    # an edited number: not the fresh record, refused under a new name, nothing published
    (root / "params.yaml").write_text(text.replace("name: v1.0.0", "name: v1.1.0"))
    edited = json.loads(shipped)
    edited["metrics"]["max_abs_diff"] = 0.0
    (root / "analysis" / "parity.json").write_text(json.dumps(edited))
    code, err = _relgate(root, "promote")
    assert code == 1 and "parity does not reproduce" in err and "max_abs_diff" in err, err
    assert not (root / "models" / "core" / "v1.1.0").exists()
    # a bound that fails: the honest record says so, and promote refuses it
    (root / "params.yaml").write_text(text.replace("name: v1.0.0", "name: v1.1.0")
                                      .replace("max_abs_diff: 1.0e-4", "max_abs_diff: 1.0e-12"))
    assert _run(root)[0] == 1
    code, err = _relgate(root, "promote")
    assert code == 1 and "parity gates failed" in err, err
    assert not (root / "models" / "core" / "v1.1.0").exists()
