"""Single texts with policy-category flags: the OpenAI moderation evaluation set."""

from __future__ import annotations

from pathlib import Path

from seawall.data.dataset import Dataset, register
from seawall.data.readers import read_jsonl
from seawall.data.records import Label, ResponseRecord
from seawall.data.sources.common import HTML_ENTITIES, unescape_html
from seawall.data.taxonomy import hazard
from seawall.errors import DataError

# The eight flags, most specific first: a text's category is its first positive flag in this order.
MODERATION_FLAGS = ("S3", "SH", "H2", "V2", "HR", "H", "V", "S")
Flags = dict[str, int | None]


def moderation_label(flags: Flags) -> Label:
    """Unsafe if any flag is 1; safe only if all eight flags are known 0; otherwise unknown (a missing key is
    unknown, never 0)."""
    if any(flags.get(code) == 1 for code in MODERATION_FLAGS):
        return "unsafe"
    if all(flags.get(code) == 0 for code in MODERATION_FLAGS):
        return "safe"
    return "unknown"


def _flags(row: dict, where: str) -> Flags:
    flags: Flags = {}
    for code in MODERATION_FLAGS:
        value = row.get(code)
        if value is not None and value not in (0, 1):
            raise DataError(f"{where}, field {code}: {value!r} is not 0, 1 or absent")
        flags[code] = None if value is None else int(value)
    return flags


def _merge(first: Flags, second: Flags) -> Flags:
    """Two annotations of one text: a flag is 1 if either says 1, 0 if either knows it is 0, else unknown."""
    merged: Flags = {}
    for code in MODERATION_FLAGS:
        values = {first[code], second[code]} - {None}
        merged[code] = max(values) if values else None
    return merged


@register(
    "openai-moderation",
    kind="responses",
    path="texts/openai_moderation/samples-1680.jsonl.gz",
    licence="MIT",
    description="1,665 texts with 8 moderation flags (OpenAI): 515 unsafe, 337 safe, 813 unknown; text as response",
)
def load_openai_moderation(root: Path, split: str | None) -> Dataset:
    """The moderation set: each text is a response with an empty prompt; label from the flags (`moderation_label`),
    category its most specific positive flag; repeated texts merged (flags combined) and counted."""
    file = root / "texts/openai_moderation/samples-1680.jsonl.gz"
    rows, report = read_jsonl(file, ("prompt",))
    texts: dict[str, tuple[int, Flags]] = {}
    for row in rows:
        where = f"{file}, line {row['__line__']}"
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise DataError(f"{where}, field prompt: empty text")
        text, unescaped = unescape_html(row["prompt"])
        text = text.strip()
        flags = _flags(row, where)
        if text in texts:
            line, earlier = texts[text]
            merged = _merge(earlier, flags)
            report.skipped["repeated text (flags merged into its first line)"] += 1
            if any(0 in {earlier[c], flags[c]} and 1 in {earlier[c], flags[c]} for c in MODERATION_FLAGS):
                report.add_repair({"repeated text whose copies disagree on a flag (1 wins)"})
            texts[text] = (line, merged)
            continue
        report.add_repair({HTML_ENTITIES} if unescaped else set())
        texts[text] = (row["__line__"], flags)
    records = []
    for text, (line, flags) in texts.items():
        label = moderation_label(flags)
        category = next((code for code in MODERATION_FLAGS if flags[code] == 1), None)
        records.append(
            ResponseRecord(
                id=f"mod-{line:04d}",
                prompt="",
                response=text,
                label=label,
                category=category,
                source="openai-moderation",
                annotator_labels={"human": label},
                metadata={"flags": flags, "hazard": hazard("openai-moderation", category)},
            )
        )
    return Dataset("openai-moderation", records, report)
