"""The model card: a human-readable README.md for a core bundle, from its release record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _shape(shape: Any) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def model_card(record: Mapping[str, Any]) -> str:
    """Markdown: what the model is, its contract, metrics with intervals, gates, how to verify."""
    name = record["name"]
    promoted = next(a for a in record["artifacts"] if a["role"] == "promoted")
    lines = [
        f"# Release {name}",
        "",
        f"Core bundle of release `{name}` (git tag `{record.get('tag', name)}`), published by relgate. "
        "Every file in this folder is listed in `manifest.json` with its size and sha256; nothing "
        "here may change. When and from which commit it was published is recorded outside the "
        f"bundle, in the registry's `analysis/release_{name}.json`.",
        "",
        "## Artifacts",
        "",
        "| path | role | sha256 | size (bytes) | description |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for art in record["artifacts"]:
        lines.append(f"| `{art['path']}` | {art['role']} | `{art['sha256'][:16]}…` | "
                     f"{art.get('size', '')} | {art.get('description', '')} |")
    contract = promoted.get("contract") or {}
    lines += ["", "## Contract of the promoted model", "",
              "| direction | name | dtype | shape |", "| --- | --- | --- | --- |"]
    for direction in ("inputs", "outputs"):
        for t in contract.get(direction, []):
            lines.append(f"| {direction[:-1]} | `{t['name']}` | {t['dtype']} | {_shape(t['shape'])} |")
    if contract.get("score_output"):
        lines.append(f"\nScore output: `{contract['score_output']}` ({contract.get('score_kind', 'score')}).")
    lines += ["", "## Metrics (test split, calibrated)", "",
              "| metric | value | interval |", "| --- | ---: | --- |"]
    for key in sorted(record["metrics"]):
        m = record["metrics"][key]
        ci = "" if m.get("ci_low") is None else f"[{_fmt(m.get('ci_low'))}, {_fmt(m.get('ci_high'))}]"
        lines.append(f"| {key} | {_fmt(m.get('value'))} | {ci} |")
    gates = record["gates"]
    lines += ["", f"## Gates (mode `{gates['mode']}`: {'passed' if gates['passed'] else 'failed'})", "",
              "| gate | observed | result | reason |", "| --- | ---: | --- | --- |"]
    for g in gates["results"]:
        where = "" if g["on"] == "point" else f" ({g['on']})"
        lines.append(f"| {g['metric']}{where} {g['op']} {g['bound']:g} | {_fmt(g['observed'])} | "
                     f"{'✅' if g['passed'] else '❌'} | {g['reason']} |")
    prov = record["provenance"]
    lines += ["", "## Provenance", "",
              f"- seed: {prov.get('seed')}",
              f"- platform: {prov.get('platform')}",
              "- packages: " + ", ".join(f"{k} {v}" for k, v in sorted(prov.get("packages", {}).items())),
              "", "## How to verify", "",
              "```bash",
              f"relgate verify models/core/{name}",
              "```",
              "",
              "Exit code 0 means every file matches `manifest.json` byte for byte and no other file is "
              "present. To detect a consistent rewrite of files and manifest, pin the root digest "
              f"recorded outside the bundle (`analysis/release_{name}.json`, field `bundle.root_digest`):",
              "",
              "```bash",
              f"relgate verify models/core/{name} --root-digest <root_digest>",
              "```", ""]
    return "\n".join(lines)
