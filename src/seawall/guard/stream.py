"""Streaming checks: text reaches the client only after a check covered it, minus a hold-back tail.

Every `check_every` new characters the latest `window` characters are scored; the checked text is released except
its last `holdback` characters (a phrase that turns unsafe only with the next tokens is still withheld). At the end
the full text is checked once more before the rest is released. A blocking verdict cuts the stream: nothing more
of the response is released and the refusal is sent instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

from seawall.guard.config import StreamPolicy
from seawall.guard.guard import Guard, Verdict


class StreamGuard:
    """Incremental checker for one streamed response; feed chunks, emit what `feed`/`finish` return."""

    def __init__(self, guard: Guard, prompt: str, policy: StreamPolicy | None = None) -> None:
        self.guard = guard
        self.prompt = prompt
        self.policy = policy or guard.policy.stream
        self.text = ""
        self.emitted = 0
        self._checked_at = 0
        self.checks = 0
        self.blocked = False
        self.verdict: Verdict | None = None
        self._worst: Verdict | None = None
        self._last: Verdict | None = None

    def _due(self, final: bool) -> str | None:
        if self.blocked:
            return None
        if final:
            return self.text
        if len(self.text) - self._checked_at < self.policy.check_every:
            return None
        return self.text[-self.policy.window :] if self.policy.window else self.text

    def _apply(self, verdict: Verdict, final: bool) -> str:
        self.checks += 1
        self._checked_at = len(self.text)
        self._last = verdict
        if verdict.unsafe and (self._worst is None or (verdict.score or 0) >= (self._worst.score or 0)):
            self._worst = verdict
        if verdict.action == "block":
            self.blocked = True
            self.verdict = verdict
            return self.guard.policy.refusal
        upto = len(self.text) if final else max(self.emitted, len(self.text) - self.policy.holdback)
        out = self.text[self.emitted : upto]
        self.emitted = upto
        if final:
            # A window flagged (flag/log) earlier stays on record even if the full text scores lower.
            self.verdict = self._worst if self._worst and not verdict.unsafe else verdict
        return out

    def interrupted(self, action: str, reason: str) -> Verdict:
        """The decision for a stream that ended early (`action` e.g. upstream_error): the worst check so far."""
        base = self._worst or self._last
        if base is None:
            g = self.guard
            base = Verdict(
                False, None, g.default_threshold, None, action, g.detector_id, g.detector_version, 0.0
            )
        self.verdict = replace(base, action=action, error=reason)
        return self.verdict

    def feed(self, chunk: str) -> str:
        """Add generated text; returns what may be sent now (the refusal once blocked, then nothing)."""
        self.text += chunk
        window = self._due(final=False)
        return "" if window is None else self._apply(self.guard.check(self.prompt, window), final=False)

    def finish(self) -> str:
        """Final full-text check; returns the rest of the text, or the refusal."""
        window = self._due(final=True)
        return "" if window is None else self._apply(self.guard.check(self.prompt, window), final=True)

    async def afeed(self, chunk: str) -> str:
        """`feed` for asyncio code."""
        self.text += chunk
        window = self._due(final=False)
        return (
            "" if window is None else self._apply(await self.guard.acheck(self.prompt, window), final=False)
        )

    async def afinish(self) -> str:
        """`finish` for asyncio code."""
        window = self._due(final=True)
        return "" if window is None else self._apply(await self.guard.acheck(self.prompt, window), final=True)


def guard_stream(
    guard: Guard, prompt: str, chunks: Iterable[str], policy: StreamPolicy | None = None
) -> Iterator[str]:
    """Wrap a text stream (e.g. `Generator.stream(...)`): yields only checked text, or the refusal, and stops."""
    sg = StreamGuard(guard, prompt, policy)
    for chunk in chunks:
        out = sg.feed(chunk)
        if out:
            yield out
        if sg.blocked:
            close = getattr(chunks, "close", None)
            if close:
                close()
            return
    out = sg.finish()
    if out:
        yield out
