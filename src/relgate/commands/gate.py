"""relgate gate: re-apply the gates of a params file to a validation report's metrics.

This is what CI runs to judge a report against thresholds taken from another
branch (the base branch), so a pull request cannot loosen its own gates.
"""

from __future__ import annotations

import argparse

from relgate.errors import EXIT_OK, EXIT_REFUSED

HELP = ("re-apply the gates of a params file to a validation report "
        "(exit 0 pass, 1 fail, 2 bad input)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", metavar="REPORT.json",
                        help="a validation report (e.g. analysis/validation_report.json)")
    parser.add_argument("--params", default="params.yaml", metavar="FILE",
                        help="params file whose gates: are applied (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print the verdict as JSON (a gate_verdict record) instead of a table")


def run(args: argparse.Namespace) -> int:
    from relgate import schemas
    from relgate.gates import apply_gates
    from relgate.jsonio import read_json
    from relgate.params import load_params
    from relgate.report import console, print_json
    from relgate.report.gates import render_verdict, verdict_json

    report = read_json(args.report)
    schemas.validate(report, "validation-report", source=args.report)
    params = load_params(args.params)
    baseline = report.get("baseline")
    verdict = apply_gates(
        params.gates, report["metrics"],
        deltas=None if baseline is None else baseline["deltas"],
        baseline_name=None if baseline is None else baseline["name"],
    )
    if params.resources is not None:  # the budgets in force, on the report's measurement
        from relgate.resources import rejudge

        verdict = rejudge(verdict, (), report.get("resources"), params.resources)
    if params.slices is not None or report.get("slices") is not None:  # issue 19
        from relgate.slice_gates import merged_verdict, rejudge_report

        base_on = "point" if params.gates.baseline is None else params.gates.baseline.on
        verdict = merged_verdict(verdict, rejudge_report(report.get("slices"), params.slices,
                                                         spec_baseline_on=base_on))
    if args.json:
        print_json(verdict_json(verdict))
    else:
        note = None
        if bool(report["passed"]) != verdict.passed:
            note = (f"the report recorded passed={str(report['passed']).lower()}; "
                    f"with the gates of {args.params} it {'passes' if verdict.passed else 'fails'}")
        render_verdict(verdict, console(), title=f"{args.report} with gates from {args.params}",
                       note=note)
    return EXIT_OK if verdict.passed else EXIT_REFUSED
