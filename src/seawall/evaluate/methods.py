"""Wiring of the restoration methods of `seawall.gene` into the experiment: inputs, shared adapter, shots."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from seawall.data.hygiene import check_no_overlap
from seawall.data.suites import evaluation_prompts
from seawall.errors import SeawallError


def experiment_shots(context: Any, n_harmful: int = 32, n_benign: int = 32) -> Any:
    """Few-shot prompts for layer selection and recalibration: HarmBench VAL (harmful), Alpaca (benign).

    HarmBench val and test hold different behaviours; hygiene is still checked against every evaluation set.
    """
    from seawall.gene import Shots

    if "shots" in context.__dict__:
        return context.shots
    rng = random.Random(context.config.seed + 7)
    evaluation = evaluation_prompts(context.config.data_dir, context.load, context.tasks)
    banned = {p for ps in evaluation.values() for p in ps}
    harmful = [
        r.prompt
        for r in context.load("harmbench", data_dir=context.config.data_dir, split="val")
        if r.harmful
    ]
    benign = [r.prompt for r in context.load("alpaca", data_dir=context.config.data_dir)]
    harmful = sorted(p for p in set(harmful) if p not in banned)
    benign = sorted(p for p in set(benign) if p not in banned)
    rng.shuffle(harmful)
    rng.shuffle(benign)
    shots = Shots.from_lists(harmful[:n_harmful], benign[:n_benign], source="harmbench-val+alpaca")
    check_no_overlap({"shots": shots.harmful + shots.benign}, evaluation)
    context.shots = shots
    return shots


def safety_adapter(context: Any, aligned: Path, degraded: Path, params: dict) -> Path:
    """The SafeGene adapter, extracted from A and D and layer-selected once per experiment, reused for every target.

    `select: null` in the params leaves the adapter unselected (every layer).
    """
    from seawall.gene import ExtractConfig, SafetyAdapter, SelectConfig, extract, select_layers

    folder = context.root / "safety-adapter"
    marker = folder / "selected.json"
    # The marker records the extract/select settings: changing them in the config re-extracts and re-selects.
    wanted = {"extract": params.get("extract", {}), "select": params.get("select", {})}
    if marker.exists() and json.loads(marker.read_text()).get("params") == wanted:
        return folder
    shots = experiment_shots(context)
    extract(
        aligned, degraded, folder, ExtractConfig(**params.get("extract", {})), overwrite=True, progress=False
    )
    layers = None
    if wanted["select"] is not None:
        layers = select_layers(
            SafetyAdapter.load(folder),
            shots,
            aligned=aligned,
            degraded=degraded,
            model=degraded,
            config=SelectConfig(**wanted["select"]),
            plot=folder / "layer-scores.png",
            progress=False,
        )
    from seawall.io import atomic_write_json

    atomic_write_json(marker, {"layers": layers, "params": wanted})
    return folder


def merge_peft(adapter: Path, output: Path) -> str:
    """Merge a PEFT adapter into the base it records (adapter_config.json) and save the full model; returns the base.

    The base differs by method: SafeGene's adapter stacks on the target T, Safe LoRA's and SafeMERGE's replace the
    task LoRA and so sit on A. Merging onto the recorded base is right for each.
    """
    from seawall.gene.modeling import load_causal_lm, load_tokenizer
    from seawall.io import atomic_dir

    config_file = adapter / "adapter_config.json"
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base or not (Path(base) / "config.json").is_file():
        raise SeawallError(
            f"{config_file}: base_model_name_or_path {base!r} is not a model folder; cannot merge the adapter"
        )
    merged = load_causal_lm(adapter)
    tokenizer = load_tokenizer(base)
    with atomic_dir(output, overwrite=True) as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return str(base)


FILTER_PARAMS = ("detector",)


def filtered_target(context: Any, params: dict[str, Any], task: str, share: float) -> tuple[Path, dict]:
    """The `filter` method: the target customized again on the task data (harmful share included) that a detector
    judges safe (`seawall lab customize --filter-with`); returns its model folder and the method's record.

    `params.detector` is the filtering detector (default: the default detector, `seawall detect demo`'s), which
    is best kept apart from the judge (`eval.detector`): a filter judged by itself would look better than it is.
    The record (restored/TARGET/filter/method.json) holds the detector's id, the kept/dropped counts and the time
    of filtering + customizing, which replaces T's customization rather than adding to it.
    """
    import shutil

    from seawall.detect import default_detector_path
    from seawall.evaluate.experiment import measure, target_label
    from seawall.io import atomic_write_json

    unknown = sorted(set(params) - set(FILTER_PARAMS))
    if unknown:
        raise SeawallError(
            f"method filter: unknown parameter(s) {unknown}; it takes {', '.join(FILTER_PARAMS)}"
        )
    detector = str(params.get("detector") or default_detector_path())
    manifest = Path(detector) / "detector.json"
    if not manifest.is_file():
        raise SeawallError(
            f"method filter: {manifest} not found; set params.detector to a saved detector folder"
        )
    wanted = {
        "params": params,
        "detector": detector,
        "detector_id": json.loads(manifest.read_text()).get("detector_id"),
    }
    out = context.root / "restored" / target_label(task, share) / "filter"
    marker = out / "method.json"
    if marker.exists():
        record = json.loads(marker.read_text())
        if {key: record.get(key) for key in wanted} == wanted:
            return out / "model", record
        context.log(f"filter on {out.parent.name}: the detector or its parameters changed, customizing again")
        # The same folder name for another detector: customize would return (or refuse) the outdated model.
        shutil.rmtree(out)
    with measure() as stats:
        context.target(task, share, filter_with=detector, out=out)
    trained = json.loads((out / "record.json").read_text())
    record = {"method": "filter", **wanted, **stats, "report": trained["data_report"]["filter"]}
    atomic_write_json(marker, record)
    return out / "model", record


def apply_method(
    name: str,
    params: dict[str, Any],
    base: Path,
    aligned: Path,
    degraded: Path,
    target: Path,
    output: Path,
    workdir: Path,
    context: Any,
) -> dict[str, Any]:
    """Write the restored model T′ (a full HF folder) to `output`; returns the method's report.

    `target` is a customize folder: model/ (merged T) and adapter/ (its task LoRA on top of A). A method that writes
    a PEFT adapter writes it under `workdir`, and the adapter is merged into the base it records.
    """
    from seawall.gene import get_method

    method = get_method(name)(params)
    inputs: dict[str, Any] = {"aligned": aligned, "degraded": degraded, "base": base, "overwrite": True}
    task_lora = target / "adapter"
    if name == "safegene":
        inputs["adapter"] = safety_adapter(context, aligned, degraded, params)
        inputs["shots"] = experiment_shots(context)
    if name == "resta" and getattr(method.config, "tune", False):
        inputs["shots"] = experiment_shots(context)
    if name in {"safe-lora", "safemerge"}:
        if not (task_lora / "adapter_config.json").exists():
            raise SeawallError(f"{name} needs the task LoRA in {task_lora}; customize with method: lora")
        inputs["task_lora"] = task_lora
    if name == "safemerge":
        safety_lora = aligned.parent / "adapter"
        if not (safety_lora / "adapter_config.json").exists():
            raise SeawallError(f"safemerge needs a safety LoRA: {safety_lora} (align with method: lora)")
        inputs["safety_lora"] = safety_lora
    writes_peft = name in {"safe-lora", "safemerge"} or getattr(method.config, "format", "merged") == "peft"
    result = method.apply(target / "model", workdir / target.name if writes_peft else output, **inputs)
    report = dict(result.report)
    report.pop("cosines", None)
    info: dict[str, Any] = {"report": report, "format": result.format}
    if result.format == "peft":
        info["merged_onto"] = merge_peft(Path(result.output), output)
    return info
