"""Baselines against hand-computed results on small matrices, and the registry interface."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from seawall.errors import SeawallError
from seawall.gene import get_method
from seawall.gene.adapter import read_peft_lora, write_peft_lora

UP = "model.layers.0.mlp.up_proj"
GATE = "model.layers.0.mlp.gate_proj"
DOWN = "model.layers.1.mlp.down_proj"


@pytest.fixture()
def subspace(tmp_path):
    """Base and aligned checkpoints that differ by V = 2·e1·e1ᵀ (4×3) in three modules; task and safety LoRAs."""
    torch.manual_seed(0)
    w = {f"{m}.weight": torch.randn(4, 3) for m in (UP, GATE, DOWN)}
    v = torch.zeros(4, 3)
    v[0, 0] = 2.0
    (tmp_path / "base").mkdir()
    (tmp_path / "aligned").mkdir()
    save_file(w, str(tmp_path / "base" / "model.safetensors"))
    save_file({k: t + v for k, t in w.items()}, str(tmp_path / "aligned" / "model.safetensors"))
    a = torch.tensor([[1.0, 0.0, 0.0]])
    task = {
        UP: (a, torch.tensor([[1.0], [0.0], [0.0], [0.0]])),  # inside the subspace: cos 1
        GATE: (a, torch.tensor([[1.0], [1.0], [0.0], [0.0]])),  # cos 1/√2 = 0.70711
        DOWN: (a, torch.tensor([[1.0], [3.0], [0.0], [0.0]])),  # cos 1/√10 = 0.31623
    }
    safety = {m: (torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0], [0.0], [2.0], [0.0]])) for m in task}
    write_peft_lora(tmp_path / "task", task)
    write_peft_lora(tmp_path / "safety", safety)
    return tmp_path, task, safety


def _deltas(folder):
    factors, _ = read_peft_lora(folder)
    return {m: b @ a for m, (a, b) in factors.items()}


def test_safe_lora_threshold_projects_hand_computed(subspace):
    root, task, _ = subspace
    result = get_method("safe-lora")({"threshold": 0.5}).apply(
        None, root / "out", task_lora=root / "task", aligned=root / "aligned", base=root / "base"
    )
    assert result.report["cosines"] == {
        UP: 1.0,
        GATE: round(1 / math.sqrt(2), 5),
        DOWN: round(1 / math.sqrt(10), 5),
    }
    assert result.report["projected"] == [DOWN]
    deltas = _deltas(root / "out")
    # C = VVᵀ/‖V‖_F = 4·e1e1ᵀ/2, so C·B_down = [2, 0, 0, 0]ᵀ and ΔW = [2,0,0,0]ᵀ[1,0,0].
    expected = torch.zeros(4, 3)
    expected[0, 0] = 2.0
    assert torch.allclose(deltas[DOWN], expected)
    for m in (UP, GATE):
        assert torch.allclose(deltas[m], task[m][1] @ task[m][0])


def test_safe_lora_number_mode_takes_k_lowest(subspace):
    root, _, _ = subspace
    result = get_method("safe-lora")({"select": "number", "num_layers": 2}).apply(
        None, root / "out", task_lora=root / "task", aligned=root / "aligned", base=root / "base"
    )
    assert sorted(result.report["projected"]) == sorted([DOWN, GATE])


def test_safemerge_linear_and_cat_hand_computed(subspace):
    root, task, safety = subspace
    method = get_method("safemerge")
    result = method({}).apply(
        None,
        root / "lin",
        task_lora=root / "task",
        safety_lora=root / "safety",
        aligned=root / "aligned",
        base=root / "base",
    )
    assert result.report["merged"] == [DOWN]
    (ta, tb), (sa, sb) = task[DOWN], safety[DOWN]
    a_lin = math.sqrt(0.8) * ta + math.sqrt(0.2) * sa
    b_lin = math.sqrt(0.8) * tb + math.sqrt(0.2) * sb
    deltas = _deltas(root / "lin")
    assert torch.allclose(deltas[DOWN], b_lin @ a_lin, atol=1e-6)
    assert torch.allclose(deltas[GATE], task[GATE][1] @ task[GATE][0])
    method({"combination": "cat"}).apply(
        None,
        root / "cat",
        task_lora=root / "task",
        safety_lora=root / "safety",
        aligned=root / "aligned",
        base=root / "base",
    )
    deltas = _deltas(root / "cat")
    assert torch.allclose(deltas[DOWN], 0.8 * tb @ ta + 0.2 * sb @ sa, atol=1e-6)


def test_resta_adds_beta_tau_everywhere(trio, tmp_path):
    result = get_method("resta")({"beta": 0.5}).apply(
        trio["T"], tmp_path / "out", aligned=trio["A"], degraded=trio["D"]
    )
    out = load_file(str(result.output / "model.safetensors"))
    a, d, t = (trio["models"][k].state_dict() for k in "ADT")
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight"):
        assert torch.allclose(out[name], t[name] + 0.5 * (a[name] - d[name]), atol=1e-7)
    assert torch.equal(out["model.norm.weight"], t["model.norm.weight"])
    assert torch.equal(out["model.embed_tokens.weight"], t["model.embed_tokens.weight"])


def _loss_of_merged_model(trio, beta, data, lam):
    """Refusal CE + λ·KL(T ‖ T') of T + β·(A − D), from a full forward of a model with the weights merged in."""
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM

    a, d = (trio["models"][k].state_dict() for k in "AD")
    model = LlamaForCausalLM.from_pretrained(trio["T"]).eval()
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if ".layers." in name and weight.dim() == 2:
                weight.add_(beta * (a[name] - d[name]))

    def positions(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        keep = batch["labels"][:, 1:] != -100
        return logits[:, :-1][keep].float(), batch["labels"][:, 1:][keep]

    with torch.no_grad():
        logits, tokens = positions(model, data.refusal)
        refusal = F.cross_entropy(logits, tokens)
        reference = F.log_softmax(
            positions(LlamaForCausalLM.from_pretrained(trio["T"]).eval(), data.retain)[0], -1
        )
        restored = F.log_softmax(positions(model, data.retain)[0], -1)
        kl = (reference.exp() * (reference - restored)).sum(-1).mean()
    return float(refusal + lam * kl)


def test_resta_tuned_beta_is_the_argmin_of_independently_computed_losses(trio, shots, tmp_path):
    from seawall.gene.calibration import prepare_data
    from seawall.gene.config import CalibrateConfig
    from seawall.gene.modeling import load_causal_lm, load_tokenizer

    betas = [1.0, 0.0, 4.0]  # the winner sits mid-list: neither "first" nor "last" passes by luck
    calibration = {"response_tokens": 4, "max_length": 64}
    result = get_method("resta")({"tune": True, "betas": betas, "calibrate": calibration}).apply(
        trio["T"], tmp_path / "out", aligned=trio["A"], degraded=trio["D"], shots=shots
    )
    config = CalibrateConfig(**calibration)
    data = prepare_data(load_causal_lm(trio["T"]), load_tokenizer(trio["T"]), shots, config)
    losses = {b: _loss_of_merged_model(trio, b, data, config.lambda_retain) for b in betas}
    ranked = sorted(losses, key=losses.get)
    assert losses[ranked[1]] - losses[ranked[0]] > 1e-3  # a clear winner, so the check below can fail
    assert result.report["beta"] == ranked[0]
    reported = {float(k): v for k, v in result.report["tuning"]["losses"].items()}
    assert reported == pytest.approx(losses, rel=1e-4)


def test_registry_and_config_errors():
    with pytest.raises(SeawallError, match="known: resta, safe-lora, safegene, safemerge"):
        get_method("nope")
    with pytest.raises(SeawallError, match="threshold"):
        get_method("safe-lora")({"threshold": "high"})
    with pytest.raises(SeawallError, match="needs: task_lora"):
        get_method("safe-lora")({}).apply(None, "/tmp/x", aligned="a", base="b")
