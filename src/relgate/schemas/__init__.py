"""The bundled JSON Schemas (draft 2020-12) and validation against them.

Schemas ship inside the wheel next to this file and are read with
importlib.resources; ``$ref`` between them resolves from this folder only,
never from the network. Validation uses a FormatChecker (date-time needs
rfc3339-validator, a declared dependency) and reports the first, most
relevant error with its key path, e.g. ``gates.rules[0].value``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

from relgate.errors import SchemaError

KINDS = ("params", "calibration", "validation-report", "release", "manifest", "compare", "parity",
         "provenance")
_BASE = "https://relgate.dev/schemas/"


def schema_text(kind: str) -> str:
    """The raw text of a bundled schema (``common`` included)."""
    if kind not in (*KINDS, "common"):
        raise SchemaError(f"unknown record kind {kind!r}", hint=f"use one of: {', '.join(KINDS)}")
    return resources.files(__name__).joinpath(f"{kind}.schema.json").read_text(encoding="utf-8")


@functools.cache
def load_schema(kind: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(schema_text(kind))
    return result


@functools.cache
def _validator(kind: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource

    registry: Registry[Any] = Registry().with_resources(
        (_BASE + f"{name}.schema.json", Resource.from_contents(load_schema(name)))
        for name in (*KINDS, "common")
    )
    cls = jsonschema.validators.validator_for(load_schema(kind))
    return cls(load_schema(kind), registry=registry, format_checker=cls.FORMAT_CHECKER)


def key_path(parts: Iterable[Any]) -> str:
    """Render a jsonschema path deque as ``a.b[0].c`` ("(root)" when empty)."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def errors(instance: Any, kind: str) -> list[str]:
    """Every violation, as 'key.path: message' lines, sorted."""
    return sorted(
        f"{key_path(e.absolute_path)}: {_describe(e)}" for e in _validator(kind).iter_errors(instance)
    )


def validate(instance: Any, kind: str, *, source: str = "") -> None:
    """Raise SchemaError naming the key path of the most relevant violation."""
    import jsonschema

    where = f"{source}: " if source else ""
    bad_text = _lone_surrogate(instance)
    if bad_text is not None:
        raise SchemaError(f"{where}{bad_text}: text holds a lone UTF-16 surrogate (\\udXXX), "
                          "which is not Unicode", hint="write the text as valid Unicode")
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(instance))
    if error is None:
        problem = _confusion_shape(instance) if kind == "validation-report" else None
        if problem is not None:
            raise SchemaError(f"{where}confusion: {problem}",
                              hint=f"see the '{kind}' schema (relgate schema show {kind})")
        return
    raise SchemaError(
        f"{where}{key_path(error.absolute_path)}: {_describe(error)}",
        hint=f"see the '{kind}' schema (relgate schema show {kind})",
    )


def _confusion_shape(report: dict[str, Any]) -> str | None:
    """Why a report's confusion matrix is not K x K (2 x 2 for a binary report), or None.

    The schema cannot tie the matrix's shape to the task's K; every renderer relies on it.
    """
    matrix = report.get("confusion")
    if matrix is None:
        return None
    task = report.get("task") or {}
    multiclass = task.get("kind") == "multiclass"
    k = task.get("n_classes") if multiclass else 2
    shape = f"{len(matrix)} rows of {sorted({len(row) for row in matrix})} columns"
    if k is None:
        return None if all(len(row) == len(matrix) for row in matrix) else f"{shape}, not square"
    if len(matrix) == k and all(len(row) == k for row in matrix):
        return None
    what = f"{k} classes" if multiclass else "a binary report: [[TN, FP], [FN, TP]]"
    return f"{shape}; expected {k} x {k} ({what})"


def _lone_surrogate(instance: Any) -> str | None:
    """The key path of the first string (or key) that cannot be encoded as UTF-8, or None.

    JSON may escape a lone surrogate (``"\\udcff"``); such a string breaks every later
    write (reports, model cards, stdout), so records holding one are refused here,
    where every record is checked before it is used.
    """
    stack: list[tuple[Any, tuple[Any, ...]]] = [(instance, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str) and not _is_text(key):
                    return key_path(path) + f" (key {ascii(key)[:60]})"
                stack.append((value, (*path, key)))
        elif isinstance(item, list):
            stack.extend((value, (*path, i)) for i, value in enumerate(item))
        elif isinstance(item, str) and not _is_text(item):
            return key_path(path)
    return None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _describe(error: Any) -> str:
    """A short message; long instances are elided so the error stays one line."""
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        names = ", ".join(repr(k) for k in extra[:5])
        return f"unknown key{'s' if len(extra) > 1 else ''} {names} not allowed"
    if error.validator == "pattern" and "description" in error.schema:
        shown = repr(error.instance)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return f"{shown} is not valid: {error.schema['description']}"
    if error.validator == "type" and isinstance(error.instance, (int, float, bool)) and "string" in str(
        error.validator_value
    ):
        return f"expected a string, got {error.instance!r}; quote the value"
    text = str(error.message)
    return text if len(text) <= 200 else text[:197] + "..."
