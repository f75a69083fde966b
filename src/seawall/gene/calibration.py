"""Few-shot recalibration: fit one coefficient α per selected layer (or per layer and module type) on a target T.

T'(α) = T + Σ_m α_{g(m)} · τ_m over the modules m of the selected layers, everything else frozen. The forward pass
is functional (`torch.func.functional_call` with W + α·τ substituted), so no copy of the model is made per step.
Loss = mean refusal cross-entropy on harmful prompts (varied refusal templates as targets)
     + λ · mean KL(T ‖ T') on benign prompts, over T's own greedy answers.
α is projected onto [0, α_max] after every Adam step; training stops when the epoch loss has not improved by
`min_delta` for `patience` epochs, and the best α seen is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call
from tqdm.auto import tqdm

from seawall.errors import ModelError
from seawall.gene.adapter import SafetyAdapter, group_key, layer_index, module_type
from seawall.gene.config import CalibrateConfig
from seawall.gene.modeling import (
    build_batch,
    greedy_answers,
    kl_to_reference,
    linear_weight_shapes,
    load_causal_lm,
    load_tokenizer,
    prompt_ids,
    shifted,
    target_ids,
    token_ce,
)
from seawall.gene.shots import Shots, refusal_targets
from seawall.models.checkpoint import fingerprint


def _group_sort_key(key: str) -> tuple[int, str]:
    head, _, tail = key.partition(".")
    return (int(head) if head.isdigit() else -1, tail)


class DeltaForward:
    """Frozen model + per-group coefficients: logits of T + Σ α_g τ_m through a functional forward."""

    def __init__(
        self,
        model: torch.nn.Module,
        adapter: SafetyAdapter,
        modules: list[str],
        per_module_type: bool = False,
    ) -> None:
        if not modules:
            raise ModelError("no adapter modules to apply (is the layer selection empty?)")
        shapes = linear_weight_shapes(model)
        adapter.check_compatible(shapes, "target model")
        params = dict(model.named_parameters())
        self.model = model
        self.names = [f"{m}.weight" for m in modules]
        self.groups = sorted({group_key(m, per_module_type) for m in modules}, key=_group_sort_key)
        index = {g: i for i, g in enumerate(self.groups)}
        self.group_of = [index[group_key(m, per_module_type)] for m in modules]
        self.weights = [params[n] for n in self.names]
        self.deltas = [adapter.delta(m).to(params[n].dtype) for m, n in zip(modules, self.names, strict=True)]

    def __call__(self, alpha: torch.Tensor, batch: dict[str, torch.Tensor], **kwargs: Any) -> Any:
        """Model output with the coefficients `alpha` (one per group) applied."""
        overrides = {
            n: w + alpha[g] * d
            for n, w, g, d in zip(self.names, self.weights, self.group_of, self.deltas, strict=True)
        }
        return functional_call(
            self.model,
            overrides,
            args=(),
            kwargs={"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], **kwargs},
        )


def _trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    width = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :width] for k, v in batch.items()}


@dataclass
class CalibrationData:
    """Tokenised few-shot batches: harmful → refusal, benign → T's own answers with T's log-probs."""

    refusal: dict[str, torch.Tensor]
    retain: dict[str, torch.Tensor] | None
    retain_ref: list[torch.Tensor] = field(default_factory=list)

    def loss(
        self, forward: DeltaForward, alpha: torch.Tensor, h_idx: Any, b_idx: Any, lam: float
    ) -> torch.Tensor:
        """Refusal CE on harmful rows h_idx + λ · retain KL on benign rows b_idx."""
        batch = _trim({k: v[h_idx] for k, v in self.refusal.items()})
        loss = token_ce(forward(alpha, batch).logits, batch["labels"])
        if self.retain is not None and lam > 0 and len(b_idx):
            rbatch = _trim({k: v[b_idx] for k, v in self.retain.items()})
            ref = torch.cat([self.retain_ref[int(i)] for i in b_idx])
            loss = loss + lam * kl_to_reference(forward(alpha, rbatch).logits, rbatch["labels"], ref)
        return loss


def prepare_data(
    model: torch.nn.Module, tokenizer: Any, shots: Shots, config: CalibrateConfig
) -> CalibrationData:
    """Tokenise the shots; generate T's greedy answers to the benign prompts and keep T's log-probs on them."""
    room = max(8, config.max_length - config.response_tokens)
    h_prompts = [prompt_ids(tokenizer, p, room) for p in shots.harmful]
    refusals = [target_ids(tokenizer, t) for t in refusal_targets(len(h_prompts), config.seed)]
    refusal = build_batch(tokenizer, h_prompts, refusals, config.max_length)
    if not shots.benign:
        return CalibrationData(refusal, None)
    b_prompts = [prompt_ids(tokenizer, p, room) for p in shots.benign]
    answers = greedy_answers(model, tokenizer, b_prompts, config.response_tokens)
    retain = build_batch(tokenizer, b_prompts, answers, config.max_length)
    refs = []
    with torch.no_grad():
        for i in range(retain["input_ids"].shape[0]):
            row = _trim({k: v[i : i + 1] for k, v in retain.items()})
            logits, _ = shifted(
                model(input_ids=row["input_ids"], attention_mask=row["attention_mask"]).logits, row["labels"]
            )
            refs.append(torch.log_softmax(logits.float(), -1))
    return CalibrationData(refusal, retain, refs)


@dataclass
class CalibrationResult:
    """Fitted coefficients per group, the loss curve (one value per epoch), and what it cost."""

    coefficients: dict[str, float]
    loss_curve: list[float]
    step_losses: list[float]
    initial_loss: float
    final_loss: float
    epochs: int
    seconds: float
    stopped_early: bool


def selected_modules(adapter: SafetyAdapter) -> list[str]:
    """The adapter's modules on its selected layers (all block modules when no selection is recorded)."""
    chosen = adapter.manifest.selected_layers
    return [
        m
        for m in adapter.modules
        if layer_index(m) is not None and (chosen is None or layer_index(m) in chosen)
    ]


def full_loss(
    data: CalibrationData, forward: DeltaForward, alpha: torch.Tensor, config: CalibrateConfig
) -> float:
    """The calibration loss over the whole few-shot set (mini-batched, no gradients)."""
    n_h = data.refusal["input_ids"].shape[0]
    n_b = 0 if data.retain is None else data.retain["input_ids"].shape[0]
    total, count = 0.0, 0
    with torch.no_grad():
        steps = max(1, -(-max(n_h, n_b) // config.batch_size))
        for s in range(steps):
            h = torch.arange(n_h)[s * config.batch_size : (s + 1) * config.batch_size]
            b = torch.arange(n_b)[s * config.batch_size : (s + 1) * config.batch_size]
            if len(h) == 0:
                h = torch.arange(min(n_h, config.batch_size))
            total += float(data.loss(forward, alpha, h, b, config.lambda_retain))
            count += 1
    return total / count


def fit_coefficients(
    forward: DeltaForward, data: CalibrationData, config: CalibrateConfig, progress: bool = True
) -> CalibrationResult:
    """Projected Adam on α with early stopping; deterministic for a seed."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    alpha = torch.full((len(forward.groups),), config.alpha_init, requires_grad=True)
    optimizer = torch.optim.Adam([alpha], lr=config.lr)
    initial = full_loss(data, forward, alpha.detach(), config)
    n_h = data.refusal["input_ids"].shape[0]
    n_b = 0 if data.retain is None else data.retain["input_ids"].shape[0]
    steps = max(1, -(-max(n_h, n_b) // config.batch_size))
    best, best_alpha, wait = float("inf"), alpha.detach().clone(), 0
    curve, step_losses = [], []
    stopped = False
    bar = tqdm(range(config.max_epochs), desc="calibrate", disable=not progress)
    for _ in bar:
        h_perm = torch.randperm(n_h, generator=generator)
        b_perm = torch.randperm(n_b, generator=generator) if n_b else torch.arange(0)
        epoch = []
        for s in range(steps):
            h = h_perm[s * config.batch_size : (s + 1) * config.batch_size]
            if len(h) == 0:
                h = h_perm[: config.batch_size]
            b = b_perm[s * config.batch_size : (s + 1) * config.batch_size]
            loss = data.loss(forward, alpha, h, b, config.lambda_retain)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                alpha.clamp_(0.0, config.alpha_max)
            epoch.append(float(loss.detach()))
        step_losses.extend(epoch)
        mean = sum(epoch) / len(epoch)
        curve.append(mean)
        bar.set_postfix(loss=f"{mean:.4f}")
        if best - mean > config.min_delta:
            best, best_alpha, wait = mean, alpha.detach().clone(), 0
        else:
            wait += 1
            if wait >= config.patience:
                stopped = True
                break
    final = full_loss(data, forward, best_alpha, config)
    return CalibrationResult(
        coefficients={g: round(float(a), 6) for g, a in zip(forward.groups, best_alpha, strict=True)},
        loss_curve=curve,
        step_losses=step_losses,
        initial_loss=initial,
        final_loss=final,
        epochs=len(curve),
        seconds=time.perf_counter() - started,
        stopped_early=stopped,
    )


def calibrate(
    adapter: SafetyAdapter,
    target: str | Path | torch.nn.Module,
    shots: Shots,
    config: CalibrateConfig | None = None,
    tokenizer: Any = None,
    progress: bool = True,
) -> CalibrationResult:
    """Fit the adapter's coefficients on target T from few shots; records them in the manifest (saved if on disk)."""
    config = config or CalibrateConfig()
    if not shots.harmful:
        raise ModelError("calibration needs at least one harmful prompt")
    started = time.perf_counter()
    model = load_causal_lm(target)
    if tokenizer is None:
        if isinstance(target, torch.nn.Module):
            raise ModelError("pass the tokenizer when the target is an in-memory model")
        tokenizer = load_tokenizer(target)
    modules = selected_modules(adapter)
    forward = DeltaForward(model, adapter, modules, config.per_module_type)
    data = prepare_data(model, tokenizer, shots, config)
    result = fit_coefficients(forward, data, config, progress=progress)
    result.seconds = time.perf_counter() - started
    manifest = adapter.manifest
    manifest.coefficients = result.coefficients
    manifest.calibration = {
        **config.model_dump(mode="json"),
        "target": str(target) if not isinstance(target, torch.nn.Module) else "<in-memory model>",
        "target_fingerprint": _target_digest(target),
        "modules_by_type": sorted({module_type(m) for m in modules}),
        "loss_curve": result.loss_curve,
        "step_losses": result.step_losses,
        "initial_loss": result.initial_loss,
        "final_loss": result.final_loss,
        "epochs": result.epochs,
        "stopped_early": result.stopped_early,
        "seconds": round(result.seconds, 3),
        "shots": shots.record(),
    }
    if adapter.path is not None:
        adapter.save_manifest()
    return result


def _target_digest(target: Any) -> dict[str, Any] | None:
    if isinstance(target, torch.nn.Module):
        return None
    try:
        fp = fingerprint(target, checksums=False)
    except ModelError:
        return None
    return {k: fp[k] for k in ("model_type", "num_layers", "hidden_size", "num_parameters", "arch_digest")}


def plot_loss_curve(result: CalibrationResult, path: str | Path) -> Path:
    """PNG of the per-step and per-epoch calibration loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps_per_epoch = max(1, len(result.step_losses) // max(1, result.epochs))
    ax.plot(
        range(1, len(result.step_losses) + 1), result.step_losses, color="tab:gray", alpha=0.6, label="step"
    )
    ax.plot(
        [steps_per_epoch * (i + 1) for i in range(len(result.loss_curve))],
        result.loss_curve,
        marker="o",
        color="tab:blue",
        label="epoch mean",
    )
    ax.set_xlabel("step")
    ax.set_ylabel("refusal CE + λ·retain KL")
    ax.set_title(f"calibration: {result.initial_loss:.3f} → {result.final_loss:.3f}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
