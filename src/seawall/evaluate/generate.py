"""Build the generate(conversations) → replies function the harness uses, for a local model folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from seawall.evaluate.harness import Decoding, Messages


def transformers_generator(
    model_dir: str | Path, decoding: Decoding, threads: int = 2
) -> Callable[[list[Messages]], list[str]]:
    """Batched, chat-templated generation with transformers (greedy unless temperature > 0), left-padded."""
    import torch

    from seawall.lab.train import load_causal_lm

    model, tokenizer = load_causal_lm(model_dir, threads)
    model.eval()
    tokenizer.padding_side = "left"

    def generate(conversations: list[Messages]) -> list[str]:
        # Length-sorted batches waste less compute on padding.
        order = sorted(range(len(conversations)), key=lambda i: len(str(conversations[i])))
        outputs: dict[int, str] = {}
        for start in range(0, len(order), decoding.batch_size):
            index = order[start : start + decoding.batch_size]
            texts = [
                tokenizer.apply_chat_template(conversations[i], tokenize=False, add_generation_prompt=True)
                for i in index
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            sampling = (
                {"do_sample": True, "temperature": decoding.temperature}
                if decoding.temperature > 0
                else {"do_sample": False}
            )
            with torch.no_grad():
                out = model.generate(
                    **batch,
                    max_new_tokens=decoding.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
            for i, row in zip(index, out[:, batch["input_ids"].shape[1] :], strict=True):
                outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
        return [outputs[i] for i in range(len(conversations))]

    return generate
