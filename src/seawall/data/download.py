"""Fetch a file from a URL into the cache, verified by sha256, written atomically."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

from seawall.errors import DataError
from seawall.io import atomic_write_bytes


def fetch(url: str, sha256: str | None, dest: Path, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` unless a copy with the right checksum is already there; verify the checksum."""
    if dest.is_file() and (sha256 is None or _sha256(dest.read_bytes()) == sha256):
        return dest
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except OSError as error:
        raise DataError(f"could not download {url}: {error}") from None
    digest = _sha256(data)
    if sha256 is not None and digest != sha256:
        raise DataError(f"{url}: sha256 {digest} does not match the expected {sha256}; nothing was saved")
    atomic_write_bytes(dest, data)
    return dest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
