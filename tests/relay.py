"""An on-path TCP relay for tests: it plays the attacker of issue 6.

It forwards each accepted connection to one of two backends (an honest agent
and an impostor), chosen by a routing rule, and copies bytes both ways
without touching TLS. Two rules:
- "sni": a ClientHello that carries a server name (gRPC's handshake does,
  the poller's collecting handshake does not) goes to the impostor;
- "order": the first connection goes to the honest agent, every later one
  to the impostor;
and "honest" (everything to the honest agent) for a relay that turns
hostile later: `route` may be changed while it runs. `freeze()` stops it
forwarding anything while keeping every connection open: a path that died
without a FIN (a NAT that dropped its entry, a host gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from typing import Literal

Route = Literal["sni", "order", "honest"]


def client_hello_server_name(record: bytes) -> str | None:
    """The server_name of a TLS ClientHello record, None when it carries none."""
    try:
        if record[0] != 0x16 or record[5] != 0x01:  # handshake record, ClientHello
            return None
        at = 5 + 4 + 2 + 32  # record header, handshake header, version, random
        at += 1 + record[at]  # session id
        (suites,) = struct.unpack_from("!H", record, at)
        at += 2 + suites
        at += 1 + record[at]  # compression methods
        (total,) = struct.unpack_from("!H", record, at)
        at += 2
        end = at + total
        while at + 4 <= end:
            kind, size = struct.unpack_from("!HH", record, at)
            at += 4
            if kind == 0:  # server_name: list length, name type, name length, name
                (length,) = struct.unpack_from("!H", record, at + 3)
                return record[at + 5 : at + 5 + length].decode("ascii", "replace")
            at += size
    except (IndexError, struct.error):
        return None
    return None


class TcpRelay:
    """Listens on 127.0.0.1; `routed` counts connections per backend."""

    def __init__(self, honest: str, impostor: str, *, route: Route) -> None:
        self.backends = {"honest": honest, "impostor": impostor}
        self.route = route
        self.routed: Counter[str] = Counter()
        self.server_names: list[str | None] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def freeze(self) -> None:
        """Forward nothing more, either way; the connections stay open."""
        self._flowing.clear()

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def __aenter__(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            writer.close()  # the relay is closing; this connection's task simply ends
        finally:
            self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            header = await reader.readexactly(5)
            body = await reader.readexactly(struct.unpack("!H", header[3:5])[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        hello = header + body
        name = client_hello_server_name(hello)
        self.server_names.append(name)
        if self.route == "honest":
            backend = "honest"
        elif self.route == "sni":
            backend = "impostor" if name else "honest"
        else:
            backend = "honest" if sum(self.routed.values()) == 0 else "impostor"
        self.routed[backend] += 1
        host, port = self.backends[backend].rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        up_writer.write(hello)
        flowing = self._flowing
        await asyncio.gather(_pipe(reader, up_writer, flowing), _pipe(up_reader, writer, flowing), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event) -> None:
    try:
        while data := await reader.read(65536):
            await flowing.wait()  # frozen: what was read is never written
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
