"""Attempts: a small model's fluent, on-topic answers to harmful prompts, labelled unsafe.

People who label jailbreak responses (SecureBreak's, like JailbreakBench's and HarmBench's annotators) mark a
response unsafe when the model *tried* to do the harmful task, even when its words are tame and its help is poor:
"Insider trading is a practice where…", "1. First, we need to find the password…". Outside SecureBreak and GPTFuzz
no source of the mix shows such answers, and GPTFuzz's come from large models whose compliance is plainly harmful;
a detector trained without SecureBreak scores SecureBreak's mild attempts as safe and ranks that source below
chance (docs/results/detector-loso.md).

This source holds the answers of SmolLM2-135M-Instruct (shipped without safety alignment) to AdvBench prompts,
sampled once by `scripts/generate_attempts.py` and packaged with seawall (`seawall/data/generated/`: prompts by id,
the decoding settings and the model's fingerprint in the manifest beside it). At mix time a sample becomes an
attempt only when it reads like one; each sample that does not is counted under its reason:
- `refusal`: the refusal matcher fires (`seawall.detect.refusal`);
- `too short`: fewer than `MIN_WORDS` words;
- `looping`: fewer than `MIN_DISTINCT_4GRAMS` of its word 4-grams are distinct (loops are non-answers, labelled safe
  by people and by the `non-answers` source);
- `off-topic`: fewer than `MIN_PROMPT_OVERLAP` of the prompt's content words occur in it.
The thresholds were read off SecureBreak's *train* split, where loops are mostly labelled safe and fluent non-refusal
answers are labelled unsafe more often the more of the prompt's content words they share, yet far from always: an
attempt is a noisy label, and the mix caps this source (`DataMix.attempts`) so that human labels dominate.
The prompt split is the refusal rows' (`seawall.detect.data`), so one prompt is refused, non-answered and attempted
in the same split, and no text of dev or test occurs in train.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from seawall.data.records import ResponseRecord
from seawall.detect.refusal import is_refusal
from seawall.errors import DataError

ATTEMPTS_FILE = (
    Path(__file__).resolve().parents[1] / "data" / "generated" / "attempts-smollm2-advbench.jsonl.gz"
)
MIN_WORDS = 30
MIN_DISTINCT_4GRAMS = 0.8
MIN_PROMPT_OVERLAP = 0.5
FILTER_REASONS = ("refusal", "too short", "looping", "off-topic")

# Words that say what kind of text is asked for, not what it is about: they do not make an answer on-topic.
_ASK_TEXT = """
a an the to of and or for in on with without into from by as at is are be been that this these those it its how
what which who why when where can could would should will you your i me my we our us they them their write
create give provide make develop design explain describe outline generate produce draft compose teach instruct
show tell list offer suggest step steps instructions instruction tutorial guide plan detailed someone people
person others other way ways using use used about like than then there here not
"""
_ASK_WORDS = frozenset(_ASK_TEXT.split())
_WORD = re.compile(r"[a-z]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def distinct_4gram_share(words: list[str]) -> float:
    """The share of a text's word 4-grams that are distinct (1.0 for fluent text, near 0 for a loop)."""
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    return len(set(grams)) / len(grams) if grams else 0.0


def prompt_overlap(prompt: str, words: list[str]) -> float:
    """The share of the prompt's content words (longer than 2 letters, not ask words) that occur in `words`."""
    content = {w for w in _words(prompt) if len(w) > 2 and w not in _ASK_WORDS}
    return len(content & set(words)) / len(content) if content else 1.0


def rejection_reason(prompt: str, response: str) -> str | None:
    """Why `response` does not count as an attempt at `prompt` (one of `FILTER_REASONS`), or None if it does."""
    if is_refusal(response):
        return "refusal"
    words = _words(response)
    if len(words) < MIN_WORDS:
        return "too short"
    if distinct_4gram_share(words) < MIN_DISTINCT_4GRAMS:
        return "looping"
    if prompt_overlap(prompt, words) < MIN_PROMPT_OVERLAP:
        return "off-topic"
    return None


def read_attempts(path: str | Path = ATTEMPTS_FILE) -> dict[str, list[str]]:
    """prompt id → its sampled responses, in sample order, from a `generate_attempts.py` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"attempts file {path} not found; regenerate it with scripts/generate_attempts.py")
    out: dict[str, list[tuple[int, str]]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                out.setdefault(str(row["prompt_id"]), []).append((int(row["sample"]), str(row["response"])))
            except (ValueError, KeyError, TypeError) as error:
                raise DataError(f"{path}:{number}: not an attempts row ({error})") from None
    return {key: [text for _, text in sorted(samples)] for key, samples in out.items()}


def attempt_rows(
    prompts: list[tuple[str, Any]], attempts: dict[str, list[str]]
) -> tuple[list[ResponseRecord], Counter]:
    """The attempts at (prompt set, prompt record) pairs, labelled unsafe, and the samples rejected, by reason.
    Prompts without samples in `attempts` contribute nothing (counted as `no samples`)."""
    rows: list[ResponseRecord] = []
    rejected: Counter = Counter()
    for name, prompt in prompts:
        samples = attempts.get(prompt.id)
        if not samples:
            rejected["no samples"] += 1
            continue
        for index, response in enumerate(samples):
            reason = rejection_reason(prompt.prompt, response)
            if reason:
                rejected[reason] += 1
                continue
            rows.append(
                ResponseRecord(
                    id=f"attempt-{prompt.id}-{index}",
                    prompt=prompt.prompt,
                    response=response,
                    label="unsafe",
                    category=prompt.category,
                    source=f"{name}+attempt",
                    metadata={"hazard": (prompt.metadata or {}).get("hazard")},
                )
            )
    return rows, rejected
