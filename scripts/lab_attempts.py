"""Render the "SmolLM2 alignment attempts" table of docs/lab.md from the runs' JSON (never type the numbers).

python scripts/lab_attempts.py docs/lab_attempts.json [--doc docs/lab.md]

The manifest lists attempts: {"label", "note", "train": run folder with record.json (or null for the shipped
model), "eval": an experiment result.json (safety + overrefusal), or "safety" and "overrefusal": the result.json
files of `seawall eval safety|overrefusal --output`}. The table replaces the text between the markers below.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BEGIN = "<!-- lab-attempts:begin (scripts/lab_attempts.py) -->"
END = "<!-- lab-attempts:end -->"


def _json(path: str | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None


def _pct(rate: dict | None) -> str:
    if rate is None:
        return "–"
    low, high = rate["ci95"]
    return f"{100 * rate['rate']:.1f}% [{100 * low:.0f}–{100 * high:.0f}] (n={rate['n']})"


def attempt_row(attempt: dict) -> str:
    """One Markdown row: training settings and time from record.json, rates from the eval JSON."""
    record = _json(f"{attempt['train']}/record.json") if attempt.get("train") else None
    result = _json(attempt.get("eval"))
    safety = result["safety"] if result else _json(attempt.get("safety"))
    over = result["overrefusal"] if result else _json(attempt.get("overrefusal"))
    judges = (safety or {}).get("judges", {})
    if record:
        t = record["config"]["train"]
        counts = record["data_report"].get("counts", {})
        refusals = sum(v for k, v in counts.items() if "refusal" in k)
        train = (
            f"{t['method']} r{t['lora_r']} lr {t['learning_rate']:g}, {t['epochs']} ep, "
            f"{record['steps']} steps; {counts.get('alpaca', 0)} answered / {refusals} refusals"
        )
        minutes = f"{record['train_time_s'] / 60:.0f}"
    elif attempt.get("train"):
        train, minutes = "not finished", "–"
    else:
        train, minutes = "as shipped", "–"
    detector = _pct(judges["detector"]["hrr"]) if "detector" in judges else "–"
    return (
        f"| {attempt['label']} | {train} | {minutes} | {_pct(judges.get('refusal', {}).get('hrr'))} | "
        f"{detector} | {_pct(over['rate'] if over else None)} | {attempt.get('note', '').replace('|', '/')} |"
    )


def render(manifest: list[dict]) -> str:
    """The table for every attempt of the manifest."""
    lines = [
        "| attempt | training | train min | HRR (refusal judge) | HRR (detector) | over-refusal | note |",
        "|---|---|---|---|---|---|---|",
    ]
    return "\n".join(lines + [attempt_row(a) for a in manifest])


def main() -> None:
    """Replace the table between the markers of the doc."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("manifest")
    parser.add_argument("--doc", default="docs/lab.md")
    args = parser.parse_args()
    doc = Path(args.doc)
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: markers {BEGIN!r} … {END!r} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    table = render(json.loads(Path(args.manifest).read_text()))
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


if __name__ == "__main__":
    main()
