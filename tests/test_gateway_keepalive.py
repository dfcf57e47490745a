"""The gateway's keepalive: a connection that dies without a FIN (a NAT that
dropped its entry, a host gone) ends its calls, and ServiceRadar's agent's own
pings are taken. Real mTLS on loopback through a relay that can go silent.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from relay import TcpRelay
from test_gateway import ACME, SERVER_NAME, XYZ, _EventTracker, started
from test_gateway_daemon import config, push_entry

from poller.config import parse_config
from poller.gateway import GatewayBounds
from poller.gateway.server import AGENT_PING_MIN_INTERVAL, server_options
from poller.identity.reasons import InvalidArgument
from poller.testing.push_agent import PushAgent

#: ServiceRadar's agent: keepalive.ClientParameters{Time: 120 * time.Second} (go/pkg/grpc/client.go).
SERVICERADAR_AGENT_PING = 120.0


class _ClosingTracker(_EventTracker):
    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()

    def stream_closed(self, entry) -> None:
        super().stream_closed(entry)
        self.closed.set()


async def test_a_control_stream_on_a_connection_gone_silent_is_ended_and_its_place_given_back(pki, tmp_path, log_events):
    tracker = _ClosingTracker()
    bounds = GatewayBounds(keepalive=0.5, keepalive_timeout=0.5, max_calls_per_tenant=1)
    async with started(pki, tmp_path, tracker=tracker, bounds=bounds) as g:
        async with TcpRelay(g.address, g.address, route="honest") as relay:
            agent = PushAgent.for_cert(relay.address, pki.agent(ACME, "agent-001"), ca_pem=pki.root_pem, server_name=SERVER_NAME)
            g.agents.append(agent)
            session = agent.control_stream()
            await session.opened()  # it holds acme-corp's one call in flight
            record = tracker.get(ACME, "edge-acme")
            assert record is not None and record.open_streams == 1
            relay.freeze()  # no FIN, no RST: only the gateway's unanswered ping can tell
            await asyncio.wait_for(tracker.closed.wait(), 30)
            assert record.open_streams == 0
            # The tenant's place is free again: the agent, back on a new path, is served.
            back = g.agent(pki.agent(ACME, "agent-001"))
            assert (await back.push([back.status("back")])).received
        [closed] = [e for e in log_events() if e["event"] == "push_agent_control_stream_closed"]
        assert (closed["tenant"], closed["agent"]) == (ACME, "edge-acme")
        assert [r["service_name"] for r in g.rows(ACME)] == ["back"]


async def test_a_client_that_pings_far_more_often_than_any_agent_is_sent_away(pki, tmp_path):
    async with started(pki, tmp_path) as g:
        pinger = g.agent(pki.agent(ACME, "agent-001"), keepalive=0.1)
        session = pinger.control_stream()
        await session.opened()
        code, _ = await asyncio.wait_for(session.ended(), 30)  # GOAWAY too_many_pings
        assert code == grpc.StatusCode.UNAVAILABLE
        other = g.agent(pki.agent(XYZ, "agent-007", "site-b"))
        assert (await other.push([other.status("x")])).received  # nobody else is touched


def test_the_options_take_serviceradar_agents_pings_and_ping_as_upstreams_gateway_does():
    options = dict(server_options(GatewayBounds()))
    # grpc core's server would strike a ping sooner than 5 minutes after the last: the agent's
    # 120 s must be at least the interval it accepts, with room for jitter.
    assert options["grpc.http2.min_ping_interval_without_data_ms"] <= SERVICERADAR_AGENT_PING * 1000 / 2
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == AGENT_PING_MIN_INTERVAL * 1000
    assert options["grpc.keepalive_permit_without_calls"] == 1  # upstream's PermitWithoutStream: true
    # Upstream's gateway: Time 120 s, Timeout 20 s; grpc core honours the timeout as ping_timeout_ms.
    assert (options["grpc.keepalive_time_ms"], options["grpc.keepalive_timeout_ms"]) == (120_000, 20_000)
    assert options["grpc.http2.ping_timeout_ms"] == 20_000


@pytest.mark.parametrize("name", ["keepalive", "keepalive_timeout", "connection_idle"])
def test_a_bound_grpc_cannot_take_is_refused_before_serving(name):
    with pytest.raises(InvalidArgument, match=f"{name} must be at most 2147483.647 seconds"):
        GatewayBounds(**{name: 600 * 3600.0})
    assert dict(server_options(GatewayBounds(**{name: 596 * 3600.0})))  # 2,145,600,000 ms: still an int grpc takes


def test_keepalive_is_configured_in_the_gateway_section(pki):
    settings = parse_config(
        config(pki, {"e": push_entry(ACME)}) | {"gateway": {"listen": ":0", "keepalive": "45s", "keepalive_timeout": "5s"}}
    )
    assert settings.gateway is not None
    bounds = GatewayBounds.from_config(settings.gateway)
    assert (bounds.keepalive, bounds.keepalive_timeout) == (45.0, 5.0)
    assert parse_config(config(pki, {"e": push_entry(ACME)}) | {"gateway": {"listen": ":0"}}).gateway.keepalive == 120.0
