"""Property-based fuzzing of every reader of untrusted input: only relgate's own errors.

Random bytes, random token soups and random mutations of valid records go through the
strict JSON reader, the manifest reader and ``verify_bundle``, ``schemas.validate`` for
every record kind, the report commands (``gate``, ``report`` in every format, with and
without ``--params`` and ``--baseline``) and the params loader. Whatever comes in, the
outcome is a value or a RelgateError subclass; through the CLI, an exit code 0/1/2 with
at most one line on stderr, never 3 ("internal error").

The example count is ``RELGATE_FUZZ_EXAMPLES`` (default 200, seconds in all); ``nox -s
fuzz`` runs thousands.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from relgate import schemas
from relgate.cli import main
from relgate.errors import RelgateError
from relgate.jsonio import dumps, loads_strict
from relgate.manifest import Manifest, inspect_manifest, write_manifest
from tests.adversarial.conftest import FUZZ_EXAMPLES

EXAMPLES = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
FEWER = settings(EXAMPLES, max_examples=max(20, FUZZ_EXAMPLES // 4))
REPO = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO / "tests" / "examples"

# ----------------------------------------------------------------------------- strategies

_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**53, 2**53 + 1, 10**308, -(10**308)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-320, 1.7976931348623157e308, 0.5, 1.0, 1.0000000001]),
)
_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "auc", "f1", "ece", ">=", "<", "all", "any", "ci_low", "point", "../x",
                     "a\\b", "\x00", "\n", "é", "A", "\ud800", "<script>", "|", "`", "**",
                     "ab" * 32, "0" * 64, "2026-01-01T00:00:00Z", "probability", "temperature"]),
)
SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)), max_leaves=12)

_TOKENS = [b"{", b"}", b"[", b"]", b",", b":", b'"a"', b'"kind"', b"1", b"-0", b"1e999", b"-1e-999",
           b"NaN", b"Infinity", b"null", b"true", b'"\\ud800"', b'"\\u0000"', b" ", b"\n",
           b"9" * 5000, b"1" + b"0" * 400, b"\xff", b'"', b"\\", b"0.1", b"[" * 70, b"]" * 70]
TOKEN_SOUP = st.lists(st.sampled_from(_TOKENS), max_size=40).map(b"".join)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node of a JSON value, as a key path (the root is ())."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = obj
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return obj


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_mutations: int = 3) -> Any:
    """*base* with 1..n nodes replaced by random JSON, deleted, or given an extra key."""
    obj = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(obj)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["same-type", "same-type", "same-type", "replace",
                                       "delete", "add"]))
        if action == "same-type":  # mostly still schema-valid: reaches the code behind it
            node = obj
            for part in path:
                node = node[part]
            if isinstance(node, bool):
                obj = _replace(obj, path, draw(st.booleans()))
            elif isinstance(node, (int, float)) or node is None:
                obj = _replace(obj, path, draw(st.one_of(st.none(), _NUMBERS)))
            elif isinstance(node, str):
                obj = _replace(obj, path, draw(_TEXT))
        elif action == "delete" and path:
            parent = obj
            for part in path[:-1]:
                parent = parent[part]
            del parent[path[-1]]
        elif action == "add":
            node = obj
            for part in path:
                node = node[part]
            if isinstance(node, dict):
                node[draw(_TEXT)] = draw(JSON)
            elif isinstance(node, list):
                node.append(draw(JSON))
        else:
            obj = _replace(obj, path, draw(JSON))
    return obj


def run_cli(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def assert_contract(code: int, err: str, what: str) -> None:
    assert "Traceback" not in err and "internal error" not in err, f"{what}: {err}"
    assert code in (0, 1, 2), f"{what}: exit {code}: {err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) <= 1, f"{what}: {err}"
    if code == 2:
        assert len(lines) == 1, f"{what}: exit 2 without a message"


def _text(obj: Any) -> bytes:
    """JSON text for a fuzzed object (json.dumps: lone surrogates stay escaped)."""
    return json.dumps(obj).encode("utf-8")


# ----------------------------------------------------------------------------- the readers


@EXAMPLES
@given(data=st.one_of(st.binary(max_size=300), TOKEN_SOUP))
def test_strict_json_reader_raises_only_relgate_errors(data: bytes) -> None:
    try:
        value = loads_strict(data, source="fuzz.json")
    except RelgateError as exc:
        assert exc.exit_code == 2 and "\n" not in exc.one_line()
        return
    dumps(value)  # whatever was accepted can be written back


@EXAMPLES
@given(value=JSON)
def test_strict_json_reader_round_trips_what_dumps_writes(value: Any) -> None:
    try:
        text = dumps(value)
    except RelgateError:
        return
    assert dumps(loads_strict(text)) == text


def _manifest_base() -> dict[str, Any]:
    return json.loads((EXAMPLES_DIR / "manifest/positive/bundle.json").read_text())


@EXAMPLES
@given(obj=st.one_of(JSON, mutated(_manifest_base())))
def test_manifest_reader_raises_only_relgate_errors(obj: Any) -> None:
    with contextlib.suppress(RelgateError):
        inspect_manifest(obj)
    try:
        manifest = Manifest.from_dict(obj)
    except RelgateError:
        return
    assert Manifest.from_dict(json.loads(manifest.dumps())) == manifest


_PATHS = st.one_of(st.sampled_from(["a.txt", "sub/b.txt", "sub", "A.txt", "../a.txt", "/a.txt",
                                    "sub//b.txt", "a.txt/x", "manifest.json", "c\u0301",
                                    "\u00e7", "sub\\b.txt", "\ud800"]), st.text(max_size=6))
_ENTRIES = st.one_of(
    st.fixed_dictionaries({"size": st.one_of(st.integers(-1, 4), st.just(2**53), SCALARS),
                           "sha256": st.sampled_from(["ab" * 32, "AB" * 32, "ab", ""])}),
    JSON)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-bundle")
    (root / "sub").mkdir()
    (root / "a.txt").write_bytes(b"a\n")
    (root / "sub/b.txt").write_bytes(b"b\n")
    write_manifest(root)
    return root


@EXAMPLES
@given(files=st.dictionaries(_PATHS, _ENTRIES, max_size=5), real=st.booleans(),
       root=st.one_of(st.none(), st.sampled_from(["ab" * 32, "x"])), raw=st.booleans())
def test_verify_with_a_fuzzed_manifest_never_crashes(bundle_dir: Path, files: dict[str, Any],
                                                     real: bool, root: str | None,
                                                     raw: bool) -> None:
    """Random entries (real files among them) in a bundle's manifest: a verdict or exit 2."""
    from relgate.bundle import verify_bundle
    from relgate.manifest import FileDigest, compute_root_digest

    doc = json.loads((bundle_dir / "manifest.json").read_text())
    if not real:
        doc["files"] = {}
    doc["files"].update(files)
    if root is None:
        with contextlib.suppress(Exception):
            doc["root_digest"] = compute_root_digest(
                {p: FileDigest(size=e["size"], sha256=e["sha256"]) for p, e in doc["files"].items()})
    else:
        doc["root_digest"] = root
    (bundle_dir / "manifest.json").write_bytes(_text(doc))
    try:
        if raw:
            code, out, err = run_cli("verify", bundle_dir, "--json")
            assert_contract(code, err, "verify --json")
            if code in (0, 1):
                assert json.loads(out)["ok"] is (code == 0)
            return
        try:
            result = verify_bundle(bundle_dir)
        except RelgateError as exc:
            assert exc.exit_code == 2
            return
        dumps(result.to_dict())
        assert result.ok == (not result.reasons())
        if result.ok:  # only the true content can verify
            assert set(result.to_dict()) and {p for p in doc["files"]} == {"a.txt", "sub/b.txt"}
    finally:
        write_manifest(bundle_dir)


SCHEMA_BASES = {
    "validation-report": "validation-report/positive",
    "calibration": "calibration/positive",
    "release": "release/positive",
    "manifest": "manifest/positive",
}


def _example(kind: str) -> Any:
    folder = EXAMPLES_DIR / SCHEMA_BASES[kind]
    return json.loads(sorted(folder.glob("*.json"))[0].read_text())


@EXAMPLES
@given(kind=st.sampled_from(sorted(SCHEMA_BASES)), data=st.data())
def test_schema_validation_raises_only_schema_errors(kind: str, data: st.DataObject) -> None:
    obj = data.draw(st.one_of(JSON, mutated(_example(kind))))
    try:
        schemas.validate(obj, kind, source="fuzz")
    except RelgateError as exc:
        assert exc.exit_code == 2 and "\n" not in exc.one_line()
        assert len(exc.one_line()) < 2000


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real report and params (from the acceptance registry builder) to mutate."""
    from tests.support.registry import make_registry, prepare

    root = make_registry(tmp_path_factory.mktemp("fuzz-reg") / "reg")
    prepare(root)
    return {"root": root, "report": root / "analysis/validation_report.json",
            "params": root / "params.yaml", "calibration": root / "analysis/calibration.json"}


@FEWER
@given(data=st.data())
def test_report_commands_on_fuzzed_reports(judged: dict[str, Path], tmp_path_factory: Any,
                                           data: st.DataObject) -> None:
    """gate and report (every format, with base params and a baseline) on mutated reports
    (and release records): a verdict, a rendering or exit 2 -- never a crash."""
    base_report = json.loads(judged["report"].read_text())
    base_release = _example("release")
    kind, base = data.draw(st.sampled_from([("report", base_report), ("release", base_release)]))
    obj = data.draw(mutated(base, max_mutations=2))
    folder = judged["root"] / "fuzz"
    folder.mkdir(exist_ok=True)
    path = folder / f"{kind}.json"
    path.write_bytes(_text(obj))
    params = judged["params"]
    runs = [("report", path, "--format", data.draw(st.sampled_from(["text", "md", "json",
                                                                    "html"]))),
            ("report", path, "--format", "md", "--params", params),
            ("report", judged["report"], "--format", "md", "--baseline", path)]
    if kind == "report":
        runs.append(("gate", path, "--params", params))
    for argv in runs:
        code, _out, err = run_cli(*argv)
        assert_contract(code, err, " ".join(map(str, argv)))


@pytest.mark.parametrize("confusion", [[[703, 326]], [[1, 2, 3], [4, 5, 6]], [[1, 2], [3]]])
def test_report_commands_refuse_a_confusion_matrix_that_is_not_2_by_2(
        judged: dict[str, Path], confusion: list[list[int]]) -> None:
    """The crash a random draw found in CI (a binary report's confusion cut to one row):
    every report command now refuses it as bad input, naming the field."""
    report = json.loads(judged["report"].read_text())
    report["confusion"] = confusion
    path = judged["root"] / "fuzz" / "bad-confusion.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(_text(report))
    for argv in [("report", path, "--format", f) for f in ("text", "md", "json")] + [
            ("report", judged["report"], "--format", "md", "--baseline", path),
            ("gate", path, "--params", judged["params"])]:
        code, _out, err = run_cli(*argv)
        assert code == 2 and "confusion:" in err and "expected 2 x 2" in err, (argv, code, err)
        assert_contract(code, err, " ".join(map(str, argv)))


@EXAMPLES
@given(data=st.data())
def test_gates_fail_closed_on_fuzzed_metrics(data: st.DataObject) -> None:
    """A verdict passes only if every rule's value is a finite real number that satisfies it
    (an independent oracle); garbage in the metrics never passes."""
    import math

    from relgate.gates import apply_gates
    from relgate.params import GateRule, GatesSpec

    names = ["auc", "f1", "ece"]
    rules = tuple(GateRule(metric=data.draw(st.sampled_from(names)),
                           op=data.draw(st.sampled_from([">=", ">", "<=", "<"])),
                           value=data.draw(st.floats(-2, 2)),
                           on=data.draw(st.sampled_from(["point", "ci_low", "ci_high"])))
                  for _ in range(data.draw(st.integers(1, 3))))
    metrics = data.draw(st.dictionaries(st.sampled_from(names), st.one_of(
        SCALARS, st.fixed_dictionaries({"value": SCALARS},
                                       optional={"ci_low": SCALARS, "ci_high": SCALARS})),
        max_size=3))
    verdict = apply_gates(GatesSpec(mode="all", rules=rules), metrics)

    def oracle(rule: GateRule) -> bool:
        entry = metrics.get(rule.metric)
        if isinstance(entry, dict):
            if entry.get("value") is None:
                return False
            entry = entry.get({"point": "value"}.get(rule.on, rule.on))
        elif rule.on != "point":
            return False
        if type(entry) not in (int, float) or not math.isfinite(entry):
            return False
        return {">=": entry >= rule.value, ">": entry > rule.value, "<=": entry <= rule.value,
                "<": entry < rule.value}[rule.op]

    assert verdict.passed == all(oracle(r) for r in rules)
    assert verdict.passed == (not verdict.reasons)


# ----------------------------------------------------------------------------- params

_PARAMS_BASE = (EXAMPLES_DIR / "params/positive/minimal.yaml").read_text()
_YAML_TOKENS = ["a", "b", ":", " ", "\n", "  ", "- ", "[", "]", "{", "}", ",", "&x ", "*x", "!!",
                "!!python/object:os.system", "!!binary", "yes", "no", "on", ".nan", ".inf",
                "1e-3", "0x1f", "9" * 50, "'", '"', "\\u", "#", "---", "...", "? ", "<<: ",
                "seed", "gates", "release", "\t", "%YAML 1.1\n", "\x00", "é"]


@st.composite
def params_text(draw: st.DrawFn) -> str:
    lines = _PARAMS_BASE.splitlines(keepends=True)
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return "".join(draw(st.lists(st.sampled_from(_YAML_TOKENS), max_size=40)))
    i = draw(st.integers(0, max(0, len(lines) - 1)))
    if choice == 1:  # replace the value on one line
        key = lines[i].split(":", 1)[0] if ":" in lines[i] else lines[i].rstrip("\n")
        value = draw(st.one_of(st.sampled_from(_YAML_TOKENS), st.text(max_size=10)))
        lines[i] = f"{key}: {value}\n"
    else:  # splice tokens into one line
        tokens = "".join(draw(st.lists(st.sampled_from(_YAML_TOKENS), max_size=6)))
        cut = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:cut] + tokens + lines[i][cut:]
    return "".join(lines)


@EXAMPLES
@given(text=params_text())
def test_params_loader_raises_only_params_errors(tmp_path_factory: Any, text: str) -> None:
    from relgate.errors import ParamsError
    from relgate.params import load_params

    folder = tmp_path_factory.mktemp("params", numbered=True)
    path = folder / "params.yaml"
    try:
        path.write_text(text, encoding="utf-8")
    except UnicodeEncodeError:
        assume(False)
    try:
        params = load_params(path)
    except ParamsError as exc:
        assert exc.exit_code == 2 and "\n" not in exc.one_line()
        return
    assert params.gates.rules  # schema-valid params always carry gates


@FEWER
@given(data=st.data())
def test_report_commands_on_fuzzed_reports_without_a_score(data: st.DataObject) -> None:
    """A task kind none report (no AUC, no F1, resource budgets among its gates) and its
    release record, mutated: report (every format) and gate render, judge or exit 2."""
    kind, example = data.draw(st.sampled_from([
        ("report", "validation-report/positive/task-none-resources.json"),
        ("release", "release/positive/task-none-resources.json")]))
    obj = data.draw(mutated(json.loads((EXAMPLES_DIR / example).read_text()), max_mutations=2))
    folder = Path(tempfile.mkdtemp(prefix="relgate-fuzz-none-"))
    try:
        path = folder / f"{kind}.json"
        path.write_bytes(_text(obj))
        runs: list[tuple[object, ...]] = [
            ("report", path, "--format", data.draw(st.sampled_from(["text", "md", "json"])))]
        if kind == "report":
            runs.append(("report", path, "--format", "md", "--fail-on-gate"))
        for argv in runs:
            code, _out, err = run_cli(*argv)
            assert_contract(code, err, " ".join(map(str, argv)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
