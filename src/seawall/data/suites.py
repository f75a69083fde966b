"""The evaluation prompt sets, declared by name, and their fixed seeded samples."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from seawall.data.dataset import load_records
from seawall.data.records import PromptRecord, TaskExample
from seawall.data.tasks import TASKS


@dataclass(frozen=True)
class Suite:
    """A named evaluation set: which dataset (and split) it reads, and which records it keeps."""

    name: str
    dataset: str
    split: str | None = None
    keep: Callable[[PromptRecord], bool] = lambda r: True


SAFETY_SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        # Standard behaviours only: contextual ones carry long documents, copyright ones measure memorisation.
        Suite(
            "harmbench-test",
            "harmbench",
            "test",
            lambda r: r.harmful and r.metadata.get("FunctionalCategory", "standard") == "standard",
        ),
        Suite("strongreject", "strongreject", None, lambda r: r.harmful),
        Suite("jbb-harmful", "jbb-harmful", None, lambda r: r.harmful),
        Suite("simplesafetytests", "simplesafetytests", None, lambda r: r.harmful),
    )
}
OVERREFUSAL_SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("xstest-safe", "xstest", None, lambda r: not r.harmful),
        Suite("jbb-benign", "jbb-benign", None, lambda r: not r.harmful),
        Suite("coconot-contrast", "coconot-contrast", None, lambda r: not r.harmful),
        # The held-out half of CyberSecEval's false-refusal prompts; the lab's borderline data reads the other half.
        Suite("cyberseceval-frr-heldout", "cyberseceval-frr", "test", lambda r: not r.harmful),
    )
}
TASK_TEST_SPLIT = "test"


def suite_records(
    suite: Suite, data_dir: str | None = None, load: Callable = load_records
) -> list[PromptRecord]:
    """Every record of `suite`."""
    return [r for r in load(suite.dataset, data_dir=data_dir, split=suite.split) if suite.keep(r)]


def seeded_sample(items: Sequence, n: int | None, seed: int, key: Callable = lambda r: r.id) -> list:
    """A fixed sample of `n` items (all when n is None or larger), independent of input order."""
    ordered = sorted(items, key=key)
    if n is None or n >= len(ordered):
        return ordered
    return sorted(random.Random(seed).sample(ordered, n), key=key)


def sample_prompts(
    suites: dict[str, Suite],
    n_per_suite: int | None,
    seed: int,
    data_dir: str | None = None,
    load: Callable = load_records,
) -> list[tuple[str, PromptRecord]]:
    """(suite name, record) pairs: a seeded sample of each suite."""
    return [
        (name, record)
        for name, suite in suites.items()
        for record in seeded_sample(suite_records(suite, data_dir, load), n_per_suite, seed)
    ]


def task_test_examples(
    task: str, n: int | None, seed: int, data_dir: str | None = None, load: Callable = load_records
) -> list[TaskExample]:
    """A seeded sample of a task's held-out split."""
    return seeded_sample(load(task, data_dir=data_dir, split=TASK_TEST_SPLIT), n, seed)


def evaluation_prompts(
    data_dir: str | None = None, load: Callable = load_records, tasks: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Every prompt any evaluation may use (whole suites, not samples): what training must stay clear of."""
    pool = {
        name: [r.prompt for r in suite_records(suite, data_dir, load)]
        for name, suite in {**SAFETY_SUITES, **OVERREFUSAL_SUITES}.items()
    }
    for task in tasks:
        pool[f"{task}-test"] = [
            TASKS[task].prompt(x) for x in load(task, data_dir=data_dir, split=TASK_TEST_SPLIT)
        ]
    return pool
