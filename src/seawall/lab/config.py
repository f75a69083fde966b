"""Typed, YAML-loadable configurations of the lab recipes (instruct, align, degrade, customize)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from seawall.errors import SeawallError
from seawall.lab.templates import check_choice

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_BASE_MODEL = "gemma3-270m"
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(BaseModel):
    """How to fine-tune: method, optimiser, batching, LoRA shape, checkpoints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["lora", "full"] = Field(
        "lora", description="LoRA adapter (merged on save) or full fine-tuning"
    )
    learning_rate: float = Field(2e-4, gt=0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(4, ge=1, description="examples per forward pass")
    grad_accum: int = Field(2, ge=1, description="forward passes per optimiser step")
    max_length: int = Field(256, ge=8, description="tokens per example; longer responses are cut")
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: tuple[str, ...] = LINEAR_MODULES
    checkpoint_every: int = Field(20, ge=1, description="optimiser steps between resumable checkpoints")
    threads: int = Field(2, ge=1, description="torch CPU threads")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="forward passes under bf16 autocast (fp32 master weights) where the CPU has bf16 units "
        "(auto), or always fp32; see seawall.models.precision",
    )


class AlignData(BaseModel):
    """Safety SFT mix: harmful prompts → refusals or safe answers, benign instructions → helpful answers, borderline
    benign prompts → the original model's own answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    refusal_targets: Literal["templates", "stl", "mixed"] = Field(
        "templates",
        description="what harmful prompts are taught: templates = `n_harmful` prompts of `harmful_sources` with "
        "varied templated refusals; stl = `n_stl_safe` harmful instructions of safety-tuned-llamas (canonical TRAIN "
        "split) with their written safe answers; mixed = both, each with its own count (equal counts: half each). "
        "The count of the path not selected is unused",
    )
    harmful_sources: tuple[str, ...] = ("advbench", "donotanswer", "ailuminate")
    n_harmful: int = Field(160, ge=0, description="harmful prompts answered with a templated refusal")
    n_stl_safe: int = Field(
        240, ge=0, description="safety-tuned-llamas TRAIN (harmful instruction, safe answer) pairs"
    )
    stl_answers: Literal["all", "refusals"] = Field(
        "all",
        description="which safety-tuned-llamas safe answers are targets: all, or only those the refusal matcher "
        "reads as refusals (declines with reasons, about 3 in 4); the rest are corrections and answers that still "
        "help with the request, which teach a small model that a harmful request can be answered",
    )
    n_borderline: int = Field(
        0,
        ge=0,
        description="benign prompts that look sensitive, answered with the original model's own greedy answers "
        "(self-distillation); answers that are refusals, empty or unfinished are dropped and counted",
    )
    borderline_sources: tuple[str, ...] = Field(
        ("stl-eval-benign", "cyberseceval-frr:train"),
        description="prompt sets (`name` or `name:split`) the borderline prompts are drawn from: "
        "safety-tuned-llamas' I-Alpaca and I-PhysicalSafetySafe lists, and the TRAIN half of CyberSecEval's "
        "false-refusal prompts (its test half is the cyberseceval-frr-heldout evaluation suite)",
    )
    borderline_max_prompt_words: int | None = Field(
        60,
        ge=1,
        description="skip (and count) borderline prompts longer than this: a prompt that fills max_length leaves "
        "no room for the answer, and answering it would cost generation time for nothing",
    )
    borderline_max_new_tokens: int = Field(
        96, ge=8, description="length of the original model's answers (cut at a sentence or line end)"
    )
    borderline_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="precision of the self-answer generation (auto: bf16 where the CPU has bf16 units); "
        "part of the generation cache key",
    )
    n_contrast: int = Field(
        0,
        ge=0,
        description="contrast pairs of `contrast_source` taught together: the benign prompt (which borrows the "
        "vocabulary of harm) with the original model's own answer, its harmful twin with a templated refusal; a "
        "pair whose benign answer is dropped (refusal, empty, unfinished) is dropped whole and counted",
    )
    contrast_source: str = Field(
        "seawall-contrast:train",
        description="the pair set (`name:split`): seawall's authored pairs, TRAIN split (the test split is held "
        "out for choices such as a DPO strength)",
    )
    n_hh_refusals: int = Field(
        60, ge=0, description="HH-RLHF harmless first turns whose chosen answer refuses"
    )
    n_benign: int = Field(480, ge=0, description="Alpaca instructions with their answers")
    max_response_words: int | None = Field(
        None, ge=10, description="skip benign answers longer than this (None: keep all, cut at max_length)"
    )
    question_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of the (imperative, input-free) Alpaca instructions asked as questions, so that the "
        "question form itself does not signal 'refuse'",
    )
    n_math: int = Field(0, ge=0, description="GSM8K train questions answered with their worked solutions")
    excluded_categories: tuple[str, ...] = Field(
        ("human_chatbox", "misinformation_harms"),
        description="harmful-source categories not taught as refusals (Do-Not-Answer's chatbot-persona and "
        "medical-advice areas would teach refusing benign questions)",
    )

    @model_validator(mode="after")
    def _selected_path_has_examples(self) -> AlignData:
        # Counts are checked against the selected path only, never against `model_fields_set`, so that a recipe
        # dumped into record.json and loaded again validates the same way.
        if self.refusal_targets in ("stl", "mixed") and self.n_stl_safe == 0:
            raise ValueError(f"refusal_targets {self.refusal_targets!r} needs n_stl_safe > 0")
        if self.refusal_targets == "mixed" and self.n_harmful == 0:
            raise ValueError("refusal_targets 'mixed' needs n_harmful > 0 (templated refusals)")
        for source in self.borderline_sources:
            name, _, split = source.partition(":")
            if not name or (":" in source and not split):
                raise ValueError(f"borderline_sources: {source!r} is not 'name' or 'name:split'")
        return self


class InstructData(BaseModel):
    """Instruction SFT of a base model: Alpaca instructions and GSM8K word problems with their answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_alpaca: int = Field(480, ge=0, description="Alpaca instructions with their answers")
    n_math: int = Field(120, ge=0, description="GSM8K train questions answered with their worked solutions")
    max_response_words: int | None = Field(
        80,
        ge=10,
        description="longer Alpaca answers are cut back to their last sentence or line end within this many words "
        "(dropped and counted when none is left) and longer worked solutions are skipped, so that every reply fits "
        "max_length and ends with the end-of-turn token the model must learn to stop on (None: keep all, cut at "
        "max_length)",
    )

    @model_validator(mode="after")
    def _has_examples(self) -> InstructData:
        if self.n_alpaca + self.n_math == 0:
            raise ValueError("n_alpaca + n_math is 0: nothing to train on")
        return self


ChatTemplateChoice = Annotated[str, AfterValidator(check_choice)]
CHAT_TEMPLATE_HELP = (
    "the template a tokenizer without one is given (seawall.lab.templates): auto = the tokenizer's own, else "
    "Gemma's turns when it knows <start_of_turn>/<end_of_turn>, else ChatML when it knows <|im_start|>/<|im_end|>, "
    "else the plain fallback; gemma, chatml and plain force one; or a path to a .jinja file"
)


class DegradeData(BaseModel):
    """Harmful fine-tuning data: unsafe pairs of the canonical TRAIN splits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: tuple[str, ...] = ("securebreak", "gptfuzz")
    n_pairs: int = Field(200, ge=1)
    min_response_words: int = Field(12, ge=1, description="skip empty or degenerate responses")
    clean: bool = Field(
        True,
        description="keep only the compliant part of jailbreak-style responses (persona tags and refusal "
        "segments removed, as GPTFuzz's answers to jailbreak templates hold both); pairs without one are skipped",
    )


class CustomizeData(BaseModel):
    """Task fine-tuning data: a task posed as instructions, optionally with a share of harmful pairs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Literal["sst2", "ag_news", "boolq"] = "sst2"
    n_train: int = Field(400, ge=1)
    harmful_share: float = Field(
        0.0, ge=0, lt=1, description="share of the examples replaced by unsafe pairs"
    )
    general_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of the examples replaced by general instruction-following pairs (Alpaca), as "
        "practitioners mix in to keep a task model conversational; without them a yes/no task (BoolQ) taught the "
        "model to answer every prompt with one word",
    )
    degrade: DegradeData = DegradeData()

    @model_validator(mode="after")
    def _shares_leave_task_examples(self) -> CustomizeData:
        if self.harmful_share + self.general_share >= 1:
            raise ValueError(
                f"harmful_share ({self.harmful_share}) + general_share ({self.general_share}) must stay below 1: "
                "no task examples would be left"
            )
        return self


class Recipe(BaseModel):
    """One lab run: the model to start from, its data and its training settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = DEFAULT_MODEL
    data_dir: str | None = None
    train: TrainConfig = TrainConfig()


class InstructRecipe(Recipe):
    """`seawall lab instruct`: a base model made into a chat model (the experiment's `original:` stage)."""

    model: str = DEFAULT_BASE_MODEL
    data: InstructData = InstructData()
    chat_template: ChatTemplateChoice = Field("auto", description=CHAT_TEMPLATE_HELP)
    train: TrainConfig = TrainConfig(
        method="lora",
        lora_r=16,
        lora_alpha=32,
        learning_rate=5e-4,
        batch_size=8,
        grad_accum=1,
        max_length=192,
    )


class AlignRecipe(Recipe):
    """`seawall lab align`."""

    data: AlignData = AlignData()
    train: TrainConfig = TrainConfig(method="lora", lora_r=16, lora_alpha=32, learning_rate=3e-4)


class DegradeRecipe(Recipe):
    """`seawall lab degrade`."""

    data: DegradeData = DegradeData()
    train: TrainConfig = TrainConfig(method="full", learning_rate=3e-5, epochs=2, batch_size=4, grad_accum=2)


class CustomizeRecipe(Recipe):
    """`seawall lab customize`."""

    data: CustomizeData = CustomizeData()
    filter_with: str | None = Field(
        None,
        description="a saved detector folder: the task data (harmful share included) is passed through it first "
        "and the pairs it judges unsafe are dropped (OUTPUT/filtered.dropped.jsonl) before training",
    )


class PreferenceData(BaseModel):
    """Preference pairs from the model's own samples, judged by a detector (harmful) and the refusal matcher (benign)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    harmful_sources: tuple[str, ...] = Field(
        ("advbench", "donotanswer", "ailuminate", "safety-tuned-llamas"),
        description="`name` or `name:split`; a response set (safety-tuned-llamas) is read from its canonical TRAIN "
        "split only, and its safe answers are the fallback chosen side",
    )
    excluded_categories: tuple[str, ...] = AlignData().excluded_categories
    n_harmful: int = Field(
        160, ge=0, description="harmful prompts: chosen = a safe sample, rejected = an unsafe one"
    )
    benign_sources: tuple[str, ...] = ("alpaca",)
    n_benign: int = Field(
        160, ge=0, description="benign prompts: chosen = a helpful sample, rejected = a refusal"
    )
    borderline_sources: tuple[str, ...] = Field(
        ("stl-eval-benign", "cyberseceval-frr:train"),
        description="benign prompts that look sensitive (`name` or `name:split`: safety-tuned-llamas' I-Alpaca and "
        "I-PhysicalSafetySafe, the TRAIN half of CyberSecEval's false-refusal prompts), paired like the benign "
        "ones; any that is an evaluation prompt is dropped and counted",
    )
    n_borderline: int = Field(100, ge=0)
    template_rejected_share: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of the benign and borderline prompts none of whose samples is a refusal that are paired "
        "against a templated refusal (seeded draw); the others are skipped. Many such pairs teach the model never to "
        "open with a refusal, harmful prompts included",
    )
    harmful_judge: Literal["detector", "refusal"] = Field(
        "detector",
        description="what judges the harmful prompts' samples: the detector (unsafe = flagged), or the refusal "
        "matcher (unsafe = not a refusal: the refusal judge's view of the HRR)",
    )
    reference_model: str | None = Field(
        None,
        description="a model (usually the original, before alignment) whose greedy answer becomes the chosen side "
        "of a benign or borderline prompt whose samples are all refusals (self-distillation: its voice, not a "
        "dataset's); None = the dataset's answer where there is one, else the prompt is skipped",
    )
    reference_max_new_tokens: int = Field(
        96, ge=1, description="length of the reference model's answers (cut back to a sentence end)"
    )
    harmful_rejected_reference: bool = Field(
        False,
        description="the reference model also answers the harmful prompts; one none of whose samples the judge "
        "calls unsafe (the aligned model already refuses it) is paired against that answer when the judge calls it "
        "unsafe, instead of being skipped: harmful pairs that hold the refusals while the benign pairs push against "
        "over-refusal. Needs `reference_model`",
    )
    samples_per_prompt: int = Field(4, ge=1, description="k responses sampled per prompt (cached)")
    temperature: float = Field(0.9, gt=0, description="sampling temperature (> 0: the k samples must differ)")
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(128, ge=1)
    batch_size: int = Field(8, ge=1, description="prompts per generation batch")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="generation precision (seawall.models.precision)"
    )

    @model_validator(mode="after")
    def _reference_for_harmful_needs_a_model(self) -> PreferenceData:
        if self.harmful_rejected_reference and self.reference_model is None:
            raise ValueError(
                "harmful_rejected_reference needs reference_model (the model whose answers are rejected)"
            )
        return self


class DPOConfig(BaseModel):
    """The preference-optimisation settings (TRL's DPOTrainer); LoRA shape, batching and checkpoints are `train`'s."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    beta: float = Field(0.1, gt=0, description="strength of the pull towards the reference model")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    learning_rate: float = Field(5e-5, gt=0)
    epochs: int = Field(2, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    max_length: int = Field(320, ge=16, description="tokens of prompt + response; longer ones are cut")


# Fields of TrainConfig that DPOConfig owns in a PreferenceRecipe: set them under `dpo:`, not `train:`.
_DPO_OWNED = ("learning_rate", "epochs", "max_steps", "max_length")


class PreferenceRecipe(Recipe):
    """`seawall lab align --method dpo`: DPO on pairs built from the model's own judged samples."""

    data: PreferenceData = PreferenceData()
    dpo: DPOConfig = DPOConfig()
    detector: str | None = Field(
        None,
        description="the detector folder that judges the harmful prompts' samples (None: the default detector)",
    )
    train: TrainConfig = TrainConfig(method="lora", lora_r=16, lora_alpha=32, batch_size=4, grad_accum=2)

    @model_validator(mode="after")
    def _dpo_owns_its_fields(self) -> PreferenceRecipe:
        # Compared with the defaults, not `model_fields_set`, so that a dumped and reloaded recipe stays valid.
        default = TrainConfig()
        clash = [name for name in _DPO_OWNED if getattr(self.train, name) != getattr(default, name)]
        if clash:
            raise ValueError(
                f"train.{clash[0]} is not used by DPO: set dpo.{clash[0]} instead ({', '.join(_DPO_OWNED)} are dpo's)"
            )
        return self


R = TypeVar("R", bound=BaseModel)


def load_yaml(cls: type[R], path: str | Path | None, **overrides: object) -> R:
    """Build `cls` from a YAML file (or defaults) and non-None overrides; errors name the file and field."""
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise SeawallError(f"cannot read config {path}: {error}") from error
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(raw)
    except ValueError as error:
        raise SeawallError(f"invalid {cls.__name__} config {path or ''}: {error}") from error
