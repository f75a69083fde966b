"""Labelled response sets: SecureBreak and GPTFuzz."""

from __future__ import annotations

import os
from pathlib import Path

from seawall.data.dataset import Dataset, register
from seawall.data.download import fetch
from seawall.data.labels import parse_label
from seawall.data.readers import read_table
from seawall.data.records import ResponseRecord
from seawall.data.taxonomy import hazard
from seawall.errors import DataError
from seawall.paths import cache_dir

SECUREBREAK_URL = "https://raw.githubusercontent.com/VIGNESH-KUMAR-KEMBU/SecureBreak/main/SecureBreak.csv"
SECUREBREAK_SHA256 = "5874a3e2adddf13eb385a05ef598f7a7010b4924eacfef0808b2dc54b1665387"
SECUREBREAK_COLUMNS = (
    "Question",
    "Behavior",
    "Category",
    "Question_Source",
    "Response",
    "LLMs",
    "Source_LLM",
    "Noise",
    "Human",
)


def securebreak_file(root: Path, url: str | None = None) -> Path:
    """The SecureBreak CSV in the data folder, or (with `url`, or when absent) a verified cached download."""
    local = root / "responses" / "securebreak" / "SecureBreak.csv"
    if url is None and local.is_file():
        return local
    url = url or os.environ.get("SEAWALL_SECUREBREAK_URL", SECUREBREAK_URL)
    return fetch(url, SECUREBREAK_SHA256, cache_dir("data") / "SecureBreak.csv")


@register(
    "securebreak",
    kind="responses",
    path="responses/securebreak/SecureBreak.csv",
    licence="CC BY 4.0",
    description="3,059 human-labelled responses of 7 small LLMs to the 100 JBB harmful behaviours",
)
def load_securebreak(
    root: Path, split: str | None, url: str | None = None, path: str | Path | None = None
) -> Dataset:
    """SecureBreak: `Human` 1 = unsafe; invalid bytes repaired and counted; ids are sb-<data row>."""
    file = Path(path) if path else securebreak_file(root, url)
    rows, report = read_table(file, required=SECUREBREAK_COLUMNS)
    records = []
    for index, row in enumerate(rows, start=1):
        where = f"{file}, row {row['__line__']}, column Human"
        label = parse_label(row["Human"], where)
        records.append(
            ResponseRecord(
                id=f"sb-{index:05d}",
                prompt=row["Question"],
                response=row["Response"],
                label=label,
                category=row["Category"],
                source="securebreak",
                generator=row["LLMs"],
                annotator_labels={"human": label},
                metadata={
                    "behavior": row["Behavior"],
                    "question_source": row["Question_Source"],
                    "source_llm": row["Source_LLM"],
                    "noise": float(row["Noise"]) if row["Noise"] else None,
                    "hazard": hazard("securebreak", row["Category"]),
                },
            )
        )
    return Dataset("securebreak", records, report)


@register(
    "gptfuzz",
    kind="responses",
    path="responses/gptfuzz/train.csv",
    licence="MIT",
    description="6,160 manually labelled responses to jailbreak-templated versions of 100 harmful questions",
)
def load_gptfuzz(root: Path, split: str | None) -> Dataset:
    """GPTFuzz: `label` 1 = the response fulfils the harmful request; prompts resolved from question_list.csv."""
    folder = root / "responses" / "gptfuzz"
    questions, _ = read_table(folder / "question_list.csv", required=("index", "text"))
    by_index = {q["index"].strip(): q["text"] for q in questions}
    rows, report = read_table(folder / "train.csv", required=("question", "Response", "label"))
    records = []
    for index, row in enumerate(rows, start=1):
        key = row["question"].strip()
        if key not in by_index:
            raise DataError(
                f"{folder / 'train.csv'}, row {row['__line__']}, column question: id {key!r} not in question_list.csv"
            )
        label = parse_label(row["label"], f"{folder / 'train.csv'}, row {row['__line__']}, column label")
        records.append(
            ResponseRecord(
                id=f"gf-{index:05d}",
                prompt=by_index[key],
                response=row["Response"],
                label=label,
                source="gptfuzz",
                annotator_labels={"human": label},
                metadata={"question_index": int(key)},
            )
        )
    return Dataset("gptfuzz", records, report)
