"""How many safe counter-examples the demo detector trains on: SecureBreak F1/AUROC against benign answers flagged.

    python scripts/demo_counterexamples.py [--output docs/results/detector/demo_counterexamples.json]

Trains the demo recipe (`seawall.detect.demo`) once per (benign answers, refusals) pair, each into its own folder
under --work, and writes the test metrics of each to JSON (a few minutes per variant on 2 cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

VARIANTS = [(300, 100), (600, 100), (600, 200)]


def main() -> None:
    from seawall.detect.demo import demo_config
    from seawall.detect.pipeline import run_training
    from seawall.io import atomic_write_json

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="docs/results/detector/demo_counterexamples.json")
    parser.add_argument("--work", default="runs/demo-counterexamples")
    args = parser.parse_args()
    results = {}
    for benign, refusals in VARIANTS:
        name = f"benign{benign}-refusals{refusals}"
        config = demo_config(str(Path(args.work) / name))
        data = config.data.model_copy(update={"benign_compliant": benign, "harmful_refusals": refusals})
        summary = run_training(config.model_copy(update={"data": data}), None)
        securebreak = summary["eval"]["securebreak:test"]["metrics"]
        results[name] = {
            "benign_compliant": benign,
            "harmful_refusals": refusals,
            "securebreak_f1": securebreak["f1"],
            "securebreak_auroc": securebreak["auroc"],
            "alpaca_benign_flagged": summary["eval"]["alpaca:test"]["metrics"]["flag_rate"],
            "train_seconds": summary["train_seconds"],
        }
        print(name, results[name], flush=True)
        atomic_write_json(Path(args.output), results)


if __name__ == "__main__":
    main()
