"""The machine's load around a benchmark: recorded by every bench, read back by the pages that report them.

A bench records the 1-, 5- and 15-minute load averages before it starts and after it ends. Before, nothing of the
bench runs yet, so a 1-minute load above BUSY_LOAD means another job shared the CPUs: the timings are upper bounds.
After, the 1-minute average still holds the bench's own work of the last minute (its threads and processes keep up
to every CPU busy), so only a 1-minute load above the CPU count says that other work competed with it by the end.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# A 1-minute load average above this at the start means another job shared the CPU: the timings are upper bounds.
BUSY_LOAD = 0.5

Load = float | Sequence[float]  # the 1-, 5- and 15-minute averages, or (older records) the 1-minute one alone


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def warn_if_busy(load: list[float], what: str = "benchmark") -> bool:
    """Print a loud warning on stderr when the 1-minute load is above BUSY_LOAD; returns whether it was."""
    busy = load[0] > BUSY_LOAD
    if busy:
        line = "!" * 100
        print(
            f"{line}\n!! WARNING: 1-minute load average {load[0]} > {BUSY_LOAD} before the {what} started: another "
            f"job shares the CPU.\n!! Timings are upper bounds; ratios between interleaved variants hold better. "
            f"Rerun on an idle machine.\n{line}",
            file=sys.stderr,
        )
    return busy


def _one_minute(load: Load) -> float:
    return float(load) if isinstance(load, int | float) else float(load[0])


def load_sentence(before: Load | None, after: Load | None, cpus: int | None) -> str:
    """How loaded the machine was around a bench, from its recorded load averages, in words a results page uses:
    busy at the start, idle at the start but busy by the end, or idle. None: not recorded (for `cpus`: the end
    cannot be judged against the bench's own share then)."""
    if before is None:
        return "the load averages were not recorded"
    if _one_minute(before) > BUSY_LOAD:
        return f"the machine was busy at the start (load {before}): absolute numbers are upper bounds on time"
    if after is None:
        return f"idle at the start (load {before}; the load at the end was not recorded)"
    if cpus is None:
        return f"idle at the start (load {before}; {after} at the end, against a CPU count not recorded)"
    if _one_minute(after) > cpus:
        return f"idle at the start (load {before}) but busy by the end ({after}): read the ratios, not the absolutes"
    return f"an idle machine (load {before} before, {after} after)"
