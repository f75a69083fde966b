"""Dynamic micro-batching: concurrent checks share one detector call, and one batch is scored at a time.

A CPU encoder costs nearly as much for one short pair as for eight, so checks that reach the detector one at a time
wait for each other's calls; gathered, they share one. And two batches scored at once only compete for the same
cores, so, as Triton's and TorchServe's dynamic batchers do, at most `max_inflight` batches are being scored: checks
that arrive meanwhile gather (up to `max_batch` pairs) and go as the next batch the moment a slot is free.

The first check to arrive opens a batch; the batch is closed `wait_ms` later, or as soon as it holds `max_batch`
pairs, and, once a slot is free, scored on the guard's detector threads (so a hung call can still be timed out).
Each check gets its own slice of the scores back; an exception in the shared call is every check's exception (each
then fails closed, or open, by its guard's policy). A check whose caller gave up (cancelled its future) before the
detector call started is left out of it, and a call whose every check was given up is not made.

A hung call must not hold its slot for ever: every check's caller waits at most `timeout_s`, so once the newest
check of a running batch is `timeout_s` old, nobody waits for that batch any more. It is then abandoned: its slot
goes to the next batch, `on_abandoned()` is told (a metric) and a warning is logged. The call itself cannot be
stopped; it keeps its detector thread until it returns, and its late result goes to no one.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

log = logging.getLogger("seawall.guard")

Pair = tuple[str, str]
Scored = tuple[list[float], list[str | None]]  # scores and categories, one each per pair

# A collector thread with nothing to gather or watch exits after this long (started again by the next check), so
# a guard dropped without close() does not keep a thread, and through it the detector, alive.
IDLE_EXIT_S = 5.0


@dataclass
class _Check:
    pairs: list[Pair]
    future: Future
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class _Running:
    pairs: int
    abandon_at: float  # when the newest check's caller has stopped waiting


class MicroBatcher:
    """Gathers the pairs of concurrent `submit` calls into `score` calls run through `run_on_thread`, at most
    `max_inflight` at a time; a call still running when its checks' callers have all timed out frees its slot."""

    def __init__(
        self,
        score: Callable[[list[Pair]], Scored],
        run_on_thread: Callable[..., Future],
        wait_ms: float,
        max_batch: int,
        timeout_s: float,
        name: str = "seawall-batcher",
        max_inflight: int = 1,
        on_abandoned: Callable[[], None] | None = None,
    ) -> None:
        if wait_ms <= 0 or max_batch < 1 or max_inflight < 1 or timeout_s <= 0:
            raise ValueError(
                "micro-batching needs wait_ms > 0, max_batch >= 1, max_inflight >= 1 and timeout_s > 0, got "
                f"{wait_ms}, {max_batch}, {max_inflight} and {timeout_s}"
            )
        self.score, self.run_on_thread = score, run_on_thread
        self.wait_s, self.max_batch, self.name = wait_ms / 1000, max_batch, name
        self.timeout_s, self.max_inflight, self.on_abandoned = timeout_s, max_inflight, on_abandoned
        self._cond = threading.Condition()
        self._pending: deque[_Check] = deque()
        self._pending_pairs = 0
        self._running: dict[int, _Running] = {}  # by slot number: the batches holding a slot
        self._slot_numbers = itertools.count()
        self._collector: threading.Thread | None = None
        self.closed = False

    def submit(self, pairs: list[Pair]) -> Future:
        """A future of (scores, categories) for `pairs`, resolved when the batch holding them has been scored.

        Cancelling it before its batch's detector call starts leaves its pairs out of the call.
        """
        check = _Check(pairs, Future())
        with self._cond:
            if self.closed:
                raise RuntimeError("the guard is closed")
            self._pending.append(check)
            self._pending_pairs += len(pairs)
            if self._collector is None:
                self._collector = threading.Thread(target=self._collect, name=self.name, daemon=True)
                self._collector.start()
            elif len(self._pending) == 1 or self._pending_pairs >= self.max_batch:
                self._cond.notify()  # the collector waits for a first check, or for a full batch
        return check.future

    def close(self) -> None:
        """Fail the checks still gathering (closed) and stop the collector; never waits for a running batch."""
        with self._cond:
            if self.closed:
                return
            self.closed = True
            waiting = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        _fail(waiting, RuntimeError("the guard is closed"))

    def _collect(self) -> None:
        while True:
            with self._cond:
                if not self._wait_for_batch():
                    return
                batch = self._take()
                if not batch:
                    continue  # every check gathered was given up
                slot = next(self._slot_numbers)
                newest = max(check.arrived for check in batch)
                self._running[slot] = _Running(
                    sum(len(check.pairs) for check in batch), newest + self.timeout_s
                )
            self._dispatch(slot, batch)

    def _wait_for_batch(self) -> bool:
        """Wait (holding the lock) until the gathered checks may go: their window closed or the batch full, and a
        slot free; meanwhile abandon running batches nobody waits for. False: closed, or idle (the thread ends)."""
        idle_until = time.monotonic() + IDLE_EXIT_S
        while not self.closed:
            now = time.monotonic()
            self._abandon_overdue(now)
            wake_at = [running.abandon_at for running in self._running.values()]
            if self._pending:
                window_end = self._pending[0].arrived + self.wait_s
                if self._pending_pairs < self.max_batch and now < window_end:
                    wake_at.append(window_end)
                elif len(self._running) < self.max_inflight:
                    return True
                # else: a slot is released by a finished call (which notifies) or by abandonment (a wake time)
            if self._pending or self._running:
                idle_until = now + IDLE_EXIT_S
            else:
                wake_at.append(idle_until)
                if now >= idle_until:
                    self._collector = None
                    return False
            self._cond.wait(min(wake_at) - now)
        return False

    def _abandon_overdue(self, now: float) -> None:
        for slot, running in list(self._running.items()):
            if now >= running.abandon_at:
                del self._running[slot]
                log.warning(
                    "a detector call of %d pairs is still running %gs after its newest check arrived: every "
                    "check in it has timed out, so its batch slot goes to the next batch (the call keeps its "
                    "detector thread until it returns)",
                    running.pairs,
                    self.timeout_s,
                )
                if self.on_abandoned is not None:
                    self.on_abandoned()

    def _take(self) -> list[_Check]:
        """The oldest checks up to `max_batch` pairs (a larger check alone), minus those cancelled meanwhile."""
        batch: list[_Check] = []
        size = 0
        while self._pending:
            check = self._pending[0]
            if batch and size + len(check.pairs) > self.max_batch:
                break
            self._pending.popleft()
            self._pending_pairs -= len(check.pairs)
            if not check.future.cancelled():
                batch.append(check)
                size += len(check.pairs)
        return batch

    def _release(self, slot: int) -> None:
        with self._cond:
            # An abandoned batch's slot was given away already.
            if self._running.pop(slot, None) is not None:
                self._cond.notify_all()

    def _dispatch(self, slot: int, batch: list[_Check]) -> None:
        try:
            call = self.run_on_thread(self._score_batch, batch)
        except Exception as error:  # the detector threads are closed
            self._release(slot)
            _fail(batch, error)
            return

        def finished(future: Future) -> None:
            self._release(slot)
            # Cancelled while queued for a thread (the threads were closed): its checks must still get an answer.
            if future.cancelled():
                _fail(batch, RuntimeError("the guard is closed"))

        call.add_done_callback(finished)

    def _score_batch(self, batch: list[_Check]) -> None:
        # Checks given up while the batch waited for a thread are not scored; nor is a batch of only those.
        batch = [check for check in batch if check.future.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            scores, categories = self.score([pair for check in batch for pair in check.pairs])
        except BaseException as error:
            # One failure for the batch is the failure of every check in it: each decides by its own policy.
            for check in batch:
                check.future.set_exception(error)
            return
        start = 0
        for check in batch:
            end = start + len(check.pairs)
            check.future.set_result((scores[start:end], categories[start:end]))
            start = end


def _fail(checks: list[_Check], error: BaseException) -> None:
    for check in checks:
        future = check.future
        if future.running() or future.set_running_or_notify_cancel():
            future.set_exception(error)
