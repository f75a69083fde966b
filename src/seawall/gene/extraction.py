"""Extract a safety adapter from an aligned model A and its degraded copy D.

- `delta`: τ = W_A − W_D per module, streamed tensor by tensor (peak memory ≈ the largest pair of tensors);
- `lora`: truncated SVD of each τ, τ ≈ B·A with B = U_r·diag(s_r), A = V_rᵀ; ‖τ − B·A‖_F = sqrt(Σ_{i>r} s_i²);
- `distilled`: a LoRA on D trained so that D+LoRA matches A's next-token distributions on safety prompts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from seawall.errors import ModelError
from seawall.gene.adapter import PEFT_PREFIX, Manifest, ModuleInfo, SafetyAdapter, module_type, tensor_kind
from seawall.gene.config import DistillConfig, ExtractConfig
from seawall.gene.modeling import (
    build_batch,
    greedy_answers,
    load_causal_lm,
    load_tokenizer,
    prompt_ids,
    resolve,
)
from seawall.gene.shots import Shots
from seawall.io import atomic_dir, atomic_write_json
from seawall.models.checkpoint import ShardedWriter, fingerprint, open_checkpoint, require_same_architecture
from seawall.models.load import quiet_transformers

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def low_rank(
    tau: torch.Tensor, rank: int | None = None, energy: float | None = None
) -> tuple[Any, Any, dict]:
    """Truncated SVD τ ≈ B @ A (A: r×in, B: out×r) at a fixed rank or energy share; returns (A, B, info)."""
    u, s, vh = torch.linalg.svd(tau.float(), full_matrices=False)
    full = s.numel()
    if energy is not None:
        share = torch.cumsum(s.double() ** 2, 0) / max(float((s.double() ** 2).sum()), 1e-300)
        r = int(torch.searchsorted(share, torch.tensor(energy, dtype=share.dtype)).item()) + 1
    else:
        r = int(rank or full)
    r = max(1, min(r, full))
    lora_b = (u[:, :r] * s[:r]).contiguous()
    lora_a = vh[:r].contiguous()
    norm = float(torch.linalg.norm(tau.float()))
    error = float(torch.linalg.norm(tau.float() - lora_b @ lora_a))
    discarded = float(torch.sqrt((s[r:].double() ** 2).sum()))
    info = {
        "rank": r,
        "norm": norm,
        "error": error,
        "discarded": discarded,
        "rel_error": error / max(norm, 1e-30),
    }
    return lora_a, lora_b, info


def _wanted(name: str, shape: tuple[int, ...], config: ExtractConfig) -> bool:
    kind = tensor_kind(name, shape)
    if kind == "linear":
        return config.module_types is None or module_type(name) in config.module_types
    return (kind == "embedding" and config.include_embeddings) or (kind == "norm" and config.include_norms)


def extract(
    aligned: str | Path,
    degraded: str | Path,
    output: str | Path | None = None,
    config: ExtractConfig | None = None,
    shots: Shots | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SafetyAdapter:
    """Build a safety adapter from A and D (checkpoint folders); written atomically to `output` when given."""
    config = config or ExtractConfig()
    if config.form == "distilled":
        if shots is None:
            raise ModelError("the distilled form needs safety prompts (shots)")
        return distill(aligned, degraded, shots, output=output, config=config, overwrite=overwrite)
    aligned, degraded = resolve(aligned), resolve(degraded)
    ckpt_a, ckpt_d = open_checkpoint(aligned), open_checkpoint(degraded)
    shapes_a, shapes_d = ckpt_a.shapes(), ckpt_d.shapes()
    names = [n for n, s in shapes_a.items() if _wanted(n, s, config)]
    if not names:
        raise ModelError(
            f"{aligned}: no tensors match the extraction settings (module_types={config.module_types})"
        )
    require_same_architecture(shapes_a, shapes_d, f"degraded model {degraded}", names)
    manifest_base = {
        "num_layers": 0,
        "aligned": fingerprint(aligned, checksums=config.checksums),
        "degraded": fingerprint(degraded, checksums=config.checksums),
    }
    manifest_base["num_layers"] = int(manifest_base["aligned"]["num_layers"] or 0)
    started = time.perf_counter()
    modules: dict[str, ModuleInfo] = {}
    tensors: dict[str, Any] = {}

    def run(folder: Path | None) -> Manifest:
        writer = ShardedWriter(folder / "delta") if folder is not None and config.form == "delta" else None
        factors: dict[str, tuple[Any, Any]] = {}
        for name in tqdm(names, desc="extract", disable=not progress, unit="tensor"):
            tau = ckpt_a.get(name).float() - ckpt_d.get(name).float()
            module = name.removesuffix(".weight")
            if config.form == "delta":
                stored = tau.to(_DTYPES[config.dtype])
                modules[module] = ModuleInfo(shape=list(tau.shape), norm=float(torch.linalg.norm(tau)))
                if writer is not None:
                    writer.add(name, stored, validate=False)  # A and D were checked on read
                else:
                    tensors[name] = stored
            else:
                lora_a, lora_b, info = low_rank(tau, config.rank, config.energy)
                modules[module] = ModuleInfo(
                    shape=list(tau.shape),
                    rank=info["rank"],
                    norm=info["norm"],
                    error=info["error"],
                    rel_error=info["rel_error"],
                )
                factors[module] = (lora_a, lora_b)
            del tau
        if config.form == "lora":
            for module, (lora_a, lora_b) in factors.items():
                tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = lora_a
                tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = lora_b
        manifest = _manifest(config, modules, manifest_base, started)
        if folder is not None:
            if writer is not None:
                writer.close()
            else:
                from seawall.gene.adapter import write_peft_lora

                write_peft_lora(folder, factors, base_model=str(degraded))
            atomic_write_json(folder / "safegene.json", manifest.model_dump(mode="json"))
        return manifest

    if output is None:
        return SafetyAdapter(run(None), tensors=tensors)
    with atomic_dir(output, overwrite=overwrite) as tmp:
        run(tmp)
    return SafetyAdapter.load(output)


def _manifest(config: ExtractConfig, modules: dict, base: dict, started: float) -> Manifest:
    settings = config.model_dump(mode="json")
    if config.form != "distilled":
        settings.pop("distill")
    settings["seconds"] = round(time.perf_counter() - started, 3)
    return Manifest(kind=config.form, modules=modules, extraction=settings, **base)


def distill(
    aligned: str | Path,
    degraded: str | Path,
    shots: Shots,
    output: str | Path | None = None,
    config: ExtractConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SafetyAdapter:
    """Train a LoRA on D so that D+LoRA matches A's next-token distributions (KL, optional hidden-state MSE)."""
    from peft import LoraConfig, get_peft_model

    config = config or ExtractConfig(form="distilled")
    dcfg: DistillConfig = config.distill
    aligned, degraded = resolve(aligned), resolve(degraded)
    started = time.perf_counter()
    torch.manual_seed(dcfg.seed)
    teacher = load_causal_lm(aligned)
    student_base = load_causal_lm(degraded)
    require_same_architecture(
        {n: list(p.shape) for n, p in teacher.named_parameters()},
        {n: list(p.shape) for n, p in student_base.named_parameters()},
        f"degraded model {degraded}",
    )
    tokenizer = load_tokenizer(aligned)
    room = max(8, dcfg.max_length - dcfg.response_tokens)
    prompts = [prompt_ids(tokenizer, p, room) for p in shots.harmful + shots.benign]
    answers = (
        greedy_answers(teacher, tokenizer, prompts, dcfg.response_tokens) if dcfg.response_tokens else None
    )
    # The whole sequence (prompt and A's answer) is supervised: the discrepancy shows on both.
    full = [p + (answers[i] if answers else []) for i, p in enumerate(prompts)]
    batch_all = build_batch(tokenizer, full, [[]] * len(full), dcfg.max_length)
    batch_all["labels"] = torch.where(batch_all["attention_mask"] == 1, batch_all["input_ids"], -100)
    types = config.module_types or sorted(
        {
            module_type(n)
            for n, p in student_base.named_parameters()
            if tensor_kind(n, tuple(p.shape)) == "linear"
        }
    )
    lora_cfg = LoraConfig(
        r=dcfg.rank, lora_alpha=dcfg.rank, target_modules=types, lora_dropout=0.0, bias="none"
    )
    with quiet_transformers():  # PEFT reads a deprecated transformers property (FutureWarning): debug log
        student = get_peft_model(student_base, lora_cfg)
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=dcfg.lr)
    generator = torch.Generator().manual_seed(dcfg.seed)
    n = batch_all["input_ids"].shape[0]
    curve: list[float] = []
    student.train()
    for _ in tqdm(range(dcfg.steps), desc="distill", disable=not progress):
        idx = torch.randperm(n, generator=generator)[: dcfg.batch_size]
        batch = {k: v[idx] for k, v in batch_all.items()}
        with torch.no_grad():
            t_out = teacher(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=dcfg.hidden_weight > 0,
            )
        s_out = student(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=dcfg.hidden_weight > 0,
        )
        keep = batch["attention_mask"].bool()
        t_log = torch.log_softmax(t_out.logits[keep].float(), -1)
        s_log = torch.log_softmax(s_out.logits[keep].float(), -1)
        loss = torch.nn.functional.kl_div(s_log, t_log, log_target=True, reduction="batchmean")
        if dcfg.hidden_weight > 0:
            hidden = sum(
                torch.nn.functional.mse_loss(s[keep], t[keep])
                for s, t in zip(s_out.hidden_states[1:], t_out.hidden_states[1:], strict=True)
            )
            loss = loss + dcfg.hidden_weight * hidden / len(t_out.hidden_states[1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(float(loss.detach()))
    student.eval()
    modules: dict[str, ModuleInfo] = {}
    tensors: dict[str, Any] = {}
    for name, module in student.base_model.model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            lora_a = module.lora_A["default"].weight.detach().clone()
            lora_b = (module.lora_B["default"].weight * module.scaling["default"]).detach().clone()
            tau = lora_b @ lora_a
            modules[name] = ModuleInfo(
                shape=list(tau.shape), rank=dcfg.rank, norm=float(torch.linalg.norm(tau))
            )
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = lora_a
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = lora_b
    base = {
        "aligned": fingerprint(aligned, checksums=config.checksums),
        "degraded": fingerprint(degraded, checksums=config.checksums),
    }
    base["num_layers"] = int(base["aligned"]["num_layers"] or 0)
    manifest = _manifest(config, modules, base, started)
    manifest.extraction["loss_curve"] = curve
    manifest.extraction["shots"] = shots.record()
    adapter = SafetyAdapter(manifest, tensors=tensors)
    if output is not None:
        adapter.save(output, overwrite=overwrite)
    return adapter
