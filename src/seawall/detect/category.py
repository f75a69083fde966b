"""Risk category of a (prompt, response) pair: a hazard code of seawall's taxonomy (`seawall.data.taxonomy.HAZARDS`).

One small model serves every detector backend: TF-IDF word 1–2-grams of the prompt and of the response (separate
vocabularies, `tfidf.PairVectorizer`) over their *topic words* (English stop words removed, so that the phrasing of
a request — "Can you…", "How do I…" — does not decide its topic), and a multinomial logistic regression over the
hazard codes plus `none`, the class of benign topics.

`Detector.fit` trains it on every training record whose class is known (`record_category`), whatever its label:
- a hazard code (`record_hazard`): SecureBreak's JBB categories mapped through the taxonomy, any record whose
  metadata carries a `hazard` (prompt sets' categories, new response sets with a mapping);
- `none`: benign rows (Alpaca answers in the training mix, benign prompt sets).
Rows of neither kind (refusal templates to uncategorised prompts, GPTFuzz, SafeText, safety-tuned-llamas, the
moderation set's texts with no positive flag: its eight flags do not cover crime, so "no flag" is not "benign") are
skipped and counted, and so are DiaSafety's safe replies (`REPLY_CATEGORY_SOURCES`: its category says why a reply
would be unsafe, and its safe replies are ordinary chit-chat). Which sources teach which hazards, through which of their own categories, is counted per source
in the training summary (`category_sources`): SecureBreak's JBB categories, DiaSafety's five categories, ToxiChat's
offensive replies, the moderation set's flags, the prompt sets' categories, Alpaca's benign rows.
`category_prompt_records` turns prompt sets with categories (HarmBench, Do-Not-Answer, AILuminate,
SimpleSafetyTests, StrongREJECT) into prompt-only rows with an unknown harm label: the harm model ignores them, the
category model learns their topics.

`Detector.predict_category` gives a category only to pairs the detector judges unsafe: the most probable hazard
code (the topic given that the pair is harmful), and none when the model finds a benign topic (`none`) most
probable. Saved with the detector without pickle: vocabularies and label list as JSON, idf vectors, coefficients and
intercepts as safetensors arrays.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from seawall.data.records import ResponseRecord, normalize_text
from seawall.data.taxonomy import HAZARDS, MAPPINGS, hazard
from seawall.detect.base import Pair, as_pairs
from seawall.detect.tfidf import PairVectorizer

# Fixed settings: the model is a by-product of every detector, tuned once on SecureBreak's train/dev split.
NGRAM_MAX = 2
MIN_DF = 2
MAX_FEATURES = 20_000
C = 4.0
# A topic shows in the first paragraphs; longer texts add cost, not topic (and models saved before this setting
# existed used 20,000).
MAX_CHARS = 2_000
LEGACY_MAX_CHARS = 20_000
MAX_ITER = 3000

NONE = "none"  # the class of benign topics; `predict_category` never returns it
BENIGN_CATEGORY = "benign"  # the `category` the training mix gives its benign (Alpaca) rows
# Prompt sets whose categories map onto hazards. JBB's harmful behaviours are left out: they are SecureBreak's
# questions, so its test questions would leak into training. XSTest's safe prompts and CoCoNot's contrast requests
# are benign requests that sound sensitive ("how do I kill a Python process?"): they teach `none`. Without them the
# model, once DiaSafety's toxic chit-chat made `hate` its largest class, called every short friendly exchange — a
# book recommendation, a dinner idea — `hate` (measured on the v2 sources: no hazard's accuracy dropped with them).
CATEGORY_PROMPT_SETS = (
    "harmbench:all",
    "donotanswer",
    "ailuminate",
    "simplesafetytests",
    "strongreject",
    "xstest",
    "coconot-contrast",
)

# Sources whose category says why a reply is unsafe in its context, not what the conversation is about: DiaSafety
# gives its safe replies the category of their partition (three of its five map to `hate`) over ordinary chit-chat,
# and trained on them the model called every short friendly exchange, a book recommendation included, `hate`. Only
# their unsafe rows teach a hazard; the safe ones are skipped and counted.
REPLY_CATEGORY_SOURCES = frozenset({"diasafety"})
SKIP_NO_CATEGORY = "no category"
SKIP_SAFE_REPLY = "safe reply: its category says why a reply would be unsafe"

_WORD = re.compile(r"(?u)\b\w\w+\b")  # sklearn's default token pattern


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


def record_category(record: ResponseRecord) -> str | None:
    """The class a record teaches the category model: its hazard code, `none` for a benign row (metadata
    `hazard: none` or the mix's `benign` category), or None when it carries neither or when its category says why
    a reply is unsafe and this reply is not (`REPLY_CATEGORY_SOURCES`)."""
    return _category_and_skip(record)[0]


def _category_and_skip(record: ResponseRecord) -> tuple[str | None, str | None]:
    """(class, None) for a row the category model learns from, else (None, why it is skipped)."""
    code = record_hazard(record)
    if code is not None:
        if record.source in REPLY_CATEGORY_SOURCES and record.label != "unsafe":
            return None, SKIP_SAFE_REPLY
        return code, None
    if (record.metadata or {}).get("hazard") == NONE or record.category == BENIGN_CATEGORY:
        return NONE, None
    return None, SKIP_NO_CATEGORY


def topic_words(text: str) -> str:
    """The text lower-cased, cut to MAX_CHARS, without English stop words: what the category model reads."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return " ".join(w for w in _WORD.findall(text[:MAX_CHARS].lower()) if w not in ENGLISH_STOP_WORDS)


def _thread_limit() -> Any:
    """A context limiting BLAS/OpenMP threads to $SEAWALL_NUM_THREADS when set: on a shared machine the solver's
    spinning threads otherwise cost several times the work (measured: 27 s → 9 s on two loaded cores)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    value = os.environ.get("SEAWALL_NUM_THREADS", "").strip()
    return threadpool_limits(limits=int(value)) if value.isdigit() and int(value) > 0 else nullcontext()


class CategoryModel:
    """TF-IDF of the topic words of prompt and response + multinomial logistic regression over hazard codes."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.topic_words = True
        self.max_chars = MAX_CHARS

    def _vectorizer(self) -> PairVectorizer:
        return PairVectorizer(NGRAM_MAX, MIN_DF, MAX_FEATURES, use_prompt=True, max_chars=self.max_chars)

    def _texts(self, pairs: list[Pair]) -> list[Pair]:
        if not self.topic_words:  # a model saved before topic words existed reads the raw texts
            return pairs
        return [(topic_words(p), topic_words(r)) for p, r in pairs]

    def fit(self, pairs: list[Pair], codes: Sequence[str]) -> CategoryModel:
        """Learn from pairs labelled with hazard codes or `none` (at least two distinct classes)."""
        from sklearn.linear_model import LogisticRegression

        labels = sorted(set(codes))
        if len(labels) < 2:
            raise ValueError(f"a category model needs at least two classes, got {labels}")
        texts = self._texts(pairs)
        self.vectorizer_ = self._vectorizer().fit(texts)
        model = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=self.seed)
        with _thread_limit():
            model.fit(self.vectorizer_.transform(texts), list(codes))
        self.labels_ = [str(c) for c in model.classes_]
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = np.asarray(model.intercept_, dtype=np.float64)
        if len(self.labels_) == 2:
            # sklearn stores one row for two classes: softmax([0, z]) equals its sigmoid(z).
            coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
            intercept = np.array([0.0, intercept[0]])
        self.coef_, self.intercept_ = coef, intercept
        return self

    @property
    def hazard_labels(self) -> list[str]:
        """The hazard codes the model can name (its classes without `none`)."""
        return [label for label in self.labels_ if label != NONE]

    def predict_proba(self, pairs: list[Pair]) -> np.ndarray:
        """P(class) per pair, shape (n, len(labels_)), columns in `labels_` order."""
        z = self.vectorizer_.transform(self._texts(pairs)) @ self.coef_.T + self.intercept_
        z = np.asarray(z) - np.max(z, axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, pairs: list[Pair]) -> list[str]:
        """The most probable class of each pair: a hazard code or `none` (the pair's topic, whatever its harm)."""
        if not pairs:
            return []
        return [self.labels_[i] for i in np.argmax(self.predict_proba(pairs), axis=1)]

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able state, arrays) for `Detector.save`."""
        state, arrays = self.vectorizer_.state()
        return (
            {
                **state,
                "labels": self.labels_,
                "seed": self.seed,
                "topic_words": self.topic_words,
                "max_chars": self.max_chars,
            },
            {**arrays, "coef": self.coef_, "intercept": self.intercept_},
        )

    @classmethod
    def from_state(cls, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> CategoryModel:
        """Rebuild a fitted model from what `state` returned (older states read raw texts, 20,000 characters)."""
        model = cls(seed=int(state.get("seed", 0)))
        model.topic_words = bool(state.get("topic_words", False))
        model.max_chars = int(state.get("max_chars", LEGACY_MAX_CHARS))
        model.vectorizer_ = model._vectorizer().load(state, arrays)
        model.labels_ = [str(c) for c in state["labels"]]
        model.coef_ = np.asarray(arrays["coef"], dtype=np.float64)
        model.intercept_ = np.asarray(arrays["intercept"], dtype=np.float64)
        if model.coef_.shape[0] != len(model.labels_):
            raise ValueError(
                f"category model has {model.coef_.shape[0]} coefficient rows for {len(model.labels_)} labels"
            )
        return model


def category_sources(records: Sequence[ResponseRecord]) -> dict[str, dict[str, Any]]:
    """What each source gives the category model, counted: its rows, the rows kept, the rows skipped by reason,
    and the mapping actually used, "source category → class" with its row count (`(hazard)` when the row carries
    its hazard in metadata and no category of its own, `(none)` for a row without a category)."""
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        entry = out.setdefault(
            record.source or "(none)", {"rows": 0, "kept": 0, "skipped": Counter(), "mapping": Counter()}
        )
        entry["rows"] += 1
        code, why = _category_and_skip(record)
        if code is None:
            entry["skipped"][why] += 1
            continue
        entry["kept"] += 1
        own = record.category or ("(hazard)" if (record.metadata or {}).get("hazard") else "(none)")
        entry["mapping"][f"{own} → {code}"] += 1
    return {
        source: {
            **entry,
            "skipped": dict(sorted(entry["skipped"].items())),
            "mapping": dict(sorted(entry["mapping"].items())),
        }
        for source, entry in sorted(out.items())
    }


def fit_category_model(
    records: Sequence[ResponseRecord], seed: int = 0
) -> tuple[CategoryModel | None, dict[str, Any]]:
    """Train on the records whose class is known (any label); returns (model or None, training summary, which
    counts the classes and, per source, the rows kept, the rows skipped and the category mapping used)."""
    kept = [(r, code) for r in records if (code := record_category(r)) is not None]
    codes = [code for _, code in kept]
    summary: dict[str, Any] = {
        "n_train": len(kept),
        "n_skipped_no_category": len(records) - len(kept),
        "counts": dict(sorted(Counter(codes).items())),
        "sources": category_sources(records),
    }
    if len(set(codes) - {NONE}) < 1 or len(set(codes)) < 2:
        summary["skipped"] = "fewer than two classes among the training rows: no category model"
        return None, summary
    pairs = as_pairs([r for r, _ in kept])
    # A request has its topic whatever the answer: each pair also teaches its prompt alone. Without these copies
    # the response block learns answer *style* (Alpaca's vs. jailbreak outputs), and a benign question answered in
    # a few plain words came out as non_violent_crimes.
    copies = [((p, ""), code) for (p, r), code in zip(pairs, codes, strict=True) if p.strip() and r.strip()]
    summary["n_prompt_only_copies"] = len(copies)
    model = CategoryModel(seed=seed).fit(pairs + [p for p, _ in copies], codes + [c for _, c in copies])
    return model, summary


def category_prompt_records(
    names: Iterable[str] = CATEGORY_PROMPT_SETS,
    data_dir: str | None = None,
    exclude_prompts: Iterable[str] = (),
) -> tuple[list[ResponseRecord], dict[str, dict[str, int]]]:
    """Prompt sets (NAME or NAME:SPLIT) as prompt-only training rows for the category model.

    Each harmful prompt with a known hazard becomes a ResponseRecord with an empty response, label `unknown` (the
    harm model skips it) and its hazard in metadata; a benign prompt becomes a `none` row. Prompts whose normalised
    text is in `exclude_prompts` (normalise them with `normalize_text`: evaluation questions) and harmful prompts
    without a hazard are left out; the returned report counts every row per set.
    """
    from seawall.data import load

    excluded = set(exclude_prompts)
    records: list[ResponseRecord] = []
    report: dict[str, dict[str, int]] = {}
    for spec in names:
        name, _, split = spec.partition(":")
        counts = report.setdefault(spec, {"rows": 0, "kept": 0, "held_out": 0, "no_hazard": 0})
        for prompt in load(name, data_dir=data_dir, split=split or None).records:
            counts["rows"] += 1
            code = (prompt.metadata or {}).get("hazard") if prompt.harmful else NONE
            if normalize_text(prompt.prompt) in excluded:
                counts["held_out"] += 1
            elif code is None:
                counts["no_hazard"] += 1
            else:
                counts["kept"] += 1
                records.append(
                    ResponseRecord(
                        id=f"category-{prompt.id}",
                        prompt=prompt.prompt,
                        response="",
                        label="unknown",
                        category=prompt.category,
                        source=f"{name}+prompt",
                        metadata={"hazard": code},
                    )
                )
    return records, report


def categorize(model: CategoryModel | None, pairs: list[Pair], unsafe: np.ndarray) -> list[str | None]:
    """The category of each pair judged unsafe: its most probable hazard code — the topic given that the pair is
    harmful, since P(hazard | pair, unsafe) ∝ P(hazard | pair) over the hazard classes — unless the category model
    finds `none` (a benign topic) more probable than every hazard: then the harm verdict and the topic disagree, and
    naming a hazard would say something false (a flagged book recommendation is not `hate`), so it is None. None also
    for every pair judged safe, and for every pair without a model."""
    out: list[str | None] = [None] * len(pairs)
    flagged = [i for i, u in enumerate(unsafe) if u]
    if model is None or not flagged:
        return out
    proba = model.predict_proba([pairs[i] for i in flagged])
    best = np.argmax(proba, axis=1)
    hazards = [j for j, label in enumerate(model.labels_) if label != NONE]
    best_hazard = np.argmax(proba[:, hazards], axis=1)
    for i, top, j in zip(flagged, best, best_hazard, strict=True):
        if model.labels_[top] != NONE:
            out[i] = model.labels_[hazards[j]]
    return out
