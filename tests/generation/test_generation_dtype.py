"""The transformers backend's dtype (auto | float32 | bfloat16), the cache key that includes it, safetensors only."""

from __future__ import annotations

import shutil

import pytest
import torch

from seawall.generation import GenerationConfig, GenerationError, load_generator
from seawall.generation.cache import GenerationCache, cache_key, model_fingerprint
from seawall.models import precision

MESSAGES = [{"role": "user", "content": "hello"}]
DECODING = {"max_new_tokens": 8, "temperature": 0.0}


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)


@pytest.fixture
def fp32_cpu(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda: False)


def _generator(folder, **kwargs):
    return load_generator(
        "transformers", model=str(folder), config=GenerationConfig(max_new_tokens=6), **kwargs
    )


def test_auto_loads_bf16_weights_on_a_bf16_cpu(tiny_model_dir, bf16_cpu):
    gen = _generator(tiny_model_dir)
    assert gen.dtype == "bfloat16" and gen.describe()["dtype"] == "bfloat16"
    assert {p.dtype for p in gen.model.parameters()} == {torch.bfloat16}
    outputs = gen.generate(["hi", "a longer prompt"])
    assert len(outputs) == 2 and all(isinstance(o, str) and o for o in outputs)
    # an explicit float32 wins
    assert _generator(tiny_model_dir, dtype="float32").dtype == "float32"


def test_auto_is_fp32_without_bf16_units(tiny_model_dir, fp32_cpu):
    gen = _generator(tiny_model_dir)
    assert gen.dtype == "float32" and {p.dtype for p in gen.model.parameters()} == {torch.float32}


def test_unknown_dtype_is_a_generation_error(tiny_model_dir):
    with pytest.raises(GenerationError, match=r"transformers\.dtype must be one of auto, float32, bfloat16"):
        _generator(tiny_model_dir, dtype="float16")


def test_model_object_reports_its_own_dtype(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    gen = load_generator("transformers", model=model, tokenizer=tokenizer)
    assert gen.describe()["dtype"] == "bfloat16"


def test_cache_key_changes_with_dtype(tiny_model_dir, tmp_path, monkeypatch):
    # as on a CPU with bf16 units: elsewhere an explicit bfloat16 falls back to fp32 (checked below)
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)
    fp32, bf16 = model_fingerprint(tiny_model_dir, "float32"), model_fingerprint(tiny_model_dir, "bfloat16")
    assert fp32 != bf16 and fp32.startswith("sha256:") and bf16.startswith("sha256:")
    assert cache_key(fp32, MESSAGES, DECODING) != cache_key(bf16, MESSAGES, DECODING)
    # auto resolves as the backend does, so the evaluation harness's default key matches its default generator
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)
    assert model_fingerprint(tiny_model_dir) == bf16
    monkeypatch.setattr(precision, "bf16_supported", lambda: False)
    assert model_fingerprint(tiny_model_dir) == fp32
    assert model_fingerprint(tiny_model_dir, "bfloat16") == fp32  # the fallback generates in fp32 too

    cache = GenerationCache(tmp_path / "generations.sqlite")
    calls: list[int] = []

    def generate(conversations):
        calls.append(len(conversations))
        return [f"reply {len(calls)}"] * len(conversations)

    assert cache.generate(generate, [MESSAGES], fp32, DECODING) == ["reply 1"]
    assert cache.generate(generate, [MESSAGES], fp32, DECODING) == ["reply 1"]  # a hit
    assert cache.generate(generate, [MESSAGES], bf16, DECODING) == ["reply 2"]  # the other dtype: computed
    assert calls == [1, 1] and len(cache) == 2


def test_folder_with_only_pickled_weights_is_refused(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    with pytest.raises(GenerationError, match=r"no file named model\.safetensors"):
        _generator(folder, dtype="float32")
