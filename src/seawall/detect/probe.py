"""`probe`: a frozen sentence encoder's embeddings of the prompt and of the response, then logistic regression.

Nothing of the encoder is trained. The prompt and the response are embedded separately (mean of the last hidden
state over the real tokens, L2-normalised: how all-MiniLM-L6-v2 and all-mpnet-base-v2 were trained to be used), and
the features are [p, r, p·r, |p − r|] (the sentence-pair features of InferSent / SBERT), so the classifier sees both
texts and how they relate. A class-weighted logistic regression on them is the whole learned state.

Why a probe beside the fine-tuned `encoder`: fine-tuning a small encoder on a mix of sources fits each source's
surface (jailbreak templates, Reddit register), and a source it has never seen is ranked far worse than one it has
(docs/results/detector-loso.md); the frozen features keep what pre-training learned about meaning. Held out of
training, the mpnet probe ranks SecureBreak and GPTFuzz better than fine-tuned MiniLM does, and dialogue worse: the
two are complementary, which the `ensemble` backend uses.

Cost: two forward passes of the base model per pair, no backward; the regression fits in seconds. Embeddings are
cached in memory for the process (keyed by the base model's weights and the text), so a leave-one-source-out run
embeds every text once. With `precision` bf16 (auto's choice on CPUs with bf16 units) the encoder runs as a bf16
copy. The folder stores the coefficients (safetensors) and the base model's reference and fingerprint, not its
weights: loading resolves the base model again and refuses one whose weights differ.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from seawall.detect._torch import (
    clip_chars,
    length_sorted_batches,
    pad_batch,
    resolve_model_path,
    setup_torch,
)
from seawall.detect.base import DETECTORS, Detector, Pair
from seawall.detect.training import PROGRESS_MIN_ROWS
from seawall.errors import ModelError
from seawall.models.load import quiet_transformers
from seawall.models.precision import resolve_precision, torch_dtype

# At most this many embeddings stay cached per process (~0.6 GB at 768 floats each).
CACHE_ENTRIES = 200_000
_CACHE: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()


@DETECTORS.register("probe")
class ProbeDetector(Detector):
    """Logistic regression on frozen sentence embeddings of the prompt and the response."""

    backend = "probe"

    def __init__(
        self,
        base_model: str = "all-mpnet-base-v2",
        prompt_max_length: int = 128,
        response_max_length: int = 256,
        C: float = 1.0,
        class_weight: str | None = "balanced",
        batch_size: int = 64,
        num_threads: int | None = 2,
        precision: str = "auto",
        seed: int = 0,
        calibration: str = "temperature",
        threshold_strategy: str = "f1",
        target_recall: float = 0.95,
        category_model: bool = True,
    ) -> None:
        self.base_model = base_model
        self.prompt_max_length = prompt_max_length
        self.response_max_length = response_max_length
        self.C = C
        self.class_weight = class_weight
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.precision = precision
        self.seed = seed
        self.calibration = calibration
        self.threshold_strategy = threshold_strategy
        self.target_recall = target_recall
        self.category_model = category_model

    # ---- the frozen encoder ----------------------------------------------------------------------------------------
    def _encoder(self) -> Any:
        if getattr(self, "_model", None) is None:
            from transformers import AutoModel, AutoTokenizer

            path = resolve_model_path(self.base_model)
            fingerprint = weights_fingerprint(path)
            expected = getattr(self, "base_fingerprint_", None)
            # The weights decide the features; the folder they were found in may differ between machines.
            if expected is not None and expected["sha256"] != fingerprint["sha256"]:
                raise ModelError(
                    f"probe: the base model {self.base_model!r} ({path}) is not the one this probe was fitted on "
                    f"(weights {fingerprint['sha256'][:12]}…, expected {expected['sha256'][:12]}…)"
                )
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(path)
                with quiet_transformers():
                    model = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
            except (OSError, ValueError, KeyError) as error:
                raise ModelError(f"probe: cannot load an encoder from {path}: {error}") from None
            if getattr(model.config, "is_decoder", False):
                raise ModelError(f"probe: {path} holds a causal LM; the probe needs a sentence encoder")
            dtype = resolve_precision(self.precision, "probe.precision")
            self._model = model.to(torch_dtype(dtype)).eval()
            if expected is None:
                self.base_fingerprint_ = fingerprint
        return self._model

    def embed(self, texts: list[str], max_length: int, desc: str | None = None) -> np.ndarray:
        """L2-normalised mean-pooled embeddings, shape (n, hidden), in input order (cached per process)."""
        import torch
        from tqdm.auto import tqdm

        model = self._encoder()
        key = self.base_fingerprint_["sha256"]
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        todo = []
        for i, text in enumerate(texts):
            cached = _CACHE.get((key, max_length, text))
            if cached is None:
                todo.append(i)
            else:
                out[i] = cached
        if not todo:
            return out
        setup_torch(self.num_threads)
        tok = self._tokenizer
        ids = tok(
            [clip_chars(texts[i]) for i in todo], truncation=True, max_length=max_length, verbose=False
        )["input_ids"]
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        # An empty text (no prompt) is one special token, where the tokenizer adds none: its embedding is a
        # constant the regression can weigh, not a zero-length batch row.
        specials = (tok.cls_token_id, tok.bos_token_id, tok.sep_token_id, tok.unk_token_id, pad)
        ids = [seq or [next(t for t in specials if t is not None)] for seq in ids]
        batches = list(length_sorted_batches([len(s) for s in ids], self.batch_size))
        show = desc is not None and len(todo) >= PROGRESS_MIN_ROWS
        with torch.inference_mode():
            for batch in tqdm(batches, desc=desc, disable=not show, leave=False):
                inputs = pad_batch([ids[j] for j in batch], pad)
                hidden = model(**inputs).last_hidden_state.float()
                weights = inputs["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
                vectors = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                for row, j in enumerate(batch):
                    index = todo[j]
                    out[index] = vectors[row]
                    _remember((key, max_length, texts[index]), vectors[row])
        return out

    def features(self, pairs: list[Pair]) -> np.ndarray:
        """[p, r, p·r, |p − r|] of each pair, shape (n, 4 · hidden)."""
        p = self.embed([p for p, _ in pairs], self.prompt_max_length, desc="probe: embedding prompts")
        r = self.embed([r for _, r in pairs], self.response_max_length, desc="probe: embedding responses")
        return np.hstack([p, r, p * r, np.abs(p - r)])

    # ---- fit / score -----------------------------------------------------------------------------------------------
    def _fit(self, pairs: list[Pair], y: np.ndarray, dev: tuple[list[Pair], np.ndarray] | None) -> None:
        from sklearn.linear_model import LogisticRegression

        self._model = None
        vars(self).pop("base_fingerprint_", None)  # a refit takes the base model as it is now
        x = self.features(pairs)
        model = LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=3000, random_state=self.seed
        )
        model.fit(x, y)
        self.coef_ = model.coef_[0].astype(np.float64)
        self.intercept_ = float(model.intercept_[0])
        self.training_["probe"] = {
            "features": int(x.shape[1]),
            "iterations": int(np.max(model.n_iter_)),
            "base_model": self.base_fingerprint_,
        }

    def _score(self, pairs: list[Pair]) -> np.ndarray:
        z = self.features(pairs).astype(np.float64) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))

    def scoring_path(self) -> str:
        """How `_score` runs here, e.g. "torch-bfloat16"."""
        return f"torch-{resolve_precision(self.precision, 'probe.precision')}"

    # ---- persistence -----------------------------------------------------------------------------------------------
    def _state(self, folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"intercept": self.intercept_, "base_fingerprint": self.base_fingerprint_}, {
            "coef": self.coef_
        }

    def _load_state(self, folder: Path, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.coef_ = arrays["coef"].astype(np.float64)
        self.intercept_ = float(state["intercept"])
        self.base_fingerprint_ = state["base_fingerprint"]
        self._model = None  # loaded, and checked against the fingerprint, on first use


def weights_fingerprint(path: Path) -> dict[str, Any]:
    """The base model's identity: its folder, model type, and a sha256 over its config and safetensors files."""
    digest = hashlib.sha256()
    config = path / "config.json"
    digest.update(config.read_bytes())
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelError(f"probe: {path} has no .safetensors weights")
    for file in weights:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return {
        "path": str(path),
        "model_type": json.loads(config.read_text()).get("model_type"),
        "sha256": digest.hexdigest(),
    }


def _remember(key: tuple[str, int, str], vector: np.ndarray) -> None:
    _CACHE[key] = vector.copy()
    while len(_CACHE) > CACHE_ENTRIES:
        _CACHE.popitem(last=False)
