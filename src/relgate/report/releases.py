"""Rendering of ``relgate fetch`` outcomes and ``relgate releases`` listings."""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING

from relgate.report import console
from relgate.report.verify import emit

if TYPE_CHECKING:
    from relgate.distribution import FetchResult, ReleaseListing


def fetch_lines(result: FetchResult) -> list[tuple[str, str]]:
    """A verdict, one line per problem (each naming the file), the digest and where it is pinned."""
    where = f"{result.repo} at {result.rev or 'HEAD'} (commit {result.commit[:12]})"
    verify = result.verify
    if result.ok:
        pinned = (f", matching the pin in {result.pin.source}" if result.pin.root_digest
                  else " (not pinned outside the bundle)")
        stage = f" (stage {result.stage})" if result.stage else ""
        lines = [("green", f"fetched and verified: release {result.release}{stage} from {where} "
                           f"-> {result.out}"),
                 ("", f"{verify.files} files, every byte matches manifest.json; root digest "
                      f"{verify.root_digest}{pinned}")]
        if result.signature is not None:
            lines.append(("", f"signature verified: signed by {result.signature.signer}"))
    else:
        reasons = result.reasons()
        plural = "s" if len(reasons) != 1 else ""
        lines = [("red", f"NOT fetched: release {result.release} from {where} does not verify: "
                         f"{len(reasons)} problem{plural}"),
                 *(("", f"  - {reason}") for reason in reasons),
                 ("", f"nothing was written to {result.out}")]
    lines += [("yellow", f"note: {note}") for note in result.notes]
    return lines


def fetch_text(result: FetchResult, file: IO[str] | None = None) -> None:
    emit(fetch_lines(result), file)


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _present(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


HEADERS = ("release", "tag", "created", "promoted", "auc", "f1", "root digest", "local",
           "stage", "deprecated", "signed by", "fetchable")


def release_rows(listing: ReleaseListing) -> list[tuple[str, ...]]:
    return [(r.name, r.tag or "-", r.created, str(r.promoted.get("path", "-")),
             _metric(r.metrics.get("auc")), _metric(r.metrics.get("f1")),
             r.root_digest or "-", _present(r.present), ",".join(r.stages) or "-",
             r.deprecated_by or "no", r.signer or "-",
             "yes" if r.not_fetchable is None else r.not_fetchable.removeprefix("not fetchable: "))
            for r in listing.releases]


def releases_text(listing: ReleaseListing, file: IO[str] | None = None) -> None:
    """A table on a terminal, tab-separated lines otherwise (easy to grep and cut)."""
    stream = file or sys.stdout
    where = f"{listing.repo}" + (f" (commit {listing.commit[:12]})" if listing.commit else "")
    rows = release_rows(listing)
    if not stream.isatty():
        stream.write(f"releases of {where}: {len(rows)}\n")
        if rows:
            stream.write("\t".join(HEADERS) + "\n")
        stream.write("".join("\t".join(row) + "\n" for row in rows))
        stream.write("".join(f"note: {n}\n" for n in listing.notes))
        return
    from rich.table import Table

    out = console(stream)
    table = Table(title=f"releases of {where}", title_justify="left")
    for header in HEADERS:
        table.add_column(header, no_wrap=header == "root digest",
                         justify="right" if header in ("auc", "f1") else "left")
    for row in rows:
        table.add_row(*row)
    out.print(table)
    if not rows:
        out.print("no release records (analysis/release_*.json) found", style="yellow")
    for note in listing.notes:
        out.print(f"note: {note}", style="yellow", markup=False)
