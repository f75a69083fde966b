"""Labelled response sets: SecureBreak, GPTFuzz, DiaSafety, ToxiChat and SafeText."""

from __future__ import annotations

import os
import re
from pathlib import Path

from seawall.data.dataset import Dataset, register
from seawall.data.download import fetch
from seawall.data.labels import deduplicate, parse_label
from seawall.data.readers import ReadReport, read_json_array, read_jsonl, read_table
from seawall.data.records import ResponseRecord
from seawall.data.sources.common import HTML_ENTITIES, read_json_object, unescape_html
from seawall.data.taxonomy import MAPPINGS, hazard
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


DIASAFETY_PARTS = ("train", "val", "test")
LOST_QUOTE = "U+FFFD run replaced by an apostrophe"
# DiaSafety lost its curly quotes in a bad decode: each ’ or “ became two U+FFFD (`don\ufffd\ufffdt`).
_REPLACEMENT_RUN = re.compile("\ufffd+")


@register(
    "diasafety",
    kind="responses",
    path="responses/diasafety",
    licence="Apache-2.0",
    description="11,197 chit-chat (context, reply) pairs labelled unsafe-in-context, 5 categories (DiaSafety)",
)
def load_diasafety(root: Path, split: str | None) -> Dataset:
    """DiaSafety's three files in one set: context as the prompt; entities decoded; lost quotes restored as `'`;
    empty replies and the repeated pair skipped. Its shipped splits share 805 contexts, so `canonical_split`
    re-splits by context; the shipped file stays in metadata."""
    folder = root / "responses" / "diasafety"
    records: list[ResponseRecord] = []
    report = ReadReport()
    for part in DIASAFETY_PARTS:
        file = folder / f"{part}.json"
        items, part_report = read_json_array(file, ("context", "response", "category", "label"))
        report.merge(part_report)
        for index, item in enumerate(items):
            where = f"{file}, item {index}"
            category = item["category"]
            if category not in MAPPINGS["diasafety"]:
                raise DataError(
                    f"{where}, field category: {category!r} is not one of {list(MAPPINGS['diasafety'])}"
                )
            label = parse_label(item["label"], f"{where}, field label")
            reasons: set[str] = set()
            context, response = (_repair_dialogue(item[key], reasons) for key in ("context", "response"))
            if not response:
                report.skipped["empty response"] += 1
                continue
            report.add_repair(reasons)
            records.append(
                ResponseRecord(
                    id=f"dia-{part}-{index:05d}",
                    prompt=context,
                    response=response,
                    label=label,
                    category=category,
                    source="diasafety",
                    annotator_labels={"human": label},
                    metadata={"shipped_split": part, "hazard": hazard("diasafety", category)},
                )
            )
    return Dataset("diasafety", _drop_repeats(records, report, "(context, response)"), report)


def _drop_repeats(records: list[ResponseRecord], report: ReadReport, pair: str) -> list[ResponseRecord]:
    """Keep the first of each repeated pair (after cleaning); a group that disagrees keeps `unsafe`, counted."""
    kept, dedup = deduplicate(records, rule="any-unsafe")
    if dedup.removed:
        report.skipped[f"repeated {pair} pair"] += dedup.removed
    if dedup.conflicting_groups:
        report.repaired[f"repeated {pair} pair labelled both ways: kept as unsafe"] += (
            dedup.conflicting_groups
        )
    return kept


def _repair_dialogue(text: str, reasons: set[str]) -> str:
    text, unescaped = unescape_html(text)
    if unescaped:
        reasons.add(HTML_ENTITIES)
    if "\ufffd" in text:
        text = _REPLACEMENT_RUN.sub("'", text)
        reasons.add(LOST_QUOTE)
    return text.strip()


TOXICHAT_SPLITS = {"train": "train", "dev": "dev", "test": "test"}
TOXICHAT_REPLIES = {"final_dgpt_response": "dgpt", "final_gpt3_response": "gpt3"}


@register(
    "toxichat",
    kind="responses",
    path="responses/toxichat",
    licence="CC BY-SA 4.0 (share-alike)",
    description="3,990 bot replies to Reddit threads labelled offensive or safe (ToxiChat); shipped splits by post",
    splits=tuple(TOXICHAT_SPLITS),
)
def load_toxichat(root: Path, split: str | None) -> Dataset:
    """ToxiChat: one record per final reply (DialoGPT and GPT-3); the prompt is the thread's turns, one paragraph
    each, the turns with their labels are in metadata. Offensive = unsafe. Entities decoded; empty replies skipped.
    The report counts replies, not thread lines."""
    folder = root / "responses" / "toxichat"
    records: list[ResponseRecord] = []
    report = ReadReport()
    for part in [split] if split else TOXICHAT_SPLITS:
        file = folder / f"{part}.jsonl"
        rows, line_report = read_jsonl(file, ("reddit_thread", *TOXICHAT_REPLIES))
        report.skipped.update(line_report.skipped)
        report.repaired.update(line_report.repaired)
        for row in rows:
            where = f"{file}, line {row['__line__']}"
            reasons: set[str] = set()
            turns = [_thread_turn(turn, f"{where}, reddit_thread", reasons) for turn in row["reddit_thread"]]
            if not turns:
                raise DataError(f"{where}, field reddit_thread: the thread has no turns")
            for key, model in TOXICHAT_REPLIES.items():
                reply = row[key]
                report.rows += 1
                if not isinstance(reply, dict) or "text" not in reply or "offense_label" not in reply:
                    raise DataError(f"{where}, field {key}: expected an object with text and offense_label")
                text, unescaped = unescape_html(reply["text"])
                text = text.strip()
                if not text:
                    report.skipped["empty reply"] += 1
                    continue
                label = _offense_label(reply["offense_label"], f"{where}, field {key}.offense_label")
                report.add_repair(reasons | ({HTML_ENTITIES} if unescaped else set()))
                records.append(
                    ResponseRecord(
                        id=f"tc-{part}-{row['__line__']:04d}-{model}",
                        prompt="\n\n".join(turn["text"] for turn in turns),
                        response=text,
                        label=label,
                        source="toxichat",
                        generator=model,
                        annotator_labels={"crowd": label},
                        metadata={
                            "shipped_split": TOXICHAT_SPLITS[part],
                            "thread": turns,
                            # Threads under the same post share its first turn: grouping by it keeps a post's
                            # title and body out of two splits.
                            "group": turns[0]["text"],
                            "stance": {k: v for k, v in reply.items() if k.startswith("stance_label")},
                            "offense_targets": reply.get("offense_targets", []),
                            "coherence": reply.get("coherence"),
                            "hazard": hazard("toxichat", "Offensive") if label == "unsafe" else None,
                        },
                    )
                )
    return Dataset("toxichat", records, report, split=split)


def _thread_turn(turn: object, where: str, reasons: set[str]) -> dict:
    if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
        raise DataError(f"{where}: a turn without text")
    text, unescaped = unescape_html(turn["text"])
    if unescaped:
        reasons.add(HTML_ENTITIES)
    return {"turn_id": turn.get("turn_id"), "text": text.strip(), "offense_label": turn.get("offense_label")}


def _offense_label(value: object, where: str) -> str:
    if value == "Offensive":
        return "unsafe"
    if value == "Safe":
        return "safe"
    raise DataError(f"{where}: {value!r} is not Safe or Offensive")


@register(
    "safetext",
    kind="responses",
    path="responses/safetext/SafeText.json",
    licence="MIT",
    description="1,430 (situation, advice) pairs: physically unsafe or safe advice to 367 innocent situations",
)
def load_safetext(root: Path, split: str | None) -> Dataset:
    """SafeText: the scenario is the prompt, each piece of advice a response (unsafe or safe); repeated pairs
    skipped and counted."""
    file = root / "responses" / "safetext" / "SafeText.json"
    scenarios = read_json_object(file)
    records: list[ResponseRecord] = []
    report = ReadReport()
    for number, (scenario, advice) in enumerate(scenarios.items(), start=1):
        if not isinstance(advice, dict) or set(advice) - {"safe", "unsafe"}:
            raise DataError(
                f"{file}, scenario {scenario[:60]!r}: expected {{'safe': [...], 'unsafe': [...]}}"
            )
        for label in ("unsafe", "safe"):
            for index, text in enumerate(advice.get(label, []), start=1):
                report.rows += 1
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"{file}, scenario {scenario[:60]!r}, {label} item {index}: empty advice")
                records.append(
                    ResponseRecord(
                        id=f"st-{number:03d}-{label}-{index}",
                        prompt=scenario.strip(),
                        response=text.strip(),
                        label=label,  # type: ignore[arg-type]
                        source="safetext",
                        annotator_labels={"human": label},  # type: ignore[dict-item]
                    )
                )
    return Dataset("safetext", _drop_repeats(records, report, "(scenario, advice)"), report)
