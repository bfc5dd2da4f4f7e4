"""Pictures (issue 18, point 3): ROC, PR, reliability, confusion and the calibration sweep
rendered offline by vl-convert into a self-contained HTML report, from the rows validate
and calibrate write for ``dvc plots``; numeric axes sorted as numbers, in relgate's own
pictures and in the heatmap DVC draws from the repository's template."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.adversarial.conftest import assert_clean_failure
from tests.conftest import REPO_ROOT
from tests.support.registry import make_registry, relgate

SWEEP = {"scales": [0.5, 1.0, 2.0], "offsets": [-0.5, -0.25, 0.0, 0.25, 0.5]}


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry calibrated (with a 3 x 5 sweep) and validated with --plots-dir."""
    root = make_registry(tmp_path_factory.mktemp("pictures") / "reg")
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("scales: [1.0]", f"scales: {SWEEP['scales']}")
                      .replace("offsets: [0.0]", f"offsets: {SWEEP['offsets']}"))
    assert relgate(root, "calibrate", "--model", "models/model.onnx", "--data", "data/val.npz",
                   "--out", "analysis/calibration.json") == 0
    assert relgate(root, "validate", "--model", "models/model.onnx", "--data", "data/test.npz",
                   "--calibration", "analysis/calibration.json", "--plots-dir", "analysis/plots",
                   "--out", "analysis/validation_report.json") in (0, 1)
    return root


def _report(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relgate", "report", *args], cwd=root,
                          capture_output=True, text=True)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _svgs(page: str) -> dict[str, ET.Element]:
    """figure id -> the parsed inline SVG (each must be well-formed XML)."""
    found = re.findall(r'<figure id="([a-z_]+)">\s*(<svg.*?</svg>)', page, re.S)
    return {name: ET.fromstring(svg) for name, svg in found}


def _marks(svg: ET.Element, kind: str) -> list[ET.Element]:
    """The data marks of *kind* (not a title's or an axis's text)."""
    return [g for g in svg.iter()
            if {f"mark-{kind}", "role-mark"} <= set((g.get("class") or "").split())]


def _texts(group: ET.Element) -> list[str]:
    return [t.text or "" for t in group.iter() if t.tag.endswith("text")]


def _axis_labels(svg: ET.Element) -> list[list[str]]:
    return [_texts(g) for g in svg.iter() if "role-axis-label" in (g.get("class") or "")]


def test_html_report_is_one_offline_file_with_every_picture(judged: Path) -> None:
    proc = _report(judged, "analysis/validation_report.json", "--format", "html")
    assert proc.returncode == 0, proc.stderr
    page = proc.stdout
    parser = _Tags()
    parser.feed(page)
    tags = {t for t, _ in parser.tags}
    assert not tags & {"script", "link", "img", "iframe", "object"}
    assert not [a for _, attrs in parser.tags for k, a in attrs.items() if k in ("src", "href")]
    svgs = _svgs(page)
    assert set(svgs) == {"roc", "pr", "reliability", "confusion", "calibration_sweep"}
    for name in ("roc", "pr"):
        assert _marks(svgs[name], "line"), name
    assert _marks(svgs["reliability"], "symbol")
    report = json.loads((judged / "analysis/validation_report.json").read_text())
    counts = [str(c) for row in report["confusion"] for c in row]
    (cells,) = [g for g in _marks(svgs["confusion"], "text")]
    assert _texts(cells) == counts  # the report's matrix, row by row
    assert len(_marks(svgs["confusion"], "rect")) == 1
    assert f"AUC {report['metrics']['auc']['value']:.4f}" in page
    for path in ("analysis/plots/roc.csv", "analysis/calibration.json"):
        assert path in page  # the sources, with their sha256


def test_sweep_axes_are_sorted_as_numbers(judged: Path) -> None:
    page = _report(judged, "analysis/validation_report.json", "--format", "html").stdout
    labels = _axis_labels(_svgs(page)["calibration_sweep"])
    numbers = [[float(x) for x in axis] for axis in labels]
    assert sorted(SWEEP["offsets"]) in numbers
    assert sorted(SWEEP["scales"], reverse=True) in numbers


def test_pictures_are_written_as_svg_and_png(judged: Path, tmp_path: Path) -> None:
    out = tmp_path / "pictures"
    proc = _report(judged, "analysis/validation_report.json", "--format", "md",
                   "--pictures", str(out))
    assert proc.returncode == 0, proc.stderr
    names = {p.stem for p in out.iterdir()}
    assert names == {"roc", "pr", "reliability", "confusion", "calibration_sweep"}
    for name in names:
        ET.parse(out / f"{name}.svg")
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_damaged_plots_file_is_bad_input(judged: Path, tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    shutil.copytree(judged / "analysis/plots", plots)
    text = (plots / "roc.csv").read_text().splitlines()
    text[3] = "nan,0.5,0.1"
    (plots / "roc.csv").write_text("\n".join(text) + "\n")
    proc = _report(judged, "analysis/validation_report.json", "--format", "html",
                   "--plots-dir", str(plots))
    line = assert_clean_failure(type("R", (), {"code": proc.returncode, "out": proc.stdout,
                                                "err": proc.stderr})())
    assert "roc.csv: row 3" in line and proc.stdout == ""


def test_dvc_draws_the_sweep_heatmap_with_numeric_axes(tmp_path: Path) -> None:
    """`dvc plots show` reads CSV cells as text; the repository's heatmap template sorts
    them as numbers (it sorted -0.25 before -0.5 before)."""
    import vl_convert

    root = tmp_path / "repo"
    root.mkdir()
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                 os.environ.get("PATH", "")])}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        assert subprocess.run(cmd, cwd=root, env=env, capture_output=True).returncode == 0
    (root / ".dvc" / "plots").mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / ".dvc/plots/heatmap.json", root / ".dvc/plots/heatmap.json")
    rows = ["scale,offset,auc"] + [f"{s},{o},{0.9 + 0.01 * s - 0.01 * o}"
                                   for s in (0.5, 1.0, 1.25, 2.0)
                                   for o in (-0.5, -0.25, 0.0, 0.25, 0.5)]
    (root / "sweep.csv").write_text("\n".join(rows) + "\n")
    (root / "dvc.yaml").write_text("plots:\n  - sweep.csv:\n      template: heatmap\n"
                                   "      x: offset\n      y: scale\n")
    proc = subprocess.run(["dvc", "plots", "show", "--json"], cwd=root, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (plot,) = json.loads(proc.stdout)["data"]["sweep.csv"]
    svg = ET.fromstring(vl_convert.vegalite_to_svg(plot["content"]))
    axes = [[x for x in axis if x not in ("offset", "scale")] for axis in _axis_labels(svg)]
    assert ["-0.5", "-0.25", "0.0", "0.25", "0.5"] in axes
    assert ["2.0", "1.25", "1.0", "0.5"] in axes


def test_a_report_naming_a_device_or_fifo_as_its_calibration_still_renders(
        judged: Path, tmp_path: Path) -> None:
    """The calibration path comes from the report, so from whoever wrote it: a device or a
    FIFO there is skipped (never read, never hung on); the page says nothing was drawn."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for named in ("/dev/zero", str(fifo)):
        report = json.loads((judged / "analysis/validation_report.json").read_text())
        report["calibration"]["path"] = named
        path = tmp_path / "analysis" / "validation_report.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(report))
        proc = subprocess.run([sys.executable, "-m", "relgate", "report", str(path), "--format",
                               "html"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "calibration_sweep" not in _svgs(proc.stdout)
