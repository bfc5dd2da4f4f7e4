"""``relgate report --format html``: one self-contained file that works offline.

The body is the same Markdown summary a pull request shows (rendered by markdown-it with raw
HTML disabled, so nothing a record holds can become markup), then the pictures as inline
SVG, then the files they were drawn from with their sha256. No script, no stylesheet link,
no image fetched from anywhere.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from relgate.report.pictures import Evidence, render_svg

STYLE = """
body { font-family: "Liberation Sans", Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; }
th { background: #f6f8fa; }
code { background: #f6f8fa; padding: 0 0.2em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.9em; color: #57606a; }
.notes, .sources { font-size: 0.9em; color: #57606a; }
"""


def html_document(title: str, markdown_text: str, evidence: Evidence) -> str:
    """The whole page: summary, pictures, notes on pictures not drawn, and sources."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style>", "</head>",
             "<body>", body]
    if evidence.pictures:
        parts.append("<h2>Pictures</h2>")
        for picture in evidence.pictures:
            parts += [f'<figure id="{picture.name}">', render_svg(picture),
                      f"<figcaption>{html.escape(picture.title)}</figcaption>", "</figure>"]
    parts += _list("notes", "Not drawn", evidence.notes)
    parts += _list("sources", "Drawn from", [f"{path} (sha256 {sha})"
                                              for path, sha in evidence.sources])
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _list(css: str, heading: str, items: Sequence[str]) -> list[str]:
    if not items:
        return []
    return [f'<div class="{css}"><h3>{heading}</h3><ul>',
            *(f"<li>{html.escape(item)}</li>" for item in items), "</ul></div>"]
