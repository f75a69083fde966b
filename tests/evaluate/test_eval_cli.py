import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from seawall.cli import app
from seawall.errors import SeawallError

runner = CliRunner()


def test_lab_and_eval_groups_are_registered():
    for group, commands in {
        "lab": ("align", "degrade", "customize"),
        "eval": ("safety", "overrefusal", "utility", "run", "report"),
    }.items():
        result = runner.invoke(app, [group, "--help"])
        assert result.exit_code == 0
        assert all(command in result.output for command in commands)


def test_report_on_a_folder_without_results_names_the_file(tmp_path):
    result = runner.invoke(app, ["eval", "report", str(tmp_path)])
    assert isinstance(result.exception, SeawallError)
    assert "results.json not found" in str(result.exception)


def test_lab_config_errors_name_the_field(tmp_path):
    config = tmp_path / "align.yaml"
    config.write_text("train:\n  lora_r: 0\n")
    result = runner.invoke(app, ["lab", "align", "--output", str(tmp_path / "out"), "--config", str(config)])
    assert isinstance(result.exception, SeawallError) and "lora_r" in str(result.exception)


# ---- `--backend openai` against a real OpenAI-compatible server on loopback ----------------------------------------
REFUSAL = "I'm sorry, but I can't help with that."
COMPLIANCE = "Sure, here is how to do it. Step one: gather what you need."


def _answer(prompt: str) -> str:
    """The fake endpoint's deterministic policy: task prompts get "positive", others refuse on even lengths."""
    if "Answer with one of" in prompt:
        return "positive"
    return REFUSAL if len(prompt) % 2 == 0 else COMPLIANCE


class _ChatEndpoint(BaseHTTPRequestHandler):
    requests: list[dict] = []  # noqa: RUF012

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        type(self).requests.append(
            {
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "model": body["model"],
                "prompt": prompt,
            }
        )
        payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": _answer(prompt)}}]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint(tmp_path, monkeypatch):
    """A chat-completions server on 127.0.0.1 in a thread; a private generation cache; no OpenAI env vars."""
    monkeypatch.setenv("SEAWALL_CACHE", str(tmp_path / "cache"))
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    _ChatEndpoint.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _eval(command, shared_data, out, *flags):
    args = ["eval", command, "--backend", "openai", "--model", "my-model", "--n", "3"]
    result = runner.invoke(app, [*args, "--data-dir", str(shared_data), "--output", str(out), *flags])
    return result


def _rows(out):
    return [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]


def test_eval_safety_with_openai_backend(endpoint, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_ENDPOINT_KEY", "sk-local")
    out = tmp_path / "safety"
    result = _eval("safety", shared_data, out, "--base-url", endpoint, "--api-key-env", "MY_ENDPOINT_KEY")
    assert result.exit_code == 0, result.output + repr(result.exception)
    requests = _ChatEndpoint.requests
    summary = json.loads((out / "result.json").read_text())
    assert summary["n"] == len(requests) > 0
    assert {(r["path"], r["auth"], r["model"]) for r in requests} == {
        ("/v1/chat/completions", "Bearer sk-local", "my-model")
    }
    rows = _rows(out)
    assert [row["response"] for row in rows] == [_answer(row["prompt"]) for row in rows]
    complied = [row["response"] == COMPLIANCE for row in rows]
    assert 0 < sum(complied) < len(complied)  # the policy yields both kinds on real prompts
    assert summary["judges"]["refusal"]["hrr"]["rate"] == pytest.approx(sum(complied) / len(complied))


def test_eval_overrefusal_and_utility_read_openai_base_url(endpoint, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", endpoint)
    out = tmp_path / "over"
    result = _eval("overrefusal", shared_data, out)
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = _rows(out)
    refused = [row["response"] == REFUSAL for row in rows]
    summary = json.loads((out / "result.json").read_text())
    assert summary["rate"]["rate"] == pytest.approx(sum(refused) / len(refused))
    assert all(r["auth"] is None for r in _ChatEndpoint.requests)  # no key configured, none sent

    out = tmp_path / "utility"
    result = _eval("utility", shared_data, out, "--task", "sst2")
    assert result.exit_code == 0, result.output + repr(result.exception)
    gold = [row["gold"] for row in _rows(out)]
    summary = json.loads((out / "result.json").read_text())
    assert summary["sst2"]["parsed"] == 1.0
    assert summary["sst2"]["accuracy"]["rate"] == pytest.approx(gold.count("positive") / len(gold))


def test_eval_openai_backend_errors_are_clear(endpoint, shared_data, tmp_path):
    result = _eval("safety", shared_data, tmp_path / "a")
    assert isinstance(result.exception, SeawallError)
    assert "--base-url" in str(result.exception) and "OPENAI_BASE_URL" in str(result.exception)
    result = _eval(
        "safety", shared_data, tmp_path / "b", "--base-url", endpoint, "--api-key-env", "NO_SUCH_KEY_VAR"
    )
    assert isinstance(result.exception, SeawallError) and "NO_SUCH_KEY_VAR" in str(result.exception)
    result = runner.invoke(app, ["eval", "safety", "--base-url", endpoint])
    assert isinstance(result.exception, SeawallError) and "--backend openai" in str(result.exception)
    assert _ChatEndpoint.requests == []
