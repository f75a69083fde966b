"""The whole experiment: original → aligned A → degraded D → task targets T → restored T′, each measured.

The original is `model` itself (a chat model), or with an `original:` stage the base `model` made a chat model by
instruction SFT (`seawall lab instruct`) into RUN/original.

Every step writes its own folder and a marker file last (record.json for training, result.json for
measurements), so the folder is the step's checkpoint: a rerun skips finished steps and resumes a
half-trained one from its checkpoint.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from seawall.data import canonical_split, load_records
from seawall.data.suites import OVERREFUSAL_SUITES, SAFETY_SUITES
from seawall.errors import SeawallError
from seawall.evaluate.harness import Decoding, Evaluator, write_rows
from seawall.evaluate.metrics import recovery
from seawall.io import atomic_write_json
from seawall.lab import recipes
from seawall.lab.config import (
    CHAT_TEMPLATE_HELP,
    DEFAULT_MODEL,
    AlignData,
    AlignRecipe,
    ChatTemplateChoice,
    CustomizeData,
    CustomizeRecipe,
    DegradeData,
    DegradeRecipe,
    InstructData,
    InstructRecipe,
    TrainConfig,
)


class Stage(BaseModel):
    """Training settings of one stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: TrainConfig = TrainConfig()


class OriginalStage(Stage):
    """The original chat model made from a base `model` (`seawall lab instruct`): measured as "original", aligned
    into A, and the base of the methods that need one."""

    data: InstructData = InstructData()
    chat_template: ChatTemplateChoice = Field("auto", description=CHAT_TEMPLATE_HELP)
    train: TrainConfig = InstructRecipe().train


class AlignStage(Stage):
    data: AlignData = AlignData()
    train: TrainConfig = AlignRecipe().train


class DegradeStage(Stage):
    data: DegradeData = DegradeData()
    train: TrainConfig = DegradeRecipe().train


class CustomizeStage(Stage):
    tasks: tuple[str, ...] = ("sst2", "ag_news", "boolq")
    harmful_shares: tuple[float, ...] = (0.0, 0.05)
    n_train: int = Field(400, ge=1)
    general_share: float = Field(0.0, ge=0, lt=1, description="see seawall.lab.config.CustomizeData")


class MethodSpec(BaseModel):
    """A restoration method by registered name (`none` = the undefended target) and its parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    params: dict[str, Any] = {}


class EvalSettings(BaseModel):
    """What each model is measured on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_harmful_per_suite: int | None = 30
    n_benign_per_suite: int | None = 30
    n_task: int | None = 100
    decoding: Decoding = Decoding()
    detector: str | None = Field(
        None, description="saved SecureBreak detector folder (judge); None = refusal only"
    )
    n_boot: int = 2000
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="weights of the generating model (transformers backend; seawall.models.precision): auto = "
        "bfloat16 on CPUs with bf16 matrix units, float32 elsewhere; the dtype used is recorded per model",
    )


class ExperimentConfig(BaseModel):
    """`seawall eval run CONFIG`: the whole experiment in one YAML file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "experiment"
    model: str = DEFAULT_MODEL
    output: str = "runs/experiment"
    seed: int = 0
    data_dir: str | None = None
    threads: int = 2
    original: OriginalStage | None = Field(
        None,
        description="make `model` (a base model) a chat model first, into RUN/original; None: `model` is the "
        "original chat model",
    )
    align: AlignStage = AlignStage()
    degrade: DegradeStage = DegradeStage()
    customize: CustomizeStage = CustomizeStage()
    methods: tuple[MethodSpec, ...] = (MethodSpec(name="none"),)
    eval: EvalSettings = EvalSettings()


@contextmanager
def measure() -> Iterator[dict[str, float]]:
    """Wall time and peak resident memory (sampled from /proc every 0.1 s) of the enclosed block."""
    stats: dict[str, float] = {}
    stop = threading.Event()
    peak = [0]

    def sample() -> None:
        while not stop.is_set():
            try:
                for line in Path("/proc/self/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                return
            stop.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    start = time.time()
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join()
        stats["wall_s"] = round(time.time() - start, 2)
        stats["peak_rss_mib"] = round(peak[0] / 1024, 1)


# What the run-time table shows of each training stage's record.json (written by seawall.lab.recipes).
STAGE_FIELDS = ("recipe", "steps", "precision", "train_time_s", "finished")


def target_label(task: str, share: float) -> str:
    """Folder name of a target: the task and its harmful share in percent."""
    return f"{task}-h{round(share * 100)}"


class Experiment:
    """Runs the configured experiment step by step under `config.output`."""

    def __init__(
        self,
        config: ExperimentConfig,
        load: Callable = load_records,
        split: Callable = canonical_split,
        is_refusal: Callable[[str], bool] | None = None,
        generator_factory: Callable | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        from seawall.generation.cache import GenerationCache

        self.config = config
        self.root = Path(config.output)
        self.load, self.split, self.log = load, split, log
        if is_refusal is None:
            from seawall.evaluate.judges import default_is_refusal

            is_refusal = default_is_refusal()
        self.is_refusal = is_refusal
        self.generator_factory = generator_factory
        self.cache = GenerationCache(self.root / "generations.sqlite")
        self.tasks = tuple(config.customize.tasks)

    # --- training steps -------------------------------------------------------------------------------
    def original(self) -> Path:
        """The original chat model's folder: `model` resolved, or with an `original:` stage, RUN/original/model."""
        stage = self.config.original
        if stage is None:
            return recipes.resolve_model_dir(self.config.model)
        out = self.root / "original"
        recipe = InstructRecipe(
            model=self.config.model,
            data_dir=self.config.data_dir,
            data=stage.data,
            chat_template=stage.chat_template,
            train=stage.train,
        )
        recipes.instruct(recipe, out, load=self.load, tasks=self.tasks)
        return out / "model"

    def aligned(self) -> Path:
        out = self.root / "aligned"
        recipe = AlignRecipe(
            # Without an `original:` stage, `model` as written: the recipe (and its identity check) stays the same.
            model=self.config.model if self.config.original is None else str(self.original()),
            data_dir=self.config.data_dir,
            data=self.config.align.data,
            train=self.config.align.train,
        )
        recipes.align(
            recipe,
            out,
            load=self.load,
            tasks=self.tasks,
            is_refusal=self.is_refusal,
            split=self.split,
            cache=self.cache,
        )
        return out / "model"

    def degraded(self) -> Path:
        out = self.root / "degraded"
        recipe = DegradeRecipe(
            model=str(self.aligned()),
            data_dir=self.config.data_dir,
            data=self.config.degrade.data,
            train=self.config.degrade.train,
        )
        recipes.degrade(recipe, out, load=self.load, split=self.split, tasks=self.tasks)
        return out / "model"

    def target(
        self, task: str, share: float, filter_with: str | None = None, out: Path | None = None
    ) -> Path:
        """The customize folder of a target; with `filter_with`, the `filter` method's (its data filtered first)."""
        out = out or self.root / "targets" / target_label(task, share)
        recipe = CustomizeRecipe(
            model=str(self.aligned()),
            data_dir=self.config.data_dir,
            data=CustomizeData(
                task=task,
                n_train=self.config.customize.n_train,
                harmful_share=share,
                general_share=self.config.customize.general_share,
                degrade=self.config.degrade.data,
            ),
            train=self.config.customize.train,
            filter_with=filter_with,
        )
        recipes.customize(recipe, out, load=self.load, split=self.split)
        return out

    def restored(self, method: MethodSpec, task: str, share: float) -> tuple[Path, dict]:
        """T′ = method applied to the target; its folder holds model/ and record.json (time, memory)."""
        if method.name == "filter":
            from seawall.evaluate.methods import filtered_target

            return filtered_target(self, method.params, task, share)
        target = self.target(task, share)
        if method.name == "none":
            return target / "model", {}
        out = self.root / "restored" / target_label(task, share) / method.name
        if (out / "record.json").exists():
            record = json.loads((out / "record.json").read_text())
            if record.get("params") == method.params:
                return out / "model", record
            self.log(f"{method.name} on {target.name}: parameters changed, applying again")
        from seawall.evaluate.methods import apply_method

        with measure() as stats:
            info = apply_method(
                method.name,
                method.params,
                base=self.original(),
                aligned=self.aligned(),
                degraded=self.degraded(),
                target=target,
                output=out / "model",
                workdir=self.root / "methods" / method.name,
                context=self,
            )
        record = {"method": method.name, "params": method.params, **stats, **(info or {})}
        atomic_write_json(out / "record.json", record)
        return out / "model", record

    # --- measurement ----------------------------------------------------------------------------------
    def evaluator(self, model_dir: Path, decoding: Decoding) -> Evaluator:
        """`model_dir` answering through the run's generation cache, keyed by its fingerprint (weights, tokenizer,
        generation dtype); the model is loaded only when the cache misses."""
        from seawall.generation.cache import model_fingerprint

        settings = self.config.eval
        lazy: dict[str, Callable] = {}

        def generate(conversations: list, asked: Decoding) -> list[str]:
            if "fn" not in lazy:
                factory = self.generator_factory or _default_generator
                lazy["fn"] = factory(model_dir, decoding, self.config.threads, settings.dtype)
            return lazy["fn"](conversations, asked)

        return Evaluator(
            generate,
            model_fingerprint(model_dir, settings.dtype),
            decoding,
            self.cache,
            self.config.seed,
            self.config.data_dir,
            self.load,
            settings.n_boot,
        )

    def measure_model(
        self, label: str, model_dir: Path, tasks: tuple[str, ...], produced_by: dict | None = None
    ) -> dict:
        """Safety, over-refusal and utility of one model, cached as evals/LABEL/result.json.

        The cached result is reused only for the same eval settings, judge, tasks, model weights (fingerprint) and
        `produced_by` (the method and parameters that wrote the model): a folder re-written by a changed method is
        measured again, never reported with the old model's numbers.
        """
        from seawall.generation.cache import model_fingerprint
        from seawall.models.precision import resolve_precision

        out = self.root / "evals" / label
        settings = self.config.eval
        dtype = resolve_precision(settings.dtype, "eval.dtype")
        fingerprint = model_fingerprint(model_dir, settings.dtype)
        # The fingerprint already carries the dtype the generations run in (resolved, so `auto` and an explicit
        # `bfloat16` share results on the same CPU); leaving the request out keeps earlier results valid.
        key = {
            **settings.model_dump(mode="json", exclude={"dtype"}),
            "detector_id": _detector_id(settings.detector),
            "tasks": sorted(tasks),
            # A suite added to the evaluation (e.g. cyberseceval-frr-heldout) must not reuse older measurements.
            "suites": sorted([*SAFETY_SUITES, *OVERREFUSAL_SUITES]),
            "model_fingerprint": fingerprint,
            "produced_by": produced_by,
        }
        if (out / "result.json").exists():
            cached = json.loads((out / "result.json").read_text())
            # Generations are cached separately, so a changed or retrained judge only costs the judging.
            if cached.get("settings") == key:
                cached.setdefault("dtype", dtype)  # written before the dtype was recorded: same fingerprint
                return cached
            if cached.get("fingerprint") != fingerprint:
                self.log(f"measure {label}: {model_dir} changed since it was measured, measuring again")
        from seawall.evaluate.judges import DetectorJudge, RefusalJudge

        judges: list[Any] = [RefusalJudge(self.is_refusal)]
        if settings.detector:
            judges.append(DetectorJudge.load(settings.detector))
        self.log(f"measure {label} ({model_dir})")
        evaluator = self.evaluator(model_dir, settings.decoding)
        with measure() as stats:
            safety, safety_rows = evaluator.safety(judges, settings.n_harmful_per_suite)
            over, over_rows = evaluator.overrefusal(self.is_refusal, settings.n_benign_per_suite)
            utility, utility_rows = evaluator.utility(tasks, settings.n_task)
        result = {
            "label": label,
            "model": str(model_dir),
            "fingerprint": evaluator.model_id,
            "dtype": dtype,
            "safety": safety,
            "overrefusal": over,
            "utility": utility,
            "eval": stats,
            "settings": key,
        }
        out.mkdir(parents=True, exist_ok=True)
        write_rows(out / "rows.jsonl", safety_rows + over_rows + utility_rows)
        atomic_write_json(out / "result.json", result)
        return result

    def stages(self) -> dict[str, dict]:
        """The training stages that exist so far, each with its record's cost: the report's run-time table.

        Read from each folder's record.json, so a stage trained in an earlier session keeps its own time.
        """
        folders = [(name, self.root / name) for name in ("original", "aligned", "degraded")]
        targets = self.root / "targets"
        if targets.is_dir():
            folders += [(f"targets/{d.name}", d) for d in sorted(targets.iterdir())]
        stages = {}
        for name, folder in folders:
            record = folder / "record.json"
            if record.is_file():
                data = json.loads(record.read_text())
                stages[name] = {key: data.get(key) for key in STAGE_FIELDS}
        return stages

    def _write_results(self, rows: list[dict], complete: bool) -> dict:
        stages = self.stages()
        results = {
            "name": self.config.name,
            "config": self.config.model_dump(mode="json"),
            # The report names the suites from here: the list in the code may have grown since the run.
            "suites": {"safety": list(SAFETY_SUITES), "overrefusal": list(OVERREFUSAL_SUITES)},
            "complete": complete,
            "rows": rows,
            "stages": stages,
            "time_s": {
                "training": round(sum(s["train_time_s"] or 0 for s in stages.values()), 1),
                "methods": round(sum(r.get("method_wall_s") or 0 for r in rows), 1),
                "evaluation": round(sum(r.get("eval_wall_s") or 0 for r in rows), 1),
            },
        }
        # The report's layer plot reads the shared safety adapter's scores from here, not from the run folder.
        manifest = self.root / "safety-adapter" / "safegene.json"
        if manifest.exists() and (scores := json.loads(manifest.read_text()).get("layer_scores")):
            results["safegene_layer_scores"] = scores
        atomic_write_json(self.root / "results.json", results)
        return results

    def run(self) -> dict:
        """Every step in order; returns (and writes) results.json.

        results.json is rewritten after every measured model (`complete: false` until the end), so an interrupted
        run still has a report of what finished.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / "config.json", self.config.model_dump(mode="json"))
        base = self.original()
        rows: list[dict] = []
        reference: dict[str, dict] = {}
        for label, model_dir in (
            ("original", lambda: base),
            ("aligned", self.aligned),
            ("degraded", self.degraded),
        ):
            reference[label] = self.measure_model(label, model_dir(), self.tasks)
            rows.append(
                {**_row(reference[label], model=label), "category_hrr": _category_hrr(reference[label])}
            )
            self._write_results(rows, complete=False)
        aligned_hrr = {j: v["hrr"]["rate"] for j, v in reference["aligned"]["safety"]["judges"].items()}
        for task in self.tasks:
            for share in self.config.customize.harmful_shares:
                target_rows: list[dict] = []
                for method in self.config.methods:
                    model_dir, record = self.restored(method, task, share)
                    label = f"{target_label(task, share)}/{method.name}"
                    result = self.measure_model(
                        label.replace("/", "__"), model_dir, (task,), method.model_dump(mode="json")
                    )
                    row = _row(result, model="target", task=task, harmful_share=share, method=method.name)
                    row["method_wall_s"] = record.get("wall_s")
                    row["method_peak_rss_mib"] = record.get("peak_rss_mib")
                    if coefficients := (record.get("report") or {}).get("coefficients"):
                        row["method_coefficients"] = coefficients  # SafeGene's fitted α per layer group
                    if tuning := (record.get("report") or {}).get("tuning"):
                        row["method_tuning"] = tuning  # SafeGene's knobs chosen on held-out prompts
                    target_rows.append(row)
                    fill_recoveries(target_rows, aligned_hrr)
                    rows.append(row)
                    self._write_results(rows, complete=False)
        return self._write_results(rows, complete=True)


def fill_recoveries(rows: list[dict], aligned_hrr: dict[str, float]) -> None:
    """Set recovery_<judge> on every row of one target once its undefended (`none`) row is among them.

    Wherever `none` is listed in the config: a method measured before it gets its recovery when `none` arrives.
    """
    undefended = next((row for row in rows if row["method"] == "none"), None)
    if undefended is None:
        return
    for row in rows:
        for judge, hrr_a in aligned_hrr.items():
            row[f"recovery_{judge}"] = recovery(undefended[f"hrr_{judge}"], row[f"hrr_{judge}"], hrr_a)


def _row(result: dict, **keys: Any) -> dict:
    row: dict[str, Any] = dict(keys)
    for judge, values in result["safety"]["judges"].items():
        row[f"hrr_{judge}"] = values["hrr"]["rate"]
        row[f"hrr_{judge}_ci95"] = values["hrr"]["ci95"]
    row["overrefusal"] = result["overrefusal"]["rate"]["rate"]
    row["overrefusal_ci95"] = result["overrefusal"]["rate"]["ci95"]
    for task, values in result["utility"].items():
        row[f"utility_{task}"] = values["accuracy"]["rate"]
    row["eval_wall_s"] = result["eval"]["wall_s"]
    row["eval_dtype"] = result.get("dtype")
    row["eval_dir"] = result["label"]
    return row


def _category_hrr(result: dict) -> dict[str, dict[str, float]]:
    """HRR per `suite:category` under each judge (the report's per-category plot)."""
    return {
        judge: {category: values["rate"] for category, values in measured["per_category"].items()}
        for judge, measured in result["safety"]["judges"].items()
    }


def _detector_id(folder: str | None) -> str | None:
    """The judge's detector_id (it changes when the detector is retrained), None without a detector."""
    if not folder:
        return None
    path = Path(folder) / "detector.json"
    if not path.is_file():
        raise SeawallError(f"eval.detector: {path} not found; train a detector (make demo) or fix the path")
    return json.loads(path.read_text()).get("detector_id")


def _default_generator(model_dir: Path, decoding: Decoding, threads: int, dtype: str = "auto") -> Callable:
    from seawall.evaluate.generate import backend_generator

    return backend_generator(model_dir, decoding, threads, dtype=dtype)


def load_config(path: str | Path, **overrides: Any) -> ExperimentConfig:
    """Read an experiment YAML; `overrides` (e.g. output=...) replace top-level keys."""
    from seawall.lab.config import load_yaml

    config = load_yaml(ExperimentConfig, path, **overrides)
    if not config.customize.tasks:
        raise SeawallError(f"{path}: customize.tasks is empty")
    return config
