"""relgate: reproducible, governed releases of ML models.

The package is split so that each module has one job (see DESIGN.md):
pure logic (metrics, gates, manifest records) never prints or touches the
terminal; I/O modules (jsonio, hashing, bundle, onnxmodel) read and write
files; ``relgate.report`` renders results; ``relgate.cli`` maps errors to
exit codes. Heavy imports (onnxruntime, torch) happen only inside the
functions that need them, so ``relgate --help`` stays fast.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("relgate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"
