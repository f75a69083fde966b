"""The detector as feedback: DPO on preference pairs built from the model's own judged samples.

`seawall lab align --method dpo`. For each training prompt the model answers k times (temperature sampling through
`seawall.generation`, cached). Harmful prompts: a detector judges the samples, chosen = one judged safe, rejected =
one judged unsafe. Benign prompts (Alpaca, and borderline ones that look sensitive): the refusal matcher judges
them, chosen = a helpful sample, rejected = a refusal. When the samples do not offer both sides, a fallback fills
the missing one (a safety-tuned-llamas safe answer or a templated refusal; Alpaca's reference answer), and every
fallback is counted in the run record.

Training is TRL's `DPOTrainer` with a PEFT LoRA (the reference model is the base with the adapter disabled), on CPU,
under bf16 autocast where the CPU has bf16 units. Its checkpoints (OUTPUT/checkpoints/checkpoint-N) resume an
interrupted run; they hold the optimizer state in torch's format (loaded `weights_only`), and are deleted once
OUTPUT/model (the LoRA merged, safetensors) and OUTPUT/record.json are written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seawall.data import canonical_split, load_records, normalize_text
from seawall.data.hygiene import check_no_overlap, normalized_set
from seawall.errors import SeawallError
from seawall.io import atomic_dir, atomic_write_json, atomic_write_text
from seawall.lab.config import DPOConfig, PreferenceData, PreferenceRecipe, TrainConfig
from seawall.lab.data import alpaca_prompt, varied_refusal

Judge = Callable[[list[tuple[str, str]]], list[bool]]  # (prompt, response) pairs → unsafe?
Conversations = list[list[dict[str, str]]]
JUDGE_BATCH = 64


@dataclass(frozen=True)
class PromptItem:
    """A training prompt; `reference` is the dataset's own answer, used when the samples offer no chosen side."""

    id: str
    prompt: str
    source: str
    kind: str  # "harmful", "benign" or "borderline"
    reference: str | None = None


@dataclass(frozen=True)
class PreferencePair:
    """One DPO example, with where each side came from and which judge decided."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    source: str
    kind: str
    judge: (
        str  # harmful prompts: "detector" or "refusal" (PreferenceData.harmful_judge); benign ones: "refusal"
    )
    chosen_from: str  # "sample", "safe-answer", "refusal-template", "reference-model" or "reference"
    rejected_from: (
        str  # "sample", "refusal-template" or "reference-model" (a harmful prompt's original answer)
    )

    def sha256(self) -> str:
        return hashlib.sha256(
            json.dumps([self.prompt, self.chosen, self.rejected], ensure_ascii=False).encode()
        ).hexdigest()


# ---- prompts ---------------------------------------------------------------------------------------------------


def _take(
    records: Iterable, exclude: set[str], in_mix: set[str], text: Callable, n: int, rng: random.Random
) -> tuple[list, dict[str, int]]:
    """Up to n records, deduplicated by normalised prompt, without evaluation prompts (`exclude`) or prompts already
    drawn for another kind (`in_mix`); counts what was dropped. The chosen prompts join `in_mix`."""
    seen: set[str] = set()
    kept, dropped = [], {"eval_overlap": 0, "duplicate": 0, "in_mix": 0}
    for record in records:
        key = normalize_text(text(record))
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        if key in exclude:
            dropped["eval_overlap"] += 1
        elif key in in_mix:
            dropped["in_mix"] += 1
        else:
            kept.append(record)
    rng.shuffle(kept)
    kept = kept[:n]
    in_mix.update(normalize_text(text(record)) for record in kept)
    return kept, dropped


def _records(
    source: str, data_dir: str | None, load: Callable, split: Callable, train_split_of_responses: bool
) -> list:
    """The records of a source: `name` or `name:split`. With `train_split_of_responses`, a response set (detector
    data such as safety-tuned-llamas) is read from its canonical TRAIN split only: its dev and test rows are the
    detectors' held-out data."""
    name, _, part = source.partition(":")
    if part:
        return list(load(name, data_dir=data_dir, split=part))
    rows = list(load(name, data_dir=data_dir))
    if train_split_of_responses and rows and hasattr(rows[0], "response"):
        return list(split(name, data_dir=data_dir)["train"])
    return rows


def preference_prompts(
    spec: PreferenceData,
    seed: int,
    exclude: set[str],
    data_dir: str | None = None,
    load: Callable = load_records,
    split: Callable = canonical_split,
) -> tuple[list[PromptItem], dict]:
    """The harmful, benign and borderline training prompts; `exclude` holds normalised evaluation prompts.

    A prompt is drawn once across the kinds (I-Alpaca lists Alpaca instructions): a second draw is counted.
    """
    rng = random.Random(seed)
    report: dict[str, Any] = {"dropped_eval_overlap": 0, "skipped_duplicate": 0, "skipped_in_mix": 0}
    in_mix: set[str] = set()
    items: list[PromptItem] = []
    for kind, sources, n in (
        ("harmful", spec.harmful_sources, spec.n_harmful),
        ("benign", spec.benign_sources, spec.n_benign),
        ("borderline", spec.borderline_sources, spec.n_borderline),
    ):
        if not n:
            continue
        harmful = kind == "harmful"
        pool = [
            (source, r)
            for source in sources
            for r in _records(source, data_dir, load, split, train_split_of_responses=harmful)
            # Prompt sets flag harmful prompts; a response set such as safety-tuned-llamas holds harmful requests
            # with safe answers (its records carry no flag, and their answer is the fallback chosen side).
            if (
                getattr(r, "harmful", True) and r.category not in spec.excluded_categories
                if harmful
                else not getattr(r, "harmful", False)
            )
        ]
        text = (lambda sr: sr[1].prompt) if harmful else (lambda sr: _benign_prompt(sr[1]))
        chosen, dropped = _take(pool, exclude, in_mix, text, n, rng)
        report["dropped_eval_overlap"] += dropped["eval_overlap"]
        report["skipped_duplicate"] += dropped["duplicate"]
        report["skipped_in_mix"] += dropped["in_mix"]
        items += [
            PromptItem(
                f"{kind}:{r.id}",
                text((source, r)),
                r.source or source.partition(":")[0],
                kind,
                (getattr(r, "response", "") or "").strip() or None,
            )
            for source, r in chosen
        ]
    report["prompts"] = dict(Counter(item.kind for item in items))
    return items, report


def _benign_prompt(record: Any) -> str:
    return alpaca_prompt(record) if hasattr(record, "response") else record.prompt


# ---- samples and judges ----------------------------------------------------------------------------------------


def sample_responses(
    items: Sequence[PromptItem],
    spec: PreferenceData,
    model_dir: str | Path,
    seed: int = 0,
    threads: int = 2,
    cache: Any = None,
    generator_factory: Callable | None = None,
) -> list[list[str]]:
    """k sampled responses per prompt (`spec.samples_per_prompt`), through the generation cache.

    Sample i of every prompt uses seed `seed + i`; the cache key holds the model's fingerprint, the messages and
    the decoding settings with that seed, so a rerun samples only what is missing. `generator_factory(model_dir,
    spec, threads)` returns `generate(conversations, GenerationConfig) -> replies` (default: the transformers
    backend), called only on a cache miss.
    """
    from seawall.generation import GenerationConfig
    from seawall.generation.cache import GenerationCache, model_fingerprint

    cache = cache if cache is not None else GenerationCache()
    fingerprint = model_fingerprint(model_dir, spec.dtype)
    conversations: Conversations = [[{"role": "user", "content": item.prompt}] for item in items]
    lazy: dict[str, Callable] = {}
    samples: list[list[str]] = [[] for _ in items]
    chunk = 32
    bar = tqdm(total=len(items) * spec.samples_per_prompt, desc="sample", unit="response")
    for index in range(spec.samples_per_prompt):
        config = GenerationConfig(
            max_new_tokens=spec.max_new_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            seed=seed + index,
        )
        decoding = config.model_dump(include={"max_new_tokens", "temperature", "top_p", "seed"})

        def generate(batch: Conversations, config: GenerationConfig = config) -> list[str]:
            if "fn" not in lazy:
                lazy["fn"] = (generator_factory or _default_generator)(model_dir, spec, threads)
            return lazy["fn"](batch, config)

        for start in range(0, len(items), chunk):
            replies = cache.generate(generate, conversations[start : start + chunk], fingerprint, decoding)
            for offset, reply in enumerate(replies):
                samples[start + offset].append(reply)
            bar.update(len(replies))
    bar.close()
    return samples


def _default_generator(model_dir: str | Path, spec: PreferenceData, threads: int) -> Callable:
    from seawall.generation import load_generator

    generator = load_generator(
        "transformers", model=str(model_dir), batch_size=spec.batch_size, dtype=spec.dtype, threads=threads
    )
    return generator.generate


def detector_judge(folder: str | Path | None = None) -> tuple[Judge, dict[str, Any]]:
    """A judge backed by a saved detector (default: `seawall.detect.default_detector_path()`), and its identity."""
    from seawall.detect import default_detector_path, load_detector

    path = Path(folder) if folder else default_detector_path()
    if not (path / "detector.json").is_file():
        raise SeawallError(
            f"detector {path}: no detector.json; pass --detector DIR (a saved detector) or run `seawall detect demo`"
        )
    detector = load_detector(path)

    def judge(pairs: list[tuple[str, str]]) -> list[bool]:
        return [bool(flag) for flag in detector.predict(pairs)]

    return judge, {"path": str(path), "detector_id": detector.detector_id, "threshold": detector.threshold_}


def reference_answers(
    items: Sequence[PromptItem],
    samples: Sequence[Sequence[str]],
    spec: PreferenceData,
    is_refusal: Callable[[str], bool],
    threads: int = 2,
    cache: Any = None,
    answerer: Callable[[Sequence[str]], list[str]] | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """The reference model's answers (`spec.reference_model`), prompt → answer.

    Benign and borderline prompts whose samples are all refusals: the answer is the chosen side that keeps the
    original model's voice where the aligned one only refuses; one that is itself a refusal, or has no finished
    sentence, is dropped and counted. With `spec.harmful_rejected_reference`, every harmful prompt too: `build_pairs`
    has the judge decide whether that answer is unsafe enough to be a rejected side, so none is dropped here (an
    unfinished one is kept whole). Greedy, through the generation cache of `seawall.lab.recipes.self_answerer`, or
    `answerer`.
    """
    if spec.reference_model is None:
        return {}, {"model": None}
    from seawall.lab.data import finished_part
    from seawall.lab.recipes import resolve_model_dir, self_answerer

    refused = [
        item.prompt
        for item, group in zip(items, samples, strict=True)
        if item.kind != "harmful" and not any(s.strip() and not is_refusal(s) for s in group)
    ]
    harmful = (
        [item.prompt for item in items if item.kind == "harmful"] if spec.harmful_rejected_reference else []
    )
    report: dict[str, Any] = {"model": spec.reference_model, "asked": len(refused)}
    if spec.harmful_rejected_reference:
        report["harmful_asked"] = len(harmful)
    if not refused and not harmful:
        return {}, {**report, "kept": 0, "dropped_refusal": 0, "dropped_unfinished": 0}
    if answerer is None:
        answerer = self_answerer(
            resolve_model_dir(spec.reference_model),
            spec.reference_max_new_tokens,
            spec.dtype,
            threads,
            cache,
            spec.batch_size,
        )
    answers = answerer(refused + harmful)
    kept: dict[str, str] = {}
    dropped = Counter()
    for prompt, answer in zip(refused, answers[: len(refused)], strict=True):
        finished = finished_part(answer)
        if finished is None:
            dropped["dropped_unfinished"] += 1
        elif is_refusal(finished):
            dropped["dropped_refusal"] += 1
        else:
            kept[prompt] = finished
    report.update(kept=len(kept), dropped_refusal=dropped["dropped_refusal"])
    report["dropped_unfinished"] = dropped["dropped_unfinished"]
    for prompt, answer in zip(harmful, answers[len(refused) :], strict=True):
        if answer.strip():
            kept[prompt] = finished_part(answer) or answer.strip()
        else:
            dropped["harmful_empty"] += 1
    if harmful:
        report["harmful_kept"] = len(harmful) - dropped["harmful_empty"]
    return kept, report


# ---- pairs -----------------------------------------------------------------------------------------------------


def build_pairs(
    items: Sequence[PromptItem],
    samples: Sequence[Sequence[str]],
    judge: Judge,
    is_refusal: Callable[[str], bool],
    seed: int = 0,
    harmful_judge: str = "detector",
    reference_answers: Mapping[str, str] | None = None,
    template_rejected_share: float = 1.0,
) -> tuple[list[PreferencePair], dict]:
    """Preference pairs from judged samples; the report counts what each judge decided, every fallback and skip.

    Harmful prompt: chosen = a sample `judge` calls safe, rejected = one it calls unsafe (`harmful_judge` names the
    judge in the pairs and the report). All unsafe: chosen = the prompt's safe answer (safety-tuned-llamas) or a
    templated refusal. All safe: rejected = the reference model's answer in `reference_answers` when the judge calls
    it unsafe, else skipped (nothing to push away from). Benign prompt: chosen = a sample that is not a
    refusal (none: the reference model's answer in `reference_answers`, prompt → answer, else the dataset's answer,
    else skipped), rejected = a sampled refusal (none: a templated refusal for a `template_rejected_share` of
    such prompts, drawn with the seed; the others are skipped). Empty samples are never a side.
    """
    if len(items) != len(samples):
        raise SeawallError(f"{len(items)} prompts but {len(samples)} sample lists")
    rng = random.Random(seed)
    template_draw = random.Random(
        seed + 1
    )  # apart from `rng`, so that the share leaves the other choices as they are
    judged = {harmful_judge: Counter(), "refusal": Counter()}
    reference_answers = reference_answers or {}
    produced, from_samples, fallbacks, skipped = Counter(), Counter(), Counter(), Counter()
    usable = [[s for s in group if s.strip()] for group in samples]
    empty = sum(len(group) - len(kept) for group, kept in zip(samples, usable, strict=True))

    harmful = [(i, item) for i, item in enumerate(items) if item.kind == "harmful"]
    # The reference model's answers to harmful prompts are judged in the same batches, apart from the samples' counts.
    flat = [(i, s, False) for i, item in harmful for s in usable[i]]
    flat += [
        (i, reference_answers[item.prompt], True) for i, item in harmful if item.prompt in reference_answers
    ]
    flags: list[bool] = []
    for start in tqdm(range(0, len(flat), JUDGE_BATCH), desc="judge", unit="batch", disable=not flat):
        batch = flat[start : start + JUDGE_BATCH]
        got = judge([(items[i].prompt, s) for i, s, _ in batch])
        if len(got) != len(batch):
            raise SeawallError(f"the judge returned {len(got)} verdicts for {len(batch)} responses")
        flags.extend(got)
    verdicts: dict[int, list[tuple[str, bool]]] = {}
    reference_unsafe: dict[int, bool] = {}
    for (i, s, from_reference), flag in zip(flat, flags, strict=True):
        if from_reference:
            reference_unsafe[i] = bool(flag)
            judged[harmful_judge]["reference_unsafe" if flag else "reference_safe"] += 1
            continue
        verdicts.setdefault(i, []).append((s, bool(flag)))
        judged[harmful_judge]["unsafe" if flag else "safe"] += 1

    pairs: list[PreferencePair] = []
    for i, item in enumerate(items):
        if item.kind == "harmful":
            safe = [s for s, flag in verdicts.get(i, []) if not flag]
            unsafe = [s for s, flag in verdicts.get(i, []) if flag]
            if unsafe:
                rejected, rejected_from = rng.choice(unsafe), "sample"
            elif safe and reference_unsafe.get(i):
                rejected, rejected_from = reference_answers[item.prompt], "reference-model"
                fallbacks["harmful_rejected_reference_model"] += 1
            else:
                skipped["harmful_all_safe" if safe else "harmful_no_usable_sample"] += 1
                continue
            if safe:
                chosen, chosen_from = rng.choice(safe), "sample"
                from_samples[harmful_judge] += rejected_from == "sample"
            elif item.reference:
                chosen, chosen_from = item.reference, "safe-answer"
                fallbacks["harmful_chosen_safe_answer"] += 1
            else:
                chosen, chosen_from = varied_refusal(rng), "refusal-template"
                fallbacks["harmful_chosen_refusal_template"] += 1
            pairs.append(
                PreferencePair(
                    item.id,
                    item.prompt,
                    chosen,
                    rejected,
                    item.source,
                    item.kind,
                    harmful_judge,
                    chosen_from,
                    rejected_from,
                )
            )
            produced[harmful_judge] += 1
            continue
        refusals = [s for s in usable[i] if is_refusal(s)]
        helpful = [s for s in usable[i] if not is_refusal(s)]
        judged["refusal"]["refusal"] += len(refusals)
        judged["refusal"]["helpful"] += len(helpful)
        # The draw happens for every such prompt (not only when the share is partial), so that the pairs of one
        # share are a subset of the pairs of a larger share with the same seed.
        if not refusals and template_draw.random() >= template_rejected_share:
            skipped["benign_no_refusal_sample"] += 1
            continue
        if helpful:
            chosen, chosen_from = rng.choice(helpful), "sample"
        elif item.prompt in reference_answers:
            chosen, chosen_from = reference_answers[item.prompt], "reference-model"
            fallbacks["benign_chosen_reference_model"] += 1
        elif item.reference:
            chosen, chosen_from = item.reference, "reference"
            fallbacks["benign_chosen_reference"] += 1
        else:
            skipped["benign_no_helpful_sample"] += 1
            continue
        if refusals:
            rejected, rejected_from = rng.choice(refusals), "sample"
        else:
            rejected, rejected_from = varied_refusal(rng), "refusal-template"
            fallbacks["benign_rejected_refusal_template"] += 1
        if chosen_from == rejected_from == "sample":
            from_samples["refusal"] += 1
        pairs.append(
            PreferencePair(
                item.id,
                item.prompt,
                chosen,
                rejected,
                item.source,
                item.kind,
                "refusal",
                chosen_from,
                rejected_from,
            )
        )
        produced["refusal"] += 1
    rng.shuffle(pairs)
    report = {
        "samples_per_prompt": max((len(group) for group in samples), default=0),
        "empty_samples": empty,
        "judged": {name: dict(sorted(counts.items())) for name, counts in judged.items()},
        "pairs": {name: produced[name] for name in judged},
        "pairs_from_samples": {name: from_samples[name] for name in judged},
        "fallbacks": dict(sorted(fallbacks.items())),
        "skipped": dict(sorted(skipped.items())),
        "counts": dict(sorted(Counter(f"{p.kind}:{p.source}" for p in pairs).items())),
    }
    return pairs, report


def write_pairs(path: str | Path, pairs: Sequence[PreferencePair]) -> None:
    """The pairs as JSONL (one object per pair, every field), written atomically."""
    atomic_write_text(path, "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in pairs))


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Pairs written by `write_pairs`; a malformed line is an error naming the file and line."""
    pairs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        try:
            pairs.append(PreferencePair(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            raise SeawallError(f"{path}, line {number}: not a preference pair ({error})") from None
    return pairs


# ---- training --------------------------------------------------------------------------------------------------


def _identity(config: Any) -> Any:
    """A recipe as compared with a finished run's: `train.precision` changes speed, not the recipe."""
    if isinstance(config, dict) and isinstance(config.get("train"), dict):
        return {**config, "train": {k: v for k, v in config["train"].items() if k != "precision"}}
    return config


def finished_record(output: Path, config: Any) -> dict | None:
    """The record of a finished run in `output` made with the same recipe; another recipe's is an error."""
    path = output / "record.json"
    if not path.exists():
        return None
    finished = json.loads(path.read_text())
    if config is not None and _identity(finished.get("config")) != _identity(config):
        differing = sorted(
            key
            for key in set(config) | set(finished.get("config") or {})
            if _identity(config).get(key) != _identity(finished.get("config") or {}).get(key)
        )
        raise SeawallError(
            f"{output} holds a model trained with another recipe (differs in: {', '.join(differing)}); "
            "pick another output folder or delete it"
        )
    return finished


def _complete_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint-N whose trainer_state.json (written last by the Trainer) is there."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def _quiet_hub() -> None:
    """No network at run time: TRL's trainers ping the Hub (telemetry) on construction unless this is set."""
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_TELEMETRY = True


def _progress_callback(total_hint: str, state: dict[str, Any]) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """A tqdm bar with the current loss, and the elapsed time kept beside the checkpoints for a resume."""

        def on_train_begin(self, args: Any, trainer_state: Any, control: Any, **kwargs: Any) -> None:
            self.bar = tqdm(
                total=trainer_state.max_steps, initial=trainer_state.global_step, desc=total_hint, unit="step"
            )

        def on_log(
            self, args: Any, trainer_state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_step_end(self, args: Any, trainer_state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.update(trainer_state.global_step - self.bar.n)

        def on_save(self, args: Any, trainer_state: Any, control: Any, **kwargs: Any) -> None:
            atomic_write_json(
                state["marker"],
                {
                    "fingerprint": state["fingerprint"],
                    "elapsed_s": state["elapsed_before"] + time.time() - state["started"],
                },
            )

        def on_train_end(self, args: Any, trainer_state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.close()

    return Progress()


def _lora_config(model: Any, config: TrainConfig, model_dir: Path) -> Any:
    from peft import LoraConfig

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.lora_targets if t in present]
    if not targets:
        raise SeawallError(f"none of the LoRA targets {config.lora_targets} exist in {model_dir}")
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def _trl_args(cls: Any, dpo: DPOConfig, config: TrainConfig, checkpoints: Path, precision: str) -> Any:
    """TRL's DPOConfig (TrainingArguments) for our settings: CPU, no reporting, our progress bar, checkpoints."""
    return cls(
        output_dir=str(checkpoints),
        beta=dpo.beta,
        loss_type=[dpo.loss_type],
        learning_rate=dpo.learning_rate,
        num_train_epochs=dpo.epochs,
        max_steps=dpo.max_steps or -1,
        max_length=dpo.max_length,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        seed=config.seed,
        bf16=precision == "bfloat16",
        use_cpu=True,
        # Checkpointing activations trades time for memory, which a 135M model on CPU does not need.
        gradient_checkpointing=False,
        save_strategy="steps",
        save_steps=config.checkpoint_every,
        save_total_limit=1,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
        dataloader_num_workers=0,
    )


@contextlib.contextmanager
def _renamed_helpers_quiet() -> Iterator[None]:
    """TRL 1.16 uses transformers' renamed gradient-checkpointing names (a FutureWarning at every step)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*deprecated and will be removed in v6", category=FutureWarning
        )
        yield


def train_dpo(
    model_dir: str | Path,
    pairs: Sequence[PreferencePair],
    dpo: DPOConfig,
    config: TrainConfig,
    output: str | Path,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """DPO-train the model in `model_dir` on `pairs`, writing OUTPUT/model (merged) and OUTPUT/adapter (LoRA).

    OUTPUT/checkpoints holds TRL's resumable checkpoints while training runs; OUTPUT/record.json is written last.
    Re-running with the same pairs and settings resumes from the newest complete checkpoint.
    """
    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    try:
        from datasets import Dataset
        from trl import DPOConfig as TrlDPOConfig
        from trl import DPOTrainer
    except ImportError as error:
        raise SeawallError(f"DPO needs TRL: pip install 'seawall[lab]' ({error})") from None

    from seawall.lab.train import load_causal_lm
    from seawall.models.load import quiet_transformers
    from seawall.models.precision import resolve_precision

    output, model_dir = Path(output), Path(model_dir)
    finished = finished_record(output, (record or {}).get("config"))
    if finished is not None:
        return finished
    if not pairs:
        raise SeawallError("no preference pairs; check the data options of the recipe")
    started = time.time()
    precision = resolve_precision(config.precision, "train.precision")
    torch.manual_seed(config.seed)
    model, tokenizer = load_causal_lm(model_dir, config.threads)

    # TRL drops, without saying so, the examples whose prompt fills max_length: they are counted here instead.
    usable, skipped = [], []
    for pair in pairs:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": pair.prompt}], tokenize=False, add_generation_prompt=True
        )
        fits = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) < dpo.max_length - 1
        (usable.append(pair) if fits else skipped.append(pair.id))
    if not usable:
        raise SeawallError(f"every pair's prompt is longer than dpo.max_length={dpo.max_length} tokens")
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": p.prompt}],
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in usable
        ]
    )
    digest = hashlib.sha256("".join(p.sha256() for p in usable).encode()).hexdigest()
    fingerprint = hashlib.sha256(
        (
            digest + dpo.model_dump_json() + config.model_dump_json(exclude={"precision"}) + str(model_dir)
        ).encode()
    ).hexdigest()
    checkpoints = output / "checkpoints"
    marker = checkpoints / "seawall-progress.json"
    resume = _complete_checkpoint(checkpoints)
    elapsed_before = 0.0
    if resume is not None:
        saved = json.loads(marker.read_text()) if marker.is_file() else {}
        if saved.get("fingerprint") != fingerprint:
            raise SeawallError(
                f"{checkpoints} was written for other pairs or settings; delete {output} or pick a new output"
            )
        elapsed_before = float(saved.get("elapsed_s", 0.0))
    elif checkpoints.exists():
        shutil.rmtree(checkpoints)  # only incomplete checkpoints: nothing to resume from
    checkpoints.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"fingerprint": fingerprint, "elapsed_s": elapsed_before})

    with _renamed_helpers_quiet():
        args = _trl_args(TrlDPOConfig, dpo, config, checkpoints, precision)
    _quiet_hub()
    peft_config = _lora_config(model, config, model_dir) if config.method == "lora" else None
    # Full DPO needs a frozen copy as the reference; with LoRA the base with the adapter disabled is the reference.
    ref_model = None if peft_config else load_causal_lm(model_dir, config.threads)[0]
    state = {
        "marker": marker,
        "fingerprint": fingerprint,
        "elapsed_before": elapsed_before,
        "started": started,
    }
    with quiet_transformers():
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(_progress_callback(f"dpo {output.name}", state))
    with _renamed_helpers_quiet():
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    history = trainer.state.log_history
    steps = [h for h in history if "loss" in h]
    losses = [round(float(h["loss"]), 5) for h in steps]
    if not all(map(_finite, losses)):
        raise SeawallError(f"DPO loss is not finite ({losses[-5:]}); lower dpo.learning_rate")
    trained = trainer.model
    trained.eval()
    with atomic_dir(output / "model", overwrite=True) as tmp, quiet_transformers():
        if peft_config:
            trained.save_pretrained(str(output / ".adapter.tmp"))
            trained = trained.merge_and_unload()
        trained.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    if peft_config:
        shutil.rmtree(output / "adapter", ignore_errors=True)
        (output / ".adapter.tmp").rename(output / "adapter")
    last = steps[-1] if steps else {}
    result = {
        **(record or {}),
        "base_model": str(model_dir),
        "train": config.model_dump(mode="json"),
        "dpo": dpo.model_dump(mode="json"),
        "trainer": "trl.DPOTrainer",
        "data": {
            "n": len(usable),
            "sha256": digest,
            "sources": dict(sorted(Counter(f"{p.kind}:{p.source}" for p in usable).items())),
            "ids": [p.id for p in usable],
        },
        "skipped_too_long": skipped,
        "steps": trainer.state.global_step,
        "precision": precision,
        "losses": losses,
        "rewards": {key: last[key] for key in ("rewards/accuracies", "rewards/margins") if key in last},
        "train_time_s": round(elapsed_before + time.time() - started, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": {name: __import__(name).__version__ for name in ("torch", "transformers", "trl", "peft")},
    }
    atomic_write_json(output / "record.json", result)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return result


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


# ---- the recipe ------------------------------------------------------------------------------------------------


def align_dpo(
    recipe: PreferenceRecipe,
    output: str | Path,
    load: Callable = load_records,
    tasks: tuple[str, ...] = (),
    is_refusal: Callable[[str], bool] | None = None,
    judge: Judge | None = None,
    split: Callable = canonical_split,
    generator_factory: Callable | None = None,
    cache: Any = None,
) -> dict:
    """`seawall lab align --method dpo`: sample, judge, pair (OUTPUT/pairs.jsonl), DPO; returns the run record.

    `judge` defaults to the detector of `recipe.detector` (else the default detector), `is_refusal` to the refusal
    matcher; `generator_factory` and `cache` as in `sample_responses`. A finished run is returned as it is.
    """
    from seawall.data.suites import evaluation_prompts
    from seawall.lab.recipes import resolve_model_dir

    output = Path(output)
    config = recipe.model_dump(mode="json")
    finished = finished_record(output, config)
    if finished is not None:
        return finished
    evaluation = evaluation_prompts(recipe.data_dir, load, tasks)
    exclude = normalized_set(p for ps in evaluation.values() for p in ps)
    items, report = preference_prompts(recipe.data, recipe.train.seed, exclude, recipe.data_dir, load, split)
    if not items:
        raise SeawallError("no training prompts; check the data options of the recipe")
    model_dir = resolve_model_dir(recipe.model)
    if is_refusal is None:
        from seawall.detect import is_refusal
    judge_info: dict[str, Any] = {"path": None, "detector_id": None}
    if judge is None and any(item.kind == "harmful" for item in items):
        if recipe.data.harmful_judge == "refusal":
            refusal = is_refusal

            def judge(pairs: list[tuple[str, str]]) -> list[bool]:
                return [not refusal(response) for _, response in pairs]

        else:
            judge, judge_info = detector_judge(recipe.detector)
    samples = sample_responses(
        items, recipe.data, model_dir, recipe.train.seed, recipe.train.threads, cache, generator_factory
    )
    references, reference_report = reference_answers(
        items, samples, recipe.data, is_refusal, recipe.train.threads, cache
    )
    pairs, pair_report = build_pairs(
        items,
        samples,
        judge or _no_harmful_prompts,
        is_refusal,
        recipe.train.seed,
        harmful_judge=recipe.data.harmful_judge,
        reference_answers=references,
        template_rejected_share=recipe.data.template_rejected_share,
    )
    check_no_overlap({"dpo-train": [p.prompt for p in pairs]}, evaluation)
    output.mkdir(parents=True, exist_ok=True)
    write_pairs(output / "pairs.jsonl", pairs)
    data_report = {
        **report,
        **pair_report,
        "detector": judge_info,
        "reference_model": reference_report,
        "pairs_file": str(output / "pairs.jsonl"),
    }
    record = {"recipe": "align-dpo", "config": config, "data_report": data_report}
    return train_dpo(model_dir, pairs, recipe.dpo, recipe.train, output, record=record)


def _no_harmful_prompts(pairs: list[tuple[str, str]]) -> list[bool]:
    raise SeawallError("no judge for the harmful prompts' samples")
