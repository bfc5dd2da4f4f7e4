"""Per-class tables, the confusion matrix, the model card's task and DVC's confusion plot,
on a real multi-class model: scikit-learn's digits, LogisticRegression exported by skl2onnx
(``zipmap: False``), validated and promoted in a real git + DVC registry.

Every number a table shows is checked against the report JSON and against scikit-learn on
the same ONNX outputs (``precision_recall_fscore_support``, ``confusion_matrix``); the
plot through DVC's own ``confusion`` template (``dvc plots show --json``, offline) must hold
one record per sample whose counts are the report's confusion matrix.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.acceptance.test_multiclass_validate import (  # noqa: F401 (digits is a fixture)
    _outputs,
    _registry,
    _skl2onnx,
    digits,
)
from tests.golden.golden import INPUTS, assert_golden
from tests.support.registry import relgate

CLASSES = [f"digit{i}" for i in range(10)]
DVC_YAML = """\
plots:
- analysis/plots/confusion.json:
    template: confusion
    x: actual
    y: predicted
"""


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL":
           "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, check=False,
                          timeout=300)


@pytest.fixture(scope="module")
def released(digits: dict[str, Any], tmp_path_factory: pytest.TempPathFactory  # noqa: F811
             ) -> dict[str, Any]:
    """A git + DVC registry whose digits model is validated (with plots) and promoted."""
    from sklearn import metrics as skm

    model = _skl2onnx(digits["clf"], zipmap=False)
    root = _registry(tmp_path_factory.mktemp("mc") / "reg", model,
                     {"test": {"x": digits["x"], "y": digits["y"]}},
                     {"kind": "multiclass", "output": "probabilities",
                      "output_type": "probabilities", "classes": CLASSES, "top_k": [3]},
                     accuracy=0.85, accuracy_low=0.8)
    dvc = str(Path(sys.executable).with_name("dvc"))
    assert _run(root, "git", "init", "-q").returncode == 0
    assert _run(root, dvc, "init", "-q").returncode == 0
    (root / "dvc.yaml").write_text(DVC_YAML)
    assert relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--out", "analysis/validation_report.json",
                   "--plots-dir", "analysis/plots") == 0
    report = json.loads((root / "analysis" / "validation_report.json").read_text())
    assert relgate(root, "promote") == 0
    y = digits["y"]
    prob = _outputs(model, digits["x"], "probabilities")
    pred = prob.argmax(axis=1)
    labels = list(range(10))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {"root": root, "report": report, "y": y, "pred": pred, "dvc": dvc,
            "sk": {"precision": p, "recall": r, "f1": f, "support": s},
            "confusion": skm.confusion_matrix(y, pred, labels=labels).tolist()}


def _table(md: str, header_prefix: str) -> list[list[str]]:
    """Cells of the Markdown table whose header starts with *header_prefix*."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_prefix))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _point(cell: str) -> float:
    return float(cell.strip("*").split(" ")[0])


def test_per_class_numbers_equal_the_report_and_scikit_learn(released: dict[str, Any]) -> None:
    """The report JSON itself: per-class values and the confusion matrix are sklearn's."""
    m, sk = released["report"]["metrics"], released["sk"]
    for k in range(10):
        for name in ("precision", "recall", "f1"):
            assert m[f"class_{k}_{name}"]["value"] == pytest.approx(float(sk[name][k]), abs=1e-12)
    assert released["report"]["data"]["support"] == sk["support"].tolist()
    assert released["report"]["confusion"] == released["confusion"]


def test_markdown_report_has_a_per_class_table_and_the_confusion_matrix(
        released: dict[str, Any], cli: Any) -> None:
    path = released["root"] / "analysis" / "validation_report.json"
    r = cli("report", path, "--format", "md")
    assert r.code == 0, r.err
    md, m, sk = r.out, released["report"]["metrics"], released["sk"]
    rows = _table(md, "| # | class | support |")
    assert [row[0] for row in rows] == [str(k) for k in range(10)]  # class order
    for k, row in enumerate(rows):
        assert row[1] == CLASSES[k]
        assert int(row[2]) == int(sk["support"][k])
        for col, name in ((3, "precision"), (4, "recall"), (5, "f1")):
            e = m[f"class_{k}_{name}"]
            assert _point(row[col]) == pytest.approx(float(sk[name][k]), abs=5e-5)
            assert f"[{e['ci_low']:.4f}, {e['ci_high']:.4f}]" in row[col]
    worst = int(np.argmin(sk["recall"]))
    assert rows[worst][4].startswith("**")  # the lowest recall is marked
    assert f"Lowest recall in bold: {CLASSES[worst]}." in md
    # the per-class metrics are not repeated in the flat metrics table
    assert not any(row[0].startswith("class_") for row in _table(md, "| metric |"))
    conf = _table(md, "| true / predicted |")
    assert [[int(c.strip("*")) for c in row[1:]] for row in conf] == released["confusion"]
    assert [row[0] for row in conf] == [f"{k} {CLASSES[k]}" for k in range(10)]
    assert "| task | multiclass, 10 classes, output `probabilities` (probabilities), " \
           "predicted by argmax |" in md


def test_terminal_report_has_per_class_rows_and_the_confusion_matrix(
        released: dict[str, Any]) -> None:
    from rich.console import Console

    from relgate.report.validation import render_validation

    console = Console(record=True, width=220, color_system=None)
    render_validation(released["report"], console)
    text = console.export_text()
    m = released["report"]["metrics"]
    lines = text.splitlines()
    for k, name in enumerate(CLASSES):
        row = next(line for line in lines if re.search(rf"\b{k}\s+.\s*{name}\s", line))
        cells = row.split("│") if "│" in row else row.split()
        joined = " ".join(cells)
        assert str(int(released["sk"]["support"][k])) in joined
        for metric in ("precision", "recall", "f1"):
            e = m[f"class_{k}_{metric}"]
            assert f"{e['value']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]" in joined
    worst = CLASSES[int(np.argmin(released["sk"]["recall"]))]
    assert re.search(rf"{worst}\s.*lowest recall", text)
    assert "confusion (rows true, columns predicted)" in text
    for k, want in enumerate(released["confusion"]):
        row = next(line for line in lines if re.search(rf"^\W*{k} {CLASSES[k]}\W", line)
                   and "lowest" not in line and "[" not in line)
        assert [int(v) for v in re.findall(r"\b\d+\b", row)[1:]] == want


def test_release_record_and_card_carry_the_task_classes_and_threshold(
        released: dict[str, Any], cli: Any) -> None:
    from relgate import schemas

    bundle = released["root"] / "models" / "core" / "v1.0.0"
    record = json.loads((bundle / "release.json").read_text())
    schemas.validate(record, "release", source="release record")
    assert record["task"] == {"kind": "multiclass", "output": "probabilities",
                              "output_type": "probabilities", "n_classes": 10,
                              "classes": CLASSES, "top_k": [3]}
    assert record["threshold"] == 0.0
    assert "selective_threshold" not in record
    mirror = json.loads((released["root"] / "analysis" / "release_v1.0.0.json").read_text())
    assert mirror["task"] == record["task"]
    card = (bundle / "README.md").read_text()
    assert "| kind | multiclass (10 classes) |" in card
    assert "| output | `probabilities` (probabilities) |" in card
    assert "| classes | " + ", ".join(f"{i} {n}" for i, n in enumerate(CLASSES)) + " |" in card
    assert "| threshold | argmax (the class with the largest probability) |" in card
    rows = _table(card, "| # | class | precision |")
    sk = released["sk"]
    for k, row in enumerate(rows):
        assert row[:2] == [str(k), CLASSES[k]]
        for col, name in ((2, "precision"), (3, "recall"), (4, "f1")):
            assert _point(row[col]) == pytest.approx(float(sk[name][k]), abs=5e-5)
    assert len(rows) == 10
    # the bundle still verifies, and relgate report reads the bundle and the record
    assert cli("verify", bundle).code == 0
    r = cli("report", bundle / "release.json", "--format", "md")
    assert r.code == 0, r.err
    assert "predicted by argmax" in r.out
    assert [row[1] for row in _table(r.out, "| # | class |")] == CLASSES


def test_dvc_confusion_template_renders_the_reports_matrix(released: dict[str, Any]) -> None:
    """``dvc plots show --json`` with DVC's own confusion template, offline."""
    root = released["root"]
    shown = _run(root, released["dvc"], "plots", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    out = json.loads(shown.stdout)
    plots = out.get("data", out)
    entry = plots["analysis/plots/confusion.json"]
    records = _records(entry)
    assert len(records) == released["report"]["data"]["n"]  # one record per sample
    counts = np.zeros((10, 10), dtype=int)
    for rec in records:
        counts[CLASSES.index(str(rec["actual"])), CLASSES.index(str(rec["predicted"]))] += 1
    assert counts.tolist() == released["report"]["confusion"] == released["confusion"]
    spec = json.dumps(entry)
    assert "actual" in spec and "predicted" in spec


def _records(entry: Any) -> list[dict[str, Any]]:
    """The data values DVC rendered into the vega-lite spec(s) of one plot."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            values = node.get("values")
            if isinstance(values, list) and values and isinstance(values[0], dict) \
                    and "actual" in values[0]:
                found.extend(values)
                return
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(entry)
    return found


# ---------------------------------------------------------------- golden and old records


def test_golden_multiclass_markdown(cli: Any, monkeypatch: pytest.MonkeyPatch,
                                    request: pytest.FixtureRequest) -> None:
    """A real digits validation report (tests/golden/inputs/multiclass.json), pinned."""
    monkeypatch.chdir(INPUTS)
    report = json.loads((INPUTS / "multiclass.json").read_text())
    r = cli("report", "multiclass.json", "--format", "md")
    assert r.code == 0, r.err
    assert_golden("report_multiclass.md", r.out, request.config)
    rows = _table(r.out, "| # | class | support |")
    names = report["task"]["classes"]
    for k, row in enumerate(rows):
        assert row[1] == names[k]
        assert int(row[2]) == report["data"]["support"][k]
        assert _point(row[4]) == pytest.approx(report["metrics"][f"class_{k}_recall"]["value"],
                                               abs=5e-5)
    conf = _table(r.out, "| true / predicted |")
    assert [[int(c.strip("*")) for c in row[1:]] for row in conf] == report["confusion"]


def test_more_than_20_classes_point_to_the_json_report() -> None:
    from relgate.report.markdown import summarize, summary_markdown

    report = json.loads((INPUTS / "multiclass.json").read_text())
    k = 21
    report["task"] = {**report["task"], "n_classes": k}
    del report["task"]["classes"]
    report["confusion"] = [[1 if i == j else 0 for j in range(k)] for i in range(k)]
    report["data"]["support"] = [1] * k
    md = summary_markdown(summarize("big.json", report=report))
    assert "21 classes: the matrix is in the JSON report" in md
    assert "| true / predicted |" not in md
    rows = _table(md, "| # | class | support |")
    assert [row[1] for row in rows] == [str(i) for i in range(k)]  # no names: the index


def test_binary_confusion_is_shown_when_present_and_nothing_when_absent(cli: Any) -> None:
    from relgate.report.markdown import summarize, summary_markdown

    old = json.loads((INPUTS / "candidate.json").read_text())  # schema version 1, no confusion
    md_old = summary_markdown(summarize("candidate.json", report=old))
    assert "TP " not in md_old and "Confusion" not in md_old
    new = {**old, "confusion": [[40, 3], [5, 12]]}
    md = summary_markdown(summarize("candidate.json", report=new))
    assert "| actual positive | TP 12 | FN 5 |" in md
    assert "| actual negative | FP 3 | TN 40 |" in md
    from rich.console import Console

    from relgate.report.validation import render_validation

    console = Console(record=True, width=200, color_system=None)
    render_validation(new, console)
    assert "TP 12, FP 3, TN 40, FN 5" in console.export_text()
    console = Console(record=True, width=200, color_system=None)
    render_validation(old, console)
    assert "TP " not in console.export_text()


def test_old_release_records_still_validate_render_and_list(cli: Any, tmp_path: Path) -> None:
    from relgate.card import model_card

    examples = Path(__file__).resolve().parents[1] / "examples" / "release" / "positive"
    old = json.loads((examples / "mirror-with-root-digest.json").read_text())
    assert "task" not in old and "threshold" not in old
    assert cli("schema", "check", examples / "mirror-with-root-digest.json",
               "--kind", "release").code == 0
    card = model_card(old)
    assert "## Task" not in card and "## Metrics" in card
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / f"release_{old['name']}.json").write_text(json.dumps(old))
    r = cli("releases", tmp_path, "--json")
    assert r.code == 0, r.err
    assert old["name"] in r.out
    new = json.loads((examples / "multiclass-task.json").read_text())
    assert cli("schema", "check", examples / "multiclass-task.json", "--kind", "release").code == 0
    assert "selective_threshold" in new
    assert f"below {new['selective_threshold']:.6g} (selective threshold)" in model_card(new)


def test_relgate_report_in_the_terminal_has_the_per_class_table(
        released: dict[str, Any], cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    path = released["root"] / "analysis" / "validation_report.json"
    r = cli("report", path, "--format", "text")
    assert r.code == 0, r.err
    m = released["report"]["metrics"]
    assert "per class" in r.out and "class_0_recall" not in r.out
    for k, name in enumerate(CLASSES):
        row = next(line for line in r.out.splitlines() if re.search(rf"\b{k}\s+.\s*{name}\s", line))
        e = m[f"class_{k}_recall"]
        assert f"{e['value']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]" in row
    assert "confusion (rows true, columns predicted)" in r.out


def test_a_selective_threshold_reaches_the_record_the_card_and_the_reports(
        tmp_path: Path, cli: Any) -> None:
    """Temperature + "no conclusive" calibration (relgate calibrate), validated and promoted:
    the record's selective_threshold is the calibration's, the card and both reports say it,
    and coverage / selective_accuracy are rendered like any other metric."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from tests.acceptance import test_multiclass_calibrate as mcal

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(1).permutation(len(y))
    train, val, test = order[:700], order[700:1250], order[1250:]
    clf = LogisticRegression(C=0.02, max_iter=2000).fit(x[train], y[train])
    root = mcal._registry(tmp_path / "reg", _skl2onnx(clf, zipmap=False),
                          {"val": {"x": x[val], "y": y[val].astype(np.int64)},
                           "test": {"x": x[test], "y": y[test].astype(np.int64)}},
                          {"kind": "multiclass", "output": "probabilities",
                           "output_type": "probabilities", "classes": CLASSES},
                          selective=mcal.SELECTIVE % (0.97, 0.5))
    assert mcal._calibrate(root) == 0
    assert mcal._validate(root) == 0
    cal = json.loads((root / "analysis" / "calibration.json").read_text())
    t = cal["selective"]["threshold"]
    assert isinstance(t, float)
    assert relgate(root, "promote") == 0
    bundle = root / "models" / "core" / "v1.0.0"
    record = json.loads((bundle / "release.json").read_text())
    assert record["selective_threshold"] == t and record["threshold"] == 0.0
    assert (f"| threshold | argmax (the class with the largest probability); no conclusive "
            f"answer when the largest calibrated probability is below {t:.6g} (selective "
            "threshold) |") in (bundle / "README.md").read_text()
    report = json.loads((root / "analysis" / "validation_report.json").read_text())
    md = cli("report", root / "analysis" / "validation_report.json", "--format", "md").out
    assert f"predicted by argmax, no conclusive below {t:.4g} |" in md
    flat = {row[0]: row[1] for row in _table(md, "| metric |")}
    for name in ("coverage", "selective_accuracy"):
        e = report["metrics"][name]
        assert flat[name] == f"{e['value']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]"
    assert "| task | multiclass, 10 classes" in cli("report", bundle / "release.json",
                                                     "--format", "md").out
