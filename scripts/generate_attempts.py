"""Sample a small chat model's answers to harmful prompts: the raw text of the detector mix's `attempts` source.

    python scripts/generate_attempts.py                      # SmolLM2-135M-Instruct on AdvBench, 2 samples each
    python scripts/generate_attempts.py --samples 1 --limit 32 --out /tmp/attempts.jsonl.gz   # a quick look

SmolLM2-135M-Instruct ships without safety alignment and tries almost every harmful request it is given, with the
weak, often tame-sounding compliance that people label unsafe in jailbreak-response sets ("1. First, find the
password…"). The script writes every sample, refusals and loops included, as JSONL (gzip) of
{prompt_id, sample, response}: prompts are referenced by id, never copied, and `seawall.detect.attempts` decides at
mix time which samples count as attempts (and reports what it drops and why). A manifest beside the file records
the model's fingerprint, the decoding settings and the command. Generations go through the generation cache, so an
interrupted run resumes; the output is written atomically at the end.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import time
from pathlib import Path

DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "src/seawall/data/generated/attempts-smollm2-advbench.jsonl.gz"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", default="advbench", help="a harmful prompt set of the dataset registry")
    parser.add_argument("--samples", type=int, default=2, help="samples per prompt (seeds 0..N-1)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from seawall.benchmarks import load_average
    from seawall.data import load
    from seawall.generation import GenerationConfig
    from seawall.generation.cache import GenerationCache, model_fingerprint
    from seawall.generation.transformers_backend import TransformersGenerator, resolve_model_dir
    from seawall.io import atomic_write_bytes, atomic_write_json

    prompts = load(args.prompts).records[: args.limit]
    model_dir = resolve_model_dir(args.model)
    fingerprint = model_fingerprint(model_dir, args.dtype)
    cache = GenerationCache()
    lazy: dict[str, TransformersGenerator] = {}
    started, load_before = time.perf_counter(), load_average()
    rows = []
    bar = tqdm(total=len(prompts) * args.samples, desc="attempts", unit="response")
    for sample in range(args.samples):
        config = GenerationConfig(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=sample
        )
        decoding = config.model_dump(include={"max_new_tokens", "temperature", "top_p", "seed"})

        def generate(batch, config=config):
            if "g" not in lazy:
                lazy["g"] = TransformersGenerator(model_dir, batch_size=args.batch_size, dtype=args.dtype)
            return lazy["g"].generate(batch, config)

        chunk = 32
        for start in range(0, len(prompts), chunk):
            part = prompts[start : start + chunk]
            conversations = [[{"role": "user", "content": p.prompt}] for p in part]
            replies = cache.generate(generate, conversations, fingerprint, decoding)
            rows += [
                {"prompt_id": p.id, "sample": sample, "response": r}
                for p, r in zip(part, replies, strict=True)
            ]
            bar.update(len(part))
    bar.close()
    buffer = io.BytesIO()
    # mtime=0: the same generations give the same bytes.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        gz.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode())
    atomic_write_bytes(args.out, buffer.getvalue())
    manifest = {
        "file": args.out.name,
        "prompts": args.prompts,
        "model": args.model,
        "model_fingerprint": fingerprint,
        "dtype": lazy["g"].dtype if lazy else args.dtype,
        "decoding": {k: v for k, v in decoding.items() if k != "seed"},
        "samples_per_prompt": args.samples,
        "rows": len(rows),
        "seconds": round(time.perf_counter() - started, 1),
        "load_average": {"before": load_before, "after": load_average()},
        "command": "python scripts/generate_attempts.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    atomic_write_json(args.out.with_name(args.out.name.removesuffix(".jsonl.gz") + ".json"), manifest)
    print(f"{len(rows)} responses → {args.out} ({manifest['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
