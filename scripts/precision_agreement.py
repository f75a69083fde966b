"""Does bf16 change what we measure? Evaluation generation and SafeGene calibration, float32 against bfloat16.

    python scripts/precision_agreement.py generate MODEL [MODEL ...] --config configs/smollm2-135m.yaml \
        [--detector DIR|none] [--n-harmful N] [--n-benign N] [--cache FILE] --out OUT.json [--render OUT.md]
    python scripts/precision_agreement.py render OUT.json OUT.md
    python scripts/precision_agreement.py calibration --out CAL.json [--render CAL.md]

`generate` answers the experiment's evaluation prompts (the `eval:` section of the config: the seeded samples of the
safety and over-refusal suites, its decoding and bootstrap) with the transformers backend in float32 and in
bfloat16, judges the answers with the refusal judge and the detector, and writes per model: HRR and over-refusal
with 95% bootstrap intervals under each dtype, per-prompt decision agreement, the share of answer tokens identical
at the same position, and the verdict "agree within intervals" (the intervals overlap AND the difference is within
the larger half-width). MODEL is a folder or a packaged name. Generations go through the generation cache, keyed by
dtype: pointing `--cache` at a run's generations.sqlite reuses what the experiment already generated.

`calibration` fits SafeGene's α in both precisions on tiny random Llamas (the shape of tests/gene/conftest.py:
A, D = A nudged, T = A nudged less) over seeds, τ scales and calibration settings, and records max |Δα| and
whether α_bf16 is as good a solution of the float32 objective (the loss gap as a share of the fitted gain).

`render` (or `--render`) writes the Markdown page from the JSON: results pages are generated, never typed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DTYPES = ("float32", "bfloat16")


# --- comparison (pure: also what the tests feed synthetic result sets to) ------------------------------------------
def within_intervals(a: dict, b: dict) -> dict:
    """Verdict on two rates ({rate, n, ci95}): intervals overlap AND |difference| ≤ the larger half-width."""
    (lo_a, hi_a), (lo_b, hi_b) = a["ci95"], b["ci95"]
    difference = b["rate"] - a["rate"]
    half_width = max((hi_a - lo_a) / 2, (hi_b - lo_b) / 2)
    overlap = lo_a <= hi_b and lo_b <= hi_a
    return {
        "float32": a["rate"],
        "bfloat16": b["rate"],
        "difference": difference,
        "half_width": half_width,
        "overlap": overlap,
        "agree": bool(overlap and abs(difference) <= half_width),
    }


def _by_key(rows: Sequence[dict], what: str) -> dict[tuple[str, str], dict]:
    keyed = {(r["suite"], r["id"]): r for r in rows}
    if len(keyed) != len(rows):
        raise ValueError(f"{what}: duplicate (suite, id) rows")
    return keyed


def token_identity(pairs: Sequence[tuple[str, str]], tokenize: Callable[[str], list]) -> dict:
    """Share of token positions holding the same token in both answers (over the longer answer of each pair)."""
    same = total = identical = 0
    for a, b in pairs:
        ta, tb = tokenize(a), tokenize(b)
        same += sum(x == y for x, y in zip(ta, tb, strict=False))
        total += max(len(ta), len(tb))
        identical += int(ta == tb)
    return {
        "token_identity": same / total if total else 1.0,
        "tokens_compared": total,
        "identical_answers": identical / len(pairs) if pairs else 1.0,
    }


def compare(runs: dict[str, dict], tokenize: Callable[[str], list]) -> dict:
    """Agreement of a float32 and a bfloat16 run of one model.

    A run: {"hrr": {judge: rate}, "overrefusal": rate, "safety_rows": [{suite, id, response, unsafe_<judge>}],
    "overrefusal_rows": [{suite, id, response, refused}]}; both runs must cover the same prompts.
    """
    a, b = runs["float32"], runs["bfloat16"]
    agreement: dict[str, Any] = {"decisions": {}, "disagreeing_ids": {}}
    verdicts: dict[str, dict] = {}
    pairs: list[tuple[str, str]] = []
    for kind, flag in (("safety_rows", None), ("overrefusal_rows", "refused")):
        rows_a, rows_b = _by_key(a[kind], f"float32 {kind}"), _by_key(b[kind], f"bfloat16 {kind}")
        if rows_a.keys() != rows_b.keys():
            missing = sorted(rows_a.keys() ^ rows_b.keys())[:3]
            raise ValueError(f"{kind}: the two runs answered different prompts (e.g. {missing})")
        keys = sorted(rows_a)
        pairs += [(rows_a[k]["response"], rows_b[k]["response"]) for k in keys]
        flags = [flag] if flag else [f"unsafe_{judge}" for judge in a["hrr"]]
        for name in flags:
            differ = [f"{s}/{i}" for s, i in keys if rows_a[(s, i)][name] != rows_b[(s, i)][name]]
            label = "overrefusal" if flag else f"hrr_{name.removeprefix('unsafe_')}"
            agreement["decisions"][label] = 1 - len(differ) / len(keys) if keys else 1.0
            agreement["disagreeing_ids"][label] = differ
    agreement.update(token_identity(pairs, tokenize))
    for judge, rate in a["hrr"].items():
        verdicts[f"hrr_{judge}"] = within_intervals(rate, b["hrr"][judge])
    verdicts["overrefusal"] = within_intervals(a["overrefusal"], b["overrefusal"])
    return {"agreement": agreement, "verdicts": verdicts, "agree": all(v["agree"] for v in verdicts.values())}


def load_records(name: str, data_dir: str | None = None, split: str | None = None) -> list:
    """The records of a shared data set (the harness's loader signature)."""
    from seawall.data import load

    return list(load(name, data_dir=data_dir, split=split).records)


# --- generation ------------------------------------------------------------------------------------------------------
def measure(
    folder: Path,
    dtype: str,
    config: Any,
    judges: list,
    is_refusal: Callable[[str], bool],
    cache: Any,
    load: Callable,
    n_harmful: int | None,
    n_benign: int | None,
) -> dict:
    """One model in one dtype: HRR per judge and over-refusal on the config's seeded samples, with the rows."""
    from tqdm.auto import tqdm

    from seawall.evaluate.generate import backend_generator
    from seawall.evaluate.harness import Evaluator
    from seawall.generation.cache import model_fingerprint

    settings = config.eval
    lazy: dict[str, Callable] = {}
    bar = tqdm(desc=f"{folder.name} {dtype}", unit="answer", leave=False)

    def generate(conversations: list, decoding: Any) -> list[str]:
        if "fn" not in lazy:  # the model is loaded only on a cache miss
            lazy["fn"] = backend_generator(folder, settings.decoding, config.threads, dtype=dtype)
        out = lazy["fn"](conversations, decoding)
        bar.update(len(out))
        return out

    evaluator = Evaluator(
        generate,
        model_fingerprint(folder, dtype),
        settings.decoding,
        cache,
        config.seed,
        config.data_dir,
        load,
        settings.n_boot,
    )
    started = time.perf_counter()
    safety, safety_rows = evaluator.safety(judges, n_harmful)
    over, over_rows = evaluator.overrefusal(is_refusal, n_benign)
    bar.close()
    return {
        "fingerprint": evaluator.model_id,
        "hrr": {judge: values["hrr"] for judge, values in safety["judges"].items()},
        "overrefusal": over["rate"],
        "seconds": round(time.perf_counter() - started, 2),
        "safety_rows": safety_rows,
        "overrefusal_rows": over_rows,
    }


def agreement_report(
    models: Sequence[str],
    config: Any,
    detector: str | None,
    cache: Any,
    load: Callable | None = None,
    is_refusal: Callable[[str], bool] | None = None,
    n_harmful: int | None = None,
    n_benign: int | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> dict:
    """The whole `generate` report (what is written as JSON)."""
    from transformers import AutoTokenizer

    from seawall.errors import SeawallError
    from seawall.evaluate.judges import DetectorJudge, RefusalJudge, default_is_refusal
    from seawall.lab.recipes import resolve_model_dir
    from seawall.models.precision import bf16_supported

    if not bf16_supported():
        # bfloat16 would fall back to float32 (seawall.models.precision): the comparison would be fp32 against fp32.
        raise SeawallError("this CPU has no bf16 matrix units (amx_bf16 / avx512_bf16): nothing to compare")
    load = load or load_records
    is_refusal = is_refusal or default_is_refusal()
    judges: list[Any] = [RefusalJudge(is_refusal)]
    detector_id = None
    if detector:
        manifest = Path(detector) / "detector.json"
        if not manifest.is_file():
            raise SeawallError(f"--detector: {manifest} not found (train a detector or pass --detector none)")
        detector_id = json.loads(manifest.read_text()).get("detector_id")
        judges.append(DetectorJudge.load(detector))
    settings = config.eval
    n_harmful = settings.n_harmful_per_suite if n_harmful is None else n_harmful
    n_benign = settings.n_benign_per_suite if n_benign is None else n_benign
    load_before = os.getloadavg()
    report_models = []
    for ref in models:
        folder = resolve_model_dir(ref)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        runs = {}
        for dtype in DTYPES:
            log(f"{ref}: {dtype}")
            runs[dtype] = measure(folder, dtype, config, judges, is_refusal, cache, load, n_harmful, n_benign)
        result = compare(runs, lambda text, tok=tokenizer: tok(text, add_special_tokens=False)["input_ids"])
        report_models.append(
            {
                "model": str(ref),
                "path": str(folder),
                "dtypes": {
                    d: {k: v for k, v in r.items() if not k.endswith("_rows")} for d, r in runs.items()
                },
                **result,
            }
        )
    return {
        "what": "evaluation generation in float32 vs bfloat16 (scripts/precision_agreement.py generate)",
        "eval": {
            "n_harmful_per_suite": n_harmful,
            "n_benign_per_suite": n_benign,
            "decoding": settings.decoding.model_dump(mode="json"),
            "n_boot": settings.n_boot,
            "seed": config.seed,
        },
        "judges": [j.name for j in judges],
        "detector": detector,
        "detector_id": detector_id,
        "machine": {
            "bf16_supported": True,
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "models": report_models,
        "agree": all(m["agree"] for m in report_models),
    }


# --- calibration -----------------------------------------------------------------------------------------------------
CAL_SETTINGS = {
    "lbfgs": {},
    "lbfgs-12": {"max_epochs": 12},
    "adam": {"optimizer": "adam"},
    "per-module-type": {"per_module_type": True},
}
CAL_BASE = {"max_epochs": 4, "batch_size": 6, "response_tokens": 4, "max_length": 64}


def calibration_report(seeds: Sequence[int], scales: Sequence[float], workdir: Path) -> dict:
    """α fitted in float32 and bfloat16 for every (seed, τ scale, setting); loss gaps on the float32 objective."""
    from seawall.models import precision

    # bf16 arithmetic follows the same rounding rules on any CPU (emulated where there are no bf16 units): the α
    # it fits is what a bf16 CPU would fit, only slower. So bfloat16 is not allowed to fall back to float32 here.
    supported, precision.bf16_supported = precision.bf16_supported, lambda: True
    try:
        return _calibration_rows(seeds, scales, workdir)
    finally:
        precision.bf16_supported = supported


def _calibration_rows(seeds: Sequence[int], scales: Sequence[float], workdir: Path) -> dict:
    import torch

    from seawall.gene import CalibrateConfig, extract
    from seawall.gene.calibration import (
        CalibrationObjective,
        DeltaForward,
        calibrate,
        prepare_data,
        selected_modules,
    )
    from seawall.gene.shots import Shots
    from seawall.gene.tiny import BENIGN, HARMFUL, build_tiny_llama
    from seawall.generation.tiny import build_tiny_tokenizer

    # One thread: tiny models gain nothing from more, and spinning OpenMP threads make the fit times meaningless.
    torch.set_num_threads(1)
    tokenizer = build_tiny_tokenizer()
    shots = Shots.from_lists(HARMFUL, BENIGN)
    rows = []
    for scale in scales:
        for seed in seeds:
            aligned = build_tiny_llama(10 * seed, vocab_size=len(tokenizer))
            degraded = build_tiny_llama(10 * seed + 1, aligned, scale, vocab_size=len(tokenizer))
            target = build_tiny_llama(10 * seed + 2, aligned, scale / 2, vocab_size=len(tokenizer))
            folders = {}
            for name, model in (("A", aligned), ("D", degraded)):
                folders[name] = workdir / f"{scale}-{seed}" / name
                model.save_pretrained(folders[name])
            adapter = extract(folders["A"], folders["D"], None, progress=False)
            for setting, overrides in CAL_SETTINGS.items():
                fits = {
                    p: calibrate(
                        adapter,
                        target,
                        shots,
                        CalibrateConfig(**{**CAL_BASE, **overrides}, precision=p),
                        tokenizer,
                        progress=False,
                        record=False,
                    )
                    for p in DTYPES
                }
                config = CalibrateConfig(**{**CAL_BASE, **overrides})
                forward = DeltaForward(
                    target, adapter, selected_modules(adapter, None), config.per_module_type
                )
                objective = CalibrationObjective(
                    forward, prepare_data(target, tokenizer, shots, config), config
                )
                loss = {
                    p: objective.value(torch.tensor([f.coefficients[g] for g in forward.groups]))
                    for p, f in fits.items()
                }
                a32, a16 = fits["float32"].coefficients, fits["bfloat16"].coefficients
                gain = fits["float32"].initial_loss - loss["float32"]
                rows.append(
                    {
                        "seed": seed,
                        "tau_scale": scale,
                        "setting": setting,
                        "groups": len(a32),
                        "max_abs_dalpha": max(abs(a32[g] - a16[g]) for g in a32),
                        "max_alpha_fp32": max(a32.values()),
                        "fp32_loss_at_fp32_alpha": loss["float32"],
                        "fp32_loss_at_bf16_alpha": loss["bfloat16"],
                        "gain_fp32": gain,
                        "gap_share_of_gain": (loss["bfloat16"] - loss["float32"]) / gain
                        if gain > 0
                        else None,
                        "fit_seconds": {p: round(f.fit_seconds, 3) for p, f in fits.items()},
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr)
    return {
        "what": "SafeGene α fitted in float32 vs bfloat16 (scripts/precision_agreement.py calibration)",
        "alpha_max": CalibrateConfig().alpha_max,
        "base_settings": CAL_BASE,
        "settings": CAL_SETTINGS,
        "rows": rows,
    }


# --- rendering -------------------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _interval(rate: dict) -> str:
    low, high = rate["ci95"]
    return f"{_pct(rate['rate'])} [{_pct(low)}, {_pct(high)}]"


def render_generation(report: dict, source: str) -> str:
    e = report["eval"]
    lines = [
        "# Evaluation generation: float32 vs bfloat16",
        "",
        f"Generated by `scripts/precision_agreement.py` from `{source}`; do not edit by hand. "
        f"{e['n_harmful_per_suite']} harmful prompts per safety suite, {e['n_benign_per_suite']} benign prompts "
        f"per over-refusal suite, greedy, {e['decoding']['max_new_tokens']} new tokens, judges: "
        f"{', '.join(report['judges'])}. Rates in %, 95% bootstrap intervals ({e['n_boot']} resamples). "
        "Verdict: the intervals overlap and the difference is within the larger half-width.",
        "",
        "| model | measure | float32 | bfloat16 | Δ (points) | same decision | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        runs = m["dtypes"]
        for name, verdict in m["verdicts"].items():
            if name == "overrefusal":
                a, b = runs["float32"]["overrefusal"], runs["bfloat16"]["overrefusal"]
                label = "over-refusal"
            else:
                judge = name.removeprefix("hrr_")
                a, b = runs["float32"]["hrr"][judge], runs["bfloat16"]["hrr"][judge]
                label = f"HRR ({judge})"
            lines.append(
                f"| {m['model']} | {label} | {_interval(a)} | {_interval(b)} | "
                f"{100 * verdict['difference']:+.1f} | {_pct(m['agreement']['decisions'][name])}% | "
                f"{'agree' if verdict['agree'] else '**differ**'} |"
            )
    lines += ["", "| model | identical tokens | identical answers | tokens compared | seconds fp32 / bf16 |"]
    lines.append("|---|---|---|---|---|")
    for m in report["models"]:
        g = m["agreement"]
        seconds = " / ".join(str(m["dtypes"][d]["seconds"]) for d in DTYPES)
        lines.append(
            f"| {m['model']} | {_pct(g['token_identity'])}% | {_pct(g['identical_answers'])}% | "
            f"{g['tokens_compared']} | {seconds} |"
        )
    machine = report["machine"]
    lines += [
        "",
        f"Overall: **{'agree within intervals' if report['agree'] else 'do not agree within intervals'}**. "
        f"Load average before/after: {machine['load_before'][0]} / {machine['load_after'][0]} on "
        f"{machine['cpus']} CPUs (seconds include cached generations).",
        "",
    ]
    return "\n".join(lines)


def render_calibration(report: dict, source: str) -> str:
    lines = [
        "# SafeGene calibration: float32 vs bfloat16",
        "",
        f"Generated by `scripts/precision_agreement.py calibration` from `{source}`; do not edit by hand. "
        f"Tiny random Llamas (4 layers, hidden 64; D and T are A with nudged projections, τ scale below), "
        f"6 harmful + 6 benign shots, α_max {report['alpha_max']}. The gap is the float32 loss at α_bf16 minus "
        "the float32 loss at α_fp32, as a share of what the float32 fit gained (negative: α_bf16 is the better "
        "float32 solution). Fit times are in the JSON but say nothing about speed: at hidden size 64 bf16 only "
        "adds conversions.",
        "",
        "| τ scale | seed | setting | max abs Δα | max α (fp32) | gap / gain |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        gap = "–" if r["gap_share_of_gain"] is None else f"{100 * r['gap_share_of_gain']:+.2f}%"
        lines.append(
            f"| {r['tau_scale']} | {r['seed']} | {r['setting']} | {r['max_abs_dalpha']:.4f} | "
            f"{r['max_alpha_fp32']:.3f} | {gap} |"
        )
    lines.append("")
    return "\n".join(lines)


def render(report: dict, source: str) -> str:
    """The Markdown page of a `generate` or `calibration` report."""
    return (render_calibration if "rows" in report else render_generation)(report, source)


# --- command line ----------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="evaluation answers in float32 and bfloat16, judged and compared")
    gen.add_argument("models", nargs="+", help="model folders or packaged names")
    gen.add_argument("--config", required=True, help="experiment YAML whose eval: section is used")
    gen.add_argument("--detector", help="detector folder for the second judge ('none': refusal judge only)")
    gen.add_argument("--n-harmful", type=int, help="prompts per safety suite (default: the config's)")
    gen.add_argument("--n-benign", type=int, help="prompts per over-refusal suite (default: the config's)")
    gen.add_argument("--cache", help="generation cache file (default: $SEAWALL_CACHE/generations)")
    gen.add_argument("--out", required=True, help="JSON report")
    gen.add_argument("--render", help="also write the Markdown page here")
    cal = sub.add_parser("calibration", help="SafeGene α fitted in float32 and bfloat16 on tiny models")
    cal.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    cal.add_argument("--scales", type=float, nargs="+", default=[0.02, 0.005])
    cal.add_argument("--out", required=True, help="JSON report")
    cal.add_argument("--render", help="also write the Markdown page here")
    ren = sub.add_parser("render", help="Markdown page from a JSON report")
    ren.add_argument("json")
    ren.add_argument("markdown")
    args = parser.parse_args(argv)

    from seawall.io import atomic_write_json, atomic_write_text

    if args.command == "render":
        report = json.loads(Path(args.json).read_text())
        atomic_write_text(args.markdown, render(report, args.json))
        return 0
    if args.command == "generate":
        from seawall.evaluate.experiment import load_config
        from seawall.generation.cache import GenerationCache

        config = load_config(args.config)
        detector = None if args.detector == "none" else (args.detector or config.eval.detector)
        report = agreement_report(
            args.models,
            config,
            detector,
            GenerationCache(args.cache),
            n_harmful=args.n_harmful,
            n_benign=args.n_benign,
        )
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            report = calibration_report(args.seeds, args.scales, Path(workdir))
    atomic_write_json(args.out, report)
    if args.render:
        atomic_write_text(args.render, render(report, args.out))
    if args.command == "generate":
        print(f"{args.out}: {'agree' if report['agree'] else 'DO NOT agree'} within intervals")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
