"""`relgate report`: Markdown / JSON / text summaries, deltas, re-judging, annotations, exit codes.

Goldens pin the Markdown byte for byte (tests/golden/, RELGATE_UPDATE_GOLDENS=1 rewrites
them). The numbers are checked against independent oracles: the deltas against the two
records' values, the re-judged verdict against `relgate gate` and `relgate.gates`.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from relgate.gates import GateResult, GateVerdict, apply_gates
from relgate.params import load_params
from relgate.report.annotations import (
    enabled,
    escape_data,
    escape_property,
    gate_annotations,
    workflow_command,
)
from relgate.report.markdown import DeltaRow, md_code, md_text
from tests.golden.golden import INPUTS, assert_golden

CANDIDATE = "candidate.json"
BASE = "base.json"
PARAMS = "params-base.yaml"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((INPUTS / name).read_text(encoding="utf-8"))
    return data


@pytest.fixture
def inputs(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from tests/golden/inputs so the paths printed are short and stable."""
    monkeypatch.chdir(INPUTS)
    return INPUTS


def table_rows(md: str, header_prefix: str) -> list[list[str]]:
    """Cells of the Markdown table whose header starts with *header_prefix* (escaped | kept)."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_prefix))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        rows.append([c.strip() for c in cells])
    return rows


# ---------------------------------------------------------------- goldens


def test_golden_recorded_gates_with_paired_block(cli: Any, inputs: Path,
                                                 request: pytest.FixtureRequest) -> None:
    r = cli("report", CANDIDATE, "--format", "md")
    assert r.code == 0, r.err
    assert r.err == ""
    assert_golden("report_recorded.md", r.out, request.config)


def test_golden_base_gates_and_baseline(cli: Any, inputs: Path,
                                        request: pytest.FixtureRequest) -> None:
    r = cli("report", CANDIDATE, "--format", "md", "--params", PARAMS, "--baseline", BASE)
    assert r.code == 0, r.err
    assert_golden("report_base_gates.md", r.out, request.config)


def test_golden_json(cli: Any, inputs: Path, request: pytest.FixtureRequest) -> None:
    r = cli("report", CANDIDATE, "--format", "json", "--params", PARAMS, "--baseline", BASE)
    assert r.code == 0, r.err
    assert_golden("report_base_gates.json", r.out, request.config)


def test_markdown_is_deterministic_across_runs(cli: Any, inputs: Path) -> None:
    args = ("report", CANDIDATE, "--format", "md", "--params", PARAMS, "--baseline", BASE)
    assert cli(*args).out == cli(*args).out


# ---------------------------------------------------------------- verdicts


def test_rejudged_verdict_equals_relgate_gate_and_apply_gates(cli: Any, inputs: Path) -> None:
    report = load(CANDIDATE)
    oracle = apply_gates(load_params(INPUTS / PARAMS).gates, report["metrics"],
                         deltas=report["baseline"]["deltas"],
                         baseline_name=report["baseline"]["name"])
    r = cli("report", CANDIDATE, "--format", "json", "--params", PARAMS)
    assert r.code == 0
    out = json.loads(r.out)
    g = cli("gate", CANDIDATE, "--params", PARAMS, "--json")
    assert g.code == 1
    assert out["verdict"] == json.loads(g.out) == oracle.to_dict()
    assert out["passed"] is False and out["recorded_passed"] is True
    assert out["gates_from"] == PARAMS
    failing = [res for res in out["verdict"]["results"] if not res["passed"]]
    assert [f["metric"] for f in failing] == ["auc"]


def test_without_params_the_recorded_gates_are_shown(cli: Any, inputs: Path) -> None:
    report = load(CANDIDATE)
    out = json.loads(cli("report", CANDIDATE, "--format", "json").out)
    assert out["verdict"] == report["gates"]
    assert out["gates_from"] is None
    md = cli("report", CANDIDATE, "--format", "md").out
    assert "gates recorded in the report" in md
    assert "⚠️" not in md


def test_markdown_names_the_failing_gate_and_the_gates_used(cli: Any, inputs: Path) -> None:
    md = cli("report", CANDIDATE, "--format", "md", "--params", PARAMS).out
    assert md.startswith("### ❌ relgate: `candidate.json` fails its gates\n")
    assert "gates from `params-base.yaml`, not the ones recorded in the report" in md
    gates = table_rows(md, "| | gate |")
    assert [row[0] for row in gates] == ["❌", "✅", "✅", "✅"]
    auc = gates[0]
    assert auc[1] == "`auc >= 0.9`"
    report = load(CANDIDATE)
    m = report["metrics"]["auc"]
    assert auc[2] == f"{m['value']:.4f}"
    assert auc[3] == f"[{m['ci_low']:.4f}, {m['ci_high']:.4f}]"
    assert "needs >= 0.9" in auc[4]
    assert "The report recorded passed with its own gates" in md


@pytest.mark.parametrize("flag", [None, "--fail-on-gate"])
def test_exit_code_is_zero_once_rendered_unless_fail_on_gate(cli: Any, inputs: Path,
                                                              flag: str | None) -> None:
    args = ["report", CANDIDATE, "--format", "md", "--params", PARAMS]
    r = cli(*args, *([flag] if flag else []))
    assert r.code == (1 if flag else 0)
    assert "fails its gates" in r.out
    passing = cli("report", CANDIDATE, "--format", "md", *([flag] if flag else []))
    assert passing.code == 0
    assert "passes its gates" in passing.out


# ---------------------------------------------------------------- deltas


def test_unpaired_deltas_are_the_difference_of_the_two_records(cli: Any, inputs: Path,
                                                               tmp_path: Path) -> None:
    report = load(CANDIDATE)
    del report["baseline"]
    (tmp_path / "plain.json").write_text(json.dumps(report))
    out = json.loads(cli("report", str(tmp_path / "plain.json"), "--format", "json",
                         "--baseline", BASE).out)
    base = load(BASE)["metrics"]
    rows = {row["metric"]: row for row in out["comparison"]["rows"]}
    assert out["comparison"]["kind"] == "unpaired"
    assert set(rows) == set(report["metrics"]) & set(base)
    for name, row in rows.items():
        want = report["metrics"][name]["value"] - base[name]["value"]
        assert row["delta"] == pytest.approx(want, abs=1e-15)
        assert row["paired"] is False and row["ci_low"] is None
    md = cli("report", str(tmp_path / "plain.json"), "--format", "md", "--baseline", BASE).out
    assert "#### Metrics vs base.json: unpaired" in md
    assert "Unpaired: plain differences" in md
    auc = next(r for r in table_rows(md, "| metric |") if r[0] == "auc")
    assert auc[3] == f"{rows['auc']['delta']:+.4f}"
    assert auc[4] == "better"


def test_paired_deltas_come_from_the_report_with_their_interval(cli: Any, inputs: Path) -> None:
    report = load(CANDIDATE)
    out = json.loads(cli("report", CANDIDATE, "--format", "json", "--baseline", BASE).out)
    rows = {row["metric"]: row for row in out["comparison"]["rows"]}
    for name, d in report["baseline"]["deltas"].items():
        assert rows[name]["paired"] is True
        assert (rows[name]["delta"], rows[name]["ci_low"], rows[name]["ci_high"]) == (
            d["value"], d["ci_low"], d["ci_high"])
    # Health stats are not in the paired block: plain differences, marked so.
    assert rows["mean_std"]["paired"] is False
    assert out["comparison"]["kind"] == "partly paired"
    md = cli("report", CANDIDATE, "--format", "md", "--baseline", BASE).out
    mean_std = next(r for r in table_rows(md, "| metric |") if r[0] == "mean_std")
    assert mean_std[3].endswith("(unpaired)")


def test_paired_block_against_another_model_is_not_mixed_in(cli: Any, inputs: Path,
                                                            tmp_path: Path) -> None:
    other = load(BASE)
    other["model"]["sha256"] = "cd" * 32
    (tmp_path / "other.json").write_text(json.dumps(other))
    out = json.loads(cli("report", CANDIDATE, "--format", "json",
                         "--baseline", str(tmp_path / "other.json")).out)
    assert out["comparison"]["kind"] == "unpaired"
    assert any("not this baseline" in n for n in out["comparison"]["notes"])


def test_baseline_on_other_data_is_flagged(cli: Any, inputs: Path, tmp_path: Path) -> None:
    other = load(BASE)
    other["data"]["sha256"] = "ef" * 32
    (tmp_path / "other.json").write_text(json.dumps(other))
    md = cli("report", CANDIDATE, "--format", "md", "--baseline", str(tmp_path / "other.json")).out
    assert "The baseline was measured on other data (sha256 efefefefefef" in md


@pytest.mark.parametrize(
    ("metric", "delta", "lo", "hi", "paired", "change"),
    [
        ("auc", 0.1, 0.05, 0.15, True, "better"),
        ("auc", -0.1, -0.15, -0.05, True, "worse"),
        ("auc", 0.01, -0.02, 0.04, True, "inconclusive"),
        ("ece", -0.02, -0.03, -0.01, True, "better"),
        ("ece", 0.02, 0.01, 0.03, True, "worse"),
        ("brier", 0.001, None, None, False, "worse"),
        ("high_corr_frac", -0.1, None, None, False, "better"),
        ("auc", 0.0, None, None, False, "no change"),
        ("mean_std", 0.5, None, None, False, ""),
        ("auc", None, None, None, False, "undefined"),
    ],
)
def test_change_direction(metric: str, delta: float | None, lo: float | None, hi: float | None,
                          paired: bool, change: str) -> None:
    row = DeltaRow(metric=metric, value=0.5, baseline=None, delta=delta, ci_low=lo, ci_high=hi,
                   paired=paired)
    assert row.change == change


# ---------------------------------------------------------------- bundles and release records


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A real registry with a published bundle (promote), for bundle and release-record input."""
    from tests.support.registry import make_registry, prepare, relgate

    root = make_registry(tmp_path / "reg")
    prepare(root)
    assert relgate(root, "promote") == 0
    return root


def test_bundle_folder_and_release_record(cli: Any, registry: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(registry)
    bundle = "models/core/v1.0.0"
    release = json.loads((registry / bundle / "release.json").read_text())
    r = cli("report", bundle, "--format", "md")
    assert r.code == 0, r.err
    assert r.out.startswith("### ✅ relgate: release `v1.0.0` passes its gates\n")
    assert "gates recorded in the release" in r.out
    assert f"| release | `v1.0.0` (tag `{release['tag']}`) | |" in r.out
    art = next(a for a in release["artifacts"] if a["role"] == "promoted")
    assert f"`{art['sha256'][:12]}`" in r.out
    assert "| input | `x` | float32 | `[batch, 16]` |" in r.out

    rec = cli("report", "analysis/release_v1.0.0.json", "--format", "json")
    assert rec.code == 0, rec.err
    out = json.loads(rec.out)
    assert out["release"]["name"] == "v1.0.0"
    assert out["model"]["sha256"] == art["sha256"]
    assert out["verdict"] == release["gates"]

    # The bundle as baseline of the report it was published from: zero deltas, same model.
    same = json.loads(cli("report", "analysis/validation_report.json", "--format", "json",
                          "--baseline", bundle).out)
    assert same["comparison"]["against"] == f"release v1.0.0 ({bundle})"
    assert all(row["delta"] == pytest.approx(0.0, abs=1e-9) for row in same["comparison"]["rows"])
    assert any("this very model" in n for n in same["comparison"]["notes"])


def test_text_format_reuses_the_gate_table(cli: Any, inputs: Path) -> None:
    r = cli("report", CANDIDATE, "--params", PARAMS, "--baseline", BASE)
    assert r.code == 0, r.err
    assert r.out.startswith("FAILED (mode all): 3 of 4 rules passed  candidate.json")
    assert "gates from params-base.yaml (not the ones recorded in the report)" in r.out
    assert "metrics vs base.json: partly paired" in r.out
    assert "\x1b[" not in r.out  # plain off a terminal


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("missing.json",), "no such file"),
        ((PARAMS,), ""),
        (("bad-kind.json",), "not a validation report or a release record"),
        (("empty-dir",), "not a bundle"),
        (("bad-schema.json",), "validation-report"),
        ((CANDIDATE, "--params", "missing.yaml"), "missing.yaml"),
        ((CANDIDATE, "--baseline", "bad-kind.json"), "--baseline bad-kind.json"),
        ((CANDIDATE, "--format", "pdf"), "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli: Any, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         args: tuple[str, ...], needle: str) -> None:
    for name in (CANDIDATE, BASE, PARAMS):
        (tmp_path / name).write_bytes((INPUTS / name).read_bytes())
    (tmp_path / "bad-kind.json").write_text('{"kind": "calibration"}')
    (tmp_path / "empty-dir").mkdir()
    broken = load(CANDIDATE)
    del broken["passed"]
    (tmp_path / "bad-schema.json").write_text(json.dumps(broken))
    monkeypatch.chdir(tmp_path)
    r = cli("report", *args)
    assert r.code == 2, (r.out, r.err)
    assert r.out == ""
    assert len(r.err.strip().splitlines()) == 1
    assert "Traceback" not in r.err
    assert needle in r.err


# ---------------------------------------------------------------- Markdown safety


def test_hostile_strings_cannot_break_tables_or_inject_html(cli: Any, tmp_path: Path) -> None:
    report = load(CANDIDATE)
    evil = "a|b\n<img src=x onerror=alert(1)> [link](https://example.invalid) `tick` ``"
    report["model"]["path"] = evil
    report["data"]["path"] = "data|`x`"
    report["model"]["contract"]["inputs"][0]["name"] = "in|put\r\n::error::x"
    report["gates"]["results"][0]["reason"] = evil
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(report))
    r = cli("report", str(path), "--format", "md", "--annotations", "always")
    assert r.code == 0, r.err
    outside_code = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", r.out)
    assert "<img" in r.out  # kept, but only inside code spans, where Markdown shows it verbatim
    assert "<img" not in outside_code
    assert re.search(r"(?<!\\)\]\(", outside_code) is None  # no live [text](url) link
    for header in ("| | gate |", "| metric |", "| | path |", "| | name |"):
        widths = {len(row) for row in table_rows(r.out, header)}
        assert len(widths) == 1, header
    assert not any(line.startswith("::") for line in r.out.splitlines())


@pytest.mark.parametrize(
    ("text", "span"),
    [("plain", "`plain`"), ("a`b", "``a`b``"), ("`x`", "`` `x` ``"), ("p|q", "`p\\|q`"),
     ("two\nlines", "`two lines`")],
)
def test_md_code_spans(text: str, span: str) -> None:
    assert md_code(text) == span


def test_md_text_escapes_markup() -> None:
    assert md_text("x < 1 & y | [z](u) *b*") == "x &lt; 1 &amp; y \\| \\[z\\](u) \\*b\\*"


# ---------------------------------------------------------------- annotations


def test_escaping_follows_the_runner_rules() -> None:
    assert escape_data("100% a\r\nb") == "100%25 a%0D%0Ab"
    assert escape_property("t: a,b%") == "t%3A a%2Cb%25"
    line = workflow_command("error", "x\n::warning::injected", title="a:b,c")
    assert line == "::error title=a%3Ab%2Cc::x%0A::warning::injected"
    assert "\n" not in line


def test_enabled_by_github_actions_env() -> None:
    assert enabled("auto", {"GITHUB_ACTIONS": "true"})
    assert not enabled("auto", {"GITHUB_ACTIONS": "false"})
    assert not enabled("auto", {})
    assert enabled("always", {})
    assert not enabled("never", {"GITHUB_ACTIONS": "true"})


def test_one_annotation_per_failure_reason() -> None:
    ok = GateResult(metric="ece", op="<=", bound=0.2, on="point", observed=0.1, passed=True,
                    reason="ece 0.1 <= 0.2")
    bad = GateResult(metric="auc", op=">=", bound=0.7, on="point", observed=0.6, passed=False,
                     reason="auc 0.6 < 0.7, needs >= 0.7")
    failed = GateVerdict(mode="all", passed=False, results=(ok, bad), reasons=(bad.reason,))
    assert gate_annotations(failed, source="r.json", gates_from="base.yaml") == [
        "::error title=relgate gate::r.json: auc 0.6 < 0.7, needs >= 0.7 (gates from base.yaml)"]
    passed = GateVerdict(mode="any", passed=True, results=(ok, bad), reasons=())
    assert gate_annotations(passed, source="r.json", gates_from=None) == []


@pytest.mark.parametrize("fmt", ["md", "json", "text"])
def test_annotations_go_to_stderr_and_leave_stdout_alone(
    cli: Any, inputs: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    args = ("report", CANDIDATE, "--format", fmt, "--params", PARAMS)
    quiet = cli(*args)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    loud = cli(*args)
    assert loud.code == quiet.code == 0
    assert loud.out == quiet.out
    assert quiet.err == ""
    lines = loud.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("::error title=relgate gate::candidate.json: auc 0.877184 < 0.9")
    assert lines[0].endswith("(gates from params-base.yaml)")
    assert cli(*args, "--annotations", "never").err == ""


def test_no_annotation_when_the_verdict_passes(cli: Any, inputs: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    r = cli("report", CANDIDATE, "--format", "md")
    assert r.code == 0 and r.err == ""


def test_report_inputs_are_unchanged_by_rendering(cli: Any, inputs: Path) -> None:
    before = copy.deepcopy(load(CANDIDATE))
    cli("report", CANDIDATE, "--format", "json", "--params", PARAMS, "--baseline", BASE)
    assert load(CANDIDATE) == before
