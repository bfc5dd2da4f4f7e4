"""Which DVC remote, if any, can serve a registry's bundles (issue 18, point 4).

``relgate fetch`` downloads a bundle with ``dvc get``, which reads the registry's default
remote (``core.remote`` in ``.dvc/config``). A registry whose config names none can list its
releases (git holds the records) but serve none of them, and ``dvc get`` then fails with a
message about an unreachable remote that does not say why. :func:`fetch_problem` says it
up front, from the config text alone: nothing is contacted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: a remote's section header, as DVC writes it (``['remote "name"']``) or by hand
_REMOTE = re.compile(r"""^\s*\[\s*'?\s*remote\s+"([^"]+)"\s*'?\s*\]\s*$""")
_SECTION = re.compile(r"^\s*\[(.*)\]\s*$")
_CORE_REMOTE = re.compile(r"^\s*remote\s*=\s*(.*?)\s*$")


def read_remotes(texts: Iterable[bytes | None]) -> tuple[set[str], str | None]:
    """(names of the remotes defined, the default remote) from DVC config files, later
    files overriding earlier ones (``config`` then ``config.local``, as DVC reads them)."""
    names: set[str] = set()
    default: str | None = None
    for raw in texts:
        if raw is None:
            continue
        section = ""
        for line in raw.decode("utf-8", errors="replace").splitlines():
            if line.lstrip().startswith(("#", ";")):
                continue
            m = _REMOTE.match(line)
            if m:
                names.add(m[1])
                section = "remote"
                continue
            head = _SECTION.match(line)
            if head:
                section = head[1].strip().strip("'\"").strip()
                continue
            core = _CORE_REMOTE.match(line) if section == "core" else None
            if core:
                default = core[1].strip("'\"") or None
    return names, default


def fetch_problem(texts: Iterable[bytes | None]) -> str | None:
    """Why ``dvc get`` could not download from a registry with these config files, or None."""
    names, default = read_remotes(texts)
    if not names:
        return "not fetchable: no DVC remote configured"
    if default is None:
        return "not fetchable: no default DVC remote (core.remote)"
    if default not in names:
        return f"not fetchable: the default DVC remote {default!r} is not defined"
    return None
