"""bench/train_step.py on tiny models (no timing checked) and scripts/train_step_report.py's page."""

from __future__ import annotations

import importlib.util
import json
import string
import sys
from pathlib import Path

import pytest

from seawall.detect.tiny import save_tiny_bert
from seawall.generation.tiny import build_tiny_chat_model
from seawall.models import precision

ROOT = Path(__file__).resolve().parents[1]


def _module(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the bench's dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _module("bench/train_step.py")


@pytest.fixture(scope="module")
def report():
    return _module("scripts/train_step_report.py")


@pytest.fixture(autouse=True)
def torch_threads():
    """The bench sets torch's process-wide thread count: restored for the tests after these."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A 2-layer BERT with a character-level WordPiece vocabulary (every text encodes) and a tiny chat Llama."""
    from transformers import BertTokenizerFast

    root = tmp_path_factory.mktemp("models")
    bert = root / "bert"
    bert.mkdir()
    characters = [c for c in string.printable if not c.isspace()]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *(f"##{c}" for c in characters)]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(bert / "vocab.txt"))
    return {
        "encoder_model": str(save_tiny_bert(bert, tokenizer)),
        "lora_model": str(build_tiny_chat_model(root / "llama")),
    }


def test_both_workloads_interleave_fp32_and_bf16_and_record_the_machine(
    bench, tiny_models, shared_data, tmp_path, monkeypatch
):
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)
    out = tmp_path / "train_step.json"
    # One thread: on a shared machine two spin-waiting threads cost far more than they gain at these sizes.
    result = bench.run_bench(steps=1, threads=1, data_dir=str(shared_data), out=out, **tiny_models)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["steps"] == 1 and result["warmup_steps"] == bench.WARMUP_STEPS == 2
    assert result["torch_threads"] == 1 and result["loss_agreement_below"] == bench.LOSS_AGREEMENT
    machine = result["machine"]
    assert set(machine) == {"cpu_count", "platform", "cpu_model", "matrix_isa", "bf16_supported"}
    assert machine["cpu_model"] and machine["bf16_supported"] is True
    assert len(result["load_avg_before"]) == len(result["load_avg_after"]) == 3
    assert result["bf16"] == {"run": True, "forced": False, "emulated": False, "skipped": None}
    encoder, lora = result["workloads"]
    assert (encoder["name"], encoder["batch_size"], encoder["seq_len"]) == ("encoder", 16, 128)
    assert encoder["labels"] == {"unsafe": 8, "safe": 8}  # balanced: the loop's class weights are all 1
    assert (lora["name"], lora["batch_size"], lora["seq_len"]) == ("lora", 8, 192)
    assert lora["lora"]["r"] == 16 and "down_proj" in lora["lora"]["targets"]
    for workload in (encoder, lora):
        # fp32, bf16, fp32, bf16, ...: two warm-up steps and one timed step each.
        assert workload["order"] == ["float32", "bfloat16"] * 3
        for stats in workload["variants"].values():
            assert len(stats["step_s"]) == 1 and len(stats["losses"]) == 3
            assert 0 < stats["median_s"] <= stats["p90_s"]
        assert workload["speedup_bf16_vs_fp32"] > 0
        first = workload["first_step_loss"]
        assert round(first["float32"], 5) == workload["variants"]["float32"]["losses"][0]
        assert 0 <= first["relative_difference"] < bench.LOSS_AGREEMENT and first["agree"] is True


def test_bf16_is_skipped_without_bf16_units_unless_forced(
    bench, tiny_models, shared_data, monkeypatch, capsys
):
    monkeypatch.setattr(precision, "bf16_supported", lambda: False)
    run = {
        "workloads": ["encoder"],
        "steps": 1,
        "threads": 1,
        "data_dir": str(shared_data),
        "out": None,
        **tiny_models,
    }
    skipped = bench.run_bench(**run)
    assert skipped["machine"]["bf16_supported"] is False
    assert skipped["bf16"]["run"] is False and "no bf16 matrix units" in skipped["bf16"]["skipped"]
    (encoder,) = skipped["workloads"]
    assert list(encoder["variants"]) == ["float32"] and encoder["order"] == ["float32"] * 3
    assert encoder["speedup_bf16_vs_fp32"] is None
    assert (
        encoder["first_step_loss"]["relative_difference"] is None
        and encoder["first_step_loss"]["agree"] is None
    )
    bench.print_table(skipped)
    assert "bf16 variant skipped" in capsys.readouterr().out

    forced = bench.run_bench(**run, bf16=True)
    assert forced["bf16"] == {"run": True, "forced": True, "emulated": True, "skipped": None}
    assert forced["workloads"][0]["order"] == ["float32", "bfloat16"] * 3
    bench.print_table(forced)
    assert "torch emulates it" in capsys.readouterr().out


def test_unknown_workloads_are_refused(bench):
    with pytest.raises(SystemExit, match="subset of encoder, lora"):
        bench.run_bench(workloads=["encoder", "full"], out=None)


def synthetic_result(speedup_s: float | None) -> dict:
    """A bench JSON as run_bench writes it; `speedup_s`: the bf16 median seconds (None: bf16 skipped)."""
    fp32 = {"median_s": 2.0, "p90_s": 2.5, "step_s": [2.0], "losses": [3.0, 2.9, 2.8]}
    workload = {
        "name": "lora",
        "model": "smollm2-135m-instruct",
        "batch_size": 8,
        "seq_len": 192,
        "trainable_parameters": 4884480,
        "order": ["float32"] * 3,
        "variants": {"float32": fp32},
        "speedup_bf16_vs_fp32": None,
        "first_step_loss": {"float32": 3.0, "relative_difference": None, "agree": None},
    }
    bf16 = {"run": False, "forced": False, "emulated": False, "skipped": "this CPU has no bf16 matrix units"}
    if speedup_s is not None:
        workload["variants"]["bfloat16"] = {**fp32, "median_s": speedup_s, "p90_s": speedup_s + 0.1}
        workload["order"] = ["float32", "bfloat16"] * 3
        workload["speedup_bf16_vs_fp32"] = 2.0 / speedup_s
        workload["first_step_loss"] = {
            "float32": 3.0,
            "bfloat16": 3.003,
            "relative_difference": 0.001,
            "agree": True,
        }
        bf16 = {"run": True, "forced": False, "emulated": False, "skipped": None}
    return {
        "steps": 6,
        "warmup_steps": 2,
        "torch_threads": 2,
        "loss_agreement_below": 0.01,
        "machine": {
            "cpu_count": 4,
            "platform": "Linux",
            "cpu_model": "AMD EPYC 9R14",
            "matrix_isa": ["avx2", "avx512_bf16", "avx512f"],
            "bf16_supported": speedup_s is not None,
        },
        "load_avg_before": [0.1, 0.2, 0.3],
        "load_avg_after": [1.9, 0.9, 0.4],
        "busy_at_start": False,
        "bf16": bf16,
        "versions": {"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2"},
        "workloads": [workload],
    }


def test_the_page_has_one_table_per_bench_json(report, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "train_step.json").write_text(json.dumps(synthetic_result(speedup_s=1.6)))
    busy = synthetic_result(speedup_s=None)
    busy["load_avg_before"] = [1.5, 1.2, 1.0]
    (results / "train_step-avx2.json").write_text(json.dumps(busy))
    (results / "guard_load.json").write_text("{}")  # another bench's JSON is not read
    out = tmp_path / "train-step.md"
    report.main(str(results), str(out))
    page = out.read_text()
    assert (
        "Generated by `PYTHONPATH=src python scripts/train_step_report.py`" in page and "Do not edit" in page
    )
    assert page.index("## `train_step-avx2.json`") < page.index("## `train_step.json`")
    assert page.count("| workload | model |") == 2
    assert (
        "| lora | `smollm2-135m-instruct` | 8 × 192 | 4,884,480 | 2.000 | 2.500 | 1.600 | 1.700 | 1.25× | no |"
        in page
    )
    assert "3.0000 / 3.0030 (1.0e-03, agree)" in page and "relative difference is below 1%" in page
    assert (
        "AMD EPYC 9R14 (avx2, avx512_bf16, avx512f), with bf16 matrix units, 4 CPUs, torch threads: 2" in page
    )
    assert "an idle machine (load [0.1, 0.2, 0.3] before, [1.9, 0.9, 0.4] after)" in page
    assert "| skipped | skipped | — | — | 3.0000 / — |" in page
    assert "bf16 variant skipped: this CPU has no bf16 matrix units." in page
    assert "the machine was busy at the start (load [1.5, 1.2, 1.0])" in page

    faster = synthetic_result(speedup_s=1.0)
    faster["bf16"].update(forced=True, emulated=True)
    (results / "train_step-avx2.json").unlink()
    (results / "train_step.json").write_text(json.dumps(faster))
    page = report.render(results)
    assert "| 2.00× | yes |" in page and "torch emulates it" in page


def test_the_committed_page_is_what_the_committed_json_renders(report):
    page = (ROOT / "docs" / "results" / "train-step.md").read_text(encoding="utf-8")
    assert report.render(ROOT / "bench" / "results") == page
    empty = report.render(ROOT / "no-such-folder")
    assert "No run recorded yet" in empty and empty.startswith(report.HEADER[0])
