"""Numeric precision of torch work: bf16 on CPUs with bf16 matrix units (AMX, AVX512-BF16), fp32 elsewhere.

Every setting named `precision` (detectors, lab recipes) and the generation backend's `dtype` take one of
`auto | float32 | bfloat16`:
- `auto` (the default) is bf16 where the CPU executes bf16 matrix products natively (the `amx_bf16` or
  `avx512_bf16` flag), fp32 elsewhere: on such CPUs a MiniLM forward pass is ~3× and SmolLM2 generation ~1.7×
  faster in bf16, while without those units torch emulates bf16, which is slower than fp32 (on an AVX2-only
  EPYC it was several times slower: `seawall detect bench --bf16` measures it on any machine);
- `float32` always wins, on any CPU;
- `bfloat16` on a CPU without bf16 units falls back to fp32 with one warning per process instead of failing: saved
  detectors and recipes carry their setting from machine to machine, and a guard must still start on an older
  CPU; the precision actually used is what runs record (`resolve_precision`'s result), never the request.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seawall.errors import SeawallError

PRECISIONS = ("auto", "float32", "bfloat16")
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
CPUINFO = Path("/proc/cpuinfo")

log = logging.getLogger("seawall.models")


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags: /proc/cpuinfo's `flags` line on Linux, torch's capability table elsewhere."""
    if CPUINFO.is_file():
        for line in CPUINFO.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", lambda: {})()
    return frozenset(name for name, present in capabilities.items() if present is True)


@functools.cache
def bf16_supported() -> bool:
    """True when this CPU has native bf16 matrix instructions (AMX-BF16 or AVX512-BF16)."""
    return bool(BF16_FLAGS & cpu_flags())


@functools.cache
def _warn_fallback(field: str) -> None:
    log.warning(
        "%s: bfloat16 was requested but this CPU has no bf16 matrix units (%s); using float32",
        field,
        " or ".join(sorted(BF16_FLAGS)),
    )


def resolve_precision(precision: str = "auto", field: str = "precision") -> str:
    """The precision to run at, "float32" or "bfloat16", for a requested `auto | float32 | bfloat16`.

    `field` names the setting in the error for an unknown value and in the fallback warning.
    """
    if precision not in PRECISIONS:
        raise SeawallError(f"{field} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return "float32"
    if bf16_supported():
        return "bfloat16"
    if precision == "bfloat16":
        _warn_fallback(field)
    return "float32"


def torch_dtype(precision: str) -> Any:
    """The torch dtype of a resolved precision ("float32" or "bfloat16")."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]


@contextlib.contextmanager
def autocast(precision: str) -> Iterator[None]:
    """CPU autocast to bf16 when `precision` (resolved) is "bfloat16": matrix products in bf16, reductions, norms
    and softmax in fp32, weights untouched (fp32 master weights when training); a no-op for "float32"."""
    if precision != "bfloat16":
        yield
        return
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield
