"""OpenAI's moderation API shape (`POST /v1/moderations`) on top of the guard's verdicts.

A moderation input is a standalone text, not a (prompt, response) pair: each text is scored as a response to an
empty prompt. seawall's detectors are trained on pairs, most with a prompt, so a text whose harm lies in what it
answers ("Sure, here is how…") scores lower without its prompt; texts that are harmful on their own (the OpenAI
moderation set is such texts) are what this endpoint is measured on.

Scores: `category_scores[c]` is the detector's calibrated P(unsafe) for every OpenAI category that the pair's
predicted hazard maps to, 0 for the others; `categories[c]` is true when the verdict is unsafe and c is one of
them. `flagged` is the verdict's decision, so a text judged unsafe whose hazard has no OpenAI counterpart (privacy,
defamation, specialised advice, …) is flagged with every category false.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from seawall.guard.guard import Verdict

OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

# seawall hazard code → the OpenAI categories it corresponds to (docs/guard.md has the table and the gaps).
HAZARD_TO_OPENAI: dict[str, tuple[str, ...]] = {
    "violent_crimes": ("violence", "illicit/violent"),
    "indiscriminate_weapons": ("illicit/violent",),
    "non_violent_crimes": ("illicit",),
    "sex_related_crimes": ("sexual",),
    "child_sexual_exploitation": ("sexual/minors", "sexual"),
    "suicide_self_harm": ("self-harm",),
    "hate": ("hate", "harassment"),
    "sexual_content": ("sexual",),
}


class ModerationRequest(BaseModel):
    """OpenAI's moderation request: `input` is a string, a list of strings, or a list of content parts."""

    model_config = ConfigDict(extra="allow")

    input: str | list[str] | list[dict[str, Any]] = Field(description="Text(s) to moderate.")
    model: str | None = None


class InputError(ValueError):
    """A moderation input the endpoint cannot score; the message names the part."""


def input_texts(request: ModerationRequest) -> list[str]:
    """The texts to score, in order: one per string, one per text part (image parts are refused)."""
    if isinstance(request.input, str):
        return [request.input]
    if not request.input:
        raise InputError("input: an empty list has nothing to moderate")
    texts = []
    for index, item in enumerate(request.input):
        if isinstance(item, str):
            texts.append(item)
        elif item.get("type") == "text" and isinstance(item.get("text"), str):
            texts.append(item["text"])
        else:
            kind = item.get("type", "untyped")
            raise InputError(
                f"input[{index}]: a {kind!r} part cannot be moderated here; send text parts only"
            )
    return texts


def moderation_result(verdict: Verdict) -> dict[str, Any]:
    """One entry of `results[]` from a guard verdict."""
    mapped = HAZARD_TO_OPENAI.get(verdict.category or "", ())
    score = float(verdict.score) if verdict.score is not None else 1.0  # no score = the guard failed closed
    return {
        "flagged": bool(verdict.unsafe),
        "categories": {c: bool(verdict.unsafe and c in mapped) for c in OPENAI_CATEGORIES},
        "category_scores": {c: (score if c in mapped else 0.0) for c in OPENAI_CATEGORIES},
        "category_applied_input_types": {c: ["text"] for c in OPENAI_CATEGORIES},
    }
