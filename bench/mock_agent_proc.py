"""One MockAgent in its own process, for bench.unary and bench.dial.

    python -m bench.mock_agent_proc CERTS_DIR [TENANT COMPONENT PARTITION]

Like `python -m poller mock-agent ... --listen 127.0.0.1:0` (prints the port
as the first stdout line, stops on SIGTERM/SIGINT), but it clears the
MockAgent's per-call records every second: a benchmark makes hundreds of
thousands of calls, and the ever-growing record lists would make the agent
slower (garbage collection over them) as the benchmark goes on, which would
bias whichever variant runs later.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys

from bench.common import die_with_parent


async def serve(certs: str, tenant: str, component: str, partition: str) -> None:
    from poller.testing.mock_agent import MockAgent

    agent = MockAgent.from_certs_dir(certs, tenant, component, partition, host="127.0.0.1", port=0)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    port = await agent.start()
    gc.freeze()  # start-up objects are never garbage; keep them out of every collection
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    try:
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), 1.0)
            except TimeoutError:
                agent.reset_records()
    finally:
        await agent.stop(0)


def main() -> None:
    args = sys.argv[1:]
    if len(args) not in (1, 4):
        sys.exit(__doc__)
    die_with_parent()
    certs = args[0]
    tenant, component, partition = args[1:] if len(args) == 4 else ("acme-corp", "agent-001", "partition-1")
    asyncio.run(serve(certs, tenant, component, partition))


if __name__ == "__main__":
    main()
