"""The model cache: completion markers with checksums, sha256 helpers and a per-entry lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seawall import paths
from seawall.io import atomic_write_json

MARKER = "seawall-model.json"
MARKER_VERSION = 1


def models_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The models cache folder: `cache_dir` if given, else `seawall.paths.cache_dir("models")`."""
    if cache_dir is None:
        return paths.cache_dir("models")
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_marker(folder: Path, source: dict[str, Any]) -> dict[str, Any]:
    """Checksum every file in `folder` and write the completion marker; call it last, inside `atomic_dir`."""
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
    """Serialise provisioning of one cache entry across processes (several agents share one cache)."""
    lock_path = root / f".{name}.lock"
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
