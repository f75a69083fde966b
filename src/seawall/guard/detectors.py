"""Which detector the guard runs: an explicit folder or no-training backend, else the project's trained default.

There is deliberately no silent fallback to the `refusal` matcher: it scores every compliant answer as unsafe
("What is the capital of France?" → "Paris" is blocked), so it is a refusal-rate judge, not a harm judge, and a
guard that used it by default would block nearly all useful traffic.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from seawall.errors import SeawallError

log = logging.getLogger("seawall.guard")

# Backends that work without training, accepted by their literal name (a folder with the same name needs "./").
NO_TRAINING_BACKENDS = ("refusal",)

NO_DETECTOR = "no detector configured: pass --detector DIR, or run `make demo` / `seawall detect train` to train the default"


def default_detector_dir() -> Path:
    """Where the project's default trained detector lives (written by `make demo` / `seawall detect demo`)."""
    from seawall.detect import default_detector_path

    return default_detector_path()


def resolve_detector(spec: str | None) -> Any:
    """The detector for `spec`: a saved detector folder, a no-training backend name, or (None) the default."""
    from seawall.detect import load_detector, make_detector

    if spec in NO_TRAINING_BACKENDS:
        log.warning(
            "detector %r is a refusal-rate judge, not a harm judge: every compliant answer scores unsafe",
            spec,
        )
        return make_detector(spec).fit([])
    if spec is not None:
        if not Path(spec).is_dir():
            raise SeawallError(
                f"detector {spec!r} is neither a detector folder nor a no-training backend "
                f"({', '.join(NO_TRAINING_BACKENDS)}); train one with `seawall detect train`"
            )
        return load_detector(spec)
    folder = default_detector_dir()
    if not folder.is_dir():
        raise SeawallError(f"{NO_DETECTOR} (looked for {folder})")
    return load_detector(folder)
