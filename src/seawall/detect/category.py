"""Risk category of a (prompt, response) pair: a hazard code of seawall's taxonomy (`seawall.data.taxonomy.HAZARDS`).

One small model serves every detector backend: TF-IDF word 1–2-grams of the prompt and of the response (separate
vocabularies, `tfidf.PairVectorizer`) and a multinomial logistic regression over the hazard codes. `Detector.fit`
trains it on the rows whose hazard is known (`record_hazard`): SecureBreak rows carry a JBB category that the
taxonomy maps to a hazard; rows without one (Alpaca answers, refusal templates, GPTFuzz) are skipped and counted.
It learns from safe rows too, because a pair's category is its topic, whether or not the answer complied.

Saved with the detector without pickle: vocabularies and label list as JSON, idf vectors, coefficients and
intercepts as safetensors arrays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from seawall.data.records import ResponseRecord
from seawall.data.taxonomy import HAZARDS, MAPPINGS, hazard
from seawall.detect.base import Pair, as_pairs
from seawall.detect.tfidf import PairVectorizer

# Fixed settings: the model is a by-product of every detector, tuned once on SecureBreak's train/dev split.
NGRAM_MAX = 2
MIN_DF = 2
MAX_FEATURES = 20_000
C = 4.0
MAX_CHARS = 20_000
MAX_ITER = 3000


def record_hazard(record: ResponseRecord) -> str | None:
    """The hazard code of a record: its metadata's `hazard`, a category that already is a hazard code, or its
    dataset category mapped through the taxonomy of its `source`; None when none of these applies."""
    code = (record.metadata or {}).get("hazard")
    if code in HAZARDS:
        return code
    if record.category in HAZARDS:
        return record.category
    if record.category and record.source in MAPPINGS:
        return hazard(record.source, record.category)
    return None


class CategoryModel:
    """TF-IDF of prompt and response + multinomial logistic regression over hazard codes."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _vectorizer(self) -> PairVectorizer:
        return PairVectorizer(NGRAM_MAX, MIN_DF, MAX_FEATURES, use_prompt=True, max_chars=MAX_CHARS)

    def fit(self, pairs: list[Pair], codes: Sequence[str]) -> CategoryModel:
        """Learn from pairs labelled with hazard codes (at least two distinct codes)."""
        from sklearn.linear_model import LogisticRegression

        labels = sorted(set(codes))
        if len(labels) < 2:
            raise ValueError(f"a category model needs at least two hazard codes, got {labels}")
        self.vectorizer_ = self._vectorizer().fit(pairs)
        model = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=self.seed)
        model.fit(self.vectorizer_.transform(pairs), list(codes))
        self.labels_ = [str(c) for c in model.classes_]
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = np.asarray(model.intercept_, dtype=np.float64)
        if len(self.labels_) == 2:
            # sklearn stores one row for two classes: softmax([0, z]) equals its sigmoid(z).
            coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
            intercept = np.array([0.0, intercept[0]])
        self.coef_, self.intercept_ = coef, intercept
        return self

    def predict_proba(self, pairs: list[Pair]) -> np.ndarray:
        """P(hazard) per pair, shape (n, len(labels_)), columns in `labels_` order."""
        z = self.vectorizer_.transform(pairs) @ self.coef_.T + self.intercept_
        z = np.asarray(z) - np.max(z, axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, pairs: list[Pair]) -> list[str]:
        """The most probable hazard code of each pair."""
        if not pairs:
            return []
        return [self.labels_[i] for i in np.argmax(self.predict_proba(pairs), axis=1)]

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able state, arrays) for `Detector.save`."""
        state, arrays = self.vectorizer_.state()
        return (
            {**state, "labels": self.labels_, "seed": self.seed},
            {**arrays, "coef": self.coef_, "intercept": self.intercept_},
        )

    @classmethod
    def from_state(cls, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> CategoryModel:
        """Rebuild a fitted model from what `state` returned."""
        model = cls(seed=int(state.get("seed", 0)))
        model.vectorizer_ = model._vectorizer().load(state, arrays)
        model.labels_ = [str(c) for c in state["labels"]]
        model.coef_ = np.asarray(arrays["coef"], dtype=np.float64)
        model.intercept_ = np.asarray(arrays["intercept"], dtype=np.float64)
        if model.coef_.shape[0] != len(model.labels_):
            raise ValueError(
                f"category model has {model.coef_.shape[0]} coefficient rows for {len(model.labels_)} labels"
            )
        return model


def fit_category_model(
    records: Sequence[ResponseRecord], seed: int = 0
) -> tuple[CategoryModel | None, dict[str, Any]]:
    """Train on the records with a known hazard (any label); returns (model or None, training summary)."""
    kept = [(r, code) for r in records if (code := record_hazard(r)) is not None]
    codes = [code for _, code in kept]
    summary: dict[str, Any] = {
        "n_train": len(kept),
        "n_skipped_no_category": len(records) - len(kept),
        "counts": dict(sorted(Counter(codes).items())),
    }
    if len(set(codes)) < 2:
        summary["skipped"] = "fewer than two hazard codes among the training rows: no category model"
        return None, summary
    model = CategoryModel(seed=seed).fit(as_pairs([r for r, _ in kept]), codes)
    return model, summary
