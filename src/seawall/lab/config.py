"""Typed, YAML-loadable configurations of the lab recipes (align, degrade, customize)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field

from seawall.errors import SeawallError

DEFAULT_MODEL = "smollm2-135m-instruct"
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
    """Safety SFT mix: harmful prompts → varied refusals, benign instructions → helpful answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    harmful_sources: tuple[str, ...] = ("advbench", "donotanswer", "ailuminate")
    n_harmful: int = Field(160, ge=0, description="harmful prompts answered with a refusal")
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
    degrade: DegradeData = DegradeData()


class Recipe(BaseModel):
    """One lab run: the model to start from, its data and its training settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = DEFAULT_MODEL
    data_dir: str | None = None
    train: TrainConfig = TrainConfig()


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
