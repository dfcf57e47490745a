"""Wall time of chosen methods inside a running server, per call (bench.gateway's
BENCH_GATEWAY_SPANS=FILE).

A cProfile of the gateway inflates every call and hides what the server
context does to them; these spans only wrap a few methods with
time.perf_counter. Pieces that do not wait measure their CPU that way: the
gateway's delivery to the bench's eager sink never waits, so `_deliver` does
not either. The pieces nest (decide holds prove; _serve holds _deliver):
read them as a tree, not a sum. The wrappers cost a little themselves, so
the throughput of a run with spans is not the bench's figure.

Every `every` calls of the outermost piece, FILE is rewritten with one line per
piece: calls, median and mean (us) of its last 5,000 spans.

>>> install("/tmp/spans.txt")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (module, class or None, attribute, label, is a coroutine function)
PIECES: tuple[tuple[str, str | None, str, str, bool], ...] = (
    ("poller.server.interceptor", "TenantServerInterceptor", "decide", "interceptor.decide", False),
    ("poller.server.interceptor", "ProofCache", "prove", "  ProofCache.prove", False),
    ("poller.server.interceptor", "TenantServerInterceptor", "_audit_accepted", "  interceptor._audit_accepted", False),
    ("poller.gateway.service", "AgentGateway", "_serve", "gateway._serve", True),
    ("poller.gateway.service", "AgentGateway", "_take_push", "  gateway._take_push", False),
    ("poller.gateway.service", "AgentGateway", "_result", "  gateway._result", False),
    ("poller.gateway.service", "AgentGateway", "_deliver", "  gateway._deliver", True),
    ("poller.delivery.registry", "HandlerRegistry", "deliver", "    HandlerRegistry.deliver", True),
    ("poller.delivery.registry", "HandlerRegistry", "flush", "    HandlerRegistry.flush", True),
)
OUTERMOST = "gateway._serve"
KEEP = 5000


def install(path: str | Path, *, every: int = 2000) -> dict[str, list[float]]:
    """Wrap PIECES (once per process) and write their spans to path as calls go."""
    import importlib

    spans: dict[str, list[float]] = {}
    calls: dict[str, int] = {}
    target = Path(path)

    def dump() -> None:
        lines = []
        for label in (piece[3] for piece in PIECES if piece[3] in spans):  # as the tree reads
            recent = spans[label][-KEEP:]
            lines.append(
                f"{label:36s} calls {calls[label]:8d}  median {statistics.median(recent) * 1e6:7.1f} us"
                f"  mean {statistics.fmean(recent) * 1e6:7.1f} us"
            )
        target.write_text("\n".join(lines) + "\n")

    def record(label: str, started: float) -> None:
        values = spans.setdefault(label, [])
        values.append(time.perf_counter() - started)
        if len(values) > 4 * KEEP:
            del values[:-KEEP]
        calls[label] = count = calls.get(label, 0) + 1
        if label == OUTERMOST and count % every == 0:
            dump()

    for module_name, owner_name, attribute, label, is_async in PIECES:
        module = importlib.import_module(module_name)
        owner: Any = getattr(module, owner_name) if owner_name else module
        owner_attr = getattr(owner, attribute)
        setattr(owner, attribute, _timed(owner_attr, label, is_async, record))
    return spans


def _timed(real: Callable[..., Any], label: str, is_async: bool, record: Callable[[str, float], None]) -> Callable[..., Any]:
    if is_async:

        @functools.wraps(real)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await real(*args, **kwargs)
            finally:
                record(label, started)

        return timed_async

    @functools.wraps(real)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            record(label, started)

    return timed
