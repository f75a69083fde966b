"""scripts/guard_report.py: the results page says what the benchmark JSON measured, nothing typed by hand."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def report_module():
    spec = importlib.util.spec_from_file_location("guard_report", ROOT / "scripts" / "guard_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(tmp_path: Path, data: dict) -> str:
    src, out = tmp_path / "bench.json", tmp_path / "guard.md"
    src.write_text(json.dumps(data))
    report_module().main(str(src), str(out))
    return out.read_text()


def test_leak_sentence_follows_the_measured_leaked_chars(tmp_path):
    measured = json.loads((ROOT / "bench" / "results" / "guard_load.json").read_text())
    page = render(tmp_path, measured)
    worst = max(s["leaked_chars"] for s in measured["stream_tradeoff"])
    leaking = sum(s["leaked_chars"] > 0 for s in measured["stream_tradeoff"])
    assert "never sent" not in page
    if worst:
        assert f"at most {worst} characters" in page
        assert f"In {leaking} of {len(measured['stream_tradeoff'])} configurations" in page
    none_leaked = copy.deepcopy(measured)
    for row in none_leaked["stream_tradeoff"]:
        row["leaked_chars"], row["marker_leaked"] = 0, False
    assert "No character of the unsafe sentence reached the client" in render(tmp_path, none_leaked)
    word_leaked = copy.deepcopy(measured)
    word_leaked["stream_tradeoff"][0].update(leaked_chars=40, marker_leaked=True, blocked=False)
    page = render(tmp_path, word_leaked)
    assert "at most 40 characters" in page and "its start, reached the client in 1 configuration" in page
    assert "1 configuration(s) never blocked" in page


def test_baseline_is_not_cited_by_a_machine_local_path(tmp_path):
    measured = json.loads((ROOT / "bench" / "results" / "guard_load.json").read_text())
    outside = {**measured, "baseline_src": "/tmp/guard-before/src"}
    page = render(tmp_path, outside)
    assert "/tmp/guard-before" not in page and "outside the repository" in page
    inside = {**measured, "baseline_src": str(ROOT / "src")}
    assert "changes, from `src`, run" in render(tmp_path, inside)


def test_each_run_shows_its_recorded_batching_and_older_runs_render_as_before(tmp_path):
    measured = json.loads((ROOT / "bench" / "results" / "guard_load.json").read_text())
    measured.pop("batching", None)
    before = render(tmp_path, measured)
    assert "micro-batching" not in before
    batched = {**measured, "batching": {"batch_wait_ms": 2.0, "max_batch": 32, "max_inflight_batches": 1}}
    unbatched = {**measured, "batching": {"batch_wait_ms": 0.0, "max_batch": 32}}
    sources = [tmp_path / "batched.json", tmp_path / "unbatched.json", tmp_path / "old.json"]
    for path, data in zip(sources, [batched, unbatched, measured], strict=True):
        path.write_text(json.dumps(data))
    out = tmp_path / "runs.md"
    report_module().main(*(str(path) for path in [*sources[:1], out, *sources[1:]]))
    lines = out.read_text().splitlines()
    shown = [line for line in lines if "micro-batching" in line]
    assert shown == [
        "Proxy micro-batching: `batch_wait_ms` 2, `max_batch` 32, `max_inflight_batches` 1.",
        "Proxy micro-batching: `batch_wait_ms` 0, `max_batch` 32 (off: one detector call per check).",
    ]
    # Each line sits in its own run's section (the old run's has none), just above that run's table.
    for line, src in zip(shown, sources, strict=False):
        at = lines.index(line)
        heading = max(i for i in range(at) if lines[i].startswith("## "))
        assert f"(`{src}`)" in lines[heading] and lines[at + 2].startswith("| concurrency")
    # Apart from that line (and the blank after it), a run's page is the one its JSON without the key gives.
    page = render(tmp_path, batched).splitlines()
    at = page.index(shown[0])
    assert page[at + 1] == "" and page[:at] + page[at + 2 :] == before.splitlines()


def synthetic_run(
    proxy_p50: float,
    direct_p50: float = 6.0,
    alone_p50: float | None = 20.0,
    distinct: int | None = 75,
    rows: int = 75,
    load: tuple[list[float], list[float]] = ([0.1, 0.2, 0.3], [0.4, 0.3, 0.3]),
) -> dict:
    """The smallest benchmark JSON the page renders: concurrency 8 only, 25 requests in 3 rounds."""
    side = {"rps": 100.0, "p95_ms": 2 * proxy_p50, "server_cpu_ms_per_request": 1.0}
    data = {
        "machine": {
            "python": "3.11",
            "cpus": 2,
            "load_avg_1m": [load[0][0], load[1][0]],
            "load_avg_before": load[0],
            "load_avg_after": load[1],
            "busy_at_start": load[0][0] > 0.5,
        },
        "detector": "det",
        "upstream": "fake",
        "proxy": "proxy",
        "audit_synchronous": "NORMAL",
        "requests_per_round": 25,
        "rounds": 1,
        "baseline_src": None,
        "decisions_logged": {"proxy": rows},
        "requests_sent": 75,
        "stream_simulation": {"chunk_chars": 4, "chunk_delay_ms": 10, "window": 512},
        "load": [
            {
                "concurrency": 8,
                "direct": {**side, "p50_ms": direct_p50},
                "proxy": {**side, "p50_ms": proxy_p50},
                "overhead_p50_ratio": proxy_p50 / direct_p50,
                "overhead_p95_ratio": 1.0,
                "throughput_ratio": 1.0,
            }
        ],
        "stream_tradeoff": [],
    }
    if distinct is not None:
        data["distinct_request_ids_logged"] = {"proxy": distinct}
    if alone_p50 is not None:
        data["detector_latency"] = {
            "batch_1_p50_ms": alone_p50,
            "batch_1_p95_ms": alone_p50 + 1,
            "batch_8_p50_ms": 3 * alone_p50,
            "precision": "torch-bfloat16",
            "repetitions": 50,
        }
    return data


def target_line(page: str) -> str:
    return next(line for line in page.splitlines() if line.startswith("Target (issue 12)"))


def test_target_line_is_met_or_not_from_the_recorded_latencies(tmp_path):
    # bound = direct 6 + detector alone 20 + 2 = 28 ms
    met = render(tmp_path, synthetic_run(proxy_p50=27.5))
    assert target_line(met) == (
        "Target (issue 12): at concurrency 8, proxy p50 27.50 ms vs direct p50 6.00 + detector batch-1 p50 20.00 "
        "+ 2 ms = 28.00 ms: met; every decision logged exactly once: yes."
    )
    assert (
        "The detector alone (in the bench process, loaded as the proxy loads it, torch-bfloat16; 50 repetitions): "
        "one check p50 20.00 ms, p95 21.00 ms; 8 checks in one call p50 60.00 ms." in met
    )
    # The line sits under the load table, above the audit counts.
    lines = met.splitlines()
    at = lines.index(target_line(met))
    assert lines[at - 2].startswith("The detector alone") and lines[at - 4].startswith("| 8 |")
    assert lines[at + 2].startswith("Decisions in the audit log")
    not_met = target_line(render(tmp_path, synthetic_run(proxy_p50=83.5)))
    assert "proxy p50 83.50 ms" in not_met and "= 28.00 ms: not met;" in not_met
    # A faster upstream or detector tightens the bound by as much.
    assert "= 23.00 ms: not met;" in target_line(
        render(tmp_path, synthetic_run(proxy_p50=27.5, direct_p50=1.0, alone_p50=20.0))
    )
    # Runs without a detector measurement (the refusal matcher, older runs) have no target line.
    assert "Target (issue 12)" not in render(tmp_path, synthetic_run(proxy_p50=27.5, alone_p50=None))


def test_exactly_once_needs_as_many_distinct_request_ids_as_rows_and_requests(tmp_path):
    once = render(tmp_path, synthetic_run(proxy_p50=20.0))
    assert (
        "- proxy: 75 rows, 75 distinct request ids / 75 requests sent: every decision logged exactly once"
        in once
    )
    # As many rows as requests, but one request twice and another not at all.
    twice = render(tmp_path, synthetic_run(proxy_p50=20.0, distinct=74))
    assert (
        "75 rows, 74 distinct request ids / 75 requests sent: NOT every decision logged exactly once" in twice
    )
    assert target_line(twice).endswith("met; every decision logged exactly once: no.")
    missing = render(tmp_path, synthetic_run(proxy_p50=20.0, rows=74, distinct=74))
    assert target_line(missing).endswith("every decision logged exactly once: no.")
    # A run that counted rows alone cannot tell, and says so.
    rows_only = render(tmp_path, synthetic_run(proxy_p50=20.0, distinct=None))
    assert "- proxy: 75 rows / 75 requests sent (distinct request ids not counted in this run)" in rows_only
    assert target_line(rows_only).endswith("every decision logged exactly once: not counted.")


def test_load_sentence_says_what_the_recorded_load_averages_say(tmp_path):
    def sentence(before, after):
        page = render(tmp_path, synthetic_run(proxy_p50=20.0, load=(before, after)))
        return next(line for line in page.splitlines() if line.startswith("Non-streaming")).split("rounds. ")[
            -1
        ]

    assert sentence([0.1, 0.2, 0.3], [1.9, 0.9, 0.4]) == (
        "Machine: 2 CPUs; an idle machine (load [0.1, 0.2, 0.3] before, [1.9, 0.9, 0.4] after)."
    )
    assert sentence([0.85, 1.6, 1.8], [1.2, 1.6, 1.8]) == (
        "Machine: 2 CPUs; the machine was busy at the start (load [0.85, 1.6, 1.8]): absolute numbers are upper "
        "bounds on time."
    )
    # The bench's own processes keep up to both CPUs busy: only more than that says another job joined.
    assert sentence([0.1, 0.2, 0.3], [2.6, 1.0, 0.4]) == (
        "Machine: 2 CPUs; idle at the start (load [0.1, 0.2, 0.3]) but busy by the end ([2.6, 1.0, 0.4]): read the "
        "ratios, not the absolutes."
    )
    for line in render(tmp_path, synthetic_run(proxy_p50=20.0)).splitlines():
        assert "shared with other jobs" not in line


def test_committed_runs_still_render_with_what_they_recorded(tmp_path):
    results = ROOT / "bench" / "results"
    out = tmp_path / "guard.md"
    paths = [
        results / name for name in ("guard_load.json", "guard_load_full.json", "guard_load_encoder.json")
    ]
    report_module().main(str(paths[0]), str(out), *map(str, paths[1:]))
    page = out.read_text()
    # guard_load.json recorded the 1-minute load alone, at 13.67 on 2 CPUs.
    assert "Machine: 2 CPUs; the machine was busy at the start (load 13.67)" in page
    assert "- proxy: 3609 rows / 3609 requests sent (distinct request ids not counted in this run)" in page
