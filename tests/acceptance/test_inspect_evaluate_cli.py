"""relgate inspect / evaluate through the real CLI, on real models and real files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from relgate import schemas
from tests.conftest import run_relgate
from tests.support import onnx_factory as f

N = 150


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory, torch_cnn_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "cnn": torch_cnn_model,
        "tokens": f.token_model(root / "tokens"),
        "fixed1": f.fixed_batch1_model(root / "fixed1"),
        "proba": f.probability_model(root / "proba", np.linspace(-1, 1, 1600), 0.1),
        "features": f.features_model(root / "features"),
        "score_feats": f.score_and_features_model(root / "score_feats"),
    }


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    x, y = f.waveforms(N, seed=4)
    t, ty = f.tokens(N, seed=5)
    return {"wave": f.write_npz(root / "wave.npz", compressed=True, x=x, y=y),
            "tokens": f.write_npz(root / "tokens.npz", input_tokens=t, y=ty)}


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, f.Hostile]:
    return f.hostile_models(tmp_path_factory.mktemp("hostile"))


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("relgate: error: ") and "Traceback" not in err
    return lines[0]


def _direct(model: Path, feed: dict[str, np.ndarray], output: str, *, batch: int) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    n = next(iter(feed.values())).shape[0]
    return np.concatenate([sess.run([output], {k: v[i : i + batch] for k, v in feed.items()})[0]
                           for i in range(0, n, batch)])


# ---------------------------------------------------------------- inspect

KINDS = {
    "cnn": ("waveform", "score", "score", None),
    "tokens": ("tokens", "score", "score", None),
    "fixed1": ("waveform", "score", "score", None),
    "proba": ("waveform", "probabilities", "probability", 1),
    "features": ("waveform", "features", "features", None),
    "score_feats": ("waveform", "score", "score", None),
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_inspect_json_for_each_model_kind(cli: Any, models: dict[str, Path], name: str) -> None:
    res = cli("inspect", models[name], "--json")
    assert res.code == 0, res.err
    info = json.loads(res.out)
    c = info["contract"]
    assert (c["input_kind"], c["score_output"], c["score_kind"], c["positive_index"]) == KINDS[name]
    release_like = {"path": "m.onnx", "sha256": info["sha256"], "files": info["files"],
                    "contract": c}
    schema = schemas.load_schema("validation-report")["properties"]["model"]
    assert set(schema["required"]) <= set(release_like)
    folder = models[name].parent
    listing = subprocess.run(["sha256sum", *[e["path"] for e in info["files"]]], cwd=folder,
                             capture_output=True, check=True, text=True).stdout
    for line, entry in zip(listing.splitlines(), info["files"], strict=True):
        assert line.split()[0] == entry["sha256"]
        assert (folder / entry["path"]).stat().st_size == entry["size"]
    if name == "cnn":
        assert [e["path"] for e in info["external_data"]] == ["cnn.onnx.data"]
        assert info["external_data"][0]["size"] == (folder / "cnn.onnx.data").stat().st_size
        assert c["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 1600]}]
    else:
        assert info["external_data"] == [] and info["sha256"] == info["files"][0]["sha256"]


def test_inspect_table(cli: Any, models: dict[str, Path]) -> None:
    res = cli("inspect", models["cnn"])
    assert res.code == 0, res.err
    for text in ("[batch, 1600]", "cnn.onnx.data", "waveform", "score (score)", "pytorch"):
        assert text in res.out


def test_inspect_overrides(cli: Any, models: dict[str, Path]) -> None:
    res = cli("inspect", models["proba"], "--json", "--output", "probabilities",
              "--positive-index", "0")
    assert res.code == 0 and json.loads(res.out)["contract"]["positive_index"] == 0
    res = cli("inspect", models["proba"], "--output", "label")
    assert res.code == 2 and "not a float tensor" in _one_line_error(res.err)
    res = cli("inspect", models["tokens"], "--input", "nope")
    assert res.code == 2 and "input_tokens" in _one_line_error(res.err)


def test_inspect_checks_the_params_contract(cli: Any, models: dict[str, Path],
                                            tmp_path: Path) -> None:
    base = {
        "schema_version": 1,
        "gates": {"mode": "all", "rules": [{"metric": "auc", "op": ">=", "value": 0.8}]},
        "release": {"name": "v1", "promoted": {"path": "models/m.onnx"}},
    }
    good = {**base, "contract": {"inputs": [{"name": "x", "dtype": "float32",
                                              "shape": ["N", 1600]}],
                                  "outputs": [{"name": "score", "shape": ["N"]}]}}
    bad = {**base, "contract": {"inputs": [{"name": "x", "dtype": "float32",
                                             "shape": ["N", 1601]}]}}
    (tmp_path / "good.yaml").write_text(json.dumps(good))
    (tmp_path / "bad.yaml").write_text(json.dumps(bad))
    assert cli("inspect", models["cnn"], "--params", tmp_path / "good.yaml").code == 0
    res = cli("inspect", models["cnn"], "--params", tmp_path / "bad.yaml")
    assert res.code == 2
    assert "shape: -[N, 1601] +[batch, 1600]" in _one_line_error(res.err)


def test_inspect_check_runtime(cli: Any, models: dict[str, Path]) -> None:
    assert cli("inspect", models["tokens"], "--check-runtime").code == 0


# ---------------------------------------------------------------- evaluate


@pytest.mark.parametrize(("name", "dataset", "output"), [
    ("cnn", "wave", "score"), ("tokens", "tokens", "score"), ("fixed1", "wave", "score"),
    ("proba", "wave", "probabilities"), ("features", "wave", "features"),
    ("score_feats", "wave", "score"),
])
def test_evaluate_each_model_kind(cli: Any, models: dict[str, Path], data: dict[str, Path],
                                  tmp_path: Path, name: str, dataset: str, output: str) -> None:
    out = tmp_path / "out" / "scores.npz"
    batch = 1 if name == "fixed1" else 64
    declared = ("--output-type", "features", "--reducer", "mean") if output == "features" else ()
    res = cli("evaluate", "--model", models[name], "--data", data[dataset], "--out", out,
              "--batch-size", "64", "--threads", "1", *declared)
    assert res.code == 0, res.err
    assert f"scored {N} samples" in res.out
    with np.load(out, allow_pickle=False) as z:
        got = {k: z[k] for k in z.files}
    with np.load(data[dataset], allow_pickle=False) as z:
        feed = {k: z[k] for k in z.files if k != "y"}
        y = z["y"]
    raw = _direct(models[name], feed, output, batch=batch)
    if output == "probabilities":
        want = raw[:, 1]
    elif output == "features":
        want = raw.astype(np.float64).mean(axis=1)
    else:
        want = raw.reshape(N)
    assert got["score"].dtype == np.float64 and np.array_equal(got["score"], want)
    assert got["y"].dtype == np.int8 and np.array_equal(got["y"], y)
    if name in ("features", "score_feats"):
        feats = _direct(models[name], feed, "features" if name == "features" else "feats",
                        batch=batch)
        assert np.array_equal(got["features"], feats)
    else:
        assert "features" not in got
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.npz"]  # no temp left


def test_evaluate_scale_offset_and_params(cli: Any, models: dict[str, Path],
                                          data: dict[str, Path], tmp_path: Path) -> None:
    params = {"schema_version": 1,
              "gates": {"mode": "all", "rules": [{"metric": "auc", "op": ">=", "value": 0.8}]},
              "release": {"name": "v1", "promoted": {"path": "models/m.onnx"}},
              "evaluate": {"threads": 2, "batch_size": 16}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    out = tmp_path / "s.npz"
    res = cli("evaluate", "--model", models["cnn"], "--data", data["wave"], "--out", out,
              "--scale", "0.5", "--offset", "0.1", "--params", tmp_path / "params.yaml")
    assert res.code == 0, res.err
    with np.load(data["wave"]) as z:
        x = z["x"] * np.float32(0.5) + np.float32(0.1)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    sess = ort.InferenceSession(str(models["cnn"]), so, providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(["score"], {"x": x[i : i + 16]})[0] for i in range(0, N, 16)])
    with np.load(out) as z:
        assert np.array_equal(z["score"], want.astype(np.float64))


def test_evaluate_bad_inputs_are_one_line(cli: Any, models: dict[str, Path],
                                          data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.npz"
    res = cli("evaluate", "--model", models["cnn"], "--data", data["tokens"], "--out", out)
    assert res.code == 2 and "missing key(s) 'x'" in _one_line_error(res.err)
    res = cli("evaluate", "--model", models["tokens"], "--data", tmp_path / "no.npz", "--out", out)
    assert res.code == 2 and "no such file" in _one_line_error(res.err)
    t, y = f.tokens(10)
    t[3, 5] = f.VOCAB + 7  # outside the embedding table: onnxruntime's Gather refuses it
    bad_tokens = f.write_npz(tmp_path / "bad_tokens.npz", input_tokens=t, y=y)
    res = cli("evaluate", "--model", models["tokens"], "--data", bad_tokens, "--out", out)
    assert res.code == 2 and "onnxruntime failed on samples 0..9" in _one_line_error(res.err)
    res = cli("evaluate", "--model", models["cnn"], "--data", data["wave"], "--out", out,
              "--threads", "0")
    assert res.code == 2 and "at least 1" in _one_line_error(res.err)
    assert not out.exists()


# ---------------------------------------------------------------- hostile files


@pytest.mark.parametrize("case", sorted(["traversal", "absolute", "symlink_file",
                                         "symlink_parent", "hardlink", "offset_outside",
                                         "length_mismatch", "missing_data", "truncated",
                                         "random", "empty", "checker"]))
@pytest.mark.parametrize("command", ["inspect", "evaluate"])
def test_hostile_files_exit_2_with_one_line(cli: Any, hostile: dict[str, f.Hostile],
                                            data: dict[str, Path], tmp_path: Path,
                                            case: str, command: str) -> None:
    h = hostile[case]
    args = ([h.path] if command == "inspect" else
            ["--model", h.path, "--data", data["wave"], "--out", tmp_path / "s.npz"])
    res = cli(command, *args)
    assert res.code == 2
    assert h.expect in _one_line_error(res.err)
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("case", ["traversal", "absolute", "symlink_file", "symlink_parent"])
def test_nothing_outside_the_model_folder_is_opened(hostile: dict[str, f.Hostile],
                                                    data: dict[str, Path], tmp_path: Path,
                                                    case: str) -> None:
    """Each of these points at outside/secret.bin, a FIFO with mode 000: opening it would
    block (and fail for a non-root user), so a prompt confinement error proves that
    neither relgate nor onnx/onnxruntime opened it."""
    h = hostile[case]
    secret = h.path.parent.parent / "outside" / "secret.bin"
    assert secret.is_fifo() and (secret.stat().st_mode & 0o777) == 0
    for args in (["inspect", h.path, "--check-runtime"],
                 ["evaluate", "--model", h.path, "--data", data["wave"],
                  "--out", tmp_path / "s.npz"]):
        proc = run_relgate(*args, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert h.expect in _one_line_error(proc.stderr)
