"""Telling a cancellation of the running task from a call cut under it.

grpc.aio raises asyncio.CancelledError in a call whose channel was closed
(and in one cancelled by anyone else), though nobody cancelled the task
awaiting it. A task that is itself being cancelled has a cancel request
counted (Task.cancelling(), Python 3.11); a call cut under a task has none.
Code that maps a cut call to an error must re-raise a real cancellation, so
that shutdown and timeouts still work.

>>> import asyncio
>>> async def main():
...     return task_cancelling()
>>> asyncio.run(main())
False
"""

from __future__ import annotations

import asyncio

__all__ = ["task_cancelling"]


def task_cancelling() -> bool:
    """True when the running task has a cancellation requested (its own, or a timeout's)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
