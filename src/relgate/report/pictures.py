"""Pictures of the evidence: ROC, precision-recall, reliability, confusion matrix and the
calibration sweep, as Vega-Lite specs rendered to SVG or PNG offline by vl-convert.

The specs draw the very rows the validate and calibrate stages write for ``dvc plots``
(``roc.csv``, ``pr.csv``, ``reliability.csv``, the report's ``confusion``, the calibration
record's ``sweep``), so a picture and DVC's plot cannot disagree. Values are parsed to
numbers before they reach a spec: an ordinal axis of numbers is then sorted as numbers
(DVC reads CSV cells as text, which sorted the sweep's offsets -0.25, -0.5, 0.0).

Rendering needs no browser and no network: vl-convert embeds Vega and falls back to the
font it bundles. The pictures are a rendering for people, not evidence: they are never part
of a bundle (text layout follows the host's fonts, and a bundle's bytes must not).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relgate.errors import InputError

VEGA_LITE = "https://vega.github.io/schema/vega-lite/v5.json"  # an identifier, never fetched
SIZE = 300
FONT = "Liberation Sans"  # the font vl-convert bundles: the same on every host that lacks it


@dataclass(frozen=True)
class Picture:
    """One chart: a file stem, a title, its Vega-Lite spec, and the marks it must draw."""

    name: str
    title: str
    spec: Mapping[str, Any]
    marks: tuple[str, ...]


def _base(title: str, values: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"$schema": VEGA_LITE, "title": title, "width": SIZE, "height": SIZE,
            "data": {"values": [dict(v) for v in values]},
            "config": {"font": FONT, "view": {"stroke": "#ddd"}}}


def _unit_axis(field: str, title: str) -> dict[str, Any]:
    return {"field": field, "type": "quantitative", "title": title,
            "scale": {"domain": [0, 1]}}


def _diagonal() -> dict[str, Any]:
    return {"data": {"values": [{"a": 0, "b": 0}, {"a": 1, "b": 1}]}, "mark":
            {"type": "line", "strokeDash": [4, 4], "color": "#999"},
            "encoding": {"x": {"field": "a", "type": "quantitative"},
                         "y": {"field": "b", "type": "quantitative"}}}


def roc_picture(rows: Sequence[Mapping[str, float]], *, auc: float | None = None) -> Picture:
    title = "ROC" + ("" if auc is None else f" (AUC {auc:.4f})")
    spec = _base(title, rows)
    spec.pop("data")
    spec["layer"] = [
        {"data": {"values": [dict(r) for r in rows]}, "mark": {"type": "line", "interpolate":
                                                              "step-after"},
         "encoding": {"x": _unit_axis("fpr", "false positive rate"),
                      "y": _unit_axis("tpr", "true positive rate"),
                      "order": {"field": "_i", "type": "quantitative"}}},
        _diagonal(),
    ]
    return Picture("roc", title, spec, ("line",))


def pr_picture(rows: Sequence[Mapping[str, float]]) -> Picture:
    spec = _base("Precision-recall", rows)
    spec["mark"] = {"type": "line"}
    spec["encoding"] = {"x": _unit_axis("recall", "recall"),
                        "y": _unit_axis("precision", "precision"),
                        "order": {"field": "_i", "type": "quantitative"}}
    return Picture("pr", "Precision-recall", spec, ("line",))


def reliability_picture(rows: Sequence[Mapping[str, float]]) -> Picture:
    kept = list(rows)
    spec = _base("Reliability diagram", kept)
    spec.pop("data")
    spec["layer"] = [
        _diagonal(),
        {"data": {"values": [dict(r) for r in kept]}, "mark": {"type": "line", "point": True},
         "encoding": {"x": _unit_axis("mean_predicted", "mean predicted probability"),
                      "y": _unit_axis("fraction_positive", "fraction positive"),
                      "tooltip": [{"field": "count", "type": "quantitative"}]}},
    ]
    return Picture("reliability", "Reliability diagram", spec, ("line", "symbol"))


def _heatmap(enc: Mapping[str, Any], field: str, *, scheme: str, font_size: int,
             text_format: str | None = None) -> list[dict[str, Any]]:
    """A rect per cell coloured by *field*, with its value written in it."""
    text: dict[str, Any] = {"field": field, "type": "quantitative"}
    if text_format is not None:
        text["format"] = text_format
    return [{"mark": "rect", "encoding": {**enc, "color": {
                "field": field, "type": "quantitative", "scale": {"scheme": scheme}}}},
            {"mark": {"type": "text", "fontSize": font_size}, "encoding": {**enc, "text": text}}]


def confusion_picture(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> Picture:
    """Rows true, columns predicted; the axes keep the class order given."""
    order = list(labels)
    cells = [{"true": order[i], "predicted": order[j], "count": int(c)}
             for i, row in enumerate(matrix) for j, c in enumerate(row)]
    spec = _base("Confusion matrix (rows true, columns predicted)", cells)
    enc = {"x": {"field": "predicted", "type": "ordinal", "sort": order, "title": "predicted"},
           "y": {"field": "true", "type": "ordinal", "sort": order, "title": "true"}}
    spec["layer"] = _heatmap(enc, "count", scheme="blues", font_size=11)
    return Picture("confusion", "Confusion matrix", spec, ("rect", "text"))


def sweep_picture(rows: Sequence[Mapping[str, float]]) -> Picture:
    """Validation AUC over the input scale/offset sweep; both axes sorted as numbers."""
    offsets = sorted({r["offset"] for r in rows})
    scales = sorted({r["scale"] for r in rows}, reverse=True)
    spec = _base("Validation AUC over the input scale/offset sweep", rows)
    enc = {"x": {"field": "offset", "type": "ordinal", "sort": offsets, "title": "offset"},
           "y": {"field": "scale", "type": "ordinal", "sort": scales, "title": "scale"}}
    spec["layer"] = _heatmap(enc, "auc", scheme="viridis", font_size=9, text_format=".3f")
    return Picture("calibration_sweep", "Calibration sweep", spec, ("rect", "text"))


#: the largest plots file or calibration record read for a picture
MAX_PLOT_BYTES = 64 * 1024 * 1024
def slice_pictures(section: Mapping[str, Any]) -> list[Picture]:
    """One bar chart per partition and per metric a slice rule judges: each slice's value
    with its simultaneous interval, worst first as the report orders them; slices too small
    to gate in grey."""
    import re

    judged = sorted({r["metric"] for r in section.get("results") or [] if r.get("metric")})
    pictures = []
    for part in section.get("partitions") or []:
        for metric in judged:
            rows = []
            for sl in part.get("slices") or []:
                m = (sl.get("metrics") or {}).get(metric) or {}
                if not isinstance(m.get("value"), int | float):
                    continue
                rows.append({"slice": str(sl.get("key")), "value": m["value"],
                             "low": m.get("sim_low", m["value"]),
                             "high": m.get("sim_high", m["value"]), "n": sl.get("n"),
                             "gated": "gated" if sl.get("gated") else "too small"})
            if not rows:
                continue
            order = [r["slice"] for r in rows]
            title = f"{metric} by {part['name']} (simultaneous intervals)"
            spec = _base(title, rows)
            y = {"field": "slice", "type": "nominal", "sort": order, "title": part["name"]}
            spec["height"] = max(60, 18 * len(rows))
            spec["layer"] = [
                {"mark": "bar", "encoding": {
                    "y": y, "x": {"field": "value", "type": "quantitative", "title": metric},
                    "color": {"field": "gated", "type": "nominal", "scale": {
                        "domain": ["gated", "too small"], "range": ["#4c78a8", "#bbbbbb"]}},
                    "tooltip": [{"field": "n", "type": "quantitative"}]}},
                {"mark": {"type": "rule", "color": "#333"}, "encoding": {
                    "y": y, "x": {"field": "low", "type": "quantitative"},
                    "x2": {"field": "high"}}},
            ]
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"slices_{part['name']}_{metric}")
            pictures.append(Picture(name, title, spec, ("rect", "rule")))
    return pictures


def read_once(path: Path, what: str) -> tuple[bytes, str]:
    """The bytes of a regular file (no FIFO, device or huge file) and their sha256, read
    once: what is drawn is what the page names, even if the file is swapped meanwhile."""
    import hashlib

    from relgate.jsonio import read_capped

    data = read_capped(path, max_bytes=MAX_PLOT_BYTES, what=what)
    return data, hashlib.sha256(data).hexdigest()


def read_csv_rows(path: Path, data: bytes, fields: Sequence[str]) -> list[dict[str, float]]:
    """Rows of a plots CSV (*data*, read from *path*) with *fields* parsed to finite
    numbers (a row index in ``_i`` keeps the curve's order); anything else is bad input
    naming the file. A row whose ``count`` is 0 (an empty reliability bin, with empty
    cells) is left out."""
    text = data.decode("utf-8", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    missing = [f for f in fields if f not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{path}: no column {', '.join(missing)}",
                         hint="it must be the file relgate validate --plots-dir writes")
    rows = []
    for i, raw in enumerate(reader):
        row: dict[str, float] = {"_i": i}
        if raw.get("count") == "0":
            continue
        for f in fields:
            try:
                value = float(raw[f])
            except (TypeError, ValueError):
                raise InputError(f"{path}: row {i + 1}: {f} {raw[f]!r} is not a number",
                                 hint="re-run the stage that writes it") from None
            if not math.isfinite(value):
                raise InputError(f"{path}: row {i + 1}: {f} is {value}",
                                 hint="re-run the stage that writes it")
            row[f] = value
        rows.append(row)
    return rows


def render_svg(picture: Picture) -> str:
    import vl_convert

    return str(vl_convert.vegalite_to_svg(dict(picture.spec)))


def render_png(picture: Picture, *, scale: float = 2.0) -> bytes:
    import vl_convert

    return bytes(vl_convert.vegalite_to_png(dict(picture.spec), scale=scale))


@dataclass(frozen=True)
class Evidence:
    """The pictures one report yields, the files they were drawn from (path, sha256), and
    a note for each picture that could not be drawn."""

    pictures: tuple[Picture, ...]
    sources: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]


def evidence_pictures(report: Mapping[str, Any] | None, *, plots_dir: Path | None,
                      calibration: Path | None) -> Evidence:
    """Every picture the evidence allows: curves from *plots_dir* (what ``validate
    --plots-dir`` wrote), the confusion matrix from the report, the sweep from the
    calibration record when its sha256 is the one the report pins."""
    pictures: list[Picture] = []
    sources: list[tuple[str, str]] = []
    notes: list[str] = []
    metrics = (report or {}).get("metrics") or {}
    curves = (("roc.csv", ("fpr", "tpr")), ("pr.csv", ("recall", "precision")),
              ("reliability.csv", ("count", "mean_predicted", "fraction_positive")))
    for name, fields in curves:
        path = None if plots_dir is None else plots_dir / name
        if path is None or not path.is_file():
            notes.append(f"{name.split('.')[0]}: no {name} (relgate validate --plots-dir "
                         "writes it)")
            continue
        data, sha = read_once(path, "plots file")
        rows = read_csv_rows(path, data, fields)
        sources.append((str(path), sha))
        if not rows:
            notes.append(f"{name.split('.')[0]}: {name} has no points (a multi-class report "
                         "writes none)")
        elif name == "roc.csv":
            auc = (metrics.get("auc") or {}).get("value")
            pictures.append(roc_picture(rows, auc=auc if isinstance(auc, float) else None))
        elif name == "pr.csv":
            pictures.append(pr_picture(rows))
        else:
            pictures.append(reliability_picture(rows))
    matrix = (report or {}).get("confusion")
    if matrix:
        task = (report or {}).get("task") or {}
        names = list(task.get("classes") or [])
        if task.get("kind") != "multiclass":
            names = ["0 (negative)", "1 (positive)"]
        labels = [names[i] if i < len(names) else str(i) for i in range(len(matrix))]
        pictures.append(confusion_picture(matrix, labels))
    section = (report or {}).get("slices")
    if isinstance(section, Mapping):
        pictures.extend(slice_pictures(section))
    sweep = _sweep_rows(report, calibration, sources, notes)
    if len(sweep) > 1:
        pictures.append(sweep_picture(sweep))
    elif sweep:
        notes.append("calibration sweep: a single scale and offset, nothing to compare")
    return Evidence(tuple(pictures), tuple(sources), tuple(notes))


def _sweep_rows(report: Mapping[str, Any] | None, calibration: Path | None,
                sources: list[tuple[str, str]], notes: list[str]) -> list[dict[str, float]]:
    from relgate import schemas
    from relgate.calibration import Sweep
    from relgate.jsonio import loads_strict

    if calibration is None or not calibration.is_file():
        return []
    data, sha = read_once(calibration, "calibration")
    pinned = ((report or {}).get("calibration") or {}).get("sha256")
    if pinned is not None and pinned != sha:
        notes.append(f"calibration sweep: {calibration} is not the calibration the report "
                     "pins (sha256 differs); not drawn")
        return []
    record = loads_strict(data, source=str(calibration))
    schemas.validate(record, "calibration", source=str(calibration))
    sources.append((str(calibration), sha))
    if not record.get("sweep"):
        return []
    return [{"scale": s, "offset": o, "auc": a}
            for s, o, a in Sweep.from_dict(record["sweep"]).long_rows()
            if a is not None and math.isfinite(a)]
