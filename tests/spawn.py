"""The command line as users run it: `python -m poller ARGS` in a child process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any


def cli_argv(*args: str | Path) -> list[str]:
    """The argv of `python -m poller *args` (for subprocess.run and friends)."""
    return [sys.executable, "-m", "poller", *(str(a) for a in args)]


async def spawn_cli(*args: str | Path, **kwargs: Any) -> asyncio.subprocess.Process:
    """Start `python -m poller *args`; kwargs go to asyncio.create_subprocess_exec
    (stdout=, stderr=, cwd=, env=)."""
    return await asyncio.create_subprocess_exec(*cli_argv(*args), **kwargs)
