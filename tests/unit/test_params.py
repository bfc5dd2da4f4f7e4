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
  variants: [{path: models/readout.onnx, description: token readout, evaluated: false}]
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


# YAML 1.1 reads these as integers (0777 -> 511, 1:30 -> 90, 1_000 -> 1000), YAML 1.2 reads
# most of them otherwise (0o17 -> 15, 08 -> 8, 1_000 a string): unquoted, each one is refused.
AMBIGUOUS_INTS = ["0777", "+0777", "-0777", "1:30", "190:20:30", "0x1F", "0b101", "0o17",
                  "1_000", "08", "00", "0_1", "-0b1", "0x" + "f" * 50]


@pytest.mark.parametrize("value", AMBIGUOUS_INTS)
def test_yaml11_integers_are_refused_as_ambiguous(tmp_path: Path, value: str) -> None:
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, BASE.replace("seed: 11", f"seed: {value}")))
    line = info.value.one_line()
    assert f"seed: line 2: {value[:40]!r}"[:-1] in line and "is ambiguous" in line
    assert "\n" not in line and len(line) < 400


@pytest.mark.parametrize(
    ("value", "reading"),
    [("0777", "YAML 1.1 reads it as 511, YAML 1.2 as 777"),
     ("1:30", "YAML 1.1 reads it as 90, YAML 1.2 as a string"),
     ("0o17", "YAML 1.1 reads it as a string, YAML 1.2 as 15"),
     ("1_000", "YAML 1.1 reads it as 1000, YAML 1.2 as a string"),
     ("08", "YAML 1.1 reads it as a string, YAML 1.2 as 8"),
     ("0x1F", "YAML reads it as 31"), ("-0b101", "YAML 1.1 reads it as -5, YAML 1.2 as a string")],
)
def test_the_refusal_says_how_each_yaml_reads_it(tmp_path: Path, value: str, reading: str) -> None:
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, BASE.replace("seed: 11", f"seed: {value}")))
    assert reading in info.value.one_line()


@pytest.mark.parametrize("value", ["0X1F", "0o9", "1:60", "1.5_0", "12:30:99"])
def test_what_no_yaml_reads_as_a_number_stays_a_string(tmp_path: Path, value: str) -> None:
    params = load_params(write(tmp_path, BASE + f"train: {{tag: {value}}}\n"))
    assert params.train["tag"] == value


@pytest.mark.parametrize("value", AMBIGUOUS_INTS)
def test_yaml11_integers_in_lists_and_string_fields_are_refused(tmp_path: Path, value: str) -> None:
    """Not only where an integer is expected: a string field given 1:30 would otherwise fail
    the schema with "got 90", and a free-form section would record 90 silently."""
    for text in (BASE + f"calibrate:\n  scales: [1.0, {value}]\n",
                 BASE.replace("description: token readout", f"description: {value}"),
                 BASE + f"train:\n  epochs: {value}\n"):
        with pytest.raises(ParamsError) as info:
            load_params(write(tmp_path, text))
        assert f"{value[:40]!r}"[:-1] in info.value.one_line()
        assert "is ambiguous" in info.value.one_line()


@pytest.mark.parametrize("value", AMBIGUOUS_INTS)
def test_quoted_yaml11_integers_stay_strings(tmp_path: Path, value: str) -> None:
    for quoted in (f'"{value}"', f"'{value}'"):
        text = BASE.replace("description: token readout", f"description: {quoted}") \
            + f"train: {{tag: {quoted}}}\n"
        params = load_params(write(tmp_path, text))
        assert params.release.variants[0].description == value
        assert params.train["tag"] == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("7", 7), ("+7", 7), ("-7", -7), ("1000", 1000),
     ("123456789012345678901234567890", 123456789012345678901234567890)],
)
def test_plain_decimal_integers_still_load(tmp_path: Path, text: str, expected: int) -> None:
    params = load_params(write(tmp_path, BASE + f"train: {{n: {text}, ns: [{text}]}}\n"))
    assert params.train["n"] == expected and type(params.train["n"]) is int
    assert params.train["ns"] == (expected,)
    if 0 <= expected < 2**32:
        assert load_params(write(tmp_path, BASE.replace("seed: 11", f"seed: {text}"))).seed \
            == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.85", 0.85), ("1e-3", 0.001), ("5.0e-1", 0.5), (".5", 0.5), ("08.5", 8.5), ("-0.25", -0.25),
     ("1", 1)],
)
def test_plain_floats_still_load(tmp_path: Path, value: str, expected: float) -> None:
    # on log_loss ([0, inf)), so that every one of these is a bound a rule may have
    doc = BASE.replace('{metric: auc, op: ">=", value: 0.85}',
                       f'{{metric: log_loss, op: ">=", value: {value}}}')
    params = load_params(write(tmp_path, doc))
    assert params.gates.rules[0].value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("!!int 0777", "'0777' is ambiguous"), ("!!int abc", "'abc' is not an integer"),
     ("!!float abc", "'abc' is not a number"), ("!!float 1:30", "'1:30' is not a number"),
     ("!!bool maybe", "'maybe' is not a boolean"), ("!!null 5", "'5' is not null")],
)
def test_explicit_tags_cannot_smuggle_what_plain_values_cannot(tmp_path: Path, value: str,
                                                               fragment: str) -> None:
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, BASE.replace("seed: 11", f"seed: {value}")))
    assert fragment in info.value.one_line()


def test_calibrate_selective_is_typed_and_binary_params_keep_none(tmp_path: Path) -> None:
    """calibrate.selective (multi-class "no conclusive"): target_accuracy required,
    min_coverage defaults to 0; absent (every binary params file) it is None."""
    assert load_params(write(tmp_path, BASE)).calibrate.selective is None
    text = BASE + "calibrate:\n  selective: {target_accuracy: 0.95, min_coverage: 0.8}\n"
    sel = load_params(write(tmp_path, text)).calibrate.selective
    assert sel is not None and (sel.target_accuracy, sel.min_coverage) == (0.95, 0.8)
    sel = load_params(write(tmp_path, BASE + "calibrate:\n  selective: {target_accuracy: 0.9}\n"
                            )).calibrate.selective
    assert sel is not None and sel.min_coverage == 0.0


@pytest.mark.parametrize("body", ["{min_coverage: 0.8}", "{target_accuracy: 0}",
                                  "{target_accuracy: 1.5}", "{target_accuracy: 0.9, min_coverage: -0.1}",
                                  "{target_accuracy: 0.9, precision: 0.9}"])
def test_a_malformed_selective_block_is_bad_params(tmp_path: Path, body: str) -> None:
    with pytest.raises(ParamsError, match="selective"):
        load_params(write(tmp_path, BASE + f"calibrate:\n  selective: {body}\n"))


def test_release_files_tag_template_and_parity_are_typed(tmp_path: Path) -> None:
    p = load_params(write(tmp_path, BASE))
    assert p.release.files == () and p.release.tag == "core@1.10" and p.parity is None
    text = BASE + ("  files: [{path: models/deploy.pt, description: torch deploy model}]\n"
                   "  tag: \"core/{name}\"\n"
                   "parity: {reference: models/deploy.pt, max_abs_diff: 1e-4, min_agreement: 0.999}\n")
    p = load_params(write(tmp_path, text))
    assert [(f.path, f.role) for f in p.release.files] == [("models/deploy.pt", "file")]
    assert p.release.tag == "core/1.10"
    assert p.parity is not None and p.parity.max_abs_diff == 1e-4
    assert p.parity.min_agreement == 0.999 and p.parity.min_correlation is None
    assert p.parity.samples == 256 and p.parity.record == "analysis/parity.json"


@pytest.mark.parametrize(("extra", "why"), [
    ("  tag: core\n", "release.tag"),
    ("  tag: \"core@{name}{name}\"\n", "release.tag"),
    ("  tag: \"core @{name}\"\n", "release.tag"),
    ("  files: [{path: ../outside.pt}]\n", "files"),
    ("parity: {max_abs_diff: 1e-4}\n", "reference"),
    ("parity: {reference: models/d.pt, min_agreement: 1.5}\n", "min_agreement"),
])
def test_bad_files_tags_and_parity_are_refused(tmp_path: Path, extra: str, why: str) -> None:
    with pytest.raises(ParamsError, match=why):
        load_params(write(tmp_path, BASE + extra))


VARIANT_DOC = """schema_version: 1
seed: 11
task: {kind: binary, output: score, output_type: logit}
contract: {inputs: [{name: x, dtype: float32}]}
calibrate: {method: temperature, threshold: {strategy: max_f1}}
parity: {reference: models/deploy.pt, max_abs_diff: 1.0e-4}
gates:
  mode: all
  rules: [{metric: auc, op: ">=", value: 0.85}]
release:
  name: v2.0.0
  promoted: {path: models/model.onnx}
  data: data/test.npz
  variants:
  - path: models/tokens.onnx
    task: {kind: multiclass, output: logits, output_type: logits}
    contract: {inputs: [{name: input_tokens, dtype: int64}]}
    data: data/tokens_test.npz
    gates: {mode: any, rules: [{metric: accuracy, op: ">=", value: 0.7}]}
  - {path: models/readout.onnx, name: ro, evaluated: false}
"""


def test_a_variant_is_judged_by_its_own_params_and_nothing_of_the_promoted_model(
        tmp_path: Path) -> None:
    params = load_params(write(tmp_path, VARIANT_DOC))
    tokens, ro = params.release.variants
    assert (tokens.name, tokens.evaluated, ro.name, ro.evaluated) == ("tokens", True, "ro", False)
    assert tokens.report == "analysis/variants/tokens/validation_report.json"
    assert tokens.calibration == "analysis/variants/tokens/calibration.json"
    assert ro.report is None and ro.data is None
    judged = params.for_variant("tokens")
    assert judged.release.promoted.path == "models/tokens.onnx"
    assert judged.release.data == "data/tokens_test.npz"
    assert judged.release.report == tokens.report and judged.release.variants == ()
    assert judged.task is not None and judged.task.kind == "multiclass"
    assert judged.contract is not None and [t.name for t in judged.contract.inputs] == ["input_tokens"]
    assert judged.gates.mode == "any" and [r.metric for r in judged.gates.rules] == ["accuracy"]
    assert judged.parity is None  # parity links the promoted model to its deploy model
    assert judged.calibrate.method == "temperature"  # a procedure: inherited when not declared
    assert (judged.seed, judged.release.name) == (11, "v2.0.0")
    with pytest.raises(ParamsError, match="declared evaluated: false"):
        params.for_variant("ro")
    with pytest.raises(ParamsError, match=r"no variant named 'x' \(variants: tokens, ro\)"):
        params.for_variant("x")


def test_a_variant_without_its_own_task_does_not_inherit_the_promoted_one(tmp_path: Path) -> None:
    doc = VARIANT_DOC.replace("    task: {kind: multiclass, output: logits, output_type: logits}\n", "")
    judged = load_params(write(tmp_path, doc)).for_variant("tokens")
    assert judged.task is None  # relgate then uses what the graph proves, or refuses


@pytest.mark.parametrize(("old", "new", "fragment"), [
    ("  - {path: models/readout.onnx, name: ro, evaluated: false}",
     "  - {path: models/readout.onnx}", "'readout': declares no data or gates"),
    ("  - {path: models/readout.onnx, name: ro, evaluated: false}",
     "  - {path: models/readout.onnx, data: d.npz}", "'readout': declares no gates"),
    ("name: ro, evaluated: false}", "name: ro, evaluated: false, data: d.npz}",
     "declared evaluated: false, but also declares data"),
    ("name: ro, evaluated: false}", "name: tokens, evaluated: false}", "two variants are named"),
    ("  - {path: models/readout.onnx, name: ro, evaluated: false}",
     "  - {path: models/model.onnx, name: ro, evaluated: false}", "is the promoted model itself"),
    ("    data: data/tokens_test.npz\n",
     "    data: data/tokens_test.npz\n    report: analysis/validation_report.json\n",
     "is also the report of the promoted model"),
    ("rules: [{metric: accuracy, op: \">=\", value: 0.7}]}",
     "rules: [{metric: accuracy, op: \">=\", value: 0.7}], baseline: {max_drop: {auc: 0.1}}}",
     "gates.baseline is not supported for a variant"),
    ("name: ro,", "name: ../ro,", "release"),
    ("  - path: models/tokens.onnx\n", "  - path: models/..onnx\n",
     "the name '.' (from the file's stem unless given) cannot name its report folder"),
    ("  - path: models/tokens.onnx\n", "  - path: models/my tokens.onnx\n",
     "the name 'my tokens'"),
])
def test_variant_rules_the_schema_cannot_say(tmp_path: Path, old: str, new: str,
                                             fragment: str) -> None:
    assert old in VARIANT_DOC
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, VARIANT_DOC.replace(old, new)))
    assert fragment in info.value.message


# ---------------------------------------------------------------- eval_data (issue 18.2)


def test_eval_data_defaults_to_y_and_one_column_per_input(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, BASE))
    assert params.eval_data.label == "y" and dict(params.eval_data.inputs) == {}
    assert params.eval_data.is_default


def test_eval_data_is_typed_frozen_and_keeps_the_column_order(tmp_path: Path) -> None:
    doc = BASE + "eval_data:\n  label: target\n  inputs:\n    x: [c, a, b]\n    k: [n]\n"
    params = load_params(write(tmp_path, doc))
    assert params.eval_data.label == "target" and not params.eval_data.is_default
    assert dict(params.eval_data.inputs) == {"x": ("c", "a", "b"), "k": ("n",)}
    with pytest.raises(TypeError):
        params.eval_data.inputs["x"] = ("a",)  # type: ignore[index]
    assert thaw(params.raw)["eval_data"]["inputs"]["x"] == ["c", "a", "b"]


def test_a_variant_reads_its_tables_as_the_release_declares(tmp_path: Path) -> None:
    """eval_data says how a table's columns map to input names: shared like evaluate:, so a
    variant's own table (its data:) is read with the declared label and columns."""
    doc = (VARIANT_DOC.replace("data: data/tokens_test.npz", "data: data/tokens_test.parquet")
           + "eval_data: {label: target, inputs: {x: [a, b]}}\n")
    judged = load_params(write(tmp_path, doc)).for_variant("tokens")
    assert judged.release.data == "data/tokens_test.parquet"
    assert judged.eval_data.label == "target"
    assert dict(judged.eval_data.inputs) == {"x": ("a", "b")}


@pytest.mark.parametrize(("body", "fragment"), [
    ("eval_data: {label: ''}", "label"),
    ("eval_data: {label: 3}", "label"),
    ("eval_data: {inputs: {}}", "inputs"),
    ("eval_data: {inputs: {x: []}}", "x"),
    ("eval_data: {inputs: {x: [a, a]}}", "x"),
    ("eval_data: {inputs: {x: a}}", "x"),
    ("eval_data: {columns: [a]}", "columns"),
])
def test_a_malformed_eval_data_is_bad_params(tmp_path: Path, body: str, fragment: str) -> None:
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, BASE + body + "\n"))
    assert "eval_data" in info.value.message and fragment in info.value.message


@pytest.mark.parametrize(("rule", "fragment", "hint"), [
    ('{metric: auc, op: ">=", value: 95}', "auc >= 95 can never pass: auc lies in [0, 1]",
     "did you mean 0.95?"),
    ('{metric: f1, op: ">", value: 1}', "f1 > 1 can never pass", "inside [0, 1]"),
    ('{metric: ece, op: "<", value: 0}', "ece < 0 can never pass", "inside [0, 1]"),
    ('{metric: log_loss, op: "<=", value: -0.5}', "log_loss <= -0.5 can never pass: log_loss "
     "lies in [0, inf)", "inside [0, inf)"),
])
def test_a_gate_no_value_of_its_metric_can_pass_is_refused(tmp_path: Path, rule: str,
                                                           fragment: str, hint: str) -> None:
    doc = BASE.replace('{metric: auc, op: ">=", value: 0.85}', rule)
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, doc))
    assert fragment in info.value.message and hint in (info.value.hint or "")


@pytest.mark.parametrize("rule", ['{metric: auc, op: ">=", value: 1}',
                                  '{metric: ece, op: "<=", value: 0}',
                                  '{metric: log_loss, op: "<", value: 40}'])
def test_a_gate_at_the_edge_of_its_metric_is_kept(tmp_path: Path, rule: str) -> None:
    doc = BASE.replace('{metric: auc, op: ">=", value: 0.85}', rule)
    assert load_params(write(tmp_path, doc)).gates.rules[0].value is not None


@pytest.mark.parametrize("rule", ["    - {metric: auc, op: >=, value: 0.85}\n",
                                  "    - metric: auc\n      op: >=\n      value: 0.85\n",
                                  "    - {metric: auc, op: >, value: 0.85}\n"])
def test_an_unquoted_operator_is_named_not_a_generic_yaml_error(tmp_path: Path, rule: str) -> None:
    doc = BASE.replace('    - {metric: auc, op: ">=", value: 0.85}\n', rule)
    assert doc != BASE
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, doc))
    assert "must be quoted" in info.value.message and 'op: "' in (info.value.hint or "")
