"""Typed, frozen configurations for every SafeGene step, loadable from YAML (a recipe is one file, as in mergekit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seawall.errors import SeawallError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DistillConfig(_Frozen):
    """Discrepancy distillation: a LoRA on D trained so that D+LoRA matches A's next-token distributions."""

    rank: int = Field(8, ge=1, description="LoRA rank of the distilled adapter")
    steps: int = Field(60, ge=1, description="optimizer steps")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    batch_size: int = Field(8, ge=1, description="sequences per step")
    response_tokens: int = Field(16, ge=0, description="A's greedy continuation appended to each prompt")
    hidden_weight: float = Field(0.0, ge=0, description="weight of the hidden-state MSE term (0 = KL only)")
    max_length: int = Field(128, ge=8, description="token cap per sequence")
    seed: int = 0


class ExtractConfig(_Frozen):
    """How to turn A and D into a safety adapter."""

    form: Literal["delta", "lora", "distilled"] = Field(
        "delta", description="dense τ = W_A − W_D, its truncated SVD as LoRA factors, or a distilled LoRA"
    )
    rank: int | None = Field(16, ge=1, description="SVD rank (lora form); None with `energy`")
    energy: float | None = Field(
        None, gt=0, le=1, description="keep the smallest rank holding this energy share"
    )
    module_types: list[str] | None = Field(
        None, description="e.g. [q_proj, v_proj]; None = every block linear"
    )
    include_embeddings: bool = Field(
        False, description="also take the delta of embeddings / LM head (delta form)"
    )
    include_norms: bool = Field(False, description="also take the delta of norm weights (delta form)")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="storage dtype of τ")
    checksums: bool = Field(True, description="sha256 every source file for the manifest fingerprints")
    distill: DistillConfig = DistillConfig()

    @model_validator(mode="after")
    def _check(self) -> ExtractConfig:
        if self.form == "lora" and self.rank is None and self.energy is None:
            raise ValueError("the lora form needs `rank` or `energy`")
        if self.form != "delta" and (self.include_embeddings or self.include_norms):
            raise ValueError("embeddings and norms can only be extracted in the dense delta form")
        return self


class ShotsConfig(_Frozen):
    """Where the few-shot prompts come from (seawall.data sets), and how many."""

    harmful: str = Field("harmbench", description="harmful prompt set name for seawall.data.load")
    harmful_split: str | None = Field(
        "val", description="split of the harmful set (HarmBench val is kept from eval)"
    )
    benign: str = Field("alpaca", description="benign prompt set name")
    benign_split: str | None = None
    n_harmful: int = Field(32, ge=1)
    n_benign: int = Field(32, ge=0)
    seed: int = 0


class SelectConfig(_Frozen):
    """Layer scoring and selection."""

    score: Literal["contrast", "sensitivity", "both"] = Field(
        "contrast", description="which layer score selects"
    )
    top_k: int | None = Field(None, ge=1, description="keep the k best layers")
    cumulative: float | None = Field(
        0.8, gt=0, le=1, description="keep the fewest best layers holding this share of the positive score"
    )
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(128, ge=8)

    @model_validator(mode="after")
    def _check(self) -> SelectConfig:
        if self.top_k is None and self.cumulative is None:
            raise ValueError("set `top_k` or `cumulative`")
        return self


class CalibrateConfig(_Frozen):
    """Few-shot fitting of one coefficient per selected layer (optionally per module type)."""

    per_module_type: bool = Field(False, description="one α per (layer, module type) instead of per layer")
    alpha_init: float = Field(0.5, ge=0)
    alpha_max: float = Field(2.0, gt=0)
    lambda_retain: float = Field(1.0, ge=0, description="weight λ of the retain KL(T ‖ T') on benign prompts")
    refusals: Literal["templates", "aligned"] = Field(
        "templates",
        description="targets of the harmful shots: varied refusal templates, or the aligned model A's own greedy "
        "answers to them (those the refusal matcher counts as refusals; needs A)",
    )
    optimizer: Literal["lbfgs", "adam"] = Field(
        "lbfgs", description="full-batch L-BFGS on α = α_max·sigmoid(θ), or projected Adam on chunks"
    )
    lr: float = Field(0.1, gt=0, description="Adam learning rate on α (L-BFGS uses a line search)")
    max_epochs: int = Field(
        12, ge=1, description="most passes over the few-shot set (L-BFGS: loss+gradient evaluations)"
    )
    batch_size: int = Field(8, ge=1, description="sequences per chunk (forward/backward unit; bounds memory)")
    patience: int = Field(3, ge=1, description="Adam: epochs without improvement before stopping early")
    min_delta: float = Field(
        1e-4, ge=0, description="Adam: improvement that resets patience; L-BFGS: loss/step change to stop"
    )
    min_rel_delta: float = Field(
        0.05,
        ge=0,
        description="L-BFGS: also stop when an iteration gains less than this share of the gain so far",
    )
    response_tokens: int = Field(
        24, ge=1, description="length of T's greedy answers (retain targets) and of A's refusals"
    )
    max_length: int = Field(160, ge=8)
    seed: int = 0
    # float32 by default: in bf16, W + α·τ is rounded to 8 significant bits, so small changes of α can vanish and
    # L-BFGS's line search now and then stalls away from the fp32 optimum (docs/gene.md, measured).
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "float32",
        description="weights of T during the fit (seawall.models.precision; auto = bfloat16 on CPUs with bf16 "
        "matrix units): α, the losses and the targets (T's answers, A's refusals, made in float32) stay float32",
    )

    @model_validator(mode="after")
    def _check(self) -> CalibrateConfig:
        if self.alpha_init > self.alpha_max:
            raise ValueError("alpha_init must lie in [0, alpha_max]")
        return self


class ApplyConfig(_Frozen):
    """How to write the restored model."""

    format: Literal["merged", "peft"] = Field(
        "merged", description="HF folder with merged weights, or a PEFT adapter"
    )
    max_shard_bytes: int = Field(2 * 1024**3, ge=1 << 20)


class Recipe(_Frozen):
    """One file for a whole run: extract → select → calibrate → apply (method safegene), or a baseline."""

    method: str = "safegene"
    aligned: str | None = None
    degraded: str | None = None
    base: str | None = Field(None, description="unaligned base model (Safe LoRA / SafeMERGE subspace)")
    target: str | None = None
    task_lora: str | None = None
    safety_lora: str | None = None
    adapter: str | None = Field(None, description="adapter folder: written by extract, or read if it exists")
    output: str
    overwrite: bool = False
    data_dir: str | None = None
    shots: ShotsConfig = ShotsConfig()
    extract: ExtractConfig = ExtractConfig()
    select: SelectConfig | None = SelectConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    apply: ApplyConfig = ApplyConfig()
    method_config: dict[str, Any] = Field(default_factory=dict, description="settings of a baseline method")


def load_yaml_config(path: str | Path, cls: type[BaseModel]) -> Any:
    """Load and validate a YAML file into `cls`; relative paths stay as written (resolved by the caller)."""
    path = Path(path)
    if not path.is_file():
        raise SeawallError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SeawallError(f"{path}: invalid YAML ({error})") from error
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SeawallError(f"{path}: {where}: {first['msg']}") from error
