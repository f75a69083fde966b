"""Precision selection: CPU flag detection, auto / explicit settings, the fallback on CPUs without bf16 units."""

from __future__ import annotations

import logging

import pytest
import torch

from seawall.errors import SeawallError
from seawall.models import precision

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R)
flags\t\t: fpu vme sse sse2 avx avx2 {extra}
bogomips\t: 4800.00

processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 {extra}
"""


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """Point the detection at a written /proc/cpuinfo with the given extra flags."""

    def with_flags(extra: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(CPUINFO.format(extra=extra))
        monkeypatch.setattr(precision, "CPUINFO", path)
        precision.bf16_supported.cache_clear()
        precision._warn_fallback.cache_clear()

    yield with_flags
    precision.bf16_supported.cache_clear()
    precision._warn_fallback.cache_clear()


@pytest.mark.parametrize("flag", ["amx_bf16", "avx512_bf16"])
def test_auto_is_bf16_on_a_cpu_with_bf16_units(cpu, flag):
    cpu(f"avx512f {flag} avx512_vnni")
    assert precision.cpu_flags() >= {"avx2", flag}
    assert precision.bf16_supported()
    assert precision.resolve_precision("auto") == "bfloat16"
    assert precision.resolve_precision("bfloat16") == "bfloat16"


def test_explicit_float32_wins_on_a_bf16_cpu(cpu):
    cpu("amx_bf16 avx512_bf16")
    assert precision.resolve_precision("float32") == "float32"


def test_auto_is_fp32_without_bf16_units_and_bf16_falls_back_with_one_warning(cpu, caplog):
    cpu("avx512f avx512_vnni")  # VNNI (int8) is not bf16
    assert not precision.bf16_supported()
    assert precision.resolve_precision("auto") == "float32"
    with caplog.at_level(logging.WARNING, logger="seawall.models"):
        assert precision.resolve_precision("bfloat16", "encoder.precision") == "float32"
        assert precision.resolve_precision("bfloat16", "encoder.precision") == "float32"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("encoder.precision: bfloat16 was requested")
    assert "using float32" in warnings[0]


def test_unknown_precision_names_the_field():
    with pytest.raises(
        SeawallError, match=r"lab\.train\.precision must be one of auto, float32, bfloat16, got 'fp16'"
    ):
        precision.resolve_precision("fp16", "lab.train.precision")


def test_flags_come_from_torch_without_proc_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "missing")
    expected = {name for name, present in torch.cpu.get_capabilities().items() if present is True}
    assert precision.cpu_flags() == expected


def test_this_machine_agrees_with_torch():
    # /proc/cpuinfo and torch's own CPU probe tell the same story about bf16 units
    capabilities = torch.cpu.get_capabilities()
    assert precision.bf16_supported() == bool(capabilities["amx_bf16"] or capabilities["avx512_bf16"])


def test_autocast_runs_matrix_products_in_bf16_only_when_asked():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with precision.autocast("bfloat16"):
        assert (a @ b).dtype == torch.bfloat16
    with precision.autocast("float32"):
        assert (a @ b).dtype == torch.float32
    assert precision.torch_dtype("bfloat16") is torch.bfloat16
