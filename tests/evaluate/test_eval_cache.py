from seawall.generation.cache import GenerationCache, cache_key, model_fingerprint

DECODING = {"max_new_tokens": 8, "temperature": 0.0}


class Counting:
    def __init__(self, tag):
        self.tag, self.calls = tag, []

    def __call__(self, conversations):
        self.calls.append(len(conversations))
        return [f"{self.tag}:{c[-1]['content']}" for c in conversations]


def conv(text):
    return [{"role": "user", "content": text}]


def test_hit_miss_and_new_prompts_only(tmp_path):
    cache = GenerationCache(tmp_path / "g.sqlite")
    gen = Counting("m")
    assert cache.generate(gen, [conv("a"), conv("b"), conv("a")], "fp1", DECODING) == ["m:a", "m:b", "m:a"]
    assert gen.calls == [2] and cache.misses == 2
    reopened = GenerationCache(tmp_path / "g.sqlite")
    assert reopened.generate(gen, [conv("b"), conv("c")], "fp1", DECODING) == ["m:b", "m:c"]
    assert gen.calls == [2, 1] and reopened.hits == 1 and reopened.misses == 1
    assert len(reopened) == 3


def test_decoding_change_is_a_miss(tmp_path):
    cache = GenerationCache(tmp_path / "g.sqlite")
    gen = Counting("m")
    cache.generate(gen, [conv("a")], "fp1", DECODING)
    cache.generate(gen, [conv("a")], "fp1", {**DECODING, "max_new_tokens": 16})
    assert gen.calls == [1, 1]
    assert cache_key("fp1", conv("a"), DECODING) != cache_key(
        "fp1", conv("a"), {**DECODING, "temperature": 0.7}
    )


def test_changed_weights_change_the_fingerprint_and_invalidate(tmp_path, tiny_model):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    before = model_fingerprint(copy)
    assert before == model_fingerprint(copy)
    cache = GenerationCache(tmp_path / "g.sqlite")
    old, new = Counting("old"), Counting("new")
    assert cache.generate(old, [conv("a")], before, DECODING) == ["old:a"]

    weights = load_file(copy / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + torch.ones_like(weights[name])
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    after = model_fingerprint(copy)
    assert after != before
    assert cache.generate(new, [conv("a")], after, DECODING) == ["new:a"]
    assert cache.generate(new, [conv("a")], before, DECODING) == ["old:a"]


def test_same_weights_in_another_folder_share_the_fingerprint(tmp_path, tiny_model):
    import json
    import shutil

    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_model, copy)
    # The models cache writes a completion marker beside the weights; it must not split the generation cache.
    (copy / "seawall-model.json").write_text(json.dumps({"complete": True, "path": str(copy)}))
    assert model_fingerprint(copy) == model_fingerprint(tiny_model)
    # A tokenizer change alters generations, so it must change the fingerprint (the file must be there to test it).
    tokenizer_config = copy / "tokenizer_config.json"
    assert tokenizer_config.is_file()
    tokenizer_config.write_text(tokenizer_config.read_text().replace("{", '{"model_max_length": 7, ', 1))
    assert model_fingerprint(copy) != model_fingerprint(tiny_model)
