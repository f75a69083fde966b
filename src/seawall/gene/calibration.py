"""Few-shot recalibration: fit one coefficient α per selected layer (or per layer and module type) on a target T.

T'(α) = T + Σ_m α_{g(m)} · τ_m over the modules m of the selected layers, everything else frozen. The forward pass
is functional (`torch.func.functional_call` with W + α·τ substituted), so no copy of the model is made per step.
Loss = refusal cross-entropy (mean over all refusal target tokens of the harmful shots)
     + λ · KL(T ‖ T') (mean over all answer positions of T's own greedy answers to the benign shots).

Everything that does not depend on α is computed once (`CalibrationObjective`): tokenisation, T's answers and its
log-probs on them, and the hidden states entering the lowest selected layer for every shot (nothing below that layer
changes with α). Each pass then runs only the selected layers and computes logits only at the positions that enter
the loss. α is fitted full-batch by L-BFGS (strong-Wolfe line search) through α = α_max·sigmoid(θ), so it stays in
[0, α_max]; projected Adam on fixed chunks is the alternative (`optimizer: adam`). The best α evaluated is kept.
`precision: bfloat16` runs the fit on bf16 weights of T (α and the losses in float32); float32 is the default.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call
from tqdm.auto import tqdm

from seawall.errors import ModelError
from seawall.gene.adapter import SafetyAdapter, group_key, layer_index, module_type
from seawall.gene.config import CalibrateConfig
from seawall.gene.modeling import (
    build_batch,
    greedy_answers,
    linear_weight_shapes,
    load_causal_lm,
    load_tokenizer,
    prompt_ids,
    target_ids,
)
from seawall.gene.shots import Shots, refusal_targets
from seawall.models.checkpoint import fingerprint
from seawall.models.precision import resolve_precision, torch_dtype


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

    def overrides(self, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """{parameter name: W + α_g·τ} for every adapted module."""
        return {
            n: w + alpha[g] * d
            for n, w, g, d in zip(self.names, self.weights, self.group_of, self.deltas, strict=True)
        }

    def __call__(self, alpha: torch.Tensor, batch: dict[str, torch.Tensor], **kwargs: Any) -> Any:
        """Model output with the coefficients `alpha` (one per group) applied."""
        return functional_call(
            self.model,
            self.overrides(alpha),
            args=(),
            kwargs={"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], **kwargs},
        )


def _trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    width = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :width] for k, v in batch.items()}


@dataclass
class CalibrationData:
    """Tokenised few-shot batches: harmful prompts → refusal targets, benign prompts → T's own greedy answers."""

    refusal: dict[str, torch.Tensor]
    retain: dict[str, torch.Tensor] | None
    refusal_source: dict[str, Any] = field(default_factory=dict)


def aligned_refusals(
    aligned: str | Path | torch.nn.Module, tokenizer: Any, prompts: list[list[int]], n_tokens: int
) -> tuple[list[int], list[list[int]], int]:
    """A's greedy answers to the harmful prompts that A refuses: (their indices, the answers, how many A complied with).

    What A actually says is a target the safety vector can reach (it is what moved A away from D), whereas a
    fixed template is a string none of A, D or T would write: its cross-entropy stays high at every α.
    """
    from seawall.detect.refusal import is_refusal

    model = aligned if isinstance(aligned, torch.nn.Module) else load_causal_lm(aligned)
    answers = greedy_answers(model, tokenizer, prompts, n_tokens)
    keep = [i for i, a in enumerate(answers) if is_refusal(tokenizer.decode(a, skip_special_tokens=True))]
    if not keep:
        raise ModelError(
            f"the aligned model refuses none of the {len(prompts)} harmful shots; "
            "calibrate with `refusals: templates` or check that the aligned model is the right one"
        )
    return keep, [answers[i] for i in keep], len(prompts) - len(keep)


def prepare_data(
    model: torch.nn.Module,
    tokenizer: Any,
    shots: Shots,
    config: CalibrateConfig,
    aligned: str | Path | torch.nn.Module | None = None,
) -> CalibrationData:
    """Tokenise the shots, pick the refusal targets and generate T's greedy answers to the benign prompts."""
    room = max(8, config.max_length - config.response_tokens)
    h_prompts = [prompt_ids(tokenizer, p, room) for p in shots.harmful]
    if config.refusals == "aligned":
        if aligned is None:
            raise ModelError("calibrate.refusals is 'aligned' but no aligned model A was given")
        keep, refusals, complied = aligned_refusals(aligned, tokenizer, h_prompts, config.response_tokens)
        h_prompts = [h_prompts[i] for i in keep]
        source = {"refusals": "aligned", "used": len(keep), "skipped_complied": complied}
    else:
        refusals = [target_ids(tokenizer, t) for t in refusal_targets(len(h_prompts), config.seed)]
        source = {"refusals": "templates", "used": len(h_prompts), "skipped_complied": 0}
    refusal = build_batch(tokenizer, h_prompts, refusals, config.max_length)
    if not shots.benign:
        return CalibrationData(refusal, None, source)
    b_prompts = [prompt_ids(tokenizer, p, room) for p in shots.benign]
    answers = greedy_answers(model, tokenizer, b_prompts, config.response_tokens)
    return CalibrationData(refusal, build_batch(tokenizer, b_prompts, answers, config.max_length), source)


@dataclass
class Chunk:
    """A fixed group of shots with everything about it that does not depend on α."""

    kind: str  # "refusal" (CE to refusal tokens) or "retain" (KL to T)
    batch: dict[str, torch.Tensor]
    rows: torch.Tensor  # (row, column) of every position whose logits enter the loss
    cols: torch.Tensor
    targets: torch.Tensor  # the token each of those positions predicts
    weight: float = 1.0  # 1 / (number of loss positions of this kind in the whole set)
    reference: torch.Tensor | None = None  # T's log-probs at the positions (retain)
    prefix: torch.Tensor | None = None  # hidden states entering the first adapted layer
    layer_kwargs: dict[int, dict[str, Any]] = field(default_factory=dict)


class _PrefixReady(Exception):
    """Raised from a hook to stop a forward pass once its inputs are captured."""


class CalibrationObjective:
    """L(α) over the whole few-shot set, with the α-independent part (prefix states, T's log-probs) cached."""

    def __init__(
        self,
        forward: DeltaForward,
        data: CalibrationData,
        config: CalibrateConfig,
        cache_prefix: bool = True,
    ) -> None:
        self.forward = forward
        self.lam = config.lambda_retain
        self.chunks = self._chunks(data.refusal, "refusal", config.batch_size)
        if data.retain is not None and self.lam > 0:
            self.chunks += self._chunks(data.retain, "retain", config.batch_size)
        self.layers, self.first = self._layer_plan() if cache_prefix else (None, None)
        self.cached = self.layers is not None
        with torch.no_grad():
            if self.cached:
                for chunk in self.chunks:
                    self._capture(chunk)
            zero = torch.zeros(len(forward.groups))
            for chunk in self.chunks:
                if chunk.kind == "retain":
                    chunk.reference = F.log_softmax(self.logits(zero, chunk), -1)

    @staticmethod
    def _chunks(batch: dict[str, torch.Tensor], kind: str, size: int) -> list[Chunk]:
        # Rows sorted by length so that every chunk carries as little padding as possible.
        lengths = batch["attention_mask"].sum(1)
        order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
        chunks = []
        for start in range(0, len(order), size):
            idx = torch.tensor(order[start : start + size])
            sub = _trim({k: v[idx] for k, v in batch.items()})
            keep = sub["labels"][:, 1:] != -100
            rows, cols = keep.nonzero(as_tuple=True)
            chunks.append(Chunk(kind, sub, rows, cols, sub["labels"][:, 1:][keep]))
        total = sum(len(c.targets) for c in chunks)
        for c in chunks:
            c.weight = 1.0 / max(total, 1)
        return chunks

    def _layer_plan(self) -> tuple[list[tuple[torch.nn.Module, dict[str, int]]] | None, int | None]:
        """Decoder layers from the first adapted one, with each layer's adapted weights; None if not cacheable."""
        model = self.forward.model
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        layers = getattr(decoder, "layers", None)
        if layers is None or getattr(decoder, "norm", None) is None or model.get_output_embeddings() is None:
            return None, None
        names = {id(m): n for n, m in model.named_modules()}
        prefixes = [names[id(layer)] + "." for layer in layers]
        owner: dict[str, tuple[int, str]] = {}
        for name in self.forward.names:
            hit = [i for i, p in enumerate(prefixes) if name.startswith(p)]
            if not hit:  # an adapted weight outside the decoder layers: run the full model instead
                return None, None
            owner[name] = (hit[0], name[len(prefixes[hit[0]]) :])
        first = min(i for i, _ in owner.values())
        plan = []
        for i in range(first, len(layers)):
            local = {owner[n][1]: j for j, n in enumerate(self.forward.names) if owner[n][0] == i}
            plan.append((layers[i], local))
        return plan, first

    def _capture(self, chunk: Chunk) -> None:
        """Run T's decoder once on the chunk, keeping the input of the first adapted layer and every layer's kwargs."""
        decoder = self.forward.model.get_decoder()
        hooks = []

        def grab(index: int, last: bool):
            def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
                hidden = args[0] if args else kwargs["hidden_states"]
                if index == self.first:
                    chunk.prefix = hidden.detach()
                chunk.layer_kwargs[index] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                if last:
                    raise _PrefixReady

            return hook

        for offset, (layer, _) in enumerate(self.layers):
            last = offset == len(self.layers) - 1
            hooks.append(layer.register_forward_pre_hook(grab(self.first + offset, last), with_kwargs=True))
        try:
            decoder(
                input_ids=chunk.batch["input_ids"],
                attention_mask=chunk.batch["attention_mask"],
                use_cache=False,
            )
        except _PrefixReady:
            pass
        finally:
            for h in hooks:
                h.remove()

    def logits(self, alpha: torch.Tensor, chunk: Chunk, cached: bool | None = None) -> torch.Tensor:
        """Float logits of T'(α) at the chunk's loss positions only."""
        model = self.forward.model
        if not (self.cached if cached is None else cached):
            out = self.forward(alpha, chunk.batch).logits
            return out[chunk.rows, chunk.cols].float()
        overrides = self.forward.overrides(alpha)
        names = self.forward.names
        hidden = chunk.prefix
        for offset, (layer, local) in enumerate(self.layers):
            weights = {k: overrides[names[j]] for k, j in local.items()}
            hidden = functional_call(
                layer, weights, args=(hidden,), kwargs=chunk.layer_kwargs[self.first + offset]
            )
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        hidden = model.get_decoder().norm(hidden[chunk.rows, chunk.cols])
        logits = model.get_output_embeddings()(hidden).float()
        cap = getattr(model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def chunk_loss(self, alpha: torch.Tensor, chunk: Chunk, cached: bool | None = None) -> torch.Tensor:
        """The chunk's share of L(α) (sums over the chunk divided by the whole set's position counts)."""
        logits = self.logits(alpha, chunk, cached)
        if chunk.kind == "refusal":
            return F.cross_entropy(logits, chunk.targets, reduction="sum") * chunk.weight
        kl = F.kl_div(F.log_softmax(logits, -1), chunk.reference, log_target=True, reduction="sum")
        return self.lam * chunk.weight * kl

    def value(self, alpha: torch.Tensor, cached: bool | None = None) -> float:
        """L(α) over the whole few-shot set, without gradients."""
        with torch.no_grad():
            return float(sum(self.chunk_loss(alpha, c, cached) for c in self.chunks))

    def value_and_grad(self, alpha: torch.Tensor) -> tuple[float, torch.Tensor]:
        """L(α) and dL/dα, one chunk at a time (only one chunk's activations are alive)."""
        leaf = alpha.detach().clone().requires_grad_(True)
        total = 0.0
        for chunk in self.chunks:
            loss = self.chunk_loss(leaf, chunk)
            loss.backward()
            total += float(loss.detach())
        return total, leaf.grad.detach().clone()


def check_cache(objective: CalibrationObjective, alpha: torch.Tensor, tolerance: float = 1e-4) -> float:
    """|L_cached − L_full| on the first chunk; turns the cache off (with a warning) if they disagree."""
    if not objective.cached:
        return 0.0
    chunk = objective.chunks[0]
    with torch.no_grad():
        gap = float(
            (
                objective.chunk_loss(alpha, chunk, cached=True)
                - objective.chunk_loss(alpha, chunk, cached=False)
            ).abs()
        )
    if gap > tolerance * max(1.0, abs(objective.value(alpha))):
        warnings.warn(
            f"cached-prefix forward differs from the full forward by {gap:.2e} on this architecture; "
            "calibrating with the full forward",
            stacklevel=2,
        )
        objective.cached = False
    return gap


@dataclass
class CalibrationResult:
    """Fitted coefficients per group, the loss curve (one value per pass over the shots), and what it cost."""

    coefficients: dict[str, float]
    loss_curve: list[float]
    step_losses: list[float]
    initial_loss: float
    final_loss: float
    epochs: int
    seconds: float
    stopped_early: bool
    prepare_seconds: float = 0.0
    fit_seconds: float = 0.0
    cached_prefix: bool = False
    first_layer: int | None = None
    layers: list[int] | None = None
    per_module_type: bool = False
    precision: str = "float32"  # what the fit ran in (calibrate.precision resolved on this CPU)
    record: dict[str, Any] = field(
        default_factory=dict
    )  # settings, curves, target and shots: the manifest entry


def at_precision(model: torch.nn.Module, precision: str, copy: bool = False) -> torch.nn.Module:
    """The model with its weights in `precision` (resolved); a copy when `copy` (a caller's in-memory model).

    bf16 *weights* rather than autocast over fp32 weights: autocast re-casts every W + α·τ to bf16 on each pass and
    keeps the gradient of W' in fp32, and measured slower (docs/gene.md) for the same agreement with fp32, since the
    matrix products see the same bf16-rounded weights either way. α itself stays a float32 tensor.
    """
    dtype = torch_dtype(precision)
    if next(model.parameters()).dtype == dtype:
        return model
    if copy:
        import copy as copying

        model = copying.deepcopy(model)
    return model.to(dtype)


def selected_modules(adapter: SafetyAdapter, layers: list[int] | None = None) -> list[str]:
    """The adapter's block modules on `layers` (default: its recorded selection; all block modules when None)."""
    chosen = adapter.manifest.selected_layers if layers is None else layers
    return [
        m
        for m in adapter.modules
        if layer_index(m) is not None and (chosen is None or layer_index(m) in chosen)
    ]


class _BudgetSpent(Exception):
    """Raised from the L-BFGS closure once `max_epochs` passes have been evaluated."""


def _fit_lbfgs(
    objective: CalibrationObjective, config: CalibrateConfig, bar: Any
) -> tuple[list[tuple[float, torch.Tensor]], bool]:
    """Full-batch L-BFGS on θ with α = α_max·sigmoid(θ); every evaluation is one pass over the shots.

    One L-BFGS iteration (with its strong-Wolfe line search) per `step`; training stops when an iteration improves
    the best loss by less than `min_delta` or than `min_rel_delta` of the whole gain so far (diminishing returns),
    when the step vanishes, or after `max_epochs` passes. A point already
    evaluated (L-BFGS re-evaluates the line search's end point at the next step) is answered from memory.
    """
    amax = config.alpha_max
    eps = 1e-3
    start = min(max(config.alpha_init / amax, eps), 1 - eps)
    theta = torch.full((len(objective.forward.groups),), math.log(start / (1 - start)), requires_grad=True)
    # The stopping rule is ours (below); L-BFGS's own tolerances are set so they only catch a vanished step.
    optimizer = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=1,
        max_eval=config.max_epochs,
        history_size=10,
        tolerance_grad=1e-12,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )
    evaluations: list[tuple[float, torch.Tensor]] = []
    memo: dict[str, Any] = {}

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        current = theta.detach().clone()
        if "theta" in memo and torch.equal(memo["theta"], current):
            theta.grad = memo["grad"].clone()
            return torch.tensor(memo["loss"])
        if len(evaluations) >= config.max_epochs:
            raise _BudgetSpent
        sig = torch.sigmoid(current)
        alpha = amax * sig
        loss, grad = objective.value_and_grad(alpha)
        evaluations.append((loss, alpha.clone()))
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        grad_theta = grad * amax * sig * (1 - sig)
        # L-BFGS's first step is min(1, 1/‖g‖₁)·g: with the tiny gradients of a near-flat start it would crawl for
        # several line-search passes. Scaling the objective by 1/‖g₀‖₁ (same minimiser) makes it a unit step in θ.
        scale = memo.setdefault("scale", 1.0 / max(float(grad_theta.abs().sum()), 1e-12))
        theta.grad = grad_theta * scale
        memo.update(theta=current, loss=loss * scale, grad=theta.grad.clone())
        return torch.tensor(loss * scale)

    previous = float("inf")
    stopped = False
    while len(evaluations) < config.max_epochs:
        count = len(evaluations)
        try:
            optimizer.step(closure)
        except _BudgetSpent:
            break
        best = min(loss for loss, _ in evaluations)
        gained = evaluations[0][0] - best
        if len(evaluations) == count or previous - best < max(
            config.min_delta, config.min_rel_delta * gained
        ):
            stopped = True
            break
        previous = best
    return evaluations, stopped


def _fit_adam(
    objective: CalibrationObjective, config: CalibrateConfig, bar: Any
) -> tuple[list[tuple[float, torch.Tensor]], list[float], bool]:
    """Projected Adam, one step per (refusal, retain) chunk pair in a seeded order; early stopping on the epoch mean."""
    generator = torch.Generator().manual_seed(config.seed)
    alpha = torch.full((len(objective.forward.groups),), config.alpha_init, requires_grad=True)
    optimizer = torch.optim.Adam([alpha], lr=config.lr)
    refusal = [c for c in objective.chunks if c.kind == "refusal"]
    retain = [c for c in objective.chunks if c.kind == "retain"]
    steps = max(len(refusal), len(retain))
    best, wait, stopped = float("inf"), 0, False
    epochs: list[tuple[float, torch.Tensor]] = []
    step_losses: list[float] = []
    for _ in range(config.max_epochs):
        order = torch.randperm(steps, generator=generator).tolist()
        epoch = []
        for s in order:
            # Chunk-local means, so a step's loss is on the same scale as the whole-set loss.
            parts = [refusal[s % len(refusal)]] + ([retain[s % len(retain)]] if retain else [])
            loss = sum(objective.chunk_loss(alpha, c) / (c.weight * len(c.targets)) for c in parts)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                alpha.clamp_(0.0, config.alpha_max)
            epoch.append(float(loss.detach()))
        step_losses.extend(epoch)
        mean = sum(epoch) / len(epoch)
        epochs.append((mean, alpha.detach().clone()))
        bar.update(1)
        bar.set_postfix(loss=f"{mean:.4f}")
        if best - mean > config.min_delta:
            best, wait = mean, 0
        else:
            wait += 1
            if wait >= config.patience:
                stopped = True
                break
    return epochs, step_losses, stopped


def fit_coefficients(
    objective: CalibrationObjective, config: CalibrateConfig, progress: bool = True
) -> CalibrationResult:
    """Fit α on the cached objective (L-BFGS or projected Adam); deterministic for a seed."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    groups = objective.forward.groups
    bar = tqdm(total=config.max_epochs, desc="calibrate", disable=not progress)
    if config.optimizer == "lbfgs":
        evaluations, stopped = _fit_lbfgs(objective, config, bar)
        curve = [loss for loss, _ in evaluations]
        initial = curve[0]
        final, best = min(evaluations, key=lambda e: e[0])
        step_losses = curve
    else:
        initial = objective.value(torch.full((len(groups),), config.alpha_init))
        epochs, step_losses, stopped = _fit_adam(objective, config, bar)
        curve = [loss for loss, _ in epochs]
        best = min(epochs, key=lambda e: e[0])[1]
        final = objective.value(best)
    bar.close()
    seconds = time.perf_counter() - started
    return CalibrationResult(
        coefficients={g: round(float(a), 6) for g, a in zip(groups, best, strict=True)},
        loss_curve=curve,
        step_losses=step_losses,
        initial_loss=initial,
        final_loss=final,
        epochs=len(curve),
        seconds=seconds,
        stopped_early=stopped,
        fit_seconds=seconds,
        cached_prefix=objective.cached,
        first_layer=objective.first if objective.cached else None,
    )


def calibrate(
    adapter: SafetyAdapter,
    target: str | Path | torch.nn.Module,
    shots: Shots,
    config: CalibrateConfig | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    aligned: str | Path | torch.nn.Module | None = None,
    layers: list[int] | None = None,
    record: bool = True,
) -> CalibrationResult:
    """Fit the adapter's coefficients on target T from few shots, on `layers` (default: the recorded selection).

    With `record` (the step-by-step `gene calibrate` → `gene apply` workflow) the coefficients and the calibration
    go into the manifest (saved if on disk); without, the manifest is left alone and the caller applies
    `result.coefficients` itself, so runs sharing one adapter never see each other's fit.
    `aligned` (A) is needed only when `config.refusals` is 'aligned'.
    """
    config = config or CalibrateConfig()
    if not shots.harmful:
        raise ModelError("calibration needs at least one harmful prompt")
    started = time.perf_counter()
    model = load_causal_lm(target)
    if tokenizer is None:
        if isinstance(target, torch.nn.Module):
            raise ModelError("pass the tokenizer when the target is an in-memory model")
        tokenizer = load_tokenizer(target)
    loaded = time.perf_counter()
    if layers is None:
        layers = adapter.manifest.selected_layers
    modules = selected_modules(adapter, layers)
    precision = resolve_precision(config.precision, "calibrate.precision")
    # The targets (T's answers, A's refusals) come from the float32 models whatever the precision, so bf16 only
    # changes the arithmetic of the objective, never what it is fitted to.
    data = prepare_data(model, tokenizer, shots, config, aligned)
    model = at_precision(model, precision, copy=isinstance(target, torch.nn.Module))
    forward = DeltaForward(model, adapter, modules, config.per_module_type)
    objective = CalibrationObjective(forward, data, config)
    check_cache(objective, torch.full((len(forward.groups),), config.alpha_init))
    prepare_seconds = time.perf_counter() - loaded
    result = fit_coefficients(objective, config, progress=progress)
    result.prepare_seconds = prepare_seconds
    result.seconds = time.perf_counter() - started
    result.layers = None if layers is None else list(layers)
    result.per_module_type = config.per_module_type
    result.precision = precision
    result.record = {
        **config.model_dump(mode="json"),
        "precision_used": precision,
        "target": str(target) if not isinstance(target, torch.nn.Module) else "<in-memory model>",
        "target_fingerprint": _target_digest(target),
        "layers": result.layers,
        "modules_by_type": sorted({module_type(m) for m in modules}),
        "loss_curve": result.loss_curve,
        "step_losses": result.step_losses,
        "initial_loss": result.initial_loss,
        "final_loss": result.final_loss,
        "epochs": result.epochs,
        "stopped_early": result.stopped_early,
        "seconds": round(result.seconds, 3),
        "prepare_seconds": round(result.prepare_seconds, 3),
        "fit_seconds": round(result.fit_seconds, 3),
        "cached_prefix": result.cached_prefix,
        "first_layer": result.first_layer,
        "shots": shots.record(),
        "refusal_targets": data.refusal_source,
    }
    if record:
        adapter.manifest.coefficients = result.coefficients
        adapter.manifest.calibration = result.record
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
    ax.set_xlabel("evaluation" if result.step_losses == result.loss_curve else "step")
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
