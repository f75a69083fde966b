"""Streaming checks: text reaches the client only after a check covered it, minus a hold-back tail.

Every `check_every` new characters the latest `window` characters are scored; the checked text is released except
its last `holdback` characters (a phrase that turns unsafe only with the next tokens is still withheld). At the end
the full text is checked once more before the rest is released. A blocking verdict cuts the stream: nothing more
of the response is released and the refusal is sent instead.

`FieldStreamGuard` does the same for a response whose text arrives in several fields (content, reasoning, tool-call
arguments): they are checked as one text and what is released is mapped back to its fields.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import replace

from seawall.guard.config import StreamPolicy
from seawall.guard.guard import Guard, Verdict, most_severe


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

    def _due(self) -> str | None:
        """The window to check now, if one is due."""
        if self.blocked:
            return None
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
        window = self._due()
        return "" if window is None else self._apply(self.guard.check(self.prompt, window), final=False)

    def _final_pairs(self, also: Sequence[str]) -> list[tuple[str, str]]:
        return [(self.prompt, text) for text in (self.text, *also)]

    def finish(self, also: Sequence[str] = ()) -> str:
        """Final check of the full text (and of `also`, in the same batch); returns the rest, or the refusal."""
        if self.blocked:
            return ""
        return self._apply(most_severe(self.guard.check_batch(self._final_pairs(also))), final=True)

    async def afeed(self, chunk: str) -> str:
        """`feed` for asyncio code."""
        self.text += chunk
        window = self._due()
        return (
            "" if window is None else self._apply(await self.guard.acheck(self.prompt, window), final=False)
        )

    async def afinish(self, also: Sequence[str] = ()) -> str:
        """`finish` for asyncio code."""
        if self.blocked:
            return ""
        verdicts = await self.guard.acheck_batch(self._final_pairs(also))
        return self._apply(most_severe(verdicts), final=True)


Piece = tuple[Hashable, str]


class FieldStreamGuard:
    """Streaming checks for a response whose text arrives in several fields, e.g. content and tool-call arguments.

    Pieces are checked as one text in arrival order, with a newline wherever the field changes, so every window
    covers the latest text whatever field it came in; what `StreamGuard` releases is mapped back to its fields.
    The final check scores that text and, when there are several, each field's full text on its own.
    """

    SEPARATOR = "\n"

    def __init__(self, guard: Guard, prompt: str, policy: StreamPolicy | None = None) -> None:
        self.checker = StreamGuard(guard, prompt, policy)
        self.fields: dict[Hashable, str] = {}  # each field's full text, in order of first appearance
        self._runs: list[tuple[Hashable | None, int, int]] = []  # (field or None for a separator, start, end)
        self._released_run = 0  # runs before this index are entirely released

    @property
    def text(self) -> str:
        """All text so far, fields joined in arrival order (what the audit log hashes)."""
        return self.checker.text

    @property
    def blocked(self) -> bool:
        """True once a check blocked the response (the caller sends the refusal)."""
        return self.checker.blocked

    @property
    def verdict(self) -> Verdict | None:
        """The final (or blocking) verdict."""
        return self.checker.verdict

    def interrupted(self, action: str, reason: str) -> Verdict:
        """See `StreamGuard.interrupted`."""
        return self.checker.interrupted(action, reason)

    def _append(self, pieces: Iterable[Piece]) -> str:
        added = []
        end = len(self.checker.text)
        for field, text in pieces:
            if not text:
                continue
            last = self._runs[-1][0] if self._runs else None
            if self._runs and field != last:
                self._runs.append((None, end, end + len(self.SEPARATOR)))
                added.append(self.SEPARATOR)
                end += len(self.SEPARATOR)
            if self._runs and self._runs[-1][0] == field:
                start = self._runs[-1][1]
                self._runs[-1] = (field, start, end + len(text))
            else:
                self._runs.append((field, end, end + len(text)))
            self.fields[field] = self.fields.get(field, "") + text
            added.append(text)
            end += len(text)
        return "".join(added)

    def _pieces(self, start: int, end: int) -> list[Piece]:
        out: list[Piece] = []
        for i in range(self._released_run, len(self._runs)):
            field, run_start, run_end = self._runs[i]
            if run_start >= end:
                break
            if run_end <= end and i < len(self._runs) - 1:
                self._released_run = i + 1  # the last run may still grow: it is never skipped
            lo, hi = max(start, run_start), min(end, run_end)
            if field is not None and lo < hi:
                out.append((field, self.checker.text[lo:hi]))
        return out

    def _released(self, before: int) -> list[Piece]:
        return [] if self.blocked else self._pieces(before, self.checker.emitted)

    async def afeed(self, pieces: Iterable[Piece]) -> list[Piece]:
        """Add (field, text) pieces; returns the pieces that may be sent now (none once blocked)."""
        before = self.checker.emitted
        await self.checker.afeed(self._append(pieces))
        return self._released(before)

    async def afinish(self) -> list[Piece]:
        """Final check of all text and of each field's own; returns the rest, or nothing when blocked."""
        before = self.checker.emitted
        await self.checker.afinish(also=list(self.fields.values()) if len(self.fields) > 1 else ())
        return self._released(before)


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
