"""Data paths the benchmarks read: a missing one ends the run with one line saying which path is
missing and which option sets it, not with a traceback from deep inside the measurement."""

from __future__ import annotations

from pathlib import Path

#: Where the development checkout keeps the public footage (see README.md, "Data path" notes);
#: any other clone passes its own folder with the script's option.
SHARED_DATA = Path("../shared/data")


def require(path: Path, option: str, prog: str) -> Path:
    """``path`` if it exists; otherwise exit (status 1) with one line naming it and ``option``."""
    if not path.exists():
        raise SystemExit(f"{prog}: {path} not found; pass {option}")
    return path
