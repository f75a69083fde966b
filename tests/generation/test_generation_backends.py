"""Generation backends: tiny local transformers model and a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from seawall.errors import SeawallError
from seawall.generation import (
    BACKENDS,
    GenerationConfig,
    GenerationError,
    StopFilter,
    load_generator,
    truncate_at_stop,
)


def test_registry_lists_backends_and_rejects_unknown():
    assert {"transformers", "openai", "vllm"} <= set(BACKENDS.names())
    with pytest.raises(SeawallError, match="known: openai, transformers, vllm"):
        load_generator("nope")


def test_vllm_missing_gives_clear_error():
    pytest.importorskip("transformers")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed")
    except ImportError:
        pass
    with pytest.raises(GenerationError, match="pip install vllm"):
        load_generator("vllm", model="whatever")


def test_config_validation_and_yaml(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text("max_new_tokens: 5\ntemperature: 0.7\nstop: ['END']\n")
    config = GenerationConfig.from_yaml(path)
    assert config.max_new_tokens == 5 and config.stop == ("END",) and not config.greedy
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="unknown_field"):
        GenerationConfig.model_validate({"unknown_field": 1})


@pytest.mark.parametrize("split", [1, 2, 3, 7])
def test_stop_filter_matches_truncate(split):
    text = "hello wor<END>ld and more"
    stops = StopFilter(["<END>", "zz"])
    out = "".join(stops.feed(text[i : i + split]) for i in range(0, len(text), split)) + stops.flush()
    assert out == truncate_at_stop(text, ["<END>", "zz"]) == "hello wor"
    clean = StopFilter(["<END>"])
    assert "".join(clean.feed(c) for c in "no stop <EN") + clean.flush() == "no stop <EN"


def test_transformers_batched_greedy_matches_single_and_stream(tiny_model_dir):
    config = GenerationConfig(max_new_tokens=10)
    gen = load_generator(
        "transformers", model=str(tiny_model_dir), config=config, batch_size=4, dtype="float32"
    )
    prompts = ["hi", "a much longer prompt that forces left padding", [{"role": "user", "content": "x"}]]
    batched = gen.generate(prompts)
    single = [gen.generate([p])[0] for p in prompts]
    assert batched == single  # left padding must not change greedy outputs
    assert all(isinstance(t, str) and t for t in batched)
    assert "".join(gen.stream(prompts[1])) == batched[1]
    assert gen.describe() == {"backend": "transformers", "model": str(tiny_model_dir), "dtype": "float32"}


def test_transformers_stop_strings_cut_output(tiny_model_dir):
    gen = load_generator(
        "transformers", model=str(tiny_model_dir), config=GenerationConfig(max_new_tokens=12)
    )
    full = gen.generate(["hello"])[0]
    stop = full[3:5]
    cut = GenerationConfig(max_new_tokens=12, stop=(stop,))
    expected = full[: full.find(stop)]
    assert gen.generate(["hello"], cut) == [expected]
    assert "".join(gen.stream("hello", cut)) == expected


def test_transformers_rejects_tokenizer_without_chat_template(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(GenerationError, match="no chat template"):
        load_generator("transformers", model=model, tokenizer=tok)


class _Upstream(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat endpoint: echoes the last user message, upper-cased."""

    seen: list[dict] = []  # noqa: RUF012

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"auth": self.headers.get("Authorization"), **body})
        if body["messages"][-1]["content"] == "fail":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        answer = "ECHO: " + body["messages"][-1]["content"].upper()
        if not body.get("stream"):
            payload = json.dumps(
                {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload.encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i in range(0, len(answer), 3):
            chunk = {"choices": [{"index": 0, "delta": {"content": answer[i : i + 3]}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def upstream():
    _Upstream.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_backend_generate_and_stream(upstream):
    gen = load_generator("openai", base_url=upstream, model="m", api_key="sk-test", concurrency=4)
    prompts = [f"question {i}" for i in range(6)]
    assert gen.generate(prompts) == [f"ECHO: QUESTION {i}" for i in range(6)]
    pieces = list(gen.stream("streamed"))
    assert len(pieces) > 1 and "".join(pieces) == "ECHO: STREAMED"
    assert "".join(gen.stream("abc def", GenerationConfig(stop=("C D",)))) == "ECHO: AB"
    assert all(s["auth"] == "Bearer sk-test" and s["model"] == "m" for s in _Upstream.seen)
    assert _Upstream.seen[0]["max_tokens"] == 256 and _Upstream.seen[0]["temperature"] == 0.0
    gen.close()


def test_openai_backend_errors_name_the_endpoint(upstream):
    gen = load_generator("openai", base_url=upstream, model="m", api_key="")
    with pytest.raises(GenerationError, match="HTTP 500"):
        gen.generate(["fail"])
    with pytest.raises(GenerationError, match="HTTP 500"):
        list(gen.stream("fail"))
    dead = load_generator("openai", base_url="http://127.0.0.1:9/v1", model="m", api_key="", timeout=2)
    with pytest.raises(GenerationError, match=r"cannot reach http://127\.0\.0\.1:9/v1"):
        dead.generate(["hello"])


def test_openai_backend_reads_endpoint_and_key_from_the_environment(upstream, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", upstream)
    monkeypatch.setenv("MY_ENDPOINT_KEY", "sk-env")
    gen = load_generator("openai", model="m", api_key_env="MY_ENDPOINT_KEY")
    assert gen.generate(["hi"]) == ["ECHO: HI"] and _Upstream.seen[-1]["auth"] == "Bearer sk-env"
    with pytest.raises(GenerationError, match="NO_SUCH_KEY_VAR"):
        load_generator("openai", model="m", api_key_env="NO_SUCH_KEY_VAR")
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(GenerationError, match="OPENAI_BASE_URL"):
        load_generator("openai", model="m")
