"""`tfidf`: TF-IDF (word 1–2-grams) on the response and on the prompt, then class-weighted logistic regression.

Prompt and response get separate vocabularies (so "bomb" in the question and "bomb" in the answer are different
features). Saved without pickle: the vocabularies and idf vectors as JSON/safetensors, the coefficients as
safetensors; loading rebuilds the sklearn vectorisers with `vocabulary=` and the stored idf. `PairVectorizer` holds
that feature extraction and its serialization; the risk-category model (`seawall.detect.category`) reuses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seawall.detect.base import DETECTORS, Detector, Pair


def make_vectorizer(
    ngram_max: int, min_df: int | float, max_features: int | None, vocabulary: Any = None
) -> Any:
    """sklearn's TfidfVectorizer with seawall's settings (sublinear tf, lower-cased, accents stripped)."""
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


class PairVectorizer:
    """TF-IDF features of (prompt, response) pairs: a response block and, with `use_prompt`, a prompt block."""

    def __init__(
        self, ngram_max: int, min_df: int, max_features: int | None, use_prompt: bool, max_chars: int
    ) -> None:
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.max_features = max_features
        self.use_prompt = use_prompt
        self.max_chars = max_chars

    def _texts(self, pairs: list[Pair]) -> tuple[list[str], list[str]]:
        # A 100k-character response costs time but adds nothing past the first pages: cap it.
        return [p[: self.max_chars] for p, _ in pairs], [r[: self.max_chars] for _, r in pairs]

    def fit(self, pairs: list[Pair]) -> PairVectorizer:
        """Learn the vocabularies and idf weights."""
        prompts, responses = self._texts(pairs)
        self.response_ = make_vectorizer(self.ngram_max, self.min_df, self.max_features).fit(responses)
        if self.use_prompt:
            # Prompts repeat (many responses per question): min_df=1 keeps every question's words.
            self.prompt_ = make_vectorizer(self.ngram_max, 1, self.max_features).fit(prompts)
        return self

    def transform(self, pairs: list[Pair]) -> Any:
        """Sparse CSR features, response columns first."""
        from scipy.sparse import hstack

        prompts, responses = self._texts(pairs)
        blocks = [self.response_.transform(responses)]
        if self.use_prompt:
            blocks.append(self.prompt_.transform(prompts))
        return hstack(blocks).tocsr()

    def feature_names(self) -> list[str]:
        """Column names, prefixed "r:" (response) and "p:" (prompt)."""
        names = ["r:" + n for n in self.response_.get_feature_names_out()]
        if self.use_prompt:
            names += ["p:" + n for n in self.prompt_.get_feature_names_out()]
        return names

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Vocabularies (JSON) and idf vectors (arrays)."""
        state: dict[str, Any] = {"response_vocabulary": vocabulary_list(self.response_)}
        arrays = {"response_idf": self.response_.idf_}
        if self.use_prompt:
            state["prompt_vocabulary"] = vocabulary_list(self.prompt_)
            arrays["prompt_idf"] = self.prompt_.idf_
        return state, arrays

    def load(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> PairVectorizer:
        """Restore what `state` returned."""
        self.response_ = restore_vectorizer(
            self.ngram_max, state["response_vocabulary"], arrays["response_idf"]
        )
        if self.use_prompt:
            self.prompt_ = restore_vectorizer(
                self.ngram_max, state["prompt_vocabulary"], arrays["prompt_idf"]
            )
        return self


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
        category_model: bool = True,
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
        self.category_model = category_model
        self.seed = seed

    def _vectorizer(self) -> PairVectorizer:
        return PairVectorizer(self.ngram_max, self.min_df, self.max_features, self.use_prompt, self.max_chars)

    def _fit(self, pairs: list[Pair], y: np.ndarray, dev: Any) -> None:
        from sklearn.linear_model import LogisticRegression

        self.vectorizer_ = self._vectorizer().fit(pairs)
        model = LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=2000, random_state=self.seed
        )
        model.fit(self.vectorizer_.transform(pairs), y)
        self.coef_ = model.coef_[0].astype(np.float64)
        self.intercept_ = float(model.intercept_[0])

    def _score(self, pairs: list[Pair]) -> np.ndarray:
        z = self.vectorizer_.transform(pairs) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z))

    def top_features(self, k: int = 20) -> dict[str, list[tuple[str, float]]]:
        """The k strongest unsafe and safe features (prefixed "r:" response / "p:" prompt) — for inspection."""
        names = self.vectorizer_.feature_names()
        order = np.argsort(self.coef_)
        return {
            "unsafe": [(names[i], float(self.coef_[i])) for i in order[::-1][:k]],
            "safe": [(names[i], float(self.coef_[i])) for i in order[:k]],
        }

    def _state(self, folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state, arrays = self.vectorizer_.state()
        return {**state, "intercept": self.intercept_}, {**arrays, "coef": self.coef_}

    def _load_state(self, folder: Path, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.vectorizer_ = self._vectorizer().load(state, arrays)
        self.coef_ = arrays["coef"].astype(np.float64)
        self.intercept_ = float(state["intercept"])


def vocabulary_list(vectorizer: Any) -> list[str]:
    """The vocabulary as a list ordered by column index (JSON-able, and the order is the feature order)."""
    return [str(t) for t in vectorizer.get_feature_names_out()]


def restore_vectorizer(ngram_max: int, vocabulary: list[str], idf: np.ndarray) -> Any:
    """A fitted TfidfVectorizer rebuilt from a saved vocabulary list and idf vector (no pickle)."""
    vectorizer = make_vectorizer(ngram_max, 1, None, vocabulary={t: i for i, t in enumerate(vocabulary)})
    vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
    return vectorizer
