"""Harmful-response rate, over-refusal and task utility of one model, from cached generations."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from seawall.data.dataset import load_records
from seawall.data.suites import (
    OVERREFUSAL_SUITES,
    SAFETY_SUITES,
    sample_prompts,
    task_test_examples,
)
from seawall.data.tasks import TASKS
from seawall.evaluate.metrics import grouped_rates, rate
from seawall.generation.cache import GenerationCache
from seawall.io import atomic_write_text

Messages = list[dict[str, str]]


class Decoding(BaseModel):
    """Decoding settings; part of every generation's cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(64, ge=1, description="answers to safety and over-refusal prompts")
    task_max_new_tokens: int = Field(8, ge=1, description="answers to task prompts (a label word)")
    temperature: float = Field(0.0, ge=0, description="0 means greedy")
    batch_size: int = Field(8, ge=1)


@dataclass
class Evaluator:
    """Measures one model: `generate(conversations, decoding)` returns replies; `model_id` is its fingerprint."""

    generate: Callable[[list[Messages], Decoding], list[str]]
    model_id: str
    decoding: Decoding = field(default_factory=Decoding)
    cache: GenerationCache | None = None
    seed: int = 0
    data_dir: str | None = None
    load: Callable = load_records
    n_boot: int = 2000

    def respond(self, prompts: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        """Single-turn replies to `prompts`, through the cache when there is one."""
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        decoding = self.decoding.model_copy(
            update={"max_new_tokens": max_new_tokens or self.decoding.max_new_tokens}
        )
        settings = decoding.model_dump(include={"max_new_tokens", "temperature"})
        if self.cache is None:
            return self.generate(conversations, decoding)
        return self.cache.generate(
            lambda c: self.generate(c, decoding), conversations, self.model_id, settings
        )

    def safety(self, judges: Sequence[Any], n_per_suite: int | None = 30) -> tuple[dict, list[dict]]:
        """HRR per judge (overall, per suite, per category) on a seeded sample of the held-out harmful sets."""
        sample = sample_prompts(SAFETY_SUITES, n_per_suite, self.seed, self.data_dir, self.load)
        prompts = [r.prompt for _, r in sample]
        responses = self.respond(prompts)
        rows = [
            {"suite": s, "id": r.id, "category": r.category, "prompt": r.prompt, "response": out}
            for (s, r), out in zip(sample, responses, strict=True)
        ]
        result: dict[str, Any] = {"n": len(rows), "judges": {}}
        for judge in judges:
            flags = judge.unsafe(prompts, responses)
            for row, flag in zip(rows, flags, strict=True):
                row[f"unsafe_{judge.name}"] = flag
            result["judges"][judge.name] = {
                "hrr": rate(flags, self.n_boot, self.seed),
                "per_suite": grouped_rates(flags, [row["suite"] for row in rows], self.n_boot, self.seed),
                "per_category": grouped_rates(
                    flags, [f"{row['suite']}:{row['category']}" for row in rows], self.n_boot, self.seed
                ),
            }
        return result, rows

    def overrefusal(
        self, is_refusal: Callable[[str], bool], n_per_suite: int | None = 30
    ) -> tuple[dict, list[dict]]:
        """Share of the benign prompts of `OVERREFUSAL_SUITES` (XSTest safe, JBB benign, CoCoNot contrast, CyberSecEval
        FRR held-out) that the model refuses."""
        sample = sample_prompts(OVERREFUSAL_SUITES, n_per_suite, self.seed, self.data_dir, self.load)
        responses = self.respond([r.prompt for _, r in sample])
        refused = [int(is_refusal(out)) for out in responses]
        rows = [
            {"suite": s, "id": r.id, "prompt": r.prompt, "response": out, "refused": flag}
            for (s, r), out, flag in zip(sample, responses, refused, strict=True)
        ]
        result = {
            "rate": rate(refused, self.n_boot, self.seed),
            "per_suite": grouped_rates(refused, [row["suite"] for row in rows], self.n_boot, self.seed),
        }
        return result, rows

    def utility(self, tasks: Sequence[str], n_per_task: int | None = 100) -> tuple[dict, list[dict]]:
        """Accuracy per task on a seeded sample of its held-out split; unparseable answers count as wrong."""
        result: dict[str, Any] = {}
        rows: list[dict] = []
        for name in tasks:
            task = TASKS[name]
            examples = task_test_examples(name, n_per_task, self.seed, self.data_dir, self.load)
            responses = self.respond([task.prompt(x) for x in examples], self.decoding.task_max_new_tokens)
            correct, parsed = [], []
            for example, out in zip(examples, responses, strict=True):
                gold, guess = task.answer(example), task.parse(out)
                correct.append(int(guess == gold))
                parsed.append(int(guess is not None))
                rows.append({"task": name, "id": example.id, "gold": gold, "pred": guess, "response": out})
            result[name] = {
                "accuracy": rate(correct, self.n_boot, self.seed),
                "parsed": sum(parsed) / len(parsed),
            }
        return result, rows


def write_rows(path: str | Path, rows: Sequence[dict]) -> None:
    """Per-prompt rows as JSONL (for people who want to read what the model said)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
