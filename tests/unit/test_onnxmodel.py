"""relgate.onnxmodel on real models: contracts, digests, confinement, guarded loading."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from referencing import Registry, Resource

from relgate import onnxmodel as om
from relgate import schemas
from relgate.errors import ModelError
from relgate.params import ContractSpec, TensorSpec
from tests.support import onnx_factory as f


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory, torch_cnn_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "cnn": torch_cnn_model,
        "tokens": f.token_model(root / "tokens"),
        "fixed1": f.fixed_batch1_model(root / "fixed1"),
        "proba": f.probability_model(root / "proba", np.array([0.5, -1.0, 2.0, 0.1]), 0.3),
        "features": f.features_model(root / "features"),
        "score_feats": f.score_and_features_model(root / "score_feats"),
        "ext_sub": f.external_model(root / "ext_sub", "weights/w.bin", offset=64),
    }


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, f.Hostile]:
    return f.hostile_models(tmp_path_factory.mktemp("hostile"))


def _contract_validator() -> jsonschema.protocols.Validator:
    common = schemas.load_schema("common")
    registry: Registry[object] = Registry().with_resource(
        common["$id"], Resource.from_contents(common))
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$ref": common["$id"] + "#/$defs/contract"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


# ---------------------------------------------------------------- contracts


def test_torch_export_has_external_data_and_symbolic_batch(models: dict[str, Path]) -> None:
    c = om.load_contract(models["cnn"])
    assert [e.path for e in om.external_data_files(models["cnn"])] == ["cnn.onnx.data"]
    assert c.inputs == (om.TensorInfo(name="x", dtype="float32", shape=("batch", 1600)),)
    assert c.outputs == (om.TensorInfo(name="score", dtype="float32", shape=("batch",)),)
    assert (c.input_kind, c.score_output, c.score_kind, c.positive_index) == (
        "waveform", "score", "score", None)
    assert c.producer.startswith("pytorch 2.13")
    assert c.opsets["ai.onnx"] >= 18 and c.ir_version >= 8


@pytest.mark.parametrize(
    ("name", "kind", "output", "score_kind", "pos", "features"),
    [
        ("tokens", "tokens", "score", "score", None, None),
        ("fixed1", "waveform", "score", "score", None, None),
        ("proba", "waveform", "probabilities", "probability", 1, None),
        ("features", "waveform", "features", "features", None, "features"),
        ("score_feats", "waveform", "score", "score", None, "feats"),
        ("ext_sub", "waveform", "score", "score", None, None),
    ],
)
def test_contract_of_each_model_kind(models: dict[str, Path], name: str, kind: str,
                                     output: str, score_kind: str, pos: int | None,
                                     features: str | None) -> None:
    c = om.load_contract(models[name])
    assert (c.input_kind, c.score_output, c.score_kind, c.positive_index) == (
        kind, output, score_kind, pos)
    assert c.features_output == features
    _contract_validator().validate(c.to_dict())
    again = om.ModelContract.from_dict(c.to_dict())
    assert again.to_dict() == c.to_dict()


def test_token_and_fixed_shapes_are_kept(models: dict[str, Path]) -> None:
    assert om.load_contract(models["tokens"]).inputs[0] == om.TensorInfo(
        name="input_tokens", dtype="int64", shape=("N", 32))
    assert om.load_contract(models["fixed1"]).outputs[0].shape == (1, 1)
    proba = om.load_contract(models["proba"])
    assert [o.describe() for o in proba.outputs] == [
        "label int64 [N]", "probabilities float32 [N, 2]"]


def test_overrides(models: dict[str, Path]) -> None:
    c = om.load_contract(models["proba"], output_name="probabilities", positive_index=0)
    assert (c.score_kind, c.positive_index) == ("probability", 0)
    c = om.load_contract(models["score_feats"], output_name="feats", positive_index=3)
    assert (c.score_kind, c.positive_index) == ("features", 3)
    with pytest.raises(ModelError, match="not a float tensor"):
        om.load_contract(models["proba"], output_name="label")
    with pytest.raises(ModelError, match="outside output probabilities"):
        om.load_contract(models["proba"], positive_index=2)
    with pytest.raises(ModelError, match=r"no input named 'tokens'.*input_tokens int64"):
        om.load_contract(models["tokens"], input_name="tokens")
    with pytest.raises(ModelError, match="no output named 'prob'"):
        om.load_contract(models["proba"], output_name="prob")
    with pytest.raises(ModelError, match="does not apply"):
        om.load_contract(models["cnn"], positive_index=0)


def test_no_score_like_output_names_the_outputs(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y3"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y3", TensorProto.FLOAT, ["N", 3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ModelError, match=r"outputs: y3 float32 \[N, 3, 4\]") as err:
        om.load_contract(tmp_path / "m.onnx")
    assert "--output" in err.value.one_line()
    c = om.load_contract(tmp_path / "m.onnx", input_name="x", output_name="y3", positive_index=1)
    assert (c.input_kind, c.score_kind) == ("other", "probability")


# ---------------------------------------------------------------- digests


def _sha256sum(folder: Path, *names: str) -> str:
    """The coreutils oracle: ``sha256sum`` run in the model's folder."""
    out = subprocess.run(["sha256sum", *names], cwd=folder, capture_output=True, check=True)
    return out.stdout.decode()


def test_digest_without_external_data_is_sha256sum(models: dict[str, Path]) -> None:
    p = models["tokens"]
    d = om.model_digest(p)
    assert d.sha256 == _sha256sum(p.parent, p.name).split()[0]
    assert d.files == (om.FileEntry(path=p.name, size=p.stat().st_size, sha256=d.sha256),)
    assert d.total_size == p.stat().st_size


def test_digest_with_external_data_is_sha256_of_sorted_sha256sum(models: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    p = models["ext_sub"]
    listing = _sha256sum(p.parent, "ext.onnx", "weights/w.bin")
    d = om.model_digest(p)
    assert d.sha256 == hashlib.sha256(listing.encode()).hexdigest()
    assert [e.path for e in d.files] == ["ext.onnx", "weights/w.bin"]
    assert d.total_size == p.stat().st_size + (p.parent / "weights/w.bin").stat().st_size
    moved = tmp_path / "elsewhere"
    shutil.copytree(p.parent, moved)
    assert om.model_digest(moved / "ext.onnx") == d  # relative paths: moving keeps the digest
    (moved / "weights/w.bin").write_bytes((moved / "weights/w.bin").read_bytes()[:-1] + b"\x01")
    assert om.model_digest(moved / "ext.onnx").sha256 != d.sha256


# ---------------------------------------------------------------- hostile files

HOSTILE = ["traversal", "absolute", "symlink_file", "symlink_parent", "hardlink",
           "offset_outside", "length_mismatch", "missing_data", "truncated", "random", "empty",
           "checker"]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_file_is_one_line_model_error(hostile: dict[str, f.Hostile], case: str) -> None:
    h = hostile[case]
    with pytest.raises(ModelError) as err:
        om.load_contract(h.path)
    line = err.value.one_line()
    assert h.expect in line and "\n" not in line
    assert err.value.exit_code == 2


@pytest.mark.parametrize("case", ["traversal", "absolute", "symlink_file", "symlink_parent",
                                  "hardlink", "offset_outside", "missing_data"])
def test_digest_and_probe_refuse_before_reading(hostile: dict[str, f.Hostile], case: str) -> None:
    h = hostile[case]
    for fn in (om.model_digest, om.external_data_files, om.probe_session):
        with pytest.raises(ModelError, match=r"external data|outside the"):
            fn(h.path)


_OPENED: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _OPENED is not None and event == "open" and args and isinstance(args[0], (str, bytes)):
        _OPENED.append(os.fsdecode(args[0]))


def test_no_python_level_open_outside_the_model_folder(hostile: dict[str, f.Hostile]) -> None:
    """Every open() during the refusal stays inside the model's folder (the C++ side is
    covered by the FIFO targets: opening one would hang, see the acceptance tests)."""
    global _OPENED
    sys.addaudithook(_audit)
    for case in ("traversal", "absolute", "symlink_file", "symlink_parent", "hardlink"):
        folder = hostile[case].path.parent.resolve()
        _OPENED = []
        try:
            with pytest.raises(ModelError):
                om.model_digest(hostile[case].path)
            opened = [Path(p).resolve() for p in _OPENED]
        finally:
            _OPENED = None
        assert opened, "the audit hook saw no open at all"
        outside = [p for p in opened if folder not in p.parents and p.suffix in (".bin", ".data")]
        assert outside == [], f"{case}: opened {outside}"


def test_missing_data_names_the_file(hostile: dict[str, f.Hostile]) -> None:
    with pytest.raises(ModelError, match=r"external data file 'ext.onnx.data' is missing"):
        om.load_contract(hostile["missing_data"].path)


def test_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        om.load_contract(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="is a directory"):
        om.load_contract(tmp_path)
    os.mkfifo(tmp_path / "fifo.onnx")
    with pytest.raises(ModelError, match="not a regular file"):
        om.load_contract(tmp_path / "fifo.onnx")


# ---------------------------------------------------------------- contract check


def test_check_contract_accepts_aliases_and_any_symbolic_name(models: dict[str, Path]) -> None:
    c = om.load_contract(models["cnn"])
    om.check_contract(c, ContractSpec(
        inputs=(TensorSpec(name="x", dtype="float", shape=("N", 1600)),),
        outputs=(TensorSpec(name="score", dtype="tensor(float)", shape=(None,)),)))
    om.check_contract(c, ContractSpec(inputs=(TensorSpec(name="x"),)))


def test_check_contract_lists_every_difference(models: dict[str, Path]) -> None:
    c = om.load_contract(models["cnn"])
    spec = ContractSpec(
        inputs=(TensorSpec(name="x", dtype="float64", shape=("N", 1601)),
                TensorSpec(name="input_tokens")),
        outputs=(TensorSpec(name="score", shape=(1,)),))
    with pytest.raises(ModelError) as err:
        om.check_contract(c, spec)
    line = err.value.one_line()
    assert "4 differences" in line
    assert "input 'x' dtype: -float64 +float32" in line
    assert "input 'x' shape: -[N, 1601] +[batch, 1600]" in line
    assert "input 'input_tokens': -declared +missing" in line
    assert "output 'score' shape: -[1] +[batch]" in line
    fixed = om.load_contract(models["fixed1"])
    with pytest.raises(ModelError, match=r"shape: -\[N, 1600\] \+\[1, 1600\]"):
        om.check_contract(fixed, ContractSpec(inputs=(TensorSpec(name="x", shape=("N", 1600)),)))


# ---------------------------------------------------------------- guarded onnxruntime


def test_probe_loads_good_models(models: dict[str, Path]) -> None:
    for p in models.values():
        om.probe_session(p)


def test_probe_memory_limit_and_timeout_are_model_errors(models: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="memory"):
        om.probe_session(models["features"], memory_mb=1)
    with pytest.raises(ModelError, match=r"did not load the model within 0.01 s"):
        om.probe_session(models["features"], timeout_s=0.01)


def test_describe_child_failure() -> None:
    assert "crashed (SIGSEGV)" in om.describe_child_failure(-signal.SIGSEGV, "", memory_mb=9)
    assert "killed (SIGKILL)" in om.describe_child_failure(-signal.SIGKILL, "", memory_mb=9)
    assert "9 MB memory" in om.describe_child_failure(3, "MEMORY\n", memory_mb=9)
    assert om.describe_child_failure(4, "LOAD Fail: bad\ngraph", memory_mb=9).endswith(
        "cannot load it: Fail: bad graph")


def test_describe_child_failure_blames_an_inherited_memory_limit_not_the_model() -> None:
    """Under ulimit -v the probe cannot raise its limit: running out of memory (or failing to
    import onnxruntime at all) names that limit, never 'cannot load it' (malformed)."""
    inherited = {"memory_mb": 1028, "inherited_mb": 500}
    cases = {
        (3, "MEMORY\n"): "inherited address-space limit (ulimit -v) of 500 MB",
        (4, "LOAD RuntimeException: std::bad_alloc"): "ran out of the inherited",
        (4, "LOAD Fail: pthread_create failed: Resource temporarily unavailable"):
            "ran out of the inherited",
        (5, "IMPORT ImportError: x.so: failed to map segment from shared object"):
            "could not start onnxruntime within the inherited",
        (-signal.SIGABRT, "terminate called after std::bad_alloc"): "ran out of the inherited",
    }
    for (code, err), needle in cases.items():
        why = om.describe_child_failure(code, err, **inherited)
        assert needle in why and "cannot load it" not in why, (code, err, why)
    # without an inherited limit the probe's own cap is named, and a real load error stays one
    assert "its 1028 MB memory limit" in om.describe_child_failure(3, "MEMORY", memory_mb=1028)
    assert "cannot load it: Fail: bad" in om.describe_child_failure(4, "LOAD Fail: bad",
                                                                    **inherited)
    assert "could not import onnxruntime" in om.describe_child_failure(
        5, "IMPORT ModuleNotFoundError: No module named 'onnxruntime'", memory_mb=9)


def test_inherited_memory_limit_is_read_not_changed() -> None:
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    limits = [v for v in before if v != resource.RLIM_INFINITY]
    assert om.inherited_memory_limit_mb() == (min(limits) // 2**20 if limits else None)
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def test_normalize_dtype() -> None:
    assert [om.normalize_dtype(d) for d in ("float", "tensor(float)", "FLOAT", "int64",
                                            "tensor(int64)", "double")] == [
        "float32", "float32", "float32", "int64", "int64", "float64"]
