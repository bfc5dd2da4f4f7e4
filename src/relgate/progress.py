"""Progress bars, as core modules ask for them without importing a reporter.

Hashing and scoring take ``progress=True`` to mean "show a bar if someone can see it". The
bars themselves are rendering, so they live in relgate.report; the CLI installs them here at
start-up (:func:`install`). Used as a library, with nothing installed, every bar is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

ByteBar = Callable[[int], AbstractContextManager[Callable[[int], None]]]
StepBar = Callable[[str], AbstractContextManager[Callable[[int, int], None]]]

_BARS: dict[str, Any] = {"bytes": None, "steps": None, "enabled": None}


def install(*, bytes_bar: ByteBar, steps_bar: StepBar, enabled: Callable[[], bool]) -> None:
    """Set the renderers of byte and step progress and the test for an attached viewer."""
    _BARS.update(bytes=bytes_bar, steps=steps_bar, enabled=enabled)


def enabled() -> bool:
    """Whether a bar would be seen (False when no renderer is installed)."""
    test = _BARS["enabled"]
    return bool(test is not None and test())


@contextmanager
def byte_bar(total_bytes: int) -> Iterator[Callable[[int], None] | None]:
    """A sink for byte counts, or None when no bar is shown."""
    bar = _BARS["bytes"]
    if bar is None or not enabled():
        yield None
        return
    with bar(total_bytes) as sink:
        yield sink


@contextmanager
def step_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """An ``update(done, total)`` callback; a no-op when no bar is shown."""
    bar = _BARS["steps"]
    if bar is None or not enabled():
        yield lambda done, total: None
        return
    with bar(description) as update:
        yield update
