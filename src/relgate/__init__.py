"""relgate: reproducible, governed releases of ML models.

The package is split so that each module has one job (see DESIGN.md):
pure logic (metrics, gates, manifest records) never prints or touches the
terminal; I/O modules (jsonio, hashing, bundle, onnxmodel) read and write
files; ``relgate.report`` renders results; ``relgate.cli`` maps errors to
exit codes. Heavy imports (onnxruntime, torch) happen only inside the
functions that need them, so ``relgate --help`` stays fast.
"""



def __getattr__(name: str) -> str:
    """``relgate.__version__``, read from the installed metadata only when asked for."""
    if name != "__version__":
        raise AttributeError(name)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relgate")
    except PackageNotFoundError:  # pragma: no cover - a source tree without install
        return "0+unknown"
