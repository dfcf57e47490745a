"""Outbox: results kept on local disk (SQLite) until JetStream acknowledges them.

A message is in the outbox, committed to disk, before `put` returns, so a
result counted as delivered survives a poller crash and an outage of NATS; it
leaves when the stream acks it (`remove`). Rows come back out in the order they
went in (`peek`), across restarts.

Durability: WAL journal with `synchronous=FULL`. In WAL mode FULL syncs the
log at every commit, so a committed row survives a power cut or kernel crash,
not only a killed process (NORMAL would lose the last commits on power loss,
which for a poller means results it already reported delivered). The cost is
one fsync per commit, paid once per group: puts that arrive while a commit is
running are committed together in the next one (group commit), on a thread of
the outbox's own, so the event loop never waits on the disk. Deletes (acked
rows) commit without their own fsync: losing one only replays a message that
JetStream's Msg-Id dedup then stores once.

Bounds: at most `max_rows` rows and `max_bytes` payload bytes. When a put
goes over, the oldest rows are dropped in the same transaction and reported
(per tenant) to `on_drop`, which the sink counts and logs.

>>> box = await Outbox.open(Path("outbox.db"))        # doctest: +SKIP
>>> await box.put([message])                          # durable from here on  # doctest: +SKIP
>>> rows = await box.peek(100); await box.remove([r.id for r in rows])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from poller.config.model import DEFAULT_OUTBOX_MAX_BYTES, DEFAULT_OUTBOX_MAX_ROWS
from poller.nats.messages import Message

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_ROWS", "Outbox", "OutboxRow"]

DEFAULT_MAX_ROWS = DEFAULT_OUTBOX_MAX_ROWS  # the values are the config's (poller.config.model)
DEFAULT_MAX_BYTES = DEFAULT_OUTBOX_MAX_BYTES

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused, so order survives emptying
    tenant TEXT NOT NULL,
    subject TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at REAL NOT NULL
)
"""

T = TypeVar("T")
DropReport = Callable[[dict[str, int]], None]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    tenant: str
    subject: str
    msg_id: str
    payload: bytes
    enqueued_at: float

    def message(self) -> Message:
        return Message(tenant=self.tenant, subject=self.subject, msg_id=self.msg_id, payload=self.payload)


class Outbox:
    """A bounded, durable FIFO of messages in one SQLite file (mode 0600)."""

    def __init__(self, path: Path, *, max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_rows < 1 or max_bytes < 1:
            raise ValueError("outbox limits must be positive")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.on_drop: DropReport | None = None
        self.rows = 0
        self.bytes = 0
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._waiting: list[tuple[Sequence[Message], asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        on_drop: DropReport | None = None,
    ) -> Outbox:
        box = cls(path, max_rows=max_rows, max_bytes=max_bytes)
        box.on_drop = on_drop
        await box._run(box._open)
        return box

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    # -- on the outbox thread

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))  # results are tenant data: 0600 from the start
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_SCHEMA)
        rows, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self.rows, self.bytes = int(rows), int(size)
        self._db = db

    def _insert(self, messages: list[Message]) -> dict[str, int]:
        db = self._require()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO outbox (tenant, subject, msg_id, payload, enqueued_at) VALUES (?, ?, ?, ?, ?)",
                [(m.tenant, m.subject, m.msg_id, m.payload, now) for m in messages],
            )
            self.rows += len(messages)
            self.bytes += sum(len(m.payload) for m in messages)
            dropped = self._trim(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._recount(db)
            raise
        return dropped

    def _trim(self, db: sqlite3.Connection) -> dict[str, int]:
        dropped: Counter[str] = Counter()
        while self.rows > self.max_rows or self.bytes > self.max_bytes:
            over_rows = max(0, self.rows - self.max_rows)
            batch = db.execute(
                "SELECT id, tenant, LENGTH(payload) FROM outbox ORDER BY id LIMIT ?", (max(over_rows, 256),)
            ).fetchall()
            last = None
            for row_id, tenant, size in batch:
                if self.rows <= self.max_rows and self.bytes <= self.max_bytes:
                    break
                last = row_id
                dropped[tenant] += 1
                self.rows -= 1
                self.bytes -= size
            if last is None:
                break
            db.execute("DELETE FROM outbox WHERE id <= ?", (last,))
        return dict(dropped)

    def _recount(self, db: sqlite3.Connection) -> None:
        rows, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self.rows, self.bytes = int(rows), int(size)

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the outbox is not open")
        return self._db

    # -- API (event loop)

    async def put(self, messages: Sequence[Message]) -> None:
        """Append messages; returns once they are committed to disk (durable)."""
        if not messages:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((messages, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._commit_waiting())
        await done

    async def _commit_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            batch = [m for messages, _ in group for m in messages]
            try:
                dropped = await self._run(functools.partial(self._insert, batch))
            except BaseException as exc:  # every waiter learns that its messages are not durable
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for _, done in group:
                if not done.done():
                    done.set_result(None)
            if dropped and self.on_drop is not None:
                self.on_drop(dropped)

    async def peek(self, limit: int, *, after: int = 0) -> list[OutboxRow]:
        """The oldest rows (id > after), in the order they were put."""

        def read() -> list[OutboxRow]:
            cursor = self._require().execute(
                "SELECT id, tenant, subject, msg_id, payload, enqueued_at FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            )
            return [OutboxRow(*row) for row in cursor]

        return await self._run(read)

    async def remove(self, ids: Sequence[int]) -> None:
        """Delete acknowledged rows (ids already dropped are ignored)."""
        if not ids:
            return

        def delete() -> None:
            db = self._require()
            # A delete lost to a power cut only means a replay, which the stream's Msg-Id
            # dedup absorbs; so deletes skip the fsync (the next FULL commit syncs them).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = size = 0
                for start in range(0, len(ids), 500):  # below SQLite's bound-parameter limit
                    chunk = list(ids[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    n, b = db.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox WHERE id IN ({marks})", chunk
                    ).fetchone()
                    db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
                    rows, size = rows + n, size + b
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                db.execute("PRAGMA synchronous=FULL")
            self.rows -= rows
            self.bytes -= size

        await self._run(delete)

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)

        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(shut)
        self._thread.shutdown(wait=True)
