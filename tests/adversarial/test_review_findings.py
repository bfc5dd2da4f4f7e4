"""Crashes found by review, each now a clean one-line error with its exit code."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.support.registry import linear_model


def _npz(path: Path, compress: bool) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype(np.float32)
    y = (rng.random(64) < 0.5).astype(np.int8)
    (np.savez_compressed if compress else np.savez)(path, x=x, y=y)
    return path


def _flip_inside_member(path: Path, member: str) -> None:
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data = bytearray(path.read_bytes())
    # the member's data starts after its local header (30 bytes + name + extra)
    name_len = int.from_bytes(data[info.header_offset + 26: info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    middle = start + info.compress_size // 2
    data[middle] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_npz_members_are_bad_input_not_a_crash(cli, tmp_path: Path) -> None:
    model = linear_model(tmp_path / "m" / "model.onnx", np.ones(16), external=False)
    cases = []
    for compress in (False, True):
        for member in ("y.npy", "x.npy"):
            p = _npz(tmp_path / f"{member[0]}-{compress}.npz", compress)
            _flip_inside_member(p, member)
            cases.append(p)
    for data in cases:
        out = tmp_path / f"{data.stem}-scores.npz"
        result = cli("evaluate", "--model", model, "--data", data, "--out", out)
        assert "internal error" not in result.err and "Traceback" not in result.err
        if data.name == "x-False.npz":
            # an uncompressed input member is streamed from disk without zip CRCs (for speed):
            # a flipped byte is just another number; the data's sha256 in every report pins it
            assert result.code == 0, result.err
            continue
        assert result.code == 2, (data.name, result.err)  # CRC or deflate failure: bad input
        assert len(result.err.strip().splitlines()) == 1
        assert not out.exists()


def test_an_unknown_map_key_type_is_described_not_a_crash(cli, tmp_path: Path) -> None:
    map_type = onnx.TypeProto()
    map_type.map_type.key_type = 999
    map_type.map_type.value_type.tensor_type.elem_type = TensorProto.FLOAT
    extra = helper.make_value_info("m", map_type)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["score"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]), extra],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path = tmp_path / "mapkey.onnx"
    path.write_bytes(model.SerializeToString())
    result = cli("inspect", path)
    assert result.code in (0, 2), result.err
    assert "internal error" not in result.err


def test_a_closed_output_pipe_is_never_success(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f.txt").write_text("x")
    subprocess.run([sys.executable, "-m", "relgate", "manifest", tmp_path / "b"], check=True,
                   capture_output=True)
    (tmp_path / "b" / "extra.txt").write_text("not in the manifest")
    proc = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m relgate verify "{tmp_path / "b"}" | (exec 0<&-; true);'
                       ' echo "${PIPESTATUS[0]}"'],
        capture_output=True, text=True)
    assert proc.stdout.strip() != "0"
