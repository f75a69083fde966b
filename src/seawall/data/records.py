"""The record types every layer passes around: labelled responses, prompts, and task examples."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Label = Literal["unsafe", "safe", "unknown"]
LABELS: tuple[Label, ...] = ("unsafe", "safe", "unknown")


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """A (prompt, response) pair with a safety label: what detectors learn from and judge."""

    id: str
    prompt: str
    response: str
    label: Label = "unknown"
    category: str | None = None
    source: str = ""
    generator: str | None = None
    annotator_labels: dict[str, Label] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def y(self) -> int | None:
        """1 for unsafe, 0 for safe, None when unknown (the integer target detectors train on)."""
        return {"unsafe": 1, "safe": 0}.get(self.label)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PromptRecord:
    """A prompt to send to a model: harmful ones measure harmful-response rate, benign ones over-refusal."""

    id: str
    prompt: str
    harmful: bool
    category: str | None = None
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TaskExample:
    """A supervised downstream-task example: `input` text, the gold `target`, and the label set when closed."""

    id: str
    input: str
    target: str
    choices: tuple[str, ...] = ()
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Record = ResponseRecord | PromptRecord | TaskExample

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Canonical form for overlap checks: NFKC, case-folded, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def record_text(record: Record) -> str:
    """The prompt-like text of a record, used for grouping and overlap checks."""
    if isinstance(record, TaskExample):
        return record.input
    return record.prompt
