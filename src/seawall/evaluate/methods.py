"""Wiring of the restoration methods of `seawall.gene` into the experiment: inputs, shared adapter, shots, and
SafeGene's knobs tuned on held-out calibration prompts."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seawall.data.hygiene import check_no_overlap, normalized_set
from seawall.data.records import normalize_text
from seawall.data.suites import evaluation_prompts
from seawall.errors import SeawallError

TUNING_SOURCE = "harmbench-val+alpaca (disjoint from shots)"
SELECT_KNOBS = ("select.cumulative", "select.top_k")


def _calibration_pools(context: Any) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """HarmBench VAL harmful and Alpaca prompts outside every evaluation set (sorted), and the evaluation sets."""
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
    return harmful, benign, evaluation


def experiment_shots(context: Any, n_harmful: int = 32, n_benign: int = 32) -> Any:
    """Few-shot prompts for layer selection and recalibration: HarmBench VAL (harmful), Alpaca (benign).

    HarmBench val and test hold different behaviours; hygiene is still checked against every evaluation set.
    """
    from seawall.gene import Shots

    if "shots" in context.__dict__:
        return context.shots
    rng = random.Random(context.config.seed + 7)
    harmful, benign, evaluation = _calibration_pools(context)
    rng.shuffle(harmful)
    rng.shuffle(benign)
    shots = Shots.from_lists(harmful[:n_harmful], benign[:n_benign], source="harmbench-val+alpaca")
    check_no_overlap({"shots": shots.harmful + shots.benign}, evaluation)
    context.shots = shots
    return shots


def tuning_prompts(context: Any, n_harmful: int, n_benign: int) -> Any:
    """Held-out prompts on which SafeGene's knobs are chosen: HarmBench VAL and Alpaca, disjoint from the shots
    (which the calibration fits on, so they would flatter every grid point) and from every evaluation prompt (the
    choice must never see what it is judged on). Seeded from `config.seed`, drawn apart from the shots' draw."""
    from seawall.gene import Shots

    shots = experiment_shots(context)
    harmful, benign, evaluation = _calibration_pools(context)
    # Normalised, so that a prompt differing from a shot or an evaluation prompt only in case or spacing is out too.
    taken = normalized_set([*shots.harmful, *shots.benign, *(p for ps in evaluation.values() for p in ps)])
    harmful = [p for p in harmful if normalize_text(p) not in taken]
    benign = [p for p in benign if normalize_text(p) not in taken]
    if len(harmful) < n_harmful or len(benign) < n_benign:
        raise SeawallError(
            f"safegene tune: {len(harmful)} harmful (HarmBench val) and {len(benign)} benign (Alpaca) prompts are "
            f"left outside the shots and the evaluation sets; n_harmful {n_harmful} and n_benign {n_benign} "
            "asked for: lower them"
        )
    rng = random.Random(context.config.seed + 11)
    rng.shuffle(harmful)
    rng.shuffle(benign)
    prompts = Shots.from_lists(harmful[:n_harmful], benign[:n_benign], source=TUNING_SOURCE)
    check_no_overlap(
        {"tuning": prompts.harmful + prompts.benign},
        {**evaluation, "shots": shots.harmful + shots.benign},
    )
    return prompts


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


class SafeGeneTuning(BaseModel):
    """The `tune:` block of the safegene method's params: SafeGene's own knobs chosen per target on held-out
    calibration prompts (`tuning_prompts`), never on evaluation prompts.

    Every point of the grid (the cartesian product, in the order written) is calibrated and applied, answers the
    held-out prompts greedily, and scores refusal rate on the harmful ones minus refusal rate on the benign ones;
    the best point (ties: the first) is the method's output.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        min_length=1,
        description="knob → values: a field of the calibrate config (alpha_max, lambda_retain, …) or "
        "select.cumulative / select.top_k",
    )
    n_harmful: int = Field(24, ge=1, description="held-out HarmBench val prompts")
    n_benign: int = Field(24, ge=1, description="held-out Alpaca prompts")
    max_new_tokens: int = Field(32, ge=1, description="length of the greedy answers that are scored")


def tunable_knobs() -> list[str]:
    """The knobs a tuning grid may name: every calibrate field (bare) and the two selection sizes."""
    from seawall.gene import CalibrateConfig

    return [*CalibrateConfig.model_fields, *SELECT_KNOBS]


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first knob varying slowest."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def point_params(params: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """SafeGene's params with one grid point's values set: `select.x` in the select block, the others in calibrate."""
    out = dict(params)
    for knob, value in point.items():
        section, _, name = knob.rpartition(".")
        section = section or "calibrate"
        out[section] = {**(out.get(section) or {}), name: value}
    return out


def split_tuning(params: dict[str, Any]) -> tuple[SafeGeneTuning | None, dict[str, Any]]:
    """The validated `tune:` block of safegene's params (None without one) and the params the method itself takes.

    Every grid point is checked to make a valid SafeGene config, so a bad value fails before anything calibrates.
    """
    from seawall.gene import get_method

    own = {key: value for key, value in params.items() if key != "tune"}
    if "tune" not in params:
        return None, own
    try:
        tuning = SafeGeneTuning.model_validate(params["tune"])
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in ("tune", *first["loc"]))
        raise SeawallError(f"safegene params: {where}: {first['msg']}") from error
    allowed = tunable_knobs()
    unknown = [knob for knob in tuning.grid if knob not in allowed]
    if unknown:
        raise SeawallError(
            f"safegene params: tune.grid: unknown knob(s) {unknown}; allowed: {', '.join(allowed)}"
        )
    repeated = [
        knob for knob, values in tuning.grid.items() if len(set(map(json.dumps, values))) < len(values)
    ]
    if repeated:
        raise SeawallError(f"safegene params: tune.grid: {repeated} list a value twice")
    select_knobs = [knob for knob in tuning.grid if knob in SELECT_KNOBS]
    calibrate_knobs = [knob for knob in tuning.grid if knob not in SELECT_KNOBS]
    for section, named in (("select", select_knobs), ("calibrate", calibrate_knobs)):
        if named and section in own and own[section] is None:
            raise SeawallError(
                f"safegene params: tune.grid names {named}, but `{section}: null` turns that step off"
            )
    method = get_method("safegene")
    for point in grid_points(tuning.grid):
        try:
            method(point_params(own, point))
        except SeawallError as error:
            raise SeawallError(f"safegene params: tune.grid point {point}: {error}") from error
    return tuning, own


def _refusal_rates(context: Any, model_dir: Path, prompts: Any, max_new_tokens: int) -> tuple[float, float]:
    """Refusal rates of `model_dir`'s greedy answers on the held-out harmful and benign prompts.

    Through the run's generation cache, keyed by the model's fingerprint (its weights), so two grid points never
    share answers unless their weights are the same.
    """
    decoding = context.config.eval.decoding.model_copy(
        update={"max_new_tokens": max_new_tokens, "temperature": 0.0}
    )
    replies = context.evaluator(model_dir, decoding).respond([*prompts.harmful, *prompts.benign])
    refused = [bool(context.is_refusal(reply)) for reply in replies]
    n = len(prompts.harmful)
    return sum(refused[:n]) / n, sum(refused[n:]) / len(prompts.benign)


def _best(entries: list[dict]) -> int:
    """Index of the highest score; the first of equal scores (grid order)."""
    return max(range(len(entries)), key=lambda i: (entries[i]["score"], -i))


def tuned_safegene(
    tuning: SafeGeneTuning,
    params: dict[str, Any],
    target: Path,
    output: Path,
    workdir: Path,
    context: Any,
    **models: Path,
) -> dict[str, Any]:
    """SafeGene with its knobs chosen on held-out prompts; writes the chosen point's model to `output` and returns
    its `apply_method` info, the report holding `tuning` (prompts, every point's rates and score, the choice).

    Each point is applied into WORKDIR/tuning/TARGET/point-I/; only the best model so far is kept there (a grid
    of full checkpoints would fill the disk). WORKDIR/tuning/TARGET/tuning.json records the params (tune block
    included) and the prompts, and each point's score as soon as it is known: a rerun resumes an interrupted grid
    and reuses a finished choice (re-applying only the chosen point when its model is gone); changed params or
    prompts tune again. Selection knobs re-pick layers from the experiment's layer scores (computed once, in
    safety-adapter/): top_k and cumulative change which layers are kept, not the scores.
    """
    from seawall.gene import SafetyAdapter, SelectConfig
    from seawall.gene.selection import pick_layers, selection_record
    from seawall.io import atomic_write_json

    prompts = tuning_prompts(context, tuning.n_harmful, tuning.n_benign)
    folder = workdir / "tuning" / target.name
    marker = folder / "tuning.json"
    wanted = {"params": {**params, "tune": tuning.model_dump(mode="json")}, "prompts": prompts.record()}
    state = json.loads(marker.read_text()) if marker.exists() else None
    if state is not None and state.get("wanted") != wanted:
        context.log(f"safegene on {target.name}: tuning params or prompts changed, tuning again")
        shutil.rmtree(folder)
        state = None
    entries: list[dict] = state["grid"] if state else []
    points = grid_points(tuning.grid)
    shared = SafetyAdapter.load(safety_adapter(context, models["aligned"], models["degraded"], params))
    shots = experiment_shots(context)

    def adapter_for(point: dict[str, Any]) -> Any:
        if not any(knob in SELECT_KNOBS for knob in point):
            return shared
        select = SelectConfig(**point_params(params, point)["select"])
        manifest = shared.manifest.model_copy(
            update={
                "selected_layers": pick_layers(shared, shared.manifest.layer_scores, select),
                "selection": selection_record(select, shots),
            }
        )
        return SafetyAdapter(manifest, path=shared.path)

    def apply_point(index: int, out: Path, work: Path) -> dict[str, Any]:
        point = points[index]
        return apply_method(
            "safegene",
            point_params(params, point),
            target=target,
            output=out,
            workdir=work,
            context=context,
            adapter=adapter_for(point),
            **models,
        )

    if entries:
        context.log(
            f"safegene on {target.name}: {len(entries)} of {len(points)} grid points scored ({marker})"
        )
    for index in range(len(entries), len(points)):
        point_dir = folder / f"point-{index}"
        info = apply_point(index, point_dir / "model", point_dir)
        harmful, benign = _refusal_rates(context, point_dir / "model", prompts, tuning.max_new_tokens)
        context.log(
            f"safegene on {target.name}: {points[index]} refuses {harmful:.2f} harmful, {benign:.2f} benign"
        )
        entries.append(
            {
                "knobs": points[index],
                "harmful_refusal": harmful,
                "benign_refusal": benign,
                "score": harmful - benign,
                "method": info,
            }
        )
        best = _best(entries)
        atomic_write_json(marker, {"wanted": wanted, "grid": entries})
        for other in range(index + 1):
            if other != best and (folder / f"point-{other}").exists():
                shutil.rmtree(folder / f"point-{other}")
    chosen = _best(entries)
    chosen_dir = folder / f"point-{chosen}"
    if (chosen_dir / "model").is_dir():
        info = entries[chosen]["method"]
        _replace(chosen_dir / "model", output)
        if info["format"] == "peft":  # the adapter lives where an untuned run writes it: WORKDIR/TARGET
            _replace(chosen_dir / target.name, workdir / target.name)
        shutil.rmtree(chosen_dir)
    else:
        context.log(f"safegene on {target.name}: reusing the tuned choice {points[chosen]} ({marker})")
        info = apply_point(chosen, output, workdir)
    scored = [{k: e[k] for k in ("knobs", "harmful_refusal", "benign_refusal", "score")} for e in entries]
    record = {
        "prompts": {"harmful": len(prompts.harmful), "benign": len(prompts.benign), "source": TUNING_SOURCE},
        "max_new_tokens": tuning.max_new_tokens,
        "grid": scored,
        "chosen": scored[chosen],
    }
    return {**info, "report": {**info["report"], "tuning": record}}


def _replace(source: Path, destination: Path) -> None:
    """Move the folder `source` to `destination`, replacing what is there (same file system: a rename)."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    source.rename(destination)


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
    adapter: Any = None,
) -> dict[str, Any]:
    """Write the restored model T′ (a full HF folder) to `output`; returns the method's report.

    `target` is a customize folder: model/ (merged T) and adapter/ (its task LoRA on top of A). A method that writes
    a PEFT adapter writes it under `workdir`, and the adapter is merged into the base it records. SafeGene uses the
    experiment's shared safety adapter unless `adapter` is given (tuning passes one re-selected per grid point),
    and with a `tune:` block in its params is tuned first (`tuned_safegene`).
    """
    from seawall.gene import get_method

    if name == "safegene":
        tuning, params = split_tuning(params)
        if tuning is not None:
            return tuned_safegene(
                tuning,
                params,
                target=target,
                output=output,
                workdir=workdir,
                context=context,
                base=base,
                aligned=aligned,
                degraded=degraded,
            )
    method = get_method(name)(params)
    inputs: dict[str, Any] = {"aligned": aligned, "degraded": degraded, "base": base, "overwrite": True}
    task_lora = target / "adapter"
    if name == "safegene":
        inputs["adapter"] = (
            adapter if adapter is not None else safety_adapter(context, aligned, degraded, params)
        )
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
