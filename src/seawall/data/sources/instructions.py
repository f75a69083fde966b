"""Instruction data: benign requests with helpful answers, and harmful requests with safe answers."""

from __future__ import annotations

import re
from pathlib import Path

from seawall.data.dataset import Dataset, register
from seawall.data.readers import read_json_array, read_jsonl
from seawall.data.records import ResponseRecord
from seawall.errors import DataError


@register(
    "alpaca",
    kind="instructions",
    path="instructions/alpaca/alpaca_subset_2000.json",
    licence="CC BY-NC 4.0 (research only)",
    description="2,000 Alpaca instructions with answers: benign prompts, compliant answers, labelled safe",
)
def load_alpaca(root: Path, split: str | None) -> Dataset:
    """Alpaca subset: instruction (+ input) as the prompt, output as a safe response."""
    items, report = read_json_array(
        root / "instructions/alpaca/alpaca_subset_2000.json", ("instruction", "output")
    )
    records = []
    for index, item in enumerate(items, start=1):
        prompt = item["instruction"].strip()
        if item.get("input", "").strip():
            prompt = f"{prompt}\n\n{item['input'].strip()}"
        records.append(
            ResponseRecord(
                id=f"alpaca-{index:04d}",
                prompt=prompt,
                response=item["output"],
                label="safe",
                source="alpaca",
            )
        )
    return Dataset("alpaca", records, report)


@register(
    "safety-tuned-llamas",
    kind="instructions",
    path="instructions/safety_tuned_llamas/training/safety_only_data_Instructions.json",
    licence="CC BY-NC 4.0 (research only)",
    description="2,483 harmful requests with safe GPT-3.5 answers (refusals, corrections, advice), labelled safe",
)
def load_safety_tuned_llamas(root: Path, split: str | None) -> Dataset:
    """safety-tuned-llamas' safety data (Bianchi et al. 2024): the harmful instruction is the prompt, its answer a
    safe response; 4 instructions occur twice with different answers, kept (the split groups them)."""
    file = root / "instructions/safety_tuned_llamas/training/safety_only_data_Instructions.json"
    items, report = read_json_array(file, ("instruction", "input", "output"))
    records = []
    for index, item in enumerate(items, start=1):
        if not item["instruction"].strip() or not item["output"].strip():
            raise DataError(f"{file}, item {index - 1}: empty instruction or output")
        prompt = item["instruction"].strip()
        if item["input"].strip():
            prompt = f"{prompt}\n\n{item['input'].strip()}"
        records.append(
            ResponseRecord(
                id=f"stl-{index:04d}",
                prompt=prompt,
                response=item["output"].strip(),
                label="safe",
                source="safety-tuned-llamas",
            )
        )
    return Dataset("safety-tuned-llamas", records, report)


_TURN = re.compile(r"\n\n(Human|Assistant): ")


def first_exchange(dialogue: str) -> tuple[str, str] | None:
    """The first Human turn and the Assistant's reply to it in an HH-RLHF transcript, or None if absent."""
    parts = _TURN.split(dialogue)
    turns = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    if len(turns) < 2 or turns[0][0] != "Human" or turns[1][0] != "Assistant":
        return None
    return turns[0][1], turns[1][1]


@register(
    "hh-rlhf-harmless",
    kind="instructions",
    path="instructions/hh_rlhf/harmless-base/test.jsonl.gz",
    licence="MIT",
    description="2,312 HH-RLHF harmless-base dialogues: first human turn and the chosen reply (label unknown)",
)
def load_hh_rlhf_harmless(root: Path, split: str | None) -> Dataset:
    """HH-RLHF harmless-base: the first exchange of each `chosen` dialogue; the rejected reply is kept in metadata."""
    rows, report = read_jsonl(
        root / "instructions/hh_rlhf/harmless-base/test.jsonl.gz", ("chosen", "rejected")
    )
    records = []
    for index, row in enumerate(rows, start=1):
        chosen = first_exchange(row["chosen"])
        if chosen is None:
            report.skipped["no first human/assistant exchange"] += 1
            continue
        rejected = first_exchange(row["rejected"])
        records.append(
            ResponseRecord(
                id=f"hh-{index:04d}",
                prompt=chosen[0],
                response=chosen[1],
                label="unknown",
                source="hh-rlhf-harmless",
                metadata={"rejected": rejected[1] if rejected else None},
            )
        )
    return Dataset("hh-rlhf-harmless", records, report)
