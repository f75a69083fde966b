"""The lm-judge runs its LM head on the last position only (logits_to_keep=1): for Gemma's 262k vocabulary the full
seq_len × vocab logits would cost more than the rest of the model. The score must equal the full computation."""

from __future__ import annotations

import numpy as np
import torch

from seawall.detect import make_detector


def test_judge_score_equals_full_logits_and_the_head_sees_one_position(sb_split, tiny_llama_dir):
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
    widths: list[int] = []
    hook = judge.model_.lm_head.register_forward_hook(
        lambda module, args, out: widths.append(args[0].shape[1])
    )
    try:
        scores = judge.raw_score(pairs)
    finally:
        hook.remove()
    assert widths and set(widths) == {1}  # never seq_len × vocab

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
