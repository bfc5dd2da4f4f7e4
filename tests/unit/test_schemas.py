"""The bundled schemas: valid 2020-12, strict, and checked through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from relgate import schemas
from relgate.errors import SchemaError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("kind", [*schemas.KINDS, "common"])
def test_schema_passes_the_2020_12_metaschema(kind: str) -> None:
    schema = schemas.load_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("kind", [k for k in schemas.KINDS if k not in ("params", "provenance")])
def test_record_schemas_pin_version_and_reject_unknown_keys(kind: str) -> None:
    schema = schemas.load_schema(kind)
    assert "schema_version" in schema["required"]
    assert schema["additionalProperties"] is False


def test_the_provenance_schema_is_versioned_by_its_in_toto_types() -> None:
    """An in-toto Statement carries no schema_version: its _type and predicateType are its
    version, and both are pinned to one value."""
    schema = schemas.load_schema("provenance")
    assert schema["additionalProperties"] is False
    assert schema["properties"]["_type"] == {"const": "https://in-toto.io/Statement/v1"}
    assert schema["properties"]["predicateType"] == {"const": "https://slsa.dev/provenance/v1"}


def _examples(sign: str) -> list[tuple[str, Path]]:
    return sorted((d.name, f) for d in EXAMPLES.iterdir() for f in (d / sign).iterdir())


@pytest.mark.parametrize(("kind", "path"), _examples("positive"), ids=lambda v: getattr(v, "name", v))
def test_positive_examples_validate_through_the_cli(cli, kind: str, path: Path) -> None:
    result = cli("schema", "check", path, "--kind", kind)
    assert result.code == 0, result.err
    assert f"valid {kind}" in result.out


@pytest.mark.parametrize(("kind", "path"), _examples("negative"), ids=lambda v: getattr(v, "name", v))
def test_negative_examples_are_refused_naming_the_key(cli, kind: str, path: Path) -> None:
    expected = json.loads((EXAMPLES / kind / "negative-expected.json").read_text())
    result = cli("schema", "check", path, "--kind", kind)
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert expected[path.name] in lines[0]
    assert "Traceback" not in result.err


def test_every_negative_example_declares_its_expected_key_path() -> None:
    for kind_dir in EXAMPLES.iterdir():
        declared = json.loads((kind_dir / "negative-expected.json").read_text())
        assert sorted(declared) == sorted(p.name for p in (kind_dir / "negative").iterdir())


def test_format_checking_is_active() -> None:
    doc = json.loads((EXAMPLES / "release/positive/in-bundle.json").read_text())
    doc["created"] = "2026-13-45T99:00:00Z"
    with pytest.raises(SchemaError, match="created"):
        schemas.validate(doc, "release")


def test_errors_lists_every_violation_sorted() -> None:
    doc = json.loads((EXAMPLES / "manifest/positive/bundle.json").read_text())
    doc["algorithm"] = "md5"
    doc["root_digest"] = "x"
    assert [e.split(":")[0] for e in schemas.errors(doc, "manifest")] == ["algorithm", "root_digest"]


def test_unknown_kind_is_a_clear_error(cli) -> None:
    with pytest.raises(SchemaError, match="unknown record kind"):
        schemas.schema_text("nope")
    result = cli("schema", "check", "x.json", "--kind", "nope")
    assert result.code == 2 and "invalid choice" in result.err


@pytest.mark.parametrize(
    "text", [b'{"a": 1, "a": 2}', b'{"a": NaN}', b"[" * 100_000 + b"]" * 100_000]
)
def test_hostile_json_gets_exit_2_and_one_line(cli, tmp_path: Path, text: bytes) -> None:
    p = tmp_path / "bad.json"
    p.write_bytes(text)
    result = cli("schema", "check", p, "--kind", "validation-report")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err
