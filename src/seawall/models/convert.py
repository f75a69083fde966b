"""Convert a GGUF file once into a float safetensors folder that loads in seconds and supports save_pretrained."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any

from seawall.errors import ModelError
from seawall.io import atomic_dir
from seawall.models.cache import write_marker
from seawall.models.quiet import quiet_transformers

log = logging.getLogger("seawall.models")


def convert_gguf(
    gguf_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    dtype: str = "float32",
    source: dict[str, Any] | None = None,
) -> Path:
    """Dequantize `gguf_path` with transformers and write an HF folder (config, safetensors, tokenizer) atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    folder, name = str(gguf_path.parent), gguf_path.name
    # transformers' load report and its de-quantizing bar (a bare tqdm that no transformers switch turns off) go
    # to the debug log: a one-off step of provisioning, not the user's business.
    printed = io.StringIO()
    try:
        with quiet_transformers(), contextlib.redirect_stderr(printed):
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
    except (ValueError, KeyError, OSError, RuntimeError) as error:
        raise ModelError(f"could not load GGUF file {gguf_path} with transformers: {error}") from error
    log.debug("GGUF conversion of %s printed: %s", gguf_path, printed.getvalue().strip()[-300:])
    # save_pretrained refuses models "quantized with gguf"; the weights are already plain floats.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    with atomic_dir(out_dir, overwrite=True) as tmp, quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_marker(tmp, {"gguf": gguf_path.name, "dtype": dtype, **(source or {})})
    return out_dir
