"""GitHub Actions workflow annotations (``::error title=...::message``) for failed gates.

The runner reads workflow commands from a step's stdout AND stderr (actions/runner
``ScriptHandler.cs`` attaches an ``OutputManager`` with the command manager to both
streams), so relgate writes annotations to stderr: stdout stays clean for the Markdown
that a workflow redirects into ``$GITHUB_STEP_SUMMARY`` and for JSON that a script parses.

Escaping follows the runner's rules (``@actions/core`` ``escapeData`` / ``escapeProperty``):
in the message ``%``, CR and LF become ``%25``, ``%0D``, ``%0A``; in a property value ``:``
and ``,`` are escaped as well. A message can therefore never end the command early or start
a second one on a new line, even when the text comes from a pull request's own report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from relgate.gates import GateVerdict

ANNOTATION_TITLE = "relgate gate"
CHOICES = ("auto", "always", "never")


def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped (``%`` first)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: as a message, plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **properties: str) -> str:
    """One line ``::command key=value,...::message`` with every part escaped."""
    props = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def enabled(choice: str, environ: Mapping[str, str] | None = None) -> bool:
    """``always`` / ``never`` as said; ``auto``: on GitHub Actions (GITHUB_ACTIONS=true)."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    env = os.environ if environ is None else environ
    return env.get("GITHUB_ACTIONS", "").strip().lower() == "true"


def gate_annotations(verdict: GateVerdict, *, source: str, gates_from: str | None) -> list[str]:
    """One ``::error`` line per reason the verdict failed; none when it passed.

    The reasons are the verdict's own (failed rules, the ``any`` mode's summary, baseline
    guards), so an annotation says exactly what the Markdown summary says.
    """
    if verdict.passed:
        return []
    where = "the gates recorded in the report" if gates_from is None else f"gates from {gates_from}"
    reasons = verdict.reasons or ("gates failed",)
    return [workflow_command("error", f"{source}: {reason} ({where})", title=ANNOTATION_TITLE)
            for reason in reasons]
