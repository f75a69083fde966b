"""Batch-scoring benchmark: responses/s of the local engine vs Ray with 1 and 2 workers, and Ray's fixed costs.

The input is N (prompt, response) rows sampled with a fixed seed from SecureBreak (its real length distribution),
written as JSONL; each engine scores all of them into Parquet with `seawall.detect.batch.predict_file`, the code
behind `seawall detect predict --input … --output …`. The detector is `--detector DIR`, or a tfidf detector fitted
on SecureBreak's train split in a few seconds. Ray's fixed costs are measured apart: starting Ray (`ray.init` on
this machine's cores, or joining `--address`) and a run over one batch per worker (the actor pool starting and
each actor loading the detector), which every run pays again; "after start-up" divides N by the wall time minus
that cost. Every Ray run's scores are compared with the local engine's (the largest absolute difference is recorded).
The 1-, 5- and 15-minute load averages before and after are recorded, with a loud warning when the machine was
busy at the start. Prints a table and writes bench/results/detect_scale.json.

    PYTHONPATH=src python bench/detect_scale.py [--rows 20000] [--workers 1,2] [--detector DIR] [--address auto]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from seawall.detect.batch import DetectorSpec, predict_file
from seawall.detect.bench import load_average, warn_if_busy
from seawall.io import atomic_write_json, atomic_write_text

OUT = Path(__file__).resolve().parent / "results" / "detect_scale.json"


def write_input(path: Path, rows: int, data_dir: str | None, seed: int = 0) -> None:
    """N SecureBreak rows sampled with replacement (seeded) as JSONL."""
    import json

    from seawall.data import load

    records = load("securebreak", data_dir=data_dir).records
    picks = np.random.default_rng(seed).integers(len(records), size=rows)
    with path.open("w", encoding="utf-8") as handle:
        for i in picks:
            record = records[int(i)]
            handle.write(json.dumps({"prompt": record.prompt, "response": record.response}) + "\n")


def fit_tfidf(folder: Path, data_dir: str | None) -> None:
    """A tfidf detector (with its category model) fitted and calibrated on SecureBreak's canonical split."""
    from seawall.data import canonical_split
    from seawall.detect import make_detector

    split = canonical_split("securebreak", data_dir=data_dir)
    make_detector("tfidf").fit(split["train"], dev=split["dev"]).save(folder)


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows scored by each engine")
    parser.add_argument("--workers", default="1,2", help="Ray actor-pool sizes, comma-separated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--detector", help="a saved detector folder (default: a tfidf fitted on SecureBreak)")
    parser.add_argument(
        "--address", help="a Ray cluster to join (default: a local Ray on this machine's cores)"
    )
    parser.add_argument("--data-dir")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--doc",
        type=Path,
        metavar="PAGE",
        help="write the table of --out's JSON into PAGE (docs/scale.md) and exit",
    )
    args = parser.parse_args()
    if args.doc:
        result = json.loads(args.out.read_text())
        atomic_write_text(args.doc, with_results(args.doc.read_text(), result))
        print(f"wrote {args.doc} from {args.out}")
        return
    workers = [int(w) for w in args.workers.split(",")]

    load_before = load_average()
    busy = warn_if_busy(load_before, "scale benchmark")
    with tempfile.TemporaryDirectory(prefix="detect-scale-") as tmp:
        tmp = Path(tmp)
        folder = Path(args.detector) if args.detector else tmp / "tfidf"
        if not args.detector:
            print("fitting a tfidf detector on SecureBreak's train split …", file=sys.stderr)
            fit_tfidf(folder, args.data_dir)
        write_input(tmp / "rows.jsonl", args.rows, args.data_dir)
        spec = DetectorSpec(str(folder))
        load_s, detector = timed(spec.load)

        local_s, _ = timed(
            predict_file, str(tmp / "rows.jsonl"), tmp / "local.parquet", detector, batch_size=args.batch_size
        )
        local_scores = pq.read_table(tmp / "local.parquet").column("p_unsafe").to_numpy(zero_copy_only=False)
        local = {"seconds": round(local_s, 3), "rows_per_s": round(args.rows / local_s, 1)}
        print(f"local: {local['rows_per_s']} rows/s", file=sys.stderr)

        from seawall.detect.ray_engine import start_ray

        init_s, _ = timed(start_ray, args.address)
        import ray

        runs = []
        for n in workers:
            kwargs = {"engine": "ray", "batch_size": args.batch_size, "address": args.address, "workers": n}
            # One batch per worker: as many chunks as actors, so the whole pool starts.
            startup = tmp / f"startup-{n}.jsonl"
            write_input(startup, n * args.batch_size, args.data_dir, seed=1)
            fixed_s, _ = timed(predict_file, str(startup), tmp / "startup.parquet", spec, **kwargs)
            wall_s, _ = timed(predict_file, str(tmp / "rows.jsonl"), tmp / f"ray-{n}.parquet", spec, **kwargs)
            scores = pq.read_table(tmp / f"ray-{n}.parquet").column("p_unsafe").to_numpy(zero_copy_only=False)
            runs.append(
                {
                    "workers": n,
                    "startup_seconds": round(fixed_s, 3),
                    "seconds": round(wall_s, 3),
                    "rows_per_s": round(args.rows / wall_s, 1),
                    # None when N is too small to tell scoring time from start-up time
                    "rows_per_s_after_startup": round(args.rows / (wall_s - fixed_s), 1)
                    if wall_s > 1.5 * fixed_s
                    else None,
                    "max_abs_diff_vs_local": float(np.max(np.abs(scores - local_scores))),
                }
            )
            print(f"ray, {n} workers: {runs[-1]['rows_per_s']} rows/s", file=sys.stderr)
        cluster_cpus = ray.cluster_resources().get("CPU")
    load_after = load_average()
    result = {
        "rows": args.rows,
        "batch_size": args.batch_size,
        "input": "SecureBreak rows sampled with replacement (seed 0), JSONL → Parquet",
        "detector": {
            "backend": detector.backend,
            "id": detector.detector_id,
            "load_seconds": round(load_s, 3),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "ray": ray.__version__,
            "ray_address": args.address or "local",
            "ray_cluster_cpus": cluster_cpus,
        },
        "load_before": load_before,
        "load_after": load_after,
        "busy": busy,
        "local": local,
        "ray": {"init_seconds": round(init_s, 3), "runs": runs},
    }
    atomic_write_json(args.out, result)
    print(markdown_table(result))
    print(f"wrote {args.out}")


def markdown_table(result: dict) -> str:
    """The engines side by side, as Markdown (printed by the bench and written into docs/scale.md)."""
    local = result["local"]
    lines = [
        f"{result['rows']} rows, batch {result['batch_size']}, {result['detector']['backend']} detector, "
        f"{result['machine']['cpus']} CPUs, load average {result['load_before']} before → {result['load_after']} "
        f"after{' (busy: timings are upper bounds)' if result.get('busy') else ''}:",
        "",
        "| engine | rows/s | seconds | rows/s after start-up | max abs Δp vs local |",
        "|---|---|---|---|---|",
        f"| local | {local['rows_per_s']} | {local['seconds']} | – | – |",
    ]
    for run in result["ray"]["runs"]:
        lines.append(
            f"| ray, {run['workers']} workers | {run['rows_per_s']} | {run['seconds']} | "
            f"{run['rows_per_s_after_startup'] or '–'} | {run['max_abs_diff_vs_local']:.1e} |"
        )
    lines += [
        "",
        f"Ray start-up: {result['ray']['init_seconds']} s; a run of one batch per worker: "
        + ", ".join(f"{r['startup_seconds']} s ({r['workers']} workers)" for r in result["ray"]["runs"]),
    ]
    return "\n".join(lines)


BEGIN, END = "<!-- detect_scale:begin -->", "<!-- detect_scale:end -->"


def with_results(doc: str, result: dict) -> str:
    """`doc` with the block between the detect_scale markers replaced by the table of `result`."""
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"the page has no {BEGIN} … {END} block to fill")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown_table(result)}\n{END}{tail}"


if __name__ == "__main__":
    main()
