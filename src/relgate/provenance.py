"""Versions and platform of the running environment, recorded in every report."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version

RECORDED_PACKAGES = ("relgate", "numpy", "onnx", "onnxruntime", "jsonschema", "dvc", "torch")


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that can change a result (absent ones omitted)."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def platform_string() -> str:
    return f"{platform.system()}-{platform.machine()} ({sys.implementation.name} {platform.python_version()})"
