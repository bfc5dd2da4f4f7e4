"""relgate report: the gate verdict, metric deltas, digests and contract of a report or release.

Renders; does not decide. The exit code is 0 whenever the summary was rendered, pass or
fail, because in CI the summary step must not hide the gate step that follows it
(``relgate gate`` decides); ``--fail-on-gate`` makes it exit 1 on a failed verdict.

On GitHub Actions (``GITHUB_ACTIONS=true``, or ``--annotations always``) each reason the
verdict failed is also written as an ``::error title=relgate gate::...`` workflow command.
Annotations go to stderr: the runner honours workflow commands on stderr as on stdout, and
stdout stays the clean Markdown or JSON that a workflow redirects to ``$GITHUB_STEP_SUMMARY``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from relgate.errors import EXIT_OK, EXIT_REFUSED

HELP = ("render a validation report, bundle or release record: gates, metric deltas vs a "
        "baseline, digests, contract (exit 0 once rendered; --fail-on-gate: 1 on a failed gate)")

REPORT_FILE = "validation_report.json"
RELEASE_FILE = "release.json"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", metavar="REPORT",
                        help="a validation report (analysis/validation_report.json), a published "
                             "bundle folder (models/core/<release>/) or a release record")
    parser.add_argument("--format", choices=("text", "md", "json", "html"), default="text",
                        help="text: tables for a terminal; md: Markdown for a pull request or "
                             "$GITHUB_STEP_SUMMARY; json: for scripts; html: one offline file "
                             "with the pictures as inline SVG (default: %(default)s)")
    parser.add_argument("--plots-dir", metavar="DIR",
                        help="where validate --plots-dir wrote roc.csv, pr.csv and "
                             "reliability.csv, for the pictures (default: plots/ beside a "
                             "report file)")
    parser.add_argument("--pictures", metavar="DIR",
                        help="also write each picture as DIR/<name>.svg and .png")
    parser.add_argument("--params", metavar="FILE",
                        help="re-judge the metrics with the gates: of this params file (in CI: "
                             "the base branch's copy); default: the gates recorded in the report")
    parser.add_argument("--baseline", metavar="REF",
                        help="show each metric's delta against a previous validation report, "
                             "release record or bundle folder (paired intervals when the report "
                             "was validated with --baseline against the same model)")
    parser.add_argument("--fail-on-gate", action="store_true",
                        help="exit 1 when the verdict fails (default: exit 0 once rendered)")
    parser.add_argument("--annotations", choices=("auto", "always", "never"), default="auto",
                        help="write each failed gate as a GitHub '::error' annotation on stderr; "
                             "auto: only when GITHUB_ACTIONS=true (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    import sys

    from relgate.params import load_params
    from relgate.report import console, print_json
    from relgate.report.annotations import enabled, gate_annotations
    from relgate.report.markdown import (
        reference_from_records,
        render_summary,
        summarize,
        summary_json,
        summary_markdown,
    )

    report, release = load_records(args.report, what="REPORT")
    gates = None if args.params is None else load_params(args.params).gates
    baseline = None
    if args.baseline is not None:
        base_report, base_release = load_records(args.baseline, what="--baseline")
        baseline = reference_from_records(args.baseline, report=base_report, release=base_release)
    summary = summarize(args.report, report=report, release=release, gates=gates,
                        gates_from=args.params, baseline=baseline)

    if args.format == "html" or args.pictures:
        evidence = _evidence(args, report)
        if args.pictures:
            _write_pictures(evidence, Path(args.pictures))
    if args.format == "html":
        from relgate.report.html import html_document

        sys.stdout.write(html_document(f"relgate report: {args.report}",
                                       summary_markdown(summary), evidence))
    elif args.format == "md":
        sys.stdout.write(summary_markdown(summary))
    elif args.format == "json":
        print_json(summary_json(summary))
    else:
        render_summary(summary, console())
    sys.stdout.flush()
    if enabled(args.annotations):
        for line in gate_annotations(summary.verdict, source=args.report,
                                     gates_from=args.params):
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
    return EXIT_REFUSED if args.fail_on_gate and not summary.passed else EXIT_OK


def _evidence(args: argparse.Namespace, report: dict[str, Any] | None) -> Any:
    """The pictures of *report*: curves from --plots-dir (default: plots/ beside a report
    file; a bundle holds none), the sweep from the bundle's calibration.json or the
    calibration the report names."""
    from relgate.report.pictures import evidence_pictures

    given = Path(args.report)
    plots: Path | None = None if given.is_dir() else given.parent / "plots"
    if args.plots_dir is not None:
        plots = Path(args.plots_dir)
        if not plots.is_dir():
            from relgate.errors import UsageError

            raise UsageError(f"--plots-dir {args.plots_dir}: not a folder",
                             hint="give the folder validate --plots-dir wrote")
    if given.is_dir():
        calibration: Path | None = given / "calibration.json"
    else:
        named = ((report or {}).get("calibration") or {}).get("path")
        calibration = None if named is None else Path(named)
    return evidence_pictures(report, plots_dir=plots, calibration=calibration)


def _write_pictures(evidence: Any, folder: Path) -> None:
    from relgate.jsonio import atomic_write_bytes
    from relgate.report.pictures import render_png, render_svg

    for picture in evidence.pictures:
        atomic_write_bytes(folder / f"{picture.name}.svg", render_svg(picture).encode("utf-8"))
        atomic_write_bytes(folder / f"{picture.name}.png", render_png(picture))


def load_records(path: str, *, what: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(validation report, release record) read from a report file, a release file or a bundle.

    Every record is schema-checked; anything else is bad input (exit 2) naming the path.
    """
    from relgate import schemas
    from relgate.errors import InputError
    from relgate.jsonio import read_json

    p = Path(path)
    if p.is_dir():
        report_path, release_path = p / REPORT_FILE, p / RELEASE_FILE
        if not report_path.is_file():
            raise InputError(f"{what} {path}: a folder without {REPORT_FILE}, so not a bundle",
                             hint="point at a validation report, a release record or a bundle "
                                  "folder published by relgate promote")
        report = read_json(report_path)
        schemas.validate(report, "validation-report", source=str(report_path))
        release = None
        if release_path.exists():
            release = read_json(release_path)
            schemas.validate(release, "release", source=str(release_path))
        return report, release
    record = read_json(p)
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind == "validation-report":
        schemas.validate(record, "validation-report", source=str(p))
        return record, None
    if kind == "release":
        schemas.validate(record, "release", source=str(p))
        return None, record
    raise InputError(f"{what} {path}: not a validation report or a release record "
                     f"(kind {kind!r})",
                     hint="point at analysis/validation_report.json, a release record or a "
                          "bundle folder")
