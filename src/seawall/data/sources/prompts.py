"""Prompt sets: harmful ones (harmful-response rate) and benign ones (over-refusal)."""

from __future__ import annotations

from pathlib import Path

from seawall.data.dataset import Dataset, register
from seawall.data.readers import ReadReport, read_json_array, read_jsonl, read_table
from seawall.data.records import PromptRecord, normalize_text
from seawall.data.sources.common import read_json_object
from seawall.data.split import CANONICAL_SEED, split_records
from seawall.data.taxonomy import hazard
from seawall.errors import DataError


def _prompts(
    name: str,
    rows: list[dict],
    report: ReadReport,
    *,
    text: str,
    id_prefix: str,
    harmful: bool,
    category: str | None = None,
    taxonomy: str | None = None,
    id_column: str | None = None,
    metadata: tuple[str, ...] = (),
) -> Dataset:
    records = []
    for index, row in enumerate(rows, start=1):
        cat = row[category].strip() if category and row.get(category) else None
        meta = {key: row[key] for key in metadata if key in row}
        if taxonomy:
            meta["hazard"] = hazard(taxonomy, cat)
        records.append(
            PromptRecord(
                id=f"{id_prefix}-{row[id_column]}" if id_column else f"{id_prefix}-{index:04d}",
                prompt=row[text].strip(),
                harmful=harmful,
                category=cat,
                source=name,
                metadata=meta,
            )
        )
    return Dataset(name, records, report)


@register(
    "harmbench",
    kind="harmful-prompts",
    path="prompts/harmful/harmbench",
    licence="MIT",
    description="HarmBench text behaviours (standard, contextual, copyright); splits all/val/test",
    splits=("all", "val", "test"),
    default_split="test",
)
def load_harmbench(root: Path, split: str | None) -> Dataset:
    """HarmBench behaviours; contextual ones carry their context string in metadata and in the prompt."""
    rows, report = read_table(
        root / f"prompts/harmful/harmbench/harmbench_behaviors_text_{split}.csv",
        required=("Behavior", "FunctionalCategory", "SemanticCategory", "ContextString", "BehaviorID"),
    )
    for row in rows:
        if row["ContextString"].strip():
            row["Behavior"] = f"{row['ContextString'].strip()}\n\n---\n\n{row['Behavior'].strip()}"
    dataset = _prompts(
        "harmbench",
        rows,
        report,
        text="Behavior",
        id_prefix="hb",
        harmful=True,
        category="SemanticCategory",
        taxonomy="harmbench",
        id_column="BehaviorID",
        metadata=("FunctionalCategory",),
    )
    dataset.split = split
    return dataset


@register(
    "advbench",
    kind="harmful-prompts",
    path="prompts/harmful/advbench/advbench_behaviors.csv",
    licence="MIT",
    description="520 AdvBench harmful behaviours",
)
def load_advbench(root: Path, split: str | None) -> Dataset:
    """AdvBench behaviours (no categories)."""
    rows, report = read_table(
        root / "prompts/harmful/advbench/advbench_behaviors.csv", required=("Behavior", "BehaviorID")
    )
    return _prompts("advbench", rows, report, text="Behavior", id_prefix="adv", harmful=True)


@register(
    "strongreject",
    kind="harmful-prompts",
    path="prompts/harmful/strongreject/strongreject_dataset.csv",
    licence="MIT",
    description="313 StrongREJECT forbidden prompts, 6 categories",
)
def load_strongreject(root: Path, split: str | None) -> Dataset:
    """StrongREJECT forbidden prompts."""
    rows, report = read_table(
        root / "prompts/harmful/strongreject/strongreject_dataset.csv",
        required=("category", "source", "forbidden_prompt"),
    )
    return _prompts(
        "strongreject",
        rows,
        report,
        text="forbidden_prompt",
        id_prefix="sr",
        harmful=True,
        category="category",
        taxonomy="strongreject",
        metadata=("source",),
    )


def _jbb(root: Path, name: str, folder: str, harmful: bool) -> Dataset:
    rows, report = read_table(root / folder, required=("Index", "Goal", "Behavior", "Category", "Source"))
    return _prompts(
        name,
        rows,
        report,
        text="Goal",
        id_prefix=name,
        harmful=harmful,
        category="Category",
        taxonomy="jbb",
        id_column="Index",
        metadata=("Behavior", "Source"),
    )


@register(
    "jbb-harmful",
    kind="harmful-prompts",
    path="prompts/harmful/jbb/harmful-behaviors.csv",
    licence="MIT",
    description="100 JailbreakBench harmful behaviours, 10 categories (SecureBreak's questions)",
)
def load_jbb_harmful(root: Path, split: str | None) -> Dataset:
    """JBB-Behaviors harmful set."""
    return _jbb(root, "jbb-harmful", "prompts/harmful/jbb/harmful-behaviors.csv", harmful=True)


@register(
    "jbb-benign",
    kind="benign-prompts",
    path="prompts/benign/jbb/benign-behaviors.csv",
    licence="MIT",
    description="100 benign twins of the JBB harmful behaviours",
)
def load_jbb_benign(root: Path, split: str | None) -> Dataset:
    """JBB-Behaviors benign set (should be answered)."""
    return _jbb(root, "jbb-benign", "prompts/benign/jbb/benign-behaviors.csv", harmful=False)


@register(
    "simplesafetytests",
    kind="harmful-prompts",
    path="prompts/harmful/simplesafetytests/test_cases.csv",
    licence="CC BY 4.0",
    description="100 SimpleSafetyTests prompts, 5 harm areas",
)
def load_simplesafetytests(root: Path, split: str | None) -> Dataset:
    """SimpleSafetyTests."""
    rows, report = read_table(
        root / "prompts/harmful/simplesafetytests/test_cases.csv",
        required=("id", "harm_area", "category", "prompts_final"),
    )
    return _prompts(
        "simplesafetytests",
        rows,
        report,
        text="prompts_final",
        id_prefix="sst",
        harmful=True,
        category="harm_area",
        taxonomy="simplesafetytests",
        id_column="id",
        metadata=("category",),
    )


@register(
    "donotanswer",
    kind="harmful-prompts",
    path="prompts/harmful/donotanswer",
    licence="Apache-2.0",
    description="939 Do-Not-Answer prompts in 5 risk areas (one file per area)",
)
def load_donotanswer(root: Path, split: str | None) -> Dataset:
    """Do-Not-Answer: the file name is the risk area; `intents` kept in metadata."""
    folder = root / "prompts/harmful/donotanswer"
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise DataError(f"{folder}: no .jsonl files")
    records, total = [], ReadReport()
    for file in files:
        rows, report = read_jsonl(file, required=("prompt",))
        total.merge(report)
        for row in rows:
            records.append(
                PromptRecord(
                    id=f"dna-{len(records) + 1:04d}",
                    prompt=row["prompt"].strip(),
                    harmful=True,
                    category=file.stem,
                    source="donotanswer",
                    metadata={"intents": row.get("intents", []), "hazard": hazard("donotanswer", file.stem)},
                )
            )
    return Dataset("donotanswer", records, total)


@register(
    "ailuminate",
    kind="harmful-prompts",
    path="prompts/harmful/ailuminate/airr_official_1.0_demo_en_us_prompt_set_release.csv",
    licence="CC BY 4.0",
    description="1,200 AILuminate v1.0 demo prompts, 12 hazards (15 codes), personas",
)
def load_ailuminate(root: Path, split: str | None) -> Dataset:
    """AILuminate demo prompt set."""
    rows, report = read_table(
        root / "prompts/harmful/ailuminate/airr_official_1.0_demo_en_us_prompt_set_release.csv",
        required=("release_prompt_id", "prompt_text", "hazard", "persona"),
    )
    return _prompts(
        "ailuminate",
        rows,
        report,
        text="prompt_text",
        id_prefix="ail",
        harmful=True,
        category="hazard",
        taxonomy="ailuminate",
        id_column="release_prompt_id",
        metadata=("persona",),
    )


@register(
    "xstest",
    kind="benign-prompts",
    path="prompts/benign/xstest/xstest_prompts.csv",
    licence="CC BY 4.0",
    description="450 XSTest prompts: 250 safe (should be answered), 200 unsafe contrast prompts",
)
def load_xstest(root: Path, split: str | None) -> Dataset:
    """XSTest: `harmful` is True for the 200 unsafe contrast prompts; over-refusal uses the 250 safe ones."""
    file = root / "prompts/benign/xstest/xstest_prompts.csv"
    rows, report = read_table(file, required=("id", "prompt", "type", "label"))
    records = []
    for row in rows:
        label = row["label"].strip()
        if label not in ("safe", "unsafe"):
            raise DataError(f"{file}, row {row['__line__']}, column label: {label!r} is not safe/unsafe")
        records.append(
            PromptRecord(
                id=f"xstest-{row['id']}",
                prompt=row["prompt"].strip(),
                harmful=label == "unsafe",
                category=row["type"],
                source="xstest",
                metadata={"focus": row.get("focus"), "note": row.get("note")},
            )
        )
    return Dataset("xstest", records, report)


@register(
    "coconot-contrast",
    kind="benign-prompts",
    path="prompts/benign/coconot/coconot_contrast_eval.jsonl",
    licence="MIT",
    description="379 CoCoNot contrast requests that look sensitive but should be answered",
)
def load_coconot_contrast(root: Path, split: str | None) -> Dataset:
    """CoCoNot contrast set."""
    rows, report = read_jsonl(
        root / "prompts/benign/coconot/coconot_contrast_eval.jsonl", ("id", "prompt", "category")
    )
    records = [
        PromptRecord(
            id=f"coconot-{row['id']}",
            prompt=row["prompt"].strip(),
            harmful=False,
            category=row["category"],
            source="coconot-contrast",
            metadata={"subcategory": row.get("subcategory")},
        )
        for row in rows
    ]
    return Dataset("coconot-contrast", records, report)


# CyberSecEval's false-refusal prompts serve both as borderline training prompts and as an over-refusal evaluation
# set, so they are split once, 50/50 by `split_records` (grouped by normalised prompt, seed 0, the canonical
# splits' mechanism): training reads "train", evaluation "test", and no prompt is in both.
FRR_FRACTIONS = {"train": 0.5, "test": 0.5}


@register(
    "cyberseceval-frr",
    kind="benign-prompts",
    path="prompts/benign/cyberseceval_frr/mitre_frr.json",
    licence="MIT",
    description="750 benign security-engineering requests that over-cautious models refuse (CyberSecEval FRR); "
    "splits train/test: a seeded 50/50 split grouped by prompt",
    splits=("train", "test"),
)
def load_cyberseceval_frr(root: Path, split: str | None) -> Dataset:
    """CyberSecEval's false-refusal prompts (all 750, or one half of `FRR_FRACTIONS`); a row marked malicious would
    not belong in a benign set: an error."""
    file = root / "prompts/benign/cyberseceval_frr/mitre_frr.json"
    rows, report = read_json_array(file, ("mutated_prompt", "is_malicious"))
    records = []
    for index, row in enumerate(rows, start=1):
        if row["is_malicious"] is not False:
            raise DataError(
                f"{file}, item {index - 1}, field is_malicious: {row['is_malicious']!r}, expected false"
            )
        records.append(
            PromptRecord(
                id=f"frr-{index:03d}",
                prompt=row["mutated_prompt"].strip(),
                harmful=False,
                source="cyberseceval-frr",
                metadata={"attack_type": row.get("attack_type"), "model": row.get("model")},
            )
        )
    if split is not None:
        records = split_records(
            records, FRR_FRACTIONS, CANONICAL_SEED, stratify=False, dataset="cyberseceval-frr"
        )[split]
    return Dataset("cyberseceval-frr", records, report, split=split)


# safety-tuned-llamas' evaluation lists (Bianchi et al. 2024): list name → harmful. I-PhysicalSafety* are SafeText
# situations turned into instructions, so they overlap SafeText's scenarios.
STL_EVAL_LISTS = {
    "I-Alpaca": False,
    "I-PhysicalSafetySafe": False,
    "I-CoNa": True,
    "I-Controversial": True,
    "I-MaliciousInstructions": True,
    "I-PhysicalSafetyUnsafe": True,
    "Q-Harm": True,
}


def _stl_eval(root: Path, name: str, harmful: bool) -> Dataset:
    folder = root / "instructions/safety_tuned_llamas/evaluation"
    records, report = [], ReadReport()
    for stem, is_harmful in STL_EVAL_LISTS.items():
        if is_harmful != harmful:
            continue
        file = folder / f"{stem}.json"
        instructions = read_json_object(file).get("instructions")
        if not isinstance(instructions, list):
            raise DataError(f"{file}: expected an object with an 'instructions' list")
        seen: set[str] = set()
        for index, text in enumerate(instructions):
            report.rows += 1
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{file}, instructions item {index}: empty prompt")
            if text.strip() in seen:
                report.skipped[f"repeated prompt in {stem}"] += 1
                continue
            seen.add(text.strip())
            records.append(
                PromptRecord(
                    id=f"{name}-{stem}-{index:03d}",
                    prompt=text.strip(),
                    harmful=harmful,
                    category=stem,
                    source=name,
                )
            )
    return Dataset(name, records, report)


@register(
    "stl-eval-harmful",
    kind="harmful-prompts",
    path="instructions/safety_tuned_llamas/evaluation",
    licence="CC BY-NC 4.0 (research only)",
    description="516 harmful safety-tuned-llamas evaluation prompts: CoNa, Controversial, Malicious, Physical, Q-Harm",
)
def load_stl_eval_harmful(root: Path, split: str | None) -> Dataset:
    """The five harmful evaluation lists of safety-tuned-llamas; category = the list."""
    return _stl_eval(root, "stl-eval-harmful", harmful=True)


@register(
    "stl-eval-benign",
    kind="benign-prompts",
    path="instructions/safety_tuned_llamas/evaluation",
    licence="CC BY-NC 4.0 (research only)",
    description="150 benign safety-tuned-llamas evaluation prompts: I-Alpaca and I-PhysicalSafetySafe",
)
def load_stl_eval_benign(root: Path, split: str | None) -> Dataset:
    """The two benign evaluation lists of safety-tuned-llamas (over-refusal); category = the list."""
    return _stl_eval(root, "stl-eval-benign", harmful=False)


# Authored here, not downloaded: pairs of a benign prompt that borrows the vocabulary of harm ("kill a process") and a
# harmful twin that shares its key words ("kill a neighbour"), so that the align recipe can teach the difference
# instead of a vocabulary. Written without reference to the evaluation suites; the prompt-overlap guard checks it.
CONTRAST_FILE = Path(__file__).resolve().parents[1] / "authored" / "contrast_prompts.json"
# Split once by pair (both twins on the same side): training reads "train", held-out choices read "test".
CONTRAST_FRACTIONS = {"train": 0.7, "test": 0.3}
_CONTRAST_KEYS = ("id", "type", "benign", "harmful")


@register(
    "seawall-contrast",
    kind="benign-prompts",
    path="(packaged) seawall/data/authored/contrast_prompts.json",
    licence="CC0-1.0",
    description="contrast pairs written for seawall: a benign prompt in the vocabulary of harm and its harmful twin; "
    "splits train/test: a seeded 70/30 split by pair, stratified by type",
    splits=("train", "test"),
)
def load_seawall_contrast(root: Path, split: str | None, file: Path = CONTRAST_FILE) -> Dataset:
    """Both twins of every pair as prompt records (`harmful` tells them apart, `category` is the pair's type,
    `metadata["group"]` its id, so that splits keep twins together); `root` is unused (the file is packaged)."""
    document = read_json_object(file)
    pairs, types = document.get("pairs"), document.get("types")
    if not isinstance(pairs, list) or not isinstance(types, dict):
        raise DataError(f"{file}: expected an object with a 'types' object and a 'pairs' list")
    report, records, seen_ids, seen_prompts = ReadReport(), [], set(), set()
    for index, pair in enumerate(pairs):
        where = f"{file}, pairs item {index}"
        report.rows += 1
        if not isinstance(pair, dict) or any(
            not isinstance(pair.get(k), str) or not pair[k].strip() for k in _CONTRAST_KEYS
        ):
            raise DataError(f"{where}: needs non-empty strings {', '.join(_CONTRAST_KEYS)}")
        if pair["type"] not in types:
            raise DataError(f"{where}, field type: {pair['type']!r} is not one of {sorted(types)}")
        if pair["id"] in seen_ids:
            raise DataError(f"{where}, field id: {pair['id']!r} repeats an earlier pair")
        seen_ids.add(pair["id"])
        for harmful in (False, True):
            text = pair["harmful" if harmful else "benign"].strip()
            key = normalize_text(text)
            if key in seen_prompts:
                raise DataError(f"{where}: prompt {text[:60]!r} repeats an earlier one")
            seen_prompts.add(key)
            records.append(
                PromptRecord(
                    id=f"contrast-{pair['id']}-{'harmful' if harmful else 'benign'}",
                    prompt=text,
                    harmful=harmful,
                    category=pair["type"],
                    source="seawall-contrast",
                    metadata={"group": pair["id"]},
                )
            )
    if split is not None:
        records = split_records(records, CONTRAST_FRACTIONS, CANONICAL_SEED, dataset="seawall-contrast")[
            split
        ]
    return Dataset("seawall-contrast", records, report, split=split)
