"""`tfidf`: TF-IDF (word 1–2-grams) on the response and on the prompt, then class-weighted logistic regression.

Prompt and response get separate vocabularies (so "bomb" in the question and "bomb" in the answer are different
features). Saved without pickle: the vocabularies and idf vectors as JSON/safetensors, the coefficients as
safetensors; loading rebuilds the sklearn vectorisers with `vocabulary=` and the stored idf.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seawall.detect.base import DETECTORS, Detector, Pair


def _vectorizer(ngram_max: int, min_df: int | float, max_features: int | None, vocabulary: Any = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        ngram_range=(1, ngram_max),
        min_df=1 if vocabulary is not None else min_df,
        max_features=None if vocabulary is not None else max_features,
        sublinear_tf=True,
        strip_accents="unicode",
        lowercase=True,
        vocabulary=vocabulary,
        dtype=np.float64,
    )


@DETECTORS.register("tfidf")
class TfidfDetector(Detector):
    """TF-IDF features of prompt and response + logistic regression (class_weight="balanced")."""

    backend = "tfidf"

    def __init__(
        self,
        ngram_max: int = 2,
        min_df: int = 2,
        max_features: int | None = 50_000,
        use_prompt: bool = True,
        C: float = 4.0,
        class_weight: str | None = "balanced",
        max_chars: int = 20_000,
        calibration: str = "temperature",
        threshold_strategy: str = "f1",
        target_recall: float = 0.95,
        seed: int = 0,
    ) -> None:
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.max_features = max_features
        self.use_prompt = use_prompt
        self.C = C
        self.class_weight = class_weight
        self.max_chars = max_chars
        self.calibration = calibration
        self.threshold_strategy = threshold_strategy
        self.target_recall = target_recall
        self.seed = seed

    def _texts(self, pairs: list[Pair]) -> tuple[list[str], list[str]]:
        # A 100k-character response costs time but adds nothing past the first pages: cap it.
        return [p[: self.max_chars] for p, _ in pairs], [r[: self.max_chars] for _, r in pairs]

    def _features(self, pairs: list[Pair]) -> Any:
        from scipy.sparse import hstack

        prompts, responses = self._texts(pairs)
        blocks = [self.response_vectorizer_.transform(responses)]
        if self.use_prompt:
            blocks.append(self.prompt_vectorizer_.transform(prompts))
        return hstack(blocks).tocsr()

    def _fit(self, pairs: list[Pair], y: np.ndarray, dev: Any) -> None:
        from sklearn.linear_model import LogisticRegression

        prompts, responses = self._texts(pairs)
        self.response_vectorizer_ = _vectorizer(self.ngram_max, self.min_df, self.max_features).fit(responses)
        if self.use_prompt:
            # Prompts repeat (many responses per question): min_df=1 keeps every question's words.
            self.prompt_vectorizer_ = _vectorizer(self.ngram_max, 1, self.max_features).fit(prompts)
        model = LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=2000, random_state=self.seed
        )
        model.fit(self._features(pairs), y)
        self.coef_ = model.coef_[0].astype(np.float64)
        self.intercept_ = float(model.intercept_[0])

    def _score(self, pairs: list[Pair]) -> np.ndarray:
        z = self._features(pairs) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))

    def top_features(self, k: int = 20) -> dict[str, list[tuple[str, float]]]:
        """The k strongest unsafe and safe features (prefixed "r:" response / "p:" prompt) — for inspection."""
        names = ["r:" + n for n in self.response_vectorizer_.get_feature_names_out()]
        if self.use_prompt:
            names += ["p:" + n for n in self.prompt_vectorizer_.get_feature_names_out()]
        order = np.argsort(self.coef_)
        return {
            "unsafe": [(names[i], float(self.coef_[i])) for i in order[::-1][:k]],
            "safe": [(names[i], float(self.coef_[i])) for i in order[:k]],
        }

    def _state(self, folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state: dict[str, Any] = {
            "intercept": self.intercept_,
            "response_vocabulary": _vocab_list(self.response_vectorizer_),
        }
        arrays = {"coef": self.coef_, "response_idf": self.response_vectorizer_.idf_}
        if self.use_prompt:
            state["prompt_vocabulary"] = _vocab_list(self.prompt_vectorizer_)
            arrays["prompt_idf"] = self.prompt_vectorizer_.idf_
        return state, arrays

    def _load_state(self, folder: Path, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.response_vectorizer_ = _restore(
            self.ngram_max, state["response_vocabulary"], arrays["response_idf"]
        )
        if self.use_prompt:
            self.prompt_vectorizer_ = _restore(
                self.ngram_max, state["prompt_vocabulary"], arrays["prompt_idf"]
            )
        self.coef_ = arrays["coef"].astype(np.float64)
        self.intercept_ = float(state["intercept"])


def _vocab_list(vectorizer: Any) -> list[str]:
    """The vocabulary as a list ordered by column index (JSON-able, and the order is the feature order)."""
    return [str(t) for t in vectorizer.get_feature_names_out()]


def _restore(ngram_max: int, vocabulary: list[str], idf: np.ndarray) -> Any:
    vectorizer = _vectorizer(ngram_max, 1, None, vocabulary={t: i for i, t in enumerate(vocabulary)})
    vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
    return vectorizer
