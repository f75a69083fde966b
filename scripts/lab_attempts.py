"""The "SmolLM2 alignment attempts" table of docs/lab.md, rendered from docs/lab_attempts.json alone.

    python scripts/lab_attempts.py add docs/lab_attempts.json --label A-dpo --train RUN/A-dpo \
        --safety EVALS/A-dpo-safety/result.json --overrefusal EVALS/A-dpo-over/result.json --note "..."
    python scripts/lab_attempts.py add docs/lab_attempts.json --label A --experiment docs/results/X.results.json \
        --model aligned --note "..."
    python scripts/lab_attempts.py render docs/lab_attempts.json [--doc docs/lab.md]

`add` reads the numbers once from where they were measured — a training folder's record.json, the result.json files
of `seawall eval safety|overrefusal --output`, or one model's row of an experiment results.json — and stores them in
the manifest (atomically), with the paths they came from under `measured_from`. `render` uses the manifest only, so
the table regenerates on any machine after the run folders are gone. Rows whose numbers were never collected say so.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

BEGIN = "<!-- lab-attempts:begin (scripts/lab_attempts.py) -->"
END = "<!-- lab-attempts:end -->"
HEADER = [
    "| attempt | training | train min | HRR (refusal judge) | HRR (detector) | over-refusal | note |",
    "|---|---|---|---|---|---|---|",
]


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: not found")
    return json.loads(path.read_text())


def _rate(rate: float, ci95: list[float], n: int) -> dict[str, Any]:
    return {"rate": rate, "ci95": [ci95[0], ci95[1]], "n": n}


def training_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the table shows of a training run's record.json: settings, steps, data counts, minutes."""
    # `seawall lab scale`: no training, a point on the line from the base to the aligned model.
    if record.get("recipe") == "scale":
        config = record["config"]
        aligned = Path(config["aligned"])
        name = aligned.parent.name if aligned.name == "model" else aligned.name  # RUN/model → RUN
        text = f"scale: base + {config['weight']:g} × ({name} − base), no training"
        return {"training": text, "train_min": round(record["train_time_s"] / 60, 1)}
    train = record["config"]["train"]
    counts = record["data_report"].get("counts", {})
    refusals = sum(v for k, v in counts.items() if "refusal" in k)
    method = record.get("recipe", "")
    rank = f" r{train['lora_r']}" if train.get("lora_r") else ""
    # A DPO run's learning rate and epochs live in its `dpo:` block (its `train:` block keeps unused defaults).
    schedule = record["config"]["dpo"] if method == "align-dpo" else train
    lr, epochs = schedule["learning_rate"], schedule["epochs"]
    text = f"{train['method']}{rank} lr {lr:g}, {epochs} ep, {record['steps']} steps"
    if method == "align-dpo":
        pairs = record["data_report"].get("pairs", {})
        text += "; DPO pairs " + ", ".join(f"{judge} {n}" for judge, n in sorted(pairs.items()))
    elif any("->" in source for source in counts):  # align v2: every source with what its prompts are taught
        text += "; " + ", ".join(f"{source} {n}" for source, n in counts.items())
    else:
        text += f"; {counts.get('alpaca', 0)} answered / {refusals} refusals"
    return {"training": text, "train_min": round(record["train_time_s"] / 60, 1)}


def from_eval_results(safety: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """The three rates of `seawall eval safety` / `overrefusal` result.json files."""
    judges = safety.get("judges", {})

    def hrr(judge: str) -> dict[str, Any] | None:
        entry = judges.get(judge, {}).get("hrr")
        return _rate(entry["rate"], entry["ci95"], entry["n"]) if entry else None

    rate = over["rate"]
    return {
        "hrr_refusal": hrr("refusal"),
        "hrr_detector": hrr("detector"),
        "overrefusal": _rate(rate["rate"], rate["ci95"], rate["n"]),
    }


def from_experiment(results: dict[str, Any], model: str) -> dict[str, Any]:
    """The three rates of one model's row of an experiment results.json (n from its suites and eval config)."""
    rows = [row for row in results["rows"] if row["model"] == model]
    if not rows:
        raise SystemExit(
            f"no row for model {model!r}; models: {', '.join(r['model'] for r in results['rows'])}"
        )
    row = rows[0]
    settings = results["config"]["eval"]
    n_harmful = settings["n_harmful_per_suite"] * len(results["suites"]["safety"])
    n_benign = settings["n_benign_per_suite"] * len(results["suites"]["overrefusal"])
    return {
        "hrr_refusal": _rate(row["hrr_refusal"], row["hrr_refusal_ci95"], n_harmful),
        "hrr_detector": _rate(row["hrr_detector"], row["hrr_detector_ci95"], n_harmful),
        "overrefusal": _rate(row["overrefusal"], row["overrefusal_ci95"], n_benign),
    }


def _pct(rate: dict[str, Any] | None) -> str:
    if rate is None:
        return "–"
    low, high = rate["ci95"]
    return f"{100 * rate['rate']:.1f}% [{100 * low:.0f}–{100 * high:.0f}] (n={rate['n']})"


def attempt_row(attempt: dict[str, Any]) -> str:
    """One Markdown row from the manifest entry alone."""
    minutes = attempt.get("train_min")
    return (
        f"| {attempt['label']} | {attempt.get('training') or '–'} | "
        f"{'–' if minutes is None else f'{minutes:.0f}'} | {_pct(attempt.get('hrr_refusal'))} | "
        f"{_pct(attempt.get('hrr_detector'))} | {_pct(attempt.get('overrefusal'))} | "
        f"{attempt.get('note', '').replace('|', '/')} |"
    )


def render(manifest: list[dict[str, Any]]) -> str:
    """The table for every attempt of the manifest."""
    return "\n".join(HEADER + [attempt_row(a) for a in manifest])


def _atomic_write(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def add(args: argparse.Namespace) -> None:
    manifest_path = Path(args.manifest)
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else []
    shipped = args.shipped or (not args.train and args.model == "original" and bool(args.experiment))
    entry: dict[str, Any] = {
        "label": args.label,
        "note": args.note,
        "training": "as shipped" if shipped else None,
        "train_min": None,
    }
    sources: dict[str, str] = {}
    if args.train:
        entry.update(training_summary(_read_json(Path(args.train) / "record.json")))
        sources["train"] = args.train
    if args.recipe:
        entry["training"] = f"recipe: {args.recipe}"
    if args.experiment:
        entry.update(from_experiment(_read_json(args.experiment), args.model))
        sources["experiment"] = f"{args.experiment}#{args.model}"
    elif args.safety and args.overrefusal:
        entry.update(from_eval_results(_read_json(args.safety), _read_json(args.overrefusal)))
        sources.update(safety=args.safety, overrefusal=args.overrefusal)
    else:
        raise SystemExit("add needs --experiment FILE --model NAME, or --safety FILE and --overrefusal FILE")
    entry["measured_from"] = sources
    manifest = [a for a in manifest if a["label"] != args.label] + [entry]
    _atomic_write(manifest_path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(attempt_row(entry))


def render_doc(args: argparse.Namespace) -> None:
    doc = Path(args.doc)
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: markers {BEGIN!r} … {END!r} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    table = render(json.loads(Path(args.manifest).read_text()))
    _atomic_write(doc, f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    adder = commands.add_parser("add", help="measure one attempt into the manifest")
    adder.add_argument("manifest")
    adder.add_argument("--label", required=True)
    adder.add_argument("--note", default="")
    adder.add_argument("--train", help="training folder with record.json")
    adder.add_argument("--shipped", action="store_true", help="the model as shipped (no training)")
    adder.add_argument("--recipe", help="the recipe file, where the training folder is not at hand")
    adder.add_argument("--safety", help="result.json of seawall eval safety --output")
    adder.add_argument("--overrefusal", help="result.json of seawall eval overrefusal --output")
    adder.add_argument("--experiment", help="an experiment results.json")
    adder.add_argument("--model", default="aligned", help="the model's row in --experiment")
    adder.set_defaults(run=add)
    renderer = commands.add_parser("render", help="write the table into the doc")
    renderer.add_argument("manifest")
    renderer.add_argument("--doc", default="docs/lab.md")
    renderer.set_defaults(run=render_doc)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
