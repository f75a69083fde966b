"""The audit log: one SQLite row per decision, written in its own transaction (WAL mode) by one writer thread."""

from __future__ import annotations

import asyncio
import hashlib
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from seawall.errors import SeawallError
from seawall.guard.guard import Verdict

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    time TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT,
    stream INTEGER NOT NULL,
    prompt_sha256 TEXT NOT NULL,
    response_sha256 TEXT NOT NULL,
    prompt TEXT,
    response TEXT,
    unsafe INTEGER NOT NULL,
    score REAL,
    threshold REAL NOT NULL,
    action TEXT NOT NULL,
    category TEXT,
    detector_id TEXT NOT NULL,
    detector_version TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
CREATE INDEX IF NOT EXISTS decisions_action ON decisions (action);
"""


INSERT = f"INSERT INTO decisions VALUES (NULL, {', '.join('?' * 19)})"


def sha256(text: str) -> str:
    """Hex SHA-256 of UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class AuditLog:
    """Append-only decision log: one transaction per decision; callers wait for their own commit.

    No decision is acknowledged before it is committed (`record`, `await arecord`). With `writer_thread` (default:
    only for `synchronous=FULL`, whose commit is an fsync of milliseconds) the commits run on one dedicated thread
    fed by a queue, so the event loop never waits on the disk; `close()` writes everything queued before it
    returns. With `synchronous=NORMAL` a commit is cheaper than handing it to a thread, so it runs inline.
    """

    def __init__(
        self,
        path: str | Path,
        store_text: bool = False,
        synchronous: str = "NORMAL",
        writer_thread: bool | None = None,
    ) -> None:
        self.path = Path(path)
        self.store_text = store_text
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        conn.executescript(SCHEMA)
        self._conn = conn
        self._queue: queue.SimpleQueue[tuple[tuple, Future] | None] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        if synchronous == "FULL" if writer_thread is None else writer_thread:
            self._writer = threading.Thread(target=self._write_loop, name="seawall-audit-writer", daemon=True)
            self._writer.start()

    def _write(self, row: tuple, done: Future) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(INSERT, row)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except Exception as error:
            done.set_exception(error)
        else:
            done.set_result(None)

    def _write_loop(self) -> None:
        while (item := self._queue.get()) is not None:
            self._write(*item)

    def _row(
        self,
        request_id: str,
        verdict: Verdict,
        prompt: str,
        response: str,
        endpoint: str,
        model: str | None,
        stream: bool,
    ) -> tuple:
        now = time.time()
        return (
            request_id,
            now,
            datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            endpoint,
            model,
            int(stream),
            sha256(prompt),
            sha256(response),
            prompt if self.store_text else None,
            response if self.store_text else None,
            int(verdict.unsafe),
            verdict.score,
            verdict.threshold,
            verdict.action,
            verdict.category,
            verdict.detector_id,
            verdict.detector_version,
            verdict.latency_ms,
            verdict.error,
        )

    def submit(
        self,
        request_id: str,
        verdict: Verdict,
        prompt: str,
        response: str,
        endpoint: str,
        model: str | None = None,
        stream: bool = False,
    ) -> Future:
        """Hand one decision to the writer (or write it now, inline); the future resolves once it is committed."""
        done: Future = Future()
        row = self._row(request_id, verdict, prompt, response, endpoint, model, stream)
        with self._close_lock:
            if self._closed:
                raise RuntimeError(f"audit log {self.path} is closed")
            if self._writer is None:
                self._write(row, done)
            else:
                self._queue.put((row, done))
        return done

    def record(self, *args: Any, **kwargs: Any) -> None:
        """Write one decision in one transaction and wait for the commit (a duplicate request id is an error)."""
        self.submit(*args, **kwargs).result()

    async def arecord(self, *args: Any, **kwargs: Any) -> None:
        """`record` for asyncio code (with a writer thread, the event loop is not blocked while it commits)."""
        done = self.submit(*args, **kwargs)
        if not done.done():
            await asyncio.wrap_future(done)
        done.result()

    def close(self) -> None:
        """Write everything queued, then close the connection."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            if self._writer is not None:
                self._queue.put(None)
        if self._writer is not None:
            self._writer.join()
        self._conn.close()


def parse_since(value: str, now: float | None = None) -> float:
    """A UNIX time from '30m', '2h', '7d', '90s' (ago) or an ISO date/time (UTC when no zone is given)."""
    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return now - float(value[:-1]) * units[value[-1]]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SeawallError(f"--since {value!r}: use a duration like 30m, 2h, 7d or an ISO time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def query(
    path: str | Path,
    since: str | None = None,
    action: str | None = None,
    category: str | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    """Decisions matching the filters, newest first."""
    path = Path(path)
    if not path.is_file():
        raise SeawallError(f"audit log {path} does not exist (run `seawall guard serve` first or pass --db)")
    where, args = [], []
    if since:
        where.append("ts >= ?")
        args.append(parse_since(since))
    if action:
        where.append("action = ?")
        args.append(action)
    if category:
        where.append("category = ?")
        args.append(category)
    sql = (
        "SELECT * FROM decisions"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY ts DESC, id DESC"
    )
    if limit:
        sql += f" LIMIT {int(limit)}"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()
