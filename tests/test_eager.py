"""poller.eager.start: a coroutine runs in the caller's task up to its first
wait, and only one that waits gets a task of its own, which behaves as
create_task's would (result, exception, cancellation, context)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from poller import eager

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="outside")


def inside() -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(where.set, "inside")
    return context


async def test_a_coroutine_that_does_not_wait_finishes_in_the_callers_task():
    seen = []

    async def quick() -> str:
        seen.append(asyncio.current_task())
        return where.get()

    future = eager.start(quick(), context=inside(), name="quick")
    assert future.done() and future.result() == "inside"
    assert seen == [asyncio.current_task()]  # no task was made for it
    assert where.get() == "outside"  # its context was the one given, not ours


async def test_a_failure_or_cancellation_before_any_wait_is_the_futures_outcome():
    async def boom() -> None:
        raise RuntimeError("boom")

    async def cancelled() -> None:
        raise asyncio.CancelledError

    failed = eager.start(boom(), context=inside())
    assert failed.done() and isinstance(failed.exception(), RuntimeError)
    gone = eager.start(cancelled(), context=inside())
    assert gone.done() and gone.cancelled()


async def test_a_coroutine_that_waits_goes_on_in_a_task_of_its_own_with_its_context():
    gate = asyncio.Event()
    tasks = []

    async def slow() -> str:
        tasks.append(asyncio.current_task())
        await gate.wait()
        tasks.append(asyncio.current_task())
        await asyncio.sleep(0)  # a bare yield goes through the trampoline too
        return where.get()

    future = eager.start(slow(), context=inside(), name="slow")
    assert isinstance(future, asyncio.Task) and not future.done() and future.get_name() == "slow"
    gate.set()
    assert await future == "inside"
    assert tasks == [asyncio.current_task(), future]


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    gate = asyncio.Event()
    cleaned = []

    async def stuck() -> None:
        try:
            await gate.wait()
        finally:
            cleaned.append(where.get())

    future = eager.start(stuck(), context=inside())
    future.cancel()  # before the task's first step: the coroutine still gets it where it waits
    with pytest.raises(asyncio.CancelledError):
        await future
    assert cleaned == ["inside"] and future.cancelled()


async def test_an_exception_after_a_wait_is_the_tasks_and_a_caught_cancellation_lets_it_finish():
    gate = asyncio.Event()

    async def late_failure() -> None:
        await gate.wait()
        raise ValueError("late")

    async def shrugs() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "kept going"
        return "unreachable"

    failing = eager.start(late_failure(), context=inside())
    gate.set()
    with pytest.raises(ValueError, match="late"):
        await failing
    stubborn = eager.start(shrugs(), context=inside())
    stubborn.cancel()
    assert await stubborn == "kept going"


async def test_a_finished_outcome_reads_and_awaits_as_a_done_future_would():
    async def quick() -> int:
        return 7

    async def boom() -> None:
        raise RuntimeError("boom")

    async def cancelled() -> None:
        raise asyncio.CancelledError

    assert await eager.start(quick(), context=inside()) == 7
    failed = eager.start(boom(), context=inside())
    with pytest.raises(RuntimeError, match="boom"):
        await failed
    with pytest.raises(RuntimeError, match="boom"):
        failed.result()
    gone = eager.start(cancelled(), context=inside())
    for read in (gone.result, gone.exception):
        with pytest.raises(asyncio.CancelledError):
            read()
