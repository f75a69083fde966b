"""Harmful-response detectors: a scikit-learn-style `Detector` with backends chosen by name.

    from seawall.detect import make_detector, load_detector
    det = make_detector("tfidf").fit(train_records, dev=dev_records)
    det.predict_proba([(prompt, response)])[:, 1]   # P(unsafe)
    det.save("out/tfidf"); det = load_detector("out/tfidf")

Backends: `refusal`, `tfidf` (cheap, imported here), `encoder`, `lm-judge`, `probe` (torch; imported on first use),
`cascade` (a fast member, and a strong one for the pairs near the fast member's threshold) and `ensemble` (every
member, their log-odds margins averaged).
"""

from pathlib import Path

from seawall.detect import cascade, encoder, ensemble, lm_judge, probe, refusal, tfidf  # noqa: F401  (register the backends; torch loads lazily)
from seawall.detect.base import DETECTORS, Detector, as_pairs, load_detector, make_detector
from seawall.detect.refusal import is_refusal, refusal_match


def default_detector_path() -> Path:
    """Where `seawall detect demo` saves the default detector and the guard looks for it ($SEAWALL_CACHE/detectors)."""
    from seawall.paths import cache_dir

    return cache_dir("detectors") / "default"


__all__ = [
    "DETECTORS",
    "Detector",
    "as_pairs",
    "default_detector_path",
    "is_refusal",
    "load_detector",
    "make_detector",
    "refusal_match",
]
