"""Prompt hygiene: no prompt used to train or recalibrate a model may appear among the evaluation prompts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from seawall.data.records import normalize_text
from seawall.errors import SeawallError


def normalized_set(prompts: Iterable[str]) -> set[str]:
    """Normalised forms of `prompts` (what training builders exclude up front)."""
    return {normalize_text(p) for p in prompts}


def find_overlap(
    train: Mapping[str, Iterable[str]], evaluation: Mapping[str, Iterable[str]]
) -> list[tuple[str, str, str, str]]:
    """(train set, eval set, kind, prompt) for every prompt found in both, exactly or after normalisation."""
    exact: dict[str, str] = {}
    normal: dict[str, str] = {}
    for name, prompts in evaluation.items():
        for prompt in prompts:
            exact.setdefault(prompt, name)
            normal.setdefault(normalize_text(prompt), name)
    hits = []
    for name, prompts in train.items():
        for prompt in prompts:
            if prompt in exact:
                hits.append((name, exact[prompt], "exact", prompt))
            elif (key := normalize_text(prompt)) in normal:
                hits.append((name, normal[key], "normalised", prompt))
    return hits


def check_no_overlap(
    train: Mapping[str, Iterable[str]], evaluation: Mapping[str, Iterable[str]], show: int = 5
) -> None:
    """Refuse to proceed when training and evaluation prompts overlap; the message names the prompts."""
    hits = find_overlap(train, evaluation)
    if hits:
        listed = "; ".join(f"[{t} ~ {e}, {kind}] {p[:80]!r}" for t, e, kind, p in hits[:show])
        raise SeawallError(
            f"prompt hygiene: {len(hits)} training prompt(s) also appear in evaluation sets: {listed}"
            + (f" … and {len(hits) - show} more" if len(hits) > show else "")
            + ". Remove them from the training data or from the evaluation sample."
        )
