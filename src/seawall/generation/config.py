"""Decoding settings shared by every generation backend."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field


class GenerationConfig(BaseModel):
    """How to decode: temperature 0 means greedy; `stop` strings end the text (and are not part of it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(256, ge=1, description="Upper bound on generated tokens per response.")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy decoding; > 0 = sampling.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (only when sampling).")
    stop: tuple[str, ...] = Field(
        (), description="Strings that end the response; the text is cut before them."
    )
    seed: int | None = Field(0, description="Sampling seed (ignored for greedy decoding).")

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic."""
        return self.temperature == 0.0

    @classmethod
    def from_yaml(cls, path: str | Path) -> GenerationConfig:
        """Load a config from a YAML mapping."""
        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})


def truncate_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """Cut `text` before the earliest stop string it contains."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


class StopFilter:
    """Streaming counterpart of `truncate_at_stop`: holds back text that could be the start of a stop string."""

    def __init__(self, stop: tuple[str, ...] | list[str]) -> None:
        self.stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self._buffer = ""
        self.done = False

    def feed(self, chunk: str) -> str:
        """Add a chunk; return the text that is now safe to emit (empty once a stop string was seen)."""
        if self.done:
            return ""
        self._buffer += chunk
        cut = truncate_at_stop(self._buffer, self.stop)
        if len(cut) < len(self._buffer):
            self.done = True
            self._buffer = ""
            return cut
        if self._hold == 0:
            out, self._buffer = self._buffer, ""
            return out
        out, self._buffer = self._buffer[: -self._hold], self._buffer[-self._hold :]
        return out

    def flush(self) -> str:
        """Return what is still held back at the end of the stream."""
        out, self._buffer = ("" if self.done else self._buffer), ""
        return out
