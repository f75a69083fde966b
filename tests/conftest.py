"""Fixtures shared by every layer's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared datasets beside the checkout (CI has them); their absence is a setup error, not a skip."""
    root = Path(os.environ.get("SEAWALL_DATA", SHARED_DATA))
    assert root.is_dir(), f"shared data not found at {root}: set SEAWALL_DATA"
    return root
