"""Few-shot prompt sets for layer selection and calibration, recorded so evaluation can prove they are disjoint."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from seawall.data.records import normalize_text
from seawall.errors import DataError

# Varied refusals, so that calibration teaches "decline" rather than one memorised string.
REFUSAL_TEMPLATES: tuple[str, ...] = (
    "I can't help with that.",
    "I'm sorry, but I can't assist with that request.",
    "I won't help with this, because it could cause serious harm.",
    "Sorry, I can't provide that. If you're in danger, please contact local emergency services.",
    "I'm not able to help with that request.",
    "I must decline: this could be used to hurt people.",
    "I can't do that, but I'm happy to help with something else.",
    "That's not something I can help with, as it may be dangerous or illegal.",
)


@dataclass(frozen=True)
class Shots:
    """Harmful and benign prompts for one step, with their ids and where they came from."""

    harmful: list[str]
    benign: list[str]
    harmful_ids: list[str] = field(default_factory=list)
    benign_ids: list[str] = field(default_factory=list)
    sources: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_lists(cls, harmful: Iterable[str], benign: Iterable[str], source: str = "inline") -> Shots:
        """Shots from plain prompt lists (ids are content hashes)."""
        harmful, benign = list(harmful), list(benign)
        return cls(
            harmful,
            benign,
            [prompt_id(p) for p in harmful],
            [prompt_id(p) for p in benign],
            {"harmful": source, "benign": source},
        )

    def record(self) -> dict[str, Any]:
        """A JSON-able record for the manifest: sources, ids and normalised-text hashes of every prompt."""
        return {
            "sources": self.sources,
            "harmful_ids": self.harmful_ids,
            "benign_ids": self.benign_ids,
            "harmful_hashes": [prompt_id(p) for p in self.harmful],
            "benign_hashes": [prompt_id(p) for p in self.benign],
        }


def prompt_id(prompt: str) -> str:
    """A short hash of the normalised prompt text, stable across datasets (for overlap checks)."""
    return hashlib.sha256(normalize_text(prompt).encode()).hexdigest()[:16]


def refusal_targets(n: int, seed: int = 0) -> list[str]:
    """`n` refusal strings drawn in a seeded, balanced order from REFUSAL_TEMPLATES."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        block = list(REFUSAL_TEMPLATES)
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def _sample(
    name: str, split: str | None, n: int, seed: int, data_dir: Any, harmful: bool
) -> tuple[list, list]:
    from seawall.data import load

    dataset = load(name, data_dir=data_dir, split=split) if split else load(name, data_dir=data_dir)
    records = [r for r in dataset.records if getattr(r, "harmful", harmful) == harmful and r.prompt.strip()]
    if len(records) < n:
        raise DataError(f"dataset {name!r} (split {split}) has {len(records)} usable prompts, {n} requested")
    rng = random.Random(seed)
    chosen = rng.sample(records, n)
    return [r.prompt for r in chosen], [f"{name}:{r.id}" for r in chosen]


def load_shots(
    harmful: str = "harmbench",
    benign: str = "alpaca",
    n_harmful: int = 32,
    n_benign: int = 32,
    harmful_split: str | None = "val",
    benign_split: str | None = None,
    seed: int = 0,
    data_dir: Any = None,
    exclude: Iterable[str] = (),
) -> Shots:
    """Sample few-shot prompts from the shared sets (seawall.data), never any prompt in `exclude` (e.g. eval sets)."""
    excluded = {normalize_text(p) for p in exclude}
    h_prompts, h_ids = _sample(harmful, harmful_split, n_harmful, seed, data_dir, True)
    b_prompts, b_ids = (
        _sample(benign, benign_split, n_benign, seed + 1, data_dir, False) if n_benign else ([], [])
    )
    clash = [p for p in h_prompts + b_prompts if normalize_text(p) in excluded]
    if clash:
        raise DataError(f"few-shot prompt also in an excluded (evaluation) set: {clash[0][:80]!r}")
    return Shots(
        h_prompts,
        b_prompts,
        h_ids,
        b_ids,
        {
            "harmful": {"name": harmful, "split": harmful_split, "n": n_harmful, "seed": seed},
            "benign": {"name": benign, "split": benign_split, "n": n_benign, "seed": seed + 1},
        },
    )
