"""poller.timers: coarse deadlines behave as asyncio.timeout / asyncio.wait do."""

from __future__ import annotations

import asyncio

import pytest

from poller.timers import coarse_timeout, coarse_timers, wait_done


async def test_coarse_timeout_turns_its_own_cancellation_into_timeout_error():
    never = asyncio.Event()
    with pytest.raises(TimeoutError):
        async with coarse_timeout(0.01) as timeout:
            await never.wait()
    assert timeout.expired
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancellation was taken back


async def test_coarse_timeout_that_does_not_expire_changes_nothing():
    loop = asyncio.get_running_loop()
    async with coarse_timeout(0.01) as timeout:
        answered = loop.create_future()  # one real suspension inside the block
        loop.call_soon(answered.set_result, None)
        await answered
    assert not timeout.expired
    # Disarmed: its deadline passes while the task waits on, and nothing cancels it.
    done = asyncio.Event()
    coarse_timers().call_later(0.2, done.set)  # a later tick than the block's deadline
    await done.wait()
    assert not timeout.expired


async def test_someone_elses_cancellation_stays_a_cancellation():
    started = asyncio.Event()

    async def body() -> None:
        async with coarse_timeout(60):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(body())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_wait_done_reports_finished_and_unfinished_tasks():
    release = asyncio.Event()
    slow = asyncio.get_running_loop().create_task(release.wait())
    assert await wait_done(slow, 0.01) is False
    assert not slow.done()  # left running, as asyncio.wait leaves it
    release.set()
    assert await wait_done(slow, 60) is True


async def test_deadlines_in_one_tick_share_one_loop_timer():
    loop = asyncio.get_running_loop()
    timers = coarse_timers()
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    fired: list[int] = []
    handles = [timers.call_later(30.0, lambda i=i: fired.append(i)) for i in range(100)]
    assert len(loop._scheduled) - before <= 2  # type: ignore[attr-defined]  # one per tick touched
    for handle in handles:
        handle.cancel()
    assert fired == []
