"""The model cache: completion markers with checksums, sha256 helpers and a per-entry lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seawall import paths
from seawall.io import atomic_write_json
from seawall.models.checkpoint import sha256_file

MARKER = "seawall-model.json"
MARKER_VERSION = 1


def models_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The models cache folder: `cache_dir` if given, else `seawall.paths.cache_dir("models")`."""
    if cache_dir is None:
        return paths.cache_dir("models")
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_marker(folder: Path, source: dict[str, Any]) -> dict[str, Any]:
    """Checksum every file in `folder` and write the completion marker; call it last, inside `atomic_dir`."""
    # Temporary folders are created 0700; the cache may be shared, so publish entries world-readable.
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    files = {
        str(path.relative_to(folder)): {"sha256": sha256_file(path), "size": path.stat().st_size}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MARKER
    }
    marker = {"version": MARKER_VERSION, "source": source, "files": files}
    atomic_write_json(folder / MARKER, marker)
    return marker


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The completion marker of a cached folder, or None if it is missing or unreadable."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("version") == MARKER_VERSION else None


def is_complete(folder: Path, verify: bool = False) -> bool:
    """True if `folder` has a marker and every listed file exists with its size (and sha256 when `verify`)."""
    marker = read_marker(folder)
    if marker is None:
        return False
    for name, meta in marker["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != meta["size"]:
            return False
        if verify and sha256_file(path) != meta["sha256"]:
            return False
    return True


@contextlib.contextmanager
def entry_lock(root: Path, name: str) -> Iterator[None]:
    """Serialise provisioning of one cache entry across processes, and sweep what killed runs left behind."""
    lock_path = root / f".{name}.lock"
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _sweep_stale(root, name)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sweep_stale(root: Path, name: str) -> None:
    """Remove work folders of a killed run (`atomic_dir` partials, download folders); safe under the lock."""
    # mkdtemp's random part has no dots, so an entry whose name extends this one never matches.
    stale = re.compile(rf"\.{re.escape(name)}\.(?:[^.]+\.partial|download\.[^.]+|old)")
    for path in root.iterdir():
        if path.is_dir() and stale.fullmatch(path.name):
            shutil.rmtree(path, ignore_errors=True)
