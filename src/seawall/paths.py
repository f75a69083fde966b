"""Where seawall finds shared data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

from seawall.errors import SeawallError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the data folder: `explicit` (--data-dir), then $SEAWALL_DATA, then ../shared/data beside the project."""
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("--data-dir", Path(explicit)))
    elif os.environ.get("SEAWALL_DATA"):
        candidates.append(("SEAWALL_DATA", Path(os.environ["SEAWALL_DATA"])))
    else:
        for root in (Path.cwd(), PROJECT_ROOT):
            shared = root.parent / "shared" / "data"
            if shared.is_dir():
                return shared.resolve()
        raise SeawallError(
            "no data directory found: pass --data-dir DIR, set SEAWALL_DATA=DIR, "
            "or place the shared data at ../shared/data beside the project"
        )
    source, path = candidates[0]
    if not path.is_dir():
        raise SeawallError(f"data directory {path} (from {source}) does not exist")
    return path.resolve()


def cache_dir(kind: str = "") -> Path:
    """The cache root ($SEAWALL_CACHE, else $XDG_CACHE_HOME/seawall, else ~/.cache/seawall), or a sub-folder."""
    root = os.environ.get("SEAWALL_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seawall"
    path = base / kind if kind else base
    path.mkdir(parents=True, exist_ok=True)
    return path
