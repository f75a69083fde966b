"""Alignment strength after the fact: W = W_base + weight · (W_aligned − W_base), for every tensor.

An aligned model's fine-tuning is a vector in weight space (task arithmetic); scaling it gives a family of models
between the original (weight 0) and the aligned one (weight 1), and beyond. With no training, one aligned model gives
the whole family, so the trade between harmful-response rate and over-refusal can be read off a few weights rather
than retrained for (docs/lab.md, the `scale` rows). The folder written is a complete model (the aligned model's
config, tokenizer and chat template, safetensors weights) with a record.json like the training recipes'.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from seawall.errors import ModelError
from seawall.io import atomic_dir, atomic_write_json
from seawall.lab.recipes import resolve_model_dir

WEIGHTS = "model.safetensors"


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder}: no *.safetensors weights (scale reads safetensors only, never pickle)")
    tensors: dict[str, Any] = {}
    for file in files:
        tensors.update(load_file(str(file)))
    return tensors


def scaled_state(base: dict[str, Any], aligned: dict[str, Any], weight: float) -> dict[str, Any]:
    """base + weight · (aligned − base), computed in fp32 and stored in the aligned tensor's dtype.

    Every tensor of the aligned model must be in the base with the same shape (the same architecture); integer
    tensors (buffers) are taken from the aligned model. A base tensor the aligned model lacks (a tied output
    layer saved only once) is not written: the aligned model's config says how it is rebuilt.
    """
    missing = sorted(set(aligned) - set(base))
    if missing:
        raise ModelError(
            f"scale: {len(missing)} tensor(s) of the aligned model are not in the base (first: {missing[0]}); "
            "both must be the same architecture"
        )
    out = {}
    for name, tensor in aligned.items():
        if base[name].shape != tensor.shape:
            raise ModelError(
                f"scale: tensor {name} is {tuple(tensor.shape)} in the aligned model and "
                f"{tuple(base[name].shape)} in the base; both must be the same architecture"
            )
        if not tensor.is_floating_point():
            out[name] = tensor.clone()
            continue
        start = base[name].float()
        out[name] = (start + weight * (tensor.float() - start)).to(tensor.dtype).contiguous()
    return out


def scale(
    base: str | Path, aligned: str | Path, weight: float, output: str | Path, overwrite: bool = False
) -> dict:
    """Write OUTPUT/model (the scaled model) and OUTPUT/record.json; returns the record.

    `base` and `aligned` are model references (folders or packaged names). A finished OUTPUT with the same
    inputs and weight is returned as is; with other inputs it needs `overwrite`.
    """
    from safetensors.torch import save_file

    if weight < 0:
        raise ModelError(f"scale: weight must be ≥ 0 (0 = the base, 1 = the aligned model), got {weight}")
    base_dir, aligned_dir = resolve_model_dir(base), resolve_model_dir(aligned)
    output = Path(output)
    config = {"base": str(base), "aligned": str(aligned), "weight": weight}
    record_path = output / "record.json"
    if record_path.is_file() and not overwrite:
        record = json.loads(record_path.read_text())
        if record.get("config") == config:
            return record
        raise ModelError(f"{output} holds a scale of other inputs ({record.get('config')}); pass overwrite")
    started = time.time()
    state = scaled_state(_weights(base_dir), _weights(aligned_dir), weight)
    with atomic_dir(output / "model", overwrite=True) as tmp:
        for file in aligned_dir.iterdir():
            if (
                file.is_file()
                and file.suffix != ".safetensors"
                and not file.name.endswith(".safetensors.index.json")
            ):
                shutil.copy2(file, tmp / file.name)
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
    record = {
        "recipe": "scale",
        "config": config,
        "data_report": {},
        "steps": 0,
        "tensors": len(state),
        "train_time_s": round(time.time() - started, 1),
    }
    atomic_write_json(record_path, record)
    return record
