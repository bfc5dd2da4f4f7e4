"""Hostile reports, calibrations, release records, manifests and params files, through every
command that reads them: exit 2 (or 1 where the refusal is governed), one line, no trace.

Each hostile file is tried in every place a command reads that kind of record, so a reader
that forgets the strict JSON rules, the size cap or the YAML rules anywhere is caught.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.adversarial.conftest import (
    HOSTILE_JSON,
    HOSTILE_YAML,
    assert_clean_failure,
    make_hostile,
    replace_with,
)

REPORT = "analysis/validation_report.json"
CALIBRATION = "analysis/calibration.json"
BUNDLE = "models/core/v1.0.0"


def _json_places(root: Path, bad: Path) -> list[tuple[str, list[object], tuple[int, ...]]]:
    """(what, argv, allowed exit codes) for every command that reads a JSON record."""
    model, test = root / "models/model.onnx", root / "data/test.npz"
    return [
        ("gate REPORT", ["gate", bad, "--params", root / "params.yaml"], (2,)),
        ("report REPORT", ["report", bad], (2,)),
        ("report --baseline", ["report", root / REPORT, "--baseline", bad], (2,)),
        *((f"schema check --kind {k}", ["schema", "check", bad, "--kind", k], (2,))
          for k in ("validation-report", "calibration", "release", "manifest")),
        ("validate --calibration", ["validate", "--model", model, "--data", test, "--calibration",
                                    bad, "--params", root / "params.yaml", "--out",
                                    root / "out/report.json"], (2,)),
        ("evaluate --calibration", ["evaluate", "--model", model, "--data", test,
                                    "--calibration", bad, "--out", root / "out/scores.npz"], (2,)),
    ]


@pytest.mark.parametrize("case", sorted(HOSTILE_JSON))
def test_hostile_json_is_refused_by_every_reader(registry: Path, cli, in_dir, case: str) -> None:
    bad = make_hostile(registry / "hostile" / f"{case}.json", HOSTILE_JSON[case])
    failures = []
    for what, argv, codes in _json_places(registry, bad):
        started = time.monotonic()
        result = cli(*argv)
        try:
            line = assert_clean_failure(result, codes)
        except AssertionError as exc:
            failures.append(f"{what}: {exc}")
            continue
        if bad.name not in line and "hostile" not in line:
            failures.append(f"{what}: the error does not name the file: {line}")
        if time.monotonic() - started > 10:
            failures.append(f"{what}: took {time.monotonic() - started:.1f} s")
    assert not (registry / "out").exists() or not any((registry / "out").iterdir())
    assert failures == []


@pytest.mark.parametrize("case", sorted(HOSTILE_JSON))
def test_hostile_evidence_in_a_registry_is_refused_by_promote(registry: Path, cli, in_dir,
                                                              case: str) -> None:
    """A hostile validation report or calibration in the registry: promote refuses, publishes
    nothing. (A calibration that is valid JSON but not the one the report names is a
    governed refusal, exit 1.)"""
    places = [(REPORT, (2,)), (CALIBRATION, (1, 2))]
    if case == "sparse-1gib":  # a calibration is hashed whole before it is compared: slow
        places = places[:1]
    for rel, codes in places:
        original = (registry / rel).read_bytes()
        replace_with(registry / rel, HOSTILE_JSON[case])
        with in_dir(registry):
            assert_clean_failure(cli("promote"), codes)
        assert not (registry / BUNDLE).exists()
        assert not (registry / "analysis/release_v1.0.0.json").exists()
        replace_with(registry / rel, original)


@pytest.mark.parametrize("case", sorted(HOSTILE_JSON))
def test_hostile_manifest_release_record_and_bundle_report(registry: Path, cli, in_dir,
                                                           case: str) -> None:
    """verify with a hostile manifest.json, releases with a hostile release record, report
    of a bundle folder whose validation_report.json is hostile."""
    bundle = registry / "bundle"
    bundle.mkdir()
    (bundle / "validation_report.json").write_bytes((registry / REPORT).read_bytes())
    replace_with(bundle / "manifest.json", HOSTILE_JSON[case])
    assert "manifest.json" in assert_clean_failure(cli("verify", bundle), (2,))
    assert "manifest.json" in assert_clean_failure(cli("verify", bundle, "--json"), (2,))
    replace_with(bundle / "validation_report.json", HOSTILE_JSON[case])
    assert_clean_failure(cli("report", bundle), (2,))
    make_hostile(registry / "analysis/release_v9.9.9.json", HOSTILE_JSON[case])
    line = assert_clean_failure(cli("releases", registry), (2,))
    assert "release_v9.9.9.json" in line
    assert_clean_failure(cli("releases", registry, "--json"), (2,))


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_hostile_params_are_refused_by_every_command(registry: Path, cli, in_dir,
                                                     case: str) -> None:
    bad = make_hostile(registry / "hostile" / f"{case}.yaml", HOSTILE_YAML[case])
    model, val, test = (registry / "models/model.onnx", registry / "data/val.npz",
                        registry / "data/test.npz")
    places: list[tuple[str, list[object]]] = [
        ("schema check --kind params", ["schema", "check", bad, "--kind", "params"]),
        ("gate --params", ["gate", registry / REPORT, "--params", bad]),
        ("report --params", ["report", registry / REPORT, "--params", bad]),
        ("promote --params", ["promote", "--params", bad, "--root", registry]),
        ("inspect --params", ["inspect", model, "--params", bad]),
        ("evaluate --params", ["evaluate", "--model", model, "--data", test, "--params", bad,
                               "--out", registry / "out/s.npz"]),
        ("calibrate --params", ["calibrate", "--model", model, "--data", val, "--params", bad,
                                "--out", registry / "out/c.json"]),
        ("validate --params", ["validate", "--model", model, "--data", test, "--params", bad,
                               "--out", registry / "out/r.json"]),
    ]
    failures = []
    for what, argv in places:
        try:
            line = assert_clean_failure(cli(*argv), (2,))
        except AssertionError as exc:
            failures.append(f"{what}: {exc}")
            continue
        if bad.name not in line:
            failures.append(f"{what}: the error does not name the file: {line}")
    assert failures == []
    assert not (registry / "out").exists()
    assert not (registry / BUNDLE).exists()
    assert not Path("pwned").exists() and not (registry / "pwned").exists()


def test_yaml_tags_never_run_code(registry: Path, tmp_path: Path) -> None:
    """The !!python/object payload would create a file if it were ever constructed."""
    from relgate.errors import ParamsError
    from relgate.params import load_params

    marker = tmp_path / "pwned"
    p = tmp_path / "p.yaml"
    p.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ParamsError, match="YAML tags"):
        load_params(p)
    assert not marker.exists()


def test_a_1_gib_sparse_record_is_refused_after_reading_at_most_the_cap(tmp_path: Path) -> None:
    """Size caps bound what is read: a 1 GiB report costs 32 MiB of reading, not 1 GiB."""
    import resource

    from relgate.errors import JSONFormatError
    from relgate.jsonio import MAX_JSON_BYTES, read_json

    big = make_hostile(tmp_path / "big.json", "sparse")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(JSONFormatError, match=f"larger than the {MAX_JSON_BYTES} byte limit"):
        read_json(big)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 2 * MAX_JSON_BYTES / 2**20 + 16
    assert os.stat(big).st_blocks * 512 < 1024 * 1024  # and the test used no disk


def test_a_report_for_another_model_is_refused_by_promote(registry: Path, cli, in_dir) -> None:
    """The report's model sha256 must be the artifact's: a report copied from another model
    (schema-valid, honest numbers) is a governed refusal naming the model."""
    from relgate.jsonio import read_json, write_json

    report = read_json(registry / REPORT)
    report["model"]["sha256"] = "0" * 64
    write_json(registry / REPORT, report)
    with in_dir(registry):
        line = assert_clean_failure(cli("promote"), (1,))
    assert "models/model.onnx changed after validation" in line
    assert not (registry / BUNDLE).exists()


@pytest.mark.parametrize("value", ["!!binary aGVsbG8=", "!!set {a, b}", "!!omap [{a: 1}]",
                                   "!!pairs [{a: 1}]", "!!timestamp 2024-01-01"])
def test_params_free_sections_hold_json_types_only(registry: Path, value: str) -> None:
    """data:/train:/export: are free-form but end up in release records as JSON: a YAML
    type JSON cannot hold is refused when params are loaded, not when promote writes."""
    from relgate.errors import ParamsError
    from relgate.params import load_params

    p = registry / "params.yaml"
    p.write_text(p.read_text().replace("seed: 0\n", f"seed: 0\ndata:\n  extra: {value}\n", 1))
    with pytest.raises(ParamsError, match="not allowed") as info:
        load_params(p)
    assert "data.extra" in info.value.one_line()


def test_an_unquoted_date_in_params_is_a_string_and_promotes(registry: Path, cli,
                                                             in_dir) -> None:
    """YAML 1.1 would read 2024-01-01 as a date (not JSON): relgate reads it as YAML 1.2
    does, a string, and the release record carries it."""
    from relgate.jsonio import read_json
    from relgate.params import load_params

    p = registry / "params.yaml"
    p.write_text(p.read_text().replace("seed: 0\n", "seed: 0\ndata:\n  as_of: 2024-01-01\n", 1))
    assert load_params(p).data["as_of"] == "2024-01-01"
    with in_dir(registry):
        assert cli("promote").code == 0
    record = read_json(registry / "analysis/release_v1.0.0.json")
    assert record["provenance"]["params"]["data"]["as_of"] == "2024-01-01"


EXTREME_CALIBRATIONS = {
    "input-scale-1e38": {"input": {"scale": 1e38, "offset": 0.0}},
    "input-offset-1e300": {"input": {"scale": 1.0, "offset": -1e300}},
    "platt-1e308": {"probability": {"method": "platt", "a": 1e308, "b": -1e308,
                                    "temperature": None, "score_is_probability": False}},
    "temperature-1e-300": {"probability": {"method": "temperature", "a": 1e300, "b": 0.0,
                                           "temperature": 1e-300,
                                           "score_is_probability": False}},
}


@pytest.mark.parametrize("case", sorted(EXTREME_CALIBRATIONS))
def test_extreme_calibration_values_neither_warn_nor_crash(registry: Path, cli, in_dir,
                                                           case: str) -> None:
    """Schema-valid but extreme calibration numbers (a record claiming the right model):
    validate judges or refuses in one line, evaluate scores; numpy overflow never reaches
    stderr (pytest turns warnings into errors, which the CLI would report as exit 3)."""
    from relgate.jsonio import read_json, write_json

    record = read_json(registry / CALIBRATION)
    record.update(EXTREME_CALIBRATIONS[case])
    write_json(registry / "extreme.json", record)
    with in_dir(registry):
        judged = cli("validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                     "--calibration", "extreme.json", "--out", "out/report.json")
        if judged.code != 0:
            assert_clean_failure(judged, (1, 2))
        scored = cli("evaluate", "--model", "models/model.onnx", "--data", "data/test.npz",
                     "--calibration", "extreme.json", "--out", "out/scores.npz")
    assert scored.code == 0 and scored.err == "", scored.err
