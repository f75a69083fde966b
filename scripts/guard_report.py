"""Write docs/results/guard.md from bench/results/guard_load.json (no number is typed by hand).

    PYTHONPATH=src python scripts/guard_report.py [SRC [OUT [EXTRA_SRC ...]]]

EXTRA_SRC files (e.g. the same benchmark with `--audit-synchronous FULL`) add one load table each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from seawall.benchmarks import load_sentence
from seawall.io import atomic_write_text

REPOSITORY = Path(__file__).resolve().parents[1]
BASELINE_NOTE = (
    "`baseline` is the proxy of the code before the hot-path changes, from {src}, run in the same rounds "
    "against the same upstream, so all three columns share the machine's load."
)
# Issue 12: at this concurrency, the proxy's p50 may exceed the upstream's by the detector's own batch-1 time and
# this much more.
TARGET_CONCURRENCY = 8
TARGET_SLACK_MS = 2.0


def baseline_source(src: str) -> str:
    """The baseline's source tree as the reader can find it: a repository path, never a machine-local one."""
    path = Path(src)
    resolved = (REPOSITORY / path).resolve() if not path.is_absolute() else path.resolve()
    if resolved.is_relative_to(REPOSITORY):
        return f"`{resolved.relative_to(REPOSITORY)}`"
    return "a source tree outside the repository (`--baseline-src`)"


def leak_reading(tradeoff: list[dict]) -> str:
    """What the measured `leaked_chars` / `marker_leaked` / `blocked` columns say, as one paragraph."""
    leaked = [s for s in tradeoff if s["leaked_chars"] > 0]
    if not leaked:
        sentence = "No character of the unsafe sentence reached the client in any configuration."
    else:
        worst = max(leaked, key=lambda s: s["leaked_chars"])
        sentence = (
            f"In {len(leaked)} of {len(tradeoff)} configurations the start of the unsafe sentence reached the "
            f"client before the cut: at most {worst['leaked_chars']} characters (check every "
            f"{worst['check_every']}, hold-back {worst['holdback']}), text that every check covering it had "
            "judged safe."
        )
    word = [s for s in tradeoff if s["marker_leaked"]]
    sentence += (
        f" The unsafe word itself, or its start, reached the client in {len(word)} configuration(s)."
        if word
        else " The unsafe word itself never did, not even in part."
    )
    unblocked = [s for s in tradeoff if not s["blocked"]]
    if unblocked:
        sentence += f" {len(unblocked)} configuration(s) never blocked the response."
    return sentence


def batching_line(settings: dict) -> str:
    """The proxy's micro-batching settings that the benchmark recorded, as one line of the page."""
    listed = ", ".join(
        f"`{key}` {value:g}" if isinstance(value, int | float) else f"`{key}` {value}"
        for key, value in settings.items()
    )
    off = " (off: one detector call per check)" if settings.get("batch_wait_ms") == 0 else ""
    return f"Proxy micro-batching: {listed}{off}."


def machine_sentence(machine: dict) -> str:
    """The CPU count and how loaded the machine was, from the load averages the run recorded (older runs: the
    1-minute ones alone)."""
    before = machine.get("load_avg_before", machine["load_avg_1m"][0])
    after = machine.get("load_avg_after", machine["load_avg_1m"][1])
    return f"Machine: {machine['cpus']} CPUs; {load_sentence(before, after, machine['cpus'])}."


def logged_once(data: dict, name: str) -> bool | None:
    """Whether `name`'s audit log holds every request sent exactly once: as many rows, and as many distinct
    request ids, as requests. None for runs that counted rows alone (a duplicate could hide a missing one)."""
    distinct = data.get("distinct_request_ids_logged", {}).get(name)
    if distinct is None:
        return None
    return data["decisions_logged"][name] == distinct == data["requests_sent"]


def decisions_line(data: dict, name: str) -> str:
    """One target's audit counts against requests sent."""
    rows, sent = data["decisions_logged"][name], data["requests_sent"]
    once = logged_once(data, name)
    if once is None:
        return f"- {name}: {rows} rows / {sent} requests sent (distinct request ids not counted in this run)"
    distinct = data["distinct_request_ids_logged"][name]
    verdict = "every decision logged exactly once" if once else "NOT every decision logged exactly once"
    return f"- {name}: {rows} rows, {distinct} distinct request ids / {sent} requests sent: {verdict}"


def target_lines(data: dict) -> list[str]:
    """The detector's own latency and issue 12's target at concurrency 8, met or not, from a run that measured the
    detector (none for the `refusal` matcher and for older runs)."""
    latency = data.get("detector_latency")
    row = next((r for r in data["load"] if r["concurrency"] == TARGET_CONCURRENCY), None)
    if latency is None or row is None:
        return []
    direct, proxy, alone = row["direct"]["p50_ms"], row["proxy"]["p50_ms"], latency["batch_1_p50_ms"]
    bound = direct + alone + TARGET_SLACK_MS
    precision = f", {latency['precision']}" if latency["precision"] else ""
    once = {True: "yes", False: "no", None: "not counted"}[logged_once(data, "proxy")]
    return [
        f"The detector alone (in the bench process, loaded as the proxy loads it{precision}; "
        f"{latency['repetitions']} repetitions): one check p50 {alone:.2f} ms, p95 {latency['batch_1_p95_ms']:.2f} "
        f"ms; 8 checks in one call p50 {latency['batch_8_p50_ms']:.2f} ms.",
        "",
        f"Target (issue 12): at concurrency {TARGET_CONCURRENCY}, proxy p50 {proxy:.2f} ms vs direct p50 "
        f"{direct:.2f} + detector batch-1 p50 {alone:.2f} + {TARGET_SLACK_MS:g} ms = {bound:.2f} ms: "
        f"{'met' if proxy <= bound else 'not met'}; every decision logged exactly once: {once}.",
        "",
    ]


def load_table(data: dict, src: str) -> list[str]:
    """The load section of one benchmark JSON."""
    has_base = bool(data.get("baseline_src"))
    head = (
        "| concurrency | direct req/s | direct p50 ms | direct p95 ms | upstream CPU ms/req | proxy req/s "
        "| proxy p50 ms | proxy p95 ms | proxy CPU ms/req | p50 ratio | p95 ratio | req/s ratio |"
    )
    rule = "|---|---|---|---|---|---|---|---|---|---|---|---|"
    if has_base:
        head += (
            " baseline req/s | baseline p50 ms | baseline p95 ms | baseline CPU ms/req | baseline p50 ratio "
            "| baseline req/s ratio |"
        )
        rule += "---|---|---|---|---|---|"
    lines = [
        f"## Load: audit `synchronous={data['audit_synchronous']}` (`{src}`)",
        "",
        f"Non-streaming chat completions; {data['requests_per_round']} requests per concurrency level and round, "
        f"{data['rounds']} rounds in rotating order, medians over rounds. {machine_sentence(data['machine'])}",
        "",
    ]
    if "batching" in data:  # recorded since the benchmark had the option; older runs have no line
        lines += [batching_line(data["batching"]), ""]
    lines += [head, rule]
    for r in data["load"]:
        d, p = r["direct"], r["proxy"]
        line = (
            f"| {r['concurrency']} | {d['rps']:.0f} | {d['p50_ms']:.2f} | {d['p95_ms']:.2f} | "
            f"{d['server_cpu_ms_per_request']:.2f} | {p['rps']:.0f} | {p['p50_ms']:.2f} | {p['p95_ms']:.2f} | "
            f"{p['server_cpu_ms_per_request']:.2f} | {r['overhead_p50_ratio']:.2f} | "
            f"{r['overhead_p95_ratio']:.2f} | {r['throughput_ratio']:.2f} |"
        )
        if has_base:
            b = r["baseline"]
            line += (
                f" {b['rps']:.0f} | {b['p50_ms']:.2f} | {b['p95_ms']:.2f} | {b['server_cpu_ms_per_request']:.2f} | "
                f"{r['overhead_p50_ratio_baseline']:.2f} | {r['throughput_ratio_baseline']:.2f} |"
            )
        lines.append(line)
    lines += ["", *target_lines(data)]
    lines += ["Decisions in the audit log after the proxies shut down, against requests sent:", ""]
    lines += [decisions_line(data, name) for name in data["decisions_logged"]]
    if has_base:
        lines += ["", BASELINE_NOTE.format(src=baseline_source(data["baseline_src"]))]
    return [*lines, ""]


def main(src: str = "bench/results/guard_load.json", out: str = "docs/results/guard.md", *extra: str) -> None:
    """Render the tables."""
    data = json.loads(Path(src).read_text())
    lines = [
        "# Guard proxy benchmark",
        "",
        f"Generated by `scripts/guard_report.py` from `{src}`"
        + "".join(f", `{e}`" for e in extra)
        + " (produced by `PYTHONPATH=src python bench/guard_load.py`; see its `--help`).",
        f"Upstream: {data['upstream']}. Proxy: {data['proxy']}. Detector: `{data['detector']}`.",
        "",
        "Ratios are proxy / direct in the same rounds: the proxy adds a second HTTP hop (its own server and an httpx",
        "client), a detector call on a worker thread and one SQLite transaction per decision, committed before the",
        "answer is sent. CPU ms/req is the user+system CPU time of the server process that answered (the upstream",
        "for direct calls, the proxy process alone otherwise) divided by requests: unlike latency it hardly moves",
        "with the other jobs on the machine, so it is the steadier before/after measure. The load client is one",
        "Python process (httpx); at concurrency 32 it saturates first, so the latency ratios there understate the",
        "proxy's cost and the CPU column is the one to read.",
        "",
    ]
    lines += load_table(data, src)
    for path in extra:
        lines += load_table(json.loads(Path(path).read_text()), path)
    sim = data["stream_simulation"]
    lines += [
        "## Streaming: check interval and hold-back vs time to first text and leaked characters",
        "",
        f"Simulated upstream: {sim['chunk_chars']} characters every {sim['chunk_delay_ms']} ms; window {sim['window']}"
        " characters; a marker detector that fires on one unsafe word (isolates the mechanism from detector quality).",
        "Leaked characters = characters of the unsafe sentence that reached the client before the cut.",
        "",
        "| check every (chars) | hold-back (chars) | time to first text ms | detector calls per 1k chars | leaked chars | partial unsafe word leaked | blocked |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in data["stream_tradeoff"]:
        lines.append(
            f"| {s['check_every']} | {s['holdback']} | {s['ttft_ms']:.1f} | {s['checks_per_1k_chars']:.1f} | "
            f"{s['leaked_chars']} | {'yes' if s['marker_leaked'] else 'no'} | {'yes' if s['blocked'] else 'no'} |"
        )
    lines += [
        "",
        "Reading: a larger check interval delays the first text (the client waits for the first check) and costs",
        "fewer detector calls; the hold-back keeps the last checked characters back so that the start of an unsafe",
        "phrase completed by the next chunk is not sent. " + leak_reading(data["stream_tradeoff"]),
        "",
    ]
    atomic_write_text(out, "\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
