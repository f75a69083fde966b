"""`Guard`: score a (prompt, response) pair with a detector and decide block / flag / log, failing closed."""

from __future__ import annotations

import asyncio
import copy
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from typing import Any

from seawall import __version__
from seawall.guard.batching import MicroBatcher
from seawall.guard.config import Policy

log = logging.getLogger("seawall.guard")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check. `action` is what was done: allow, block, flag or log."""

    unsafe: bool
    score: float | None
    threshold: float
    category: str | None
    action: str
    detector_id: str
    detector_version: str
    latency_ms: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


# Most severe first: the verdict of a response checked in several parts is its worst part's.
SEVERITY = {"block": 3, "flag": 2, "log": 1, "allow": 0}


def most_severe(verdicts: Sequence[Verdict]) -> Verdict:
    """The verdict that decides for several checks of one response: the strictest action, then the highest score."""
    return max(verdicts, key=lambda v: (SEVERITY.get(v.action, 0), v.unsafe, v.score or 0.0))


def _stop_workers(jobs: queue.SimpleQueue, workers: int) -> None:
    for _ in range(workers):
        jobs.put(None)


class DetectorThreads:
    """A fixed pool of daemon threads for detector calls.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one hung detector call kept the
    process alive after shutdown. A timed-out call is abandoned here; its daemon thread dies with the process.
    """

    def __init__(self, workers: int, name: str = "seawall-detector") -> None:
        self.workers, self.name = workers, name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.closed = False
        # Idle threads exit when the pool is garbage collected without close().
        weakref.finalize(self, _stop_workers, self._jobs, workers)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn(*args)` on a worker thread (started on demand, up to `workers`)."""
        future: Future = Future()
        with self._lock:
            if self.closed:
                raise RuntimeError("the guard is closed")
            self._jobs.put((future, fn, args))
            if len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=_work, args=(self._jobs,), name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def close(self) -> None:
        """Cancel queued calls and stop idle threads; never waits for a running (possibly hung) call."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        _stop_workers(self._jobs, self.workers)


def _work(jobs: queue.SimpleQueue) -> None:
    while (job := jobs.get()) is not None:
        future, fn, args = job
        if not future.set_running_or_notify_cancel():
            continue  # cancelled while queued (its caller timed out)
        try:
            future.set_result(fn(*args))
        except BaseException as error:
            future.set_exception(error)


def detector_identity(detector: Any) -> tuple[str, str]:
    """(id, version) of a detector: its `detector_id` and the seawall version it was saved with."""
    det_id = str(getattr(detector, "detector_id", None) or type(detector).__name__)
    version = str(
        getattr(detector, "seawall_version_", None) or getattr(detector, "version", None) or __version__
    )
    return det_id, version


def _warn_unreachable_rules(detector: Any, policy: Policy) -> None:
    # Only seawall detectors declare their category set (`category_labels`); others are taken on trust.
    if not policy.categories or not hasattr(detector, "category_labels"):
        return
    labels = detector.category_labels
    unreachable = sorted(set(policy.categories) - set(labels or ()))
    if unreachable:
        log.warning(
            "category rules %s never apply: detector %s outputs %s",
            unreachable,
            getattr(detector, "detector_id", type(detector).__name__),
            f"the hazard codes {labels}" if labels else "no categories (it has no category model)",
        )


class Guard:
    """Wraps a detector (anything with `predict_proba(pairs)` and `threshold_`) with a policy."""

    def __init__(self, detector: Any, policy: Policy | None = None, workers: int = 4) -> None:
        self.detector = detector
        self.policy = policy or Policy()
        self.detector_id, self.detector_version = detector_identity(detector)
        _warn_unreachable_rules(detector, self.policy)
        # Detector calls run on worker threads so a hung detector can be timed out (the thread is abandoned).
        self._threads = DetectorThreads(workers)
        # Off until `with_batching`: every check is its own detector call.
        self.batch_wait_ms, self.max_batch, self.max_inflight_batches = 0.0, 1, 1
        self._batcher: MicroBatcher | None = None
        self.on_detector_call: Callable[[int], None] | None = None
        self.on_batch_abandoned: Callable[[], None] | None = None

    def with_own_threads(self, workers: int, name: str = "seawall-detector") -> Guard:
        """The same detector and policy on separate worker threads, so one caller's load cannot starve another.

        Batching settings carry over, with a batcher of its own feeding the new threads.
        """
        other = copy.copy(self)
        other._threads = DetectorThreads(workers, name)
        other._batcher = other._new_batcher()
        return other

    def with_batching(
        self,
        wait_ms: float,
        max_batch: int,
        on_detector_call: Callable[[int], None] | None = None,
        *,
        max_inflight: int = 1,
        on_abandoned: Callable[[], None] | None = None,
    ) -> Guard:
        """The same guard (same threads) with concurrent checks gathered for up to `wait_ms` or `max_batch` pairs
        and scored in one detector call, at most `max_inflight` such calls at a time (checks arriving meanwhile
        gather for the next one); `wait_ms` 0 keeps one call per check. `on_detector_call(pairs)` is told the size
        of every detector call, `on_abandoned()` of every call that outlived its checks' time limit and gave up
        its slot (e.g. for metrics)."""
        other = copy.copy(self)
        other.batch_wait_ms, other.max_batch, other.max_inflight_batches = wait_ms, max_batch, max_inflight
        other.on_detector_call, other.on_batch_abandoned = on_detector_call, on_abandoned
        other._batcher = other._new_batcher()
        return other

    def _new_batcher(self) -> MicroBatcher | None:
        if self.batch_wait_ms <= 0:
            return None
        return MicroBatcher(
            self._score,
            self._threads.submit,
            self.batch_wait_ms,
            self.max_batch,
            self.policy.timeout_s,
            f"{self._threads.name}-batch",
            max_inflight=self.max_inflight_batches,
            on_abandoned=self.on_batch_abandoned,
        )

    def _submit(self, pairs: list[tuple[str, str]]) -> Future:
        """A future of (scores, categories): through the batcher when batching, else one call of its own."""
        if self._batcher is not None:
            return self._batcher.submit(pairs)
        return self._threads.submit(self._score, pairs)

    def _score(self, pairs: list[tuple[str, str]]) -> tuple[list[float], list[str | None]]:
        if self.on_detector_call is not None:
            self.on_detector_call(len(pairs))
        proba = self.detector.predict_proba(pairs)
        scores = [float(row[1]) for row in proba]
        if len(scores) != len(pairs):
            raise ValueError(f"detector returned {len(scores)} scores for {len(pairs)} pairs")
        categories: list[str | None] = [None] * len(pairs)
        if hasattr(self.detector, "predict_category"):
            # Categories exist only for pairs judged unsafe; a category rule may lower the threshold, so ask at
            # the lowest threshold any rule or the default applies, and let `_decide` apply the pair's own rule.
            categories = list(
                self.detector.predict_category(pairs, scores=scores, threshold=self._lowest_threshold())
            )
        return scores, categories

    def _lowest_threshold(self) -> float:
        default = next(
            t
            for t in (self.policy.threshold, getattr(self.detector, "threshold_", None), 0.5)
            if t is not None
        )
        rules = [rule.threshold for rule in self.policy.categories.values() if rule.threshold is not None]
        return float(min([default, *rules]))

    def _decide(self, score: float, category: str | None, latency_ms: float) -> Verdict:
        rule = self.policy.categories.get(category) if category else None
        threshold = next(
            t
            for t in (
                rule.threshold if rule else None,
                self.policy.threshold,
                getattr(self.detector, "threshold_", None),
                0.5,
            )
            if t is not None
        )
        unsafe = score >= threshold
        action = ((rule.action if rule else None) or self.policy.action) if unsafe else "allow"
        return Verdict(
            unsafe,
            score,
            float(threshold),
            category,
            action,
            self.detector_id,
            self.detector_version,
            latency_ms,
        )

    @property
    def default_threshold(self) -> float:
        """The threshold when no category rule applies: the policy's, else the detector's, else 0.5."""
        for t in (self.policy.threshold, getattr(self.detector, "threshold_", None)):
            if t is not None:
                return float(t)
        return 0.5

    def _failed(self, reason: str, latency_ms: float) -> Verdict:
        threshold = self.default_threshold
        if self.policy.fail_open:
            log.warning("detector failed (%s); failing OPEN as configured: response passed unchecked", reason)
            return Verdict(
                False,
                None,
                threshold,
                None,
                "allow",
                self.detector_id,
                self.detector_version,
                latency_ms,
                reason,
            )
        log.warning("detector failed (%s); failing closed: response blocked", reason)
        return Verdict(
            True, None, threshold, None, "block", self.detector_id, self.detector_version, latency_ms, reason
        )

    def _finish(self, pairs: list[tuple[str, str]], result: Any, start: float) -> list[Verdict]:
        latency = (time.perf_counter() - start) * 1000
        scores, categories = result
        return [self._decide(s, c, latency) for s, c in zip(scores, categories, strict=True)]

    def check_batch(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        """Verdicts for many pairs in one detector call (one shared time limit); with batching, that call may also
        score other concurrent checks."""
        pairs = [(str(p), str(r)) for p, r in pairs]
        start = time.perf_counter()
        try:
            future = self._submit(pairs)
            return self._finish(pairs, future.result(timeout=self.policy.timeout_s), start)
        except FutureTimeout:
            future.cancel()
            reason = f"detector timeout after {self.policy.timeout_s:g}s"
        except Exception as error:
            reason = f"detector error: {type(error).__name__}: {error}"
        latency = (time.perf_counter() - start) * 1000
        return [self._failed(reason, latency) for _ in pairs]

    def check(self, prompt: str, response: str) -> Verdict:
        """Verdict for one (prompt, response) pair."""
        return self.check_batch([(prompt, response)])[0]

    async def acheck_batch(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        """`check_batch` for asyncio code: the event loop is never blocked by the detector."""
        pairs = [(str(p), str(r)) for p, r in pairs]
        start = time.perf_counter()
        try:
            future = asyncio.wrap_future(self._submit(pairs))
            # On timeout wait_for cancels the future, which also drops the call (or the check from its batch)
            # if it is still queued.
            result = await asyncio.wait_for(future, timeout=self.policy.timeout_s)
            return self._finish(pairs, result, start)
        except TimeoutError:
            reason = f"detector timeout after {self.policy.timeout_s:g}s"
        except Exception as error:
            reason = f"detector error: {type(error).__name__}: {error}"
        latency = (time.perf_counter() - start) * 1000
        return [self._failed(reason, latency) for _ in pairs]

    async def acheck(self, prompt: str, response: str) -> Verdict:
        """`check` for asyncio code."""
        return (await self.acheck_batch([(prompt, response)]))[0]

    def close(self) -> None:
        """Release the batcher and the worker threads (does not wait for a hung detector; later checks fail as
        errors)."""
        if self._batcher is not None:
            self._batcher.close()
        self._threads.close()
