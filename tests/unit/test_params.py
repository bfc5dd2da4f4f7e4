"""The typed params loader: strict YAML, schema-checked, frozen records."""

from __future__ import annotations

from pathlib import Path

import pytest

from relgate.errors import ParamsError
from relgate.params import load_params, thaw

BASE = """schema_version: 1
seed: 11
gates:
  mode: all
  rules:
    - {metric: auc, op: ">=", value: 0.85}
    - {metric: f1, op: ">=", value: 0.8, on: ci_low}
  baseline: {release: v0, max_drop: {auc: 0.01}}
release:
  name: "1.10"
  promoted: {path: models/model.onnx}
  variants: [{path: models/readout.onnx, description: token readout}]
  tolerance: {auc: 1e-6, f1: 2e-6}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_loads_typed_frozen_records(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, BASE))
    assert params.seed == 11
    assert params.gates.mode == "all"
    assert [r.describe() for r in params.gates.rules] == ["auc >= 0.85", "f1 (ci_low) >= 0.8"]
    assert params.gates.baseline is not None and params.gates.baseline.max_drop["auc"] == 0.01
    assert params.release.name == "1.10"
    assert params.release.tolerance_for("auc") == 1e-6
    assert params.release.tolerance_for("f1") == 2e-6
    assert params.release.tolerance_for("ece") == 1e-6
    assert params.release.variants[0].role == "variant"
    assert params.evaluate.threads == 1
    with pytest.raises(AttributeError):
        params.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        params.raw["seed"] = 3  # type: ignore[index]
    assert thaw(params.raw)["release"]["variants"][0]["path"] == "models/readout.onnx"


def test_yaml12_exponent_floats_are_numbers(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, BASE.replace("{auc: 1e-6, f1: 2e-6}", "1e-3")))
    assert params.release.default_tolerance == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('name: "1.10"', "name: 1.10", "release.name: expected a string, got 1.1; quote the value"),
        ("mode: all", "mode: no", "gates.mode: line 4: 'no' is ambiguous"),
        ("seed: 11", "seed: 11\nseed: 12", "duplicate key 'seed'"),
        ("seed: 11", "seed: on", "seed: line 2: 'on' is ambiguous"),
        ("seed: 11", "seed: -1", "seed: -1 is less than the minimum"),
        ("seed: 11", "seed: !!python/object:os.system {}", "YAML tags such as"),
        ("value: 0.85}", "value: .inf}", "not a finite number"),
        ("schema_version: 1", "schema_version: 1\nextra: 1", "unknown key 'extra' not allowed"),
    ],
)
def test_traps_end_in_a_clear_error_naming_the_key(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, BASE.replace(old, new, 1)))
    assert fragment in info.value.one_line()
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "", "a: [\n"])
def test_non_mapping_or_broken_yaml(tmp_path: Path, text: str) -> None:
    with pytest.raises(ParamsError):
        load_params(write(tmp_path, text))


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="no such file"):
        load_params(tmp_path / "missing.yaml")
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ParamsError, match="UTF-8"):
        load_params(p)


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    laughs = 'a: &a ["lol","lol"]\nb: &b [*a,*a]\nc: &c [*b,*b]\n'
    with pytest.raises(ParamsError, match="aliases are not allowed"):
        load_params(write(tmp_path, laughs))
