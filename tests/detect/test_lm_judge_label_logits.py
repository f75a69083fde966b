"""The lm-judge computes only the two label logits of the last position: for Gemma's 262k vocabulary the full
head would cost more than the rest of the model. The score must equal the full computation, soft-capping included."""

from __future__ import annotations

import numpy as np
import torch

from seawall.detect import make_detector


def test_judge_score_equals_the_full_heads_without_computing_it(sb_split, tiny_llama_dir):
    judge = make_detector(
        "lm-judge",
        base_model=str(tiny_llama_dir),
        finetune=False,
        response_tokens=32,
        inference_batch_size=4,
        precision="float32",
        category_model=False,
    ).fit([])
    # Rows of different lengths, so a batch holds padding.
    pairs = [(r.prompt, r.response) for r in sb_split["test"][:6]]
    pairs.append(("hi", "ok"))
    calls: list[int] = []
    hook = judge.model_.lm_head.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        scores = judge.raw_score(pairs)
    finally:
        hook.remove()
    assert not calls  # the vocabulary-wide head never runs

    # Reference: each pair alone, no padding, logits over every position, the last one's two label logits.
    encoded = judge.encode(pairs)
    expected = []
    with torch.inference_mode():
        for ids in encoded.ids:
            logits = judge.model_(input_ids=torch.tensor([ids])).logits
            assert logits.shape[1] == len(ids)
            two = logits[0, -1, judge._label_ids]
            expected.append(torch.softmax(two, dim=0)[1].item())
    assert np.allclose(scores, expected, atol=1e-5)
    assert len({round(s, 4) for s in scores}) > 1  # the rows differ, so the check could fail

    # Gemma-2-style final soft-capping (tanh(l / c) · c) is applied to the two logits as to the full ones.
    judge.model_.config.final_logit_softcapping = 0.05
    capped = judge.raw_score(pairs)
    with torch.inference_mode():
        reference = []
        for ids in encoded.ids:
            two = judge.model_(input_ids=torch.tensor([ids])).logits[0, -1, judge._label_ids]
            reference.append(torch.softmax(torch.tanh(two / 0.05) * 0.05, dim=0)[1].item())
    assert np.allclose(capped, reference, atol=1e-5) and not np.allclose(capped, scores, atol=1e-3)
