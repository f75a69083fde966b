"""The audit log: one row per decision, each in its own transaction, in SQLite (embedded) or PostgreSQL (replicas).

`AuditLog` holds everything both backends share: the columns, the row built from a verdict (hashes, optional
text), the writer threads and the rule that no caller returns before its own commit. A backend only says how to
open its database, insert one row in one transaction and read rows back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
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

log = logging.getLogger("seawall.guard")

# (name, type, nullable): the one description of a decision row; each backend renders it in its own dialect.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("request_id", "text", False),
    ("ts", "float", False),
    ("time", "text", False),
    ("endpoint", "text", False),
    ("model", "text", True),
    ("stream", "int", False),
    ("prompt_sha256", "text", False),
    ("response_sha256", "text", False),
    ("prompt", "text", True),
    ("response", "text", True),
    ("unsafe", "int", False),
    ("score", "float", True),
    ("threshold", "float", False),
    ("action", "text", False),
    ("category", "text", True),
    ("detector_id", "text", False),
    ("detector_version", "text", False),
    ("latency_ms", "float", False),
    ("error", "text", True),
)
NAMES = [name for name, _, _ in COLUMNS]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(target: str | Path) -> bool:
    """Whether an audit target names a PostgreSQL database (else it is an SQLite file path)."""
    return str(target).startswith(POSTGRES_SCHEMES)


def schema(types: dict[str, str], id_column: str) -> str:
    """CREATE statements for the decisions table in one SQL dialect (`types` maps text/float/int)."""
    columns = [id_column] + [
        f"{name} {types[kind]}{'' if nullable else ' NOT NULL'}{' UNIQUE' if name == 'request_id' else ''}"
        for name, kind, nullable in COLUMNS
    ]
    return (
        "CREATE TABLE IF NOT EXISTS decisions (\n    " + ",\n    ".join(columns) + "\n);\n"
        "CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);\n"
        "CREATE INDEX IF NOT EXISTS decisions_action ON decisions (action);\n"
    )


def insert_sql(placeholder: str) -> str:
    """INSERT of one decision row with the backend's parameter placeholder."""
    return f"INSERT INTO decisions ({', '.join(NAMES)}) VALUES ({', '.join([placeholder] * len(NAMES))})"


def select_sql(
    placeholder: str,
    since: str | None = None,
    action: str | None = None,
    category: str | None = None,
    limit: int | None = 100,
) -> tuple[str, list[Any]]:
    """The query for `seawall guard log`: decisions matching the filters, newest first."""
    where, args = [], []
    if since:
        where.append(f"ts >= {placeholder}")
        args.append(parse_since(since))
    if action:
        where.append(f"action = {placeholder}")
        args.append(action)
    if category:
        where.append(f"category = {placeholder}")
        args.append(category)
    sql = (
        "SELECT * FROM decisions"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY ts DESC, id DESC"
    )
    if limit:
        sql += f" LIMIT {int(limit)}"
    return sql, args


def sha256(text: str) -> str:
    """Hex SHA-256 of UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def redact_url(url: str) -> str:
    """A database URL without its password, fit for logs and error messages."""
    scheme, sep, rest = str(url).partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return str(url)
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


class AuditLog:
    """Append-only decision log: one transaction per decision; callers wait for their own commit.

    No decision is acknowledged before it is committed (`record`, `await arecord`). With `writers` > 0 the
    commits run on that many dedicated threads fed by a queue, so the event loop never waits on the database;
    `close()` writes everything queued before it returns. With 0 a commit runs inline in the caller.
    Subclasses implement `_insert` (one row, one transaction), `_close` and `describe`.
    """

    def __init__(self, store_text: bool = False, writers: int = 0) -> None:
        self.store_text = store_text
        self._queue: queue.SimpleQueue[tuple[tuple, Future] | None] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._writers = [
            threading.Thread(target=self._write_loop, name=f"seawall-audit-writer-{i}", daemon=True)
            for i in range(writers)
        ]
        for thread in self._writers:
            thread.start()

    def describe(self) -> str:
        """Where the decisions go (no secrets)."""
        raise NotImplementedError

    def _insert(self, row: tuple) -> None:
        """Write one row in its own transaction (committed when this returns, rolled back if it raises)."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _write(self, row: tuple, done: Future) -> None:
        try:
            self._insert(row)
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
        """Hand one decision to a writer (or write it now, inline); the future resolves once it is committed."""
        done: Future = Future()
        row = self._row(request_id, verdict, prompt, response, endpoint, model, stream)
        with self._close_lock:
            if self._closed:
                raise RuntimeError(f"audit log {self.describe()} is closed")
            if not self._writers:
                self._write(row, done)
            else:
                self._queue.put((row, done))
        return done

    def record(self, *args: Any, **kwargs: Any) -> None:
        """Write one decision in one transaction and wait for the commit (a duplicate request id is an error)."""
        self.submit(*args, **kwargs).result()

    async def arecord(self, *args: Any, **kwargs: Any) -> None:
        """`record` for asyncio code (with writer threads, the event loop is not blocked while it commits)."""
        done = self.submit(*args, **kwargs)
        if not done.done():
            await asyncio.wrap_future(done)
        done.result()

    def close(self) -> None:
        """Write everything queued, then close the database connection(s)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._writers:
                self._queue.put(None)
        for thread in self._writers:
            thread.join()
        self._close()


class SQLiteAuditLog(AuditLog):
    """The embedded default: one SQLite file in WAL mode, `BEGIN IMMEDIATE … COMMIT` per decision.

    A writer thread is used only for `synchronous=FULL` (each commit an fsync of milliseconds); with NORMAL a
    commit is cheaper than the thread hand-off, so it runs inline.
    """

    TYPES = {"text": "TEXT", "float": "REAL", "int": "INTEGER"}  # noqa: RUF012
    INSERT = insert_sql("?")

    def __init__(
        self,
        path: str | Path,
        store_text: bool = False,
        synchronous: str = "NORMAL",
        writer_thread: bool | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        conn.executescript(schema(self.TYPES, "id INTEGER PRIMARY KEY AUTOINCREMENT"))
        self._conn = conn
        threaded = synchronous == "FULL" if writer_thread is None else writer_thread
        super().__init__(store_text, writers=1 if threaded else 0)

    def describe(self) -> str:
        """The SQLite file."""
        return str(self.path)

    def _insert(self, row: tuple) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute(self.INSERT, row)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _close(self) -> None:
        self._conn.close()


def _pg_connect_args(timeout_s: float) -> dict[str, Any]:
    # libpq's connect_timeout is whole seconds, at least 2 (smaller values are raised to 2 by libpq itself).
    return {"connect_timeout": max(2, int(timeout_s + 0.999)), "application_name": "seawall-guard"}


class PostgresAuditLog(AuditLog):
    """Decisions in a PostgreSQL table shared by any number of proxy replicas (psycopg 3 with a pool).

    Each decision is one transaction on a pooled connection, committed before the caller returns (with the
    server's default `synchronous_commit=on`, a commit is on the database's disk). `pool_size` writer threads
    share `pool_size` connections, so the event loop never waits on the network. A connection found broken (the
    database restarted) is replaced by the pool; while the database is down every write fails after at most
    `timeout_s`, and writes succeed again once it is back.
    """

    TYPES = {"text": "TEXT", "float": "DOUBLE PRECISION", "int": "INTEGER"}  # noqa: RUF012
    INSERT = insert_sql("%s")
    SCHEMA_LOCK = 0x5EA3A11  # advisory lock: replicas starting together create the table once

    def __init__(
        self, url: str, store_text: bool = False, pool_size: int = 4, timeout_s: float = 5.0
    ) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise SeawallError(
                "a postgresql:// audit log needs psycopg: pip install 'seawall[serve]' "
                "(or 'psycopg[binary,pool]>=3.2,<3.4')"
            ) from None
        self.url = url
        try:
            with psycopg.connect(url, **_pg_connect_args(timeout_s)) as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.SCHEMA_LOCK,))
                for statement in schema(
                    self.TYPES, "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
                ).split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
        except psycopg.Error as error:
            raise SeawallError(
                f"audit log {redact_url(url)}: cannot connect or create the table: {error}"
            ) from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout_s,
            kwargs=_pg_connect_args(timeout_s),
            check=ConnectionPool.check_connection,  # a connection broken by a restart is replaced, not used
            name="seawall-audit",
            open=True,
        )
        super().__init__(store_text, writers=pool_size)

    def describe(self) -> str:
        """The database URL without its password."""
        return redact_url(self.url)

    def _insert(self, row: tuple) -> None:
        # The pool's context manager commits on a clean exit and rolls back on an exception.
        with self._pool.connection() as conn:
            conn.execute(self.INSERT, row)

    def _close(self) -> None:
        self._pool.close()


def open_audit_log(
    target: str | Path,
    store_text: bool = False,
    synchronous: str = "NORMAL",
    pool_size: int = 4,
    timeout_s: float = 5.0,
) -> AuditLog:
    """The audit log at `target`: a postgresql:// URL, else an SQLite file path."""
    if is_postgres_url(target):
        return PostgresAuditLog(str(target), store_text, pool_size=pool_size, timeout_s=timeout_s)
    return SQLiteAuditLog(target, store_text, synchronous)


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
    target: str | Path,
    since: str | None = None,
    action: str | None = None,
    category: str | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    """Decisions matching the filters, newest first, from an SQLite file or a postgresql:// URL."""
    if is_postgres_url(target):
        return _query_postgres(str(target), since, action, category, limit)
    path = Path(target)
    if not path.is_file():
        raise SeawallError(f"audit log {path} does not exist (run `seawall guard serve` first or pass --db)")
    sql, args = select_sql("?", since, action, category, limit)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def _query_postgres(
    url: str, since: str | None, action: str | None, category: str | None, limit: int | None
) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    sql, args = select_sql("%s", since, action, category, limit)
    try:
        with psycopg.connect(url, row_factory=dict_row, **_pg_connect_args(5.0)) as conn:
            conn.read_only = True
            return list(conn.execute(sql, args))
    except psycopg.errors.UndefinedTable:
        raise SeawallError(
            f"audit log {redact_url(url)} has no decisions table (run `seawall guard serve` first)"
        ) from None
    except psycopg.Error as error:
        raise SeawallError(f"audit log {redact_url(url)}: {error}") from None
