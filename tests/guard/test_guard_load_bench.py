"""bench/guard_load.py's own measurements: the detector alone (issue 12's target) and the audit log counts."""

from __future__ import annotations

import importlib.util
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from guard_helpers import tfidf_detector_folder

from seawall.guard import detectors

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("guard_load", ROOT / "bench" / "guard_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_detector_latency_loads_like_the_proxy_and_times_one_and_eight_checks(tmp_path, bench, monkeypatch):
    folder = tfidf_detector_folder(tmp_path / "det")
    # The very function `seawall guard serve` builds its detector with (`build_app`).
    assert bench.resolve_detector is detectors.resolve_detector
    loaded, batches = [], []

    def resolve_as_the_proxy_does(spec):
        loaded.append(spec)
        detector = detectors.resolve_detector(spec)
        score = detector.predict_proba

        def counted(pairs):
            batches.append(list(pairs))
            return score(pairs)

        detector.predict_proba = counted
        return detector

    monkeypatch.setattr(bench, "resolve_detector", resolve_as_the_proxy_does)
    latency = bench.detector_latency(str(folder), repetitions=6, warmups=2)
    assert loaded == [str(folder)]
    # Warm-ups and repetitions alternate one check and eight, each the pair every load request is checked with.
    assert [len(b) for b in batches] == [1, 8] * 8
    assert all(pair == (bench.PROMPT, bench.ANSWER) for b in batches for pair in b)
    assert set(latency) == {"batch_1_p50_ms", "batch_1_p95_ms", "batch_8_p50_ms", "precision", "repetitions"}
    assert 0 < latency["batch_1_p50_ms"] <= latency["batch_1_p95_ms"] and latency["batch_8_p50_ms"] > 0
    assert latency["repetitions"] == 6 and latency["precision"] is None  # TF-IDF has no number format to pick


def test_detector_latency_refuses_to_time_a_failing_detector(tmp_path, bench, monkeypatch):
    class Broken:
        threshold_ = 0.5

        def predict_proba(self, pairs):
            raise OSError("model file unreadable")

    monkeypatch.setattr(bench, "resolve_detector", lambda spec: Broken())
    with pytest.raises(
        RuntimeError, match=r"detector broken failed while its latency was measured: .*unreadable"
    ):
        bench.detector_latency("broken", repetitions=2, warmups=1)


def test_count_decisions_tells_duplicates_from_the_row_count(tmp_path, bench):
    assert bench.count_decisions(tmp_path / "never-written.sqlite") == (0, 0)
    db = tmp_path / "audit.sqlite"
    conn = sqlite3.connect(db)
    # An older proxy's schema need not make request ids unique: three rows, two requests.
    conn.execute("CREATE TABLE decisions (id INTEGER PRIMARY KEY, request_id TEXT)")
    conn.executemany("INSERT INTO decisions (request_id) VALUES (?)", [("a",), ("b",), ("b",)])
    conn.commit()
    conn.close()
    assert bench.count_decisions(db) == (3, 2)


def test_percentiles_are_of_the_timed_repetitions_only(tmp_path, bench, monkeypatch):
    # The first (warm-up) calls are slow, as an encoder's first call building its bf16 copy is.
    calls = iter(range(1000))

    class SlowFirst:
        threshold_ = 0.5

        def predict_proba(self, pairs):
            if next(calls) < 4:
                time.sleep(0.2)
            return np.tile([0.9, 0.1], (len(pairs), 1))

    monkeypatch.setattr(bench, "resolve_detector", lambda spec: SlowFirst())
    latency = bench.detector_latency("slow-first", repetitions=5, warmups=2)
    assert latency["batch_1_p95_ms"] < 100 and latency["batch_8_p50_ms"] < 100


def test_detector_info_gives_a_precision_only_to_neural_backends(tmp_path, bench):
    folder = tfidf_detector_folder(tmp_path / "det")
    info = bench.detector_info(str(folder))
    assert info["backend"] == "tfidf" and info["scoring"] == "cpu"
    assert bench.detector_info("refusal") == {"detector": "refusal"}
