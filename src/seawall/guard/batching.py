"""Micro-batching: concurrent checks gathered for a few milliseconds and scored in one detector call.

A CPU encoder costs nearly as much for one short pair as for eight, so checks that reach the detector one at a time
wait for each other's calls; gathered, they share one. The first check to arrive opens a batch; the batch is closed
`wait_ms` later, or as soon as it holds `max_batch` pairs, and scored on the guard's detector threads (so a hung
call can still be timed out and abandoned). Each check gets its own slice of the scores back; an exception in the
shared call is every check's exception (each then fails closed, or open, by its guard's policy).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

Pair = tuple[str, str]
Scored = tuple[list[float], list[str | None]]  # scores and categories, one each per pair

# A collector thread with nothing to gather exits after this long (started again by the next check), so a guard
# dropped without close() does not keep a thread, and through it the detector, alive.
IDLE_EXIT_S = 5.0


@dataclass
class _Check:
    pairs: list[Pair]
    future: Future
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Gathers the pairs of concurrent `submit` calls into one `score` call run through `run_on_thread`."""

    def __init__(
        self,
        score: Callable[[list[Pair]], Scored],
        run_on_thread: Callable[..., Future],
        wait_ms: float,
        max_batch: int,
        name: str = "seawall-batcher",
    ) -> None:
        if wait_ms <= 0 or max_batch < 1:
            raise ValueError(
                f"micro-batching needs wait_ms > 0 and max_batch >= 1, got {wait_ms} and {max_batch}"
            )
        self.score, self.run_on_thread = score, run_on_thread
        self.wait_s, self.max_batch, self.name = wait_ms / 1000, max_batch, name
        self._cond = threading.Condition()
        self._pending: deque[_Check] = deque()
        self._pending_pairs = 0
        self._collector: threading.Thread | None = None
        self.closed = False

    def submit(self, pairs: list[Pair]) -> Future:
        """A future of (scores, categories) for `pairs`, resolved when the batch holding them has been scored.

        Cancelling it before its batch is closed leaves its pairs out of the batch.
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
                idle_until = time.monotonic() + IDLE_EXIT_S
                while not self._pending and not self.closed:
                    left = idle_until - time.monotonic()
                    if left <= 0:
                        self._collector = None
                        return
                    self._cond.wait(left)
                if self.closed:
                    return
                deadline = self._pending[0].arrived + self.wait_s
                while self._pending_pairs < self.max_batch and not self.closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self.closed:
                    return
                batch = self._take()
            if batch:
                self._dispatch(batch)

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
            if check.future.set_running_or_notify_cancel():
                batch.append(check)
                size += len(check.pairs)
        return batch

    def _dispatch(self, batch: list[_Check]) -> None:
        try:
            call = self.run_on_thread(self._score_batch, batch)
        except Exception as error:  # the detector threads are closed
            _fail(batch, error)
            return

        def dropped(future: Future) -> None:
            # Cancelled while queued for a thread (the threads were closed): its checks must still get an answer.
            if future.cancelled():
                _fail(batch, RuntimeError("the guard is closed"))

        call.add_done_callback(dropped)

    def _score_batch(self, batch: list[_Check]) -> None:
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
