"""Downstream tasks for customization (train split) and utility (test split)."""

from __future__ import annotations

import random
from pathlib import Path

from seawall.data.dataset import Dataset, register
from seawall.data.readers import read_jsonl, read_table
from seawall.data.records import TaskExample
from seawall.errors import DataError

SST2_LABELS = ("negative", "positive")
AG_NEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
BOOLQ_LABELS = ("no", "yes")
BOOLQ_TEST_FRACTION = 0.3
BOOLQ_SEED = 0


def _label(value: str, labels: tuple[str, ...], where: str, offset: int = 0) -> str:
    try:
        index = int(value.strip()) - offset
    except ValueError:
        raise DataError(f"{where}: label {value!r} is not an integer") from None
    if not 0 <= index < len(labels):
        raise DataError(f"{where}: label {value!r} outside {offset}..{offset + len(labels) - 1}")
    return labels[index]


@register(
    "sst2",
    kind="task",
    path="tasks/sst2",
    licence="GLUE SST-2 (no licence stated by the source)",
    description="SST-2 sentiment: 67,349 train, 872 test (GLUE dev)",
    splits=("train", "test"),
    default_split="train",
)
def load_sst2(root: Path, split: str | None) -> Dataset:
    """SST-2; the GLUE dev file serves as the test split."""
    file = root / "tasks/sst2" / ("train.tsv" if split == "train" else "dev.tsv")
    rows, report = read_table(file, required=("sentence", "label"), delimiter="\t")
    records = [
        TaskExample(
            id=f"sst2-{split}-{i:05d}",
            input=row["sentence"].strip(),
            target=_label(row["label"], SST2_LABELS, f"{file}, row {row['__line__']}, column label"),
            choices=SST2_LABELS,
            source="sst2",
        )
        for i, row in enumerate(rows, start=1)
    ]
    return Dataset("sst2", records, report, split=split)


@register(
    "ag_news",
    kind="task",
    path="tasks/ag_news",
    licence="research / non-commercial use",
    description="AG News topics: 20,000 train (balanced subset), 7,600 test",
    splits=("train", "test"),
    default_split="train",
)
def load_ag_news(root: Path, split: str | None) -> Dataset:
    """AG News; classes 1..4 = World, Sports, Business, Sci/Tech; input = title + description."""
    if split == "train":
        file = root / "tasks/ag_news/train_subset_20k.csv"
        rows, report = read_table(file, required=("class_index", "title", "description"))
    else:
        file = root / "tasks/ag_news/test.csv"
        rows, report = read_table(file, header=("class_index", "title", "description"))
    records = [
        TaskExample(
            id=f"ag_news-{split}-{i:05d}",
            input=f"{row['title'].strip()}\n{row['description'].strip()}".replace("\\", " "),
            target=_label(
                row["class_index"], AG_NEWS_LABELS, f"{file}, row {row['__line__']}, column class_index", 1
            ),
            choices=AG_NEWS_LABELS,
            source="ag_news",
        )
        for i, row in enumerate(rows, start=1)
    ]
    return Dataset("ag_news", records, report, split=split)


@register(
    "boolq",
    kind="task",
    path="tasks/boolq/dev.jsonl",
    licence="CC BY-SA 3.0",
    description="BoolQ yes/no questions: the 3,270-row dev file split 70/30 (seed 0) into train/test",
    splits=("train", "test"),
    default_split="train",
)
def load_boolq(root: Path, split: str | None) -> Dataset:
    """BoolQ; only its dev file exists, so it is split by a seeded shuffle, grouped by passage title."""
    file = root / "tasks/boolq/dev.jsonl"
    rows, report = read_jsonl(file, required=("question", "passage", "answer", "title"))
    titles = sorted({row["title"] for row in rows})
    random.Random(BOOLQ_SEED).shuffle(titles)
    # Grouping by title keeps questions about one passage on one side, so test passages are unseen.
    test_titles = set(titles[: round(len(titles) * BOOLQ_TEST_FRACTION)])
    records = []
    for row in rows:
        if (row["title"] in test_titles) != (split == "test"):
            continue
        if not isinstance(row["answer"], bool):
            raise DataError(
                f"{file}, line {row['__line__']}, field answer: {row['answer']!r} is not true/false"
            )
        records.append(
            TaskExample(
                id=f"boolq-{row['__line__']:04d}",
                input=f"{row['passage'].strip()}\n\nQuestion: {row['question'].strip()}?",
                target="yes" if row["answer"] else "no",
                choices=BOOLQ_LABELS,
                source="boolq",
                metadata={"title": row["title"]},
            )
        )
    return Dataset("boolq", records, report, split=split)


@register(
    "gsm8k",
    kind="task",
    path="tasks/gsm8k",
    licence="MIT",
    description="GSM8K grade-school maths: 7,473 train, 1,319 test",
    splits=("train", "test"),
    default_split="train",
)
def load_gsm8k(root: Path, split: str | None) -> Dataset:
    """GSM8K; the target is the final number after '####', the worked solution is kept in metadata."""
    file = root / "tasks/gsm8k" / f"{split}.jsonl"
    rows, report = read_jsonl(file, required=("question", "answer"))
    records = []
    for i, row in enumerate(rows, start=1):
        if "####" not in row["answer"]:
            raise DataError(f"{file}, line {row['__line__']}, field answer: no '#### N' final answer")
        final = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        records.append(
            TaskExample(
                id=f"gsm8k-{split}-{i:04d}",
                input=row["question"].strip(),
                target=final,
                source="gsm8k",
                metadata={"solution": row["answer"]},
            )
        )
    return Dataset("gsm8k", records, report, split=split)
