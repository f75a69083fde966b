"""Data-aware layer selection: score how much each layer carries safety, keep the best.

Scores (higher = more safety in that layer):
- contrast: with h_l(x) the last-token hidden state after block l, u_l = μ_A,harm − μ_A,benign and û_l = u_l/‖u_l‖,
  contrast_l = mean_{x harmful} ⟨h^A_l(x) − h^D_l(x), û_l⟩ / ‖u_l‖ — how far D's harmful states moved away from
  A's along A's harmful-vs-benign direction, as a fraction of A's separation at that layer.
- sensitivity: L(M) − L(M + τ_l), the drop in the refusal cross-entropy on the calibration prompts when the
  adapter is applied to layer l alone (M = D by default, or any target).
- both: the mean of the two score vectors after scaling each by its largest absolute value.
Selection: top-k, or the fewest best layers whose positive scores reach a share of the total positive score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from seawall.errors import ModelError
from seawall.gene.adapter import SafetyAdapter, layer_index
from seawall.gene.calibration import DeltaForward
from seawall.gene.config import SelectConfig
from seawall.gene.modeling import (
    build_batch,
    load_causal_lm,
    load_tokenizer,
    prompt_ids,
    target_ids,
    token_ce,
)
from seawall.gene.shots import Shots, refusal_targets


@torch.no_grad()
def last_token_states(
    model: torch.nn.Module, tokenizer: Any, prompts: list[str], batch_size: int = 8, max_length: int = 128
) -> torch.Tensor:
    """Hidden state of each prompt's last token after every block: tensor (layers, prompts, hidden)."""
    out = []
    ids = [prompt_ids(tokenizer, p, max_length) for p in prompts]
    for start in range(0, len(ids), batch_size):
        batch = build_batch(
            tokenizer,
            ids[start : start + batch_size],
            [[]] * len(ids[start : start + batch_size]),
            max_length,
        )
        hidden = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        ).hidden_states[1:]
        last = batch["attention_mask"].sum(1) - 1
        rows = torch.arange(last.shape[0])
        out.append(torch.stack([h[rows, last].float() for h in hidden]))
    return torch.cat(out, dim=1)


def activation_contrast(
    aligned: Any, degraded: Any, tokenizer: Any, shots: Shots, batch_size: int = 8, max_length: int = 128
) -> list[float]:
    """Per-layer contrast score (see module docstring) from A's and D's hidden states."""
    if not shots.harmful or not shots.benign:
        raise ModelError("activation contrast needs both harmful and benign prompts")
    model_a, model_d = load_causal_lm(aligned), load_causal_lm(degraded)
    a_harm = last_token_states(model_a, tokenizer, shots.harmful, batch_size, max_length)
    a_benign = last_token_states(model_a, tokenizer, shots.benign, batch_size, max_length)
    d_harm = last_token_states(model_d, tokenizer, shots.harmful, batch_size, max_length)
    direction = a_harm.mean(1) - a_benign.mean(1)
    norm = direction.norm(dim=-1).clamp_min(1e-12)
    unit = direction / norm[:, None]
    moved = ((a_harm - d_harm) * unit[:, None, :]).sum(-1).mean(1)
    return (moved / norm).tolist()


def transfer_sensitivity(
    adapter: SafetyAdapter,
    model: Any,
    tokenizer: Any,
    shots: Shots,
    batch_size: int = 8,
    max_length: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Per-layer drop of the refusal cross-entropy when τ is applied to that layer alone (index = layer)."""
    model = load_causal_lm(model)
    h_prompts = [prompt_ids(tokenizer, p, max(8, max_length - 24)) for p in shots.harmful]
    refusals = [target_ids(tokenizer, t) for t in refusal_targets(len(h_prompts), seed)]
    batches = [
        build_batch(tokenizer, h_prompts[i : i + batch_size], refusals[i : i + batch_size], max_length)
        for i in range(0, len(h_prompts), batch_size)
    ]
    num_layers = max(adapter.manifest.num_layers, max(adapter.layers, default=-1) + 1)
    forward = DeltaForward(model, adapter, [m for m in adapter.modules if layer_index(m) is not None])
    scores = [0.0] * num_layers

    def loss_with(alpha: torch.Tensor) -> float:
        with torch.no_grad():
            return sum(float(token_ce(forward(alpha, b).logits, b["labels"])) for b in batches) / len(batches)

    zero = torch.zeros(len(forward.groups))
    base = loss_with(zero)
    for i, group in enumerate(tqdm(forward.groups, desc="sensitivity", disable=not progress)):
        alpha = zero.clone()
        alpha[i] = 1.0
        scores[int(group)] = base - loss_with(alpha)
    return scores


def choose_layers(
    scores: list[float], top_k: int | None = None, cumulative: float | None = None
) -> list[int]:
    """Top-k layers by score, or the fewest best layers holding `cumulative` of the positive score mass."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if top_k is not None:
        return sorted(order[:top_k])
    positive = [max(s, 0.0) for s in scores]
    total = sum(positive)
    if total <= 0:
        return sorted(order[:1])
    chosen, mass = [], 0.0
    for i in order:
        if positive[i] <= 0:
            break
        chosen.append(i)
        mass += positive[i]
        if mass >= (cumulative or 1.0) * total - 1e-12:
            break
    return sorted(chosen)


def _scaled(values: list[float]) -> list[float]:
    top = max((abs(v) for v in values), default=0.0)
    return [v / top if top > 0 else 0.0 for v in values]


def score_layers(
    adapter: SafetyAdapter,
    shots: Shots,
    aligned: Any = None,
    degraded: Any = None,
    model: Any = None,
    tokenizer: Any = None,
    config: SelectConfig | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """The layer scores `config.score` needs ({name: one value per layer}); the manifest is not touched."""
    config = config or SelectConfig()
    tokenizer = tokenizer or load_tokenizer(aligned or model)
    scores: dict[str, list[float]] = {}
    if config.score in ("contrast", "both"):
        if aligned is None or degraded is None:
            raise ModelError("the contrast score needs the aligned and degraded models")
        scores["contrast"] = activation_contrast(
            aligned, degraded, tokenizer, shots, config.batch_size, config.max_length
        )
    if config.score in ("sensitivity", "both"):
        subject = model if model is not None else degraded
        if subject is None:
            raise ModelError(
                "the sensitivity score needs a model to apply the adapter to (degraded or target)"
            )
        scores["sensitivity"] = transfer_sensitivity(
            adapter, subject, tokenizer, shots, config.batch_size, config.max_length, progress=progress
        )
    if config.score == "both":
        a, b = _scaled(scores["contrast"]), _scaled(scores["sensitivity"])
        n = max(len(a), len(b))
        a, b = a + [0.0] * (n - len(a)), b + [0.0] * (n - len(b))
        scores["both"] = [(x + y) / 2 for x, y in zip(a, b, strict=True)]
    return scores


def pick_layers(adapter: SafetyAdapter, scores: dict[str, list[float]], config: SelectConfig) -> list[int]:
    """The layers `config` keeps from `scores`, restricted to the layers the adapter touches."""
    touched = set(adapter.layers)
    return [i for i in choose_layers(scores[config.score], config.top_k, config.cumulative) if i in touched]


def selection_record(config: SelectConfig, shots: Shots) -> dict[str, Any]:
    """What a selection was made with (the manifest's `selection`): its settings and the shots' record."""
    return json.loads(json.dumps({**config.model_dump(mode="json"), "shots": shots.record()}))


def select_layers(
    adapter: SafetyAdapter,
    shots: Shots,
    aligned: Any = None,
    degraded: Any = None,
    model: Any = None,
    tokenizer: Any = None,
    config: SelectConfig | None = None,
    plot: str | Path | None = None,
    progress: bool = True,
) -> list[int]:
    """Score layers, record scores and the selection in the manifest (saved if on disk), plot them; return layers.

    Recording clears the manifest's coefficients: they were fitted on another selection.
    """
    config = config or SelectConfig()
    scores = score_layers(adapter, shots, aligned, degraded, model, tokenizer, config, progress)
    layers = pick_layers(adapter, scores, config)
    manifest = adapter.manifest
    manifest.layer_scores = scores
    manifest.selected_layers = layers
    manifest.selection = selection_record(config, shots)
    manifest.coefficients = {}
    if adapter.path is not None:
        adapter.save_manifest()
    if plot is None and adapter.path is not None:
        plot = adapter.path / "layer_scores.png"
    if plot is not None:
        plot_scores(scores, layers, plot)
    return layers


def plot_scores(scores: dict[str, list[float]], selected: list[int], path: str | Path) -> Path:
    """Bar chart of each score per layer, selected layers highlighted (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(len(scores), 1, figsize=(8, 2.6 * len(scores)), squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], scores.items(), strict=True):
        colors = ["tab:red" if i in selected else "tab:gray" for i in range(len(values))]
        ax.bar(range(len(values)), values, color=colors)
        ax.set_ylabel(name)
        ax.axhline(0, color="black", linewidth=0.5)
    axes[-1, 0].set_xlabel("layer (red = selected)")
    fig.suptitle("SafeGene layer scores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
