"""The SQLite outbox: durable, ordered across restarts, bounded with counted drops."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from poller.nats.messages import Message
from poller.nats.outbox import Outbox


def msg(tenant: str, n: int, size: int = 10) -> Message:
    return Message(tenant=tenant, subject=f"{tenant}.agents.status", msg_id=f"id-{tenant}-{n}", payload=b"x" * size)


async def test_rows_come_back_in_order_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "box" / "outbox.db"
    box = await Outbox.open(path)
    await box.put([msg("acme-corp", 1), msg("xyz-inc", 2)])
    await box.put([msg("acme-corp", 3)])
    first = await box.peek(10)
    await box.remove([first[0].id])
    await box.close()

    box = await Outbox.open(path)
    try:
        rows = await box.peek(10)
        assert [r.msg_id for r in rows] == ["id-xyz-inc-2", "id-acme-corp-3"]
        assert box.rows == 2 and box.bytes == 20
        # ids keep growing after the outbox empties: order survives it
        await box.remove([r.id for r in rows])
        await box.put([msg("acme-corp", 4)])
        assert (await box.peek(1))[0].id > rows[-1].id
    finally:
        await box.close()


async def test_a_put_is_committed_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = await Outbox.open(path)
    try:
        await box.put([msg("acme-corp", 1)])
        # Another connection (as another process would) sees the row at once.
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT msg_id FROM outbox").fetchall() == [("id-acme-corp-1",)]
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await box.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_concurrent_puts_are_grouped_and_all_durable(tmp_path: Path) -> None:
    import asyncio

    box = await Outbox.open(tmp_path / "outbox.db")
    try:
        await asyncio.gather(*(box.put([msg("acme-corp", i)]) for i in range(200)))
        rows = await box.peek(1000)
        assert sorted(r.msg_id for r in rows) == sorted(f"id-acme-corp-{i}" for i in range(200))
    finally:
        await box.close()


async def test_full_outbox_drops_oldest_and_reports_per_tenant(tmp_path: Path) -> None:
    reports: list[dict[str, int]] = []
    box = await Outbox.open(tmp_path / "outbox.db", max_rows=3, max_bytes=10_000, on_drop=reports.append)
    try:
        await box.put([msg("acme-corp", 1), msg("xyz-inc", 2), msg("acme-corp", 3)])
        await box.put([msg("xyz-inc", 4), msg("xyz-inc", 5)])
        assert [r.msg_id for r in await box.peek(10)] == ["id-acme-corp-3", "id-xyz-inc-4", "id-xyz-inc-5"]
        assert reports == [{"acme-corp": 1, "xyz-inc": 1}]
    finally:
        await box.close()


async def test_byte_bound_drops_oldest(tmp_path: Path) -> None:
    reports: list[dict[str, int]] = []
    box = await Outbox.open(tmp_path / "outbox.db", max_rows=100, max_bytes=250, on_drop=reports.append)
    try:
        await box.put([msg("acme-corp", i, size=100) for i in range(3)])
        assert box.bytes == 200 and [r.msg_id for r in await box.peek(10)] == ["id-acme-corp-1", "id-acme-corp-2"]
        assert reports == [{"acme-corp": 1}]
    finally:
        await box.close()


def test_limits_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Outbox(tmp_path / "x.db", max_rows=0)
