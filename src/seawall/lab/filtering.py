"""The detector as a defence during customization: drop the training pairs a detector judges unsafe.

`seawall lab customize --filter-with DIR` passes the task data (its harmful share included) through
`seawall.detect.batch.filter_file`, the engine of `seawall detect filter`, before training. Beside the output:
task-data.jsonl (every example, as built), filtered.jsonl (the kept ones), filtered.dropped.jsonl (the dropped ones,
with p_unsafe and category, for review), filtered.bad.jsonl and filtered.report.json.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seawall.errors import SeawallError
from seawall.io import atomic_write_text
from seawall.lab.train import ChatExample


def filter_examples(
    examples: Sequence[ChatExample], detector: str | Path, folder: str | Path, batch_size: int = 64
) -> tuple[list[ChatExample], dict[str, Any]]:
    """The examples the detector in `detector` judges safe (in order) and the filter's report.

    Each example is judged as its last user message and the assistant's reply. The report holds kept/dropped
    counts overall, per detector category and per data source, the detector's id and threshold, and the files.
    """
    from seawall.detect.batch import Columns, DetectorSpec, filter_file

    if not (Path(detector) / "detector.json").is_file():
        raise SeawallError(f"filter_with: {detector} is not a saved detector folder (no detector.json)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [example.id for example in examples]
    if len(set(ids)) != len(ids):
        repeated = next(i for i, count in Counter(ids).items() if count > 1)
        raise SeawallError(f"filter_with: example id {repeated!r} occurs twice; the filter keeps rows by id")
    rows = [
        {"id": e.id, "source": e.source, "prompt": e.prompt, "response": e.messages[-1][1]} for e in examples
    ]
    data = folder / "task-data.jsonl"
    atomic_write_text(data, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    started = time.time()
    report = filter_file(
        str(data),
        folder / "filtered.jsonl",
        DetectorSpec(str(detector)),
        Columns(id="id"),
        batch_size=batch_size,
    )
    kept_ids = {
        json.loads(line)["id"]
        for line in (folder / "filtered.jsonl").read_text().splitlines()
        if line.strip()
    }
    if report["bad"]:
        raise SeawallError(
            f"filter_with: {report['bad']} training examples could not be scored ({report['bad_by_reason']}); "
            f"see {report['outputs']['bad']}"
        )
    kept = [example for example in examples if example.id in kept_ids]
    if not kept:
        raise SeawallError(
            f"filter_with: the detector {detector} judged all {len(examples)} training examples unsafe; "
            f"see {report['outputs']['dropped']}"
        )
    per_source: dict[str, dict[str, int]] = {}
    for example in examples:
        counts = per_source.setdefault(example.source, {"kept": 0, "dropped": 0})
        counts["kept" if example.id in kept_ids else "dropped"] += 1
    summary = {
        "detector": str(detector),
        "detector_id": report["detector_id"],
        "threshold": report["threshold"],
        "rows": report["rows"],
        "kept": report["kept"],
        "dropped": report["dropped"],
        "per_category": report["per_category"],
        "per_source": dict(sorted(per_source.items())),
        "outputs": {"data": str(data), **report["outputs"]},
        "filter_s": round(time.time() - started, 2),
    }
    return kept, summary
