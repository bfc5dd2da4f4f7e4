"""Run every benchmark case in bench/ (``nox -s bench``): python bench/run.py [name ...]."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    names = argv or sorted(p.stem for p in HERE.glob("bench_*.py"))
    for name in names:
        module = importlib.import_module(name if name.startswith("bench_") else f"bench_{name}")
        print(f"== {module.__name__}: {(module.__doc__ or '').strip().splitlines()[0]}", flush=True)
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
