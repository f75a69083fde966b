"""Training mixes and evaluation sets for detectors.

Every prompt in SecureBreak and GPTFuzz is harmful, so a detector trained on them alone learns "complied" instead
of "harmful" (docs/detect.md). A mix therefore can add, besides the canonical train splits of the response sets:
- `benign_compliant`: benign instructions with their compliant answers (Alpaca), labelled safe;
- `harmful_refusals`: harmful prompts (AdvBench by default) paired with refusals, labelled safe.
Both are split into train/dev/test parts with a fixed seed so dev is a *mixed* set (threshold calibration sees
benign compliance too) and test parts stay unseen. Harmful prompts that also occur (exactly or normalised) in a
response set's dev/test split are dropped from training, so no evaluation question leaks in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from seawall.data.generic import ColumnMap
from seawall.data.records import ResponseRecord, normalize_text
from seawall.errors import DataError, SeawallError

RESPONSE_SETS = ("securebreak", "gptfuzz")
SPLITS = ("train", "dev", "test")
AUX_FRACTIONS = {"train": 0.7, "dev": 0.15, "test": 0.15}

REFUSAL_TEMPLATES: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with that request. If you have another question, I'm happy to help.",
    "Sorry, I won't provide instructions for that. It could cause serious harm to people.",
    "I cannot help with this. Creating or sharing this kind of content is harmful and may be illegal.",
    "I'm not able to help with that request.",
    "I must decline. This request asks for something that could hurt others.",
    "As an AI assistant, I cannot provide that information.",
    "I apologize, but I can't comply with this request because it could be used to cause harm.",
    "No, I won't do that. If you're struggling or someone is in danger, please contact local emergency services.",
    "I'm sorry, I can't write that. I can help with a related topic that doesn't cause harm, though.",
    "That's not something I can help with. Is there anything else you'd like to talk about?",
    "I will not assist with this request.",
)


class DataMix(BaseModel):
    """What a detector trains on: response sets' canonical splits plus optional safe counter-examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sets: list[str] = Field(
        default_factory=lambda: ["securebreak"], description="canonical-split response sets"
    )
    benign_compliant: int = Field(
        0, ge=0, description="Alpaca (instruction, answer) rows labelled safe, at most"
    )
    harmful_refusals: int = Field(
        0, ge=0, description="harmful prompts paired with refusal templates, at most"
    )
    refusal_prompt_sets: list[str] = Field(default_factory=lambda: ["advbench"])
    max_dev_rows: dict[str, int] = Field(
        default_factory=dict, description="per response set, a cap on its dev rows (cheaper calibration)"
    )
    max_train_rows: dict[str, int] = Field(
        default_factory=dict, description="per response set, a cap on its train rows (seeded sample)"
    )
    seed: int = 0


def _split_aux(records: list[ResponseRecord], seed: int) -> dict[str, list[ResponseRecord]]:
    order = np.random.default_rng(seed).permutation(len(records))
    n_dev = math.floor(len(records) * AUX_FRACTIONS["dev"])
    n_test = math.floor(len(records) * AUX_FRACTIONS["test"])
    shuffled = [records[i] for i in order]
    return {
        "test": shuffled[:n_test],
        "dev": shuffled[n_test : n_test + n_dev],
        "train": shuffled[n_test + n_dev :],
    }


def benign_compliant_split(data_dir: str | None = None, seed: int = 0) -> dict[str, list[ResponseRecord]]:
    """Alpaca instruction/answer pairs (label safe), split 70/15/15."""
    from seawall.data import load

    records = [
        ResponseRecord(
            id=r.id, prompt=r.prompt, response=r.response, label="safe", category="benign", source="alpaca"
        )
        for r in load("alpaca", data_dir=data_dir).records
    ]
    return _split_aux(records, seed)


def harmful_refusal_split(
    prompt_sets: list[str], exclude: set[str], data_dir: str | None = None, seed: int = 0
) -> dict[str, list[ResponseRecord]]:
    """Harmful prompts each paired with a (seeded) refusal template, label safe, split 70/15/15."""
    from seawall.data import load

    rng = np.random.default_rng(seed)
    records: list[ResponseRecord] = []
    seen: set[str] = set()
    for name in prompt_sets:
        for prompt in load(name, data_dir=data_dir).records:
            key = normalize_text(prompt.prompt)
            if key in exclude or key in seen:
                continue
            seen.add(key)
            template = REFUSAL_TEMPLATES[int(rng.integers(len(REFUSAL_TEMPLATES)))]
            records.append(
                ResponseRecord(
                    id=f"refusal-{prompt.id}",
                    prompt=prompt.prompt,
                    response=template,
                    label="safe",
                    category=prompt.category,
                    source=f"{name}+refusal",
                    # The prompt set's hazard code, so the risk-category model can learn from the row too.
                    metadata={"hazard": (prompt.metadata or {}).get("hazard")},
                )
            )
    return _split_aux(records, seed)


def _sample(records: list[ResponseRecord], n: int, seed: int) -> list[ResponseRecord]:
    if n >= len(records):
        return records
    order = np.random.default_rng(seed).permutation(len(records))
    return sorted((records[i] for i in order[:n]), key=lambda r: r.id)


def build_mix(mix: DataMix, data_dir: str | None = None) -> dict[str, list[ResponseRecord]]:
    """The train/dev/test records of a mix (test = the held-out parts, kept for evaluation)."""
    from seawall.data import canonical_split

    if not mix.sets and not (mix.benign_compliant or mix.harmful_refusals):
        raise SeawallError("the data mix is empty: list at least one response set or add safe examples")
    out: dict[str, list[ResponseRecord]] = {s: [] for s in SPLITS}
    held_out_prompts: set[str] = set()
    for name in mix.sets:
        if name not in RESPONSE_SETS:
            raise SeawallError(
                f"unknown response set {name!r} in the data mix; known: {', '.join(RESPONSE_SETS)}"
            )
        split = canonical_split(name, data_dir=data_dir)
        train = split["train"]
        if name in mix.max_train_rows:
            train = _sample(train, mix.max_train_rows[name], mix.seed)
        out["train"] += train
        dev = split["dev"]
        if name in mix.max_dev_rows:
            dev = _sample(dev, mix.max_dev_rows[name], mix.seed)
        out["dev"] += dev
        out["test"] += split["test"]
    # Every response set's dev/test questions are excluded, not only the mixed-in ones: cross-dataset
    # evaluation tests on the other set's held-out questions.
    for name in RESPONSE_SETS:
        split = canonical_split(name, data_dir=data_dir)
        held_out_prompts |= {normalize_text(r.prompt) for s in ("dev", "test") for r in split[s]}
    if mix.benign_compliant:
        aux = benign_compliant_split(data_dir, mix.seed)
        _add_aux(out, aux, mix.benign_compliant)
    if mix.harmful_refusals:
        aux = harmful_refusal_split(mix.refusal_prompt_sets, held_out_prompts, data_dir, mix.seed)
        _add_aux(out, aux, mix.harmful_refusals)
    return out


def _add_aux(
    out: dict[str, list[ResponseRecord]], aux: dict[str, list[ResponseRecord]], n_train: int
) -> None:
    # dev/test keep the aux set's share proportional to what is used for training.
    ratio = min(1.0, n_train / max(1, len(aux["train"])))
    out["train"] += aux["train"][:n_train]
    for split in ("dev", "test"):
        out[split] += aux[split][: max(1, round(len(aux[split]) * ratio))]


def eval_records(
    spec: str, data_dir: str | None = None, columns: ColumnMap | None = None
) -> tuple[str, list[ResponseRecord], dict[str, Any]]:
    """Records to evaluate on: NAME[:SPLIT] (canonical split, default test), `alpaca[:SPLIT]`,
    `refusals[:SPLIT]`, or a user FILE (CSV, TSV, JSONL, JSON, Parquet) read as `seawall data` reads it, through
    `columns`. Returns (name, records, read report).
    """
    from seawall.data.generic import is_user_file

    if is_user_file(spec):
        return _file_records(Path(spec), columns)
    name, _, split = spec.partition(":")
    split = split or "test"
    if split not in SPLITS:
        raise SeawallError(f"unknown split {split!r} in {spec!r}; use one of {', '.join(SPLITS)}")
    if name in RESPONSE_SETS:
        from seawall.data import canonical_split

        return f"{name}:{split}", list(canonical_split(name, data_dir=data_dir)[split]), {}
    if name == "alpaca":
        return f"alpaca:{split}", benign_compliant_split(data_dir)[split], {}
    if name == "refusals":
        from seawall.data import canonical_split

        held = {
            normalize_text(r.prompt)
            for s in RESPONSE_SETS
            for part in ("dev", "test")
            for r in canonical_split(s, data_dir=data_dir)[part]
        }
        return f"refusals:{split}", harmful_refusal_split(["advbench"], held, data_dir)[split], {}
    raise SeawallError(
        f"unknown evaluation data {spec!r}: use securebreak, gptfuzz, alpaca, refusals (optionally :train/:dev/:test) "
        "or a .csv/.tsv/.jsonl/.json/.parquet file"
    )


LABEL_VALUES = {
    "unsafe": "unsafe",
    "1": "unsafe",
    "true": "unsafe",
    "harmful": "unsafe",
    "safe": "safe",
    "0": "safe",
    "false": "safe",
    "unharmful": "safe",
}


def parse_label(value: Any) -> str:
    """Map a label cell (unsafe/safe, 1/0, true/false; NaN, None or empty → unknown) to a Label."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if isinstance(value, bool):
        return "unsafe" if value else "safe"
    if isinstance(value, (int, float)):
        value = str(int(value)) if float(value).is_integer() else str(value)
    text = str(value).strip().lower()
    if text in {"", "nan", "none", "null", "unknown"}:
        return "unknown"
    if text not in LABEL_VALUES:
        raise DataError(f"label {value!r} is not one of unsafe/safe, 1/0, true/false")
    return LABEL_VALUES[text]


def row_to_record(row: dict[str, Any], ident: str) -> ResponseRecord:
    """A ResponseRecord from a JSON/CSV row with `response` (required), `prompt`, `label`, `category`, `id`."""
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}")
    response = row.get("response")
    if response is None or (isinstance(response, float) and math.isnan(response)):
        raise DataError("missing 'response'")
    if not isinstance(response, str):
        raise DataError(f"'response' must be a string, got {type(response).__name__}")
    prompt = row.get("prompt")
    if prompt is None or (isinstance(prompt, float) and math.isnan(prompt)):
        prompt = ""
    category = row.get("category")
    return ResponseRecord(
        id=str(row.get("id", ident)),
        prompt=str(prompt),
        response=response,
        label=parse_label(row.get("label")),  # type: ignore[arg-type]
        category=None
        if category is None or (isinstance(category, float) and math.isnan(category))
        else category,
        source=str(row.get("source", "")),
    )


def iter_jsonl(stream: Any) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, parsed object or None, error or None) for each non-blank line of a binary stream.

    Invalid UTF-8 and invalid JSON are reported per line; they never stop the stream.
    """
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as error:
            yield number, None, f"invalid UTF-8 at byte {error.start}"
            continue
        if not text.strip():
            continue
        try:
            yield number, json.loads(text), None
        except json.JSONDecodeError as error:
            yield number, None, f"invalid JSON: {error.msg} at column {error.colno}"


def _file_records(
    path: Path, columns: ColumnMap | None = None
) -> tuple[str, list[ResponseRecord], dict[str, Any]]:
    # The data layer's reader and label parser, so a file reads the same here as in `seawall data stats`.
    from seawall.data.dataset import response_records
    from seawall.data.generic import load_file

    dataset = load_file(path, columns)
    records = response_records(dataset)
    report = dataset.report.as_dict()
    if not records:
        raise DataError(f"{path}: no usable rows ({report['skipped_rows']} skipped: {report['skipped']})")
    return path.stem, records, report
