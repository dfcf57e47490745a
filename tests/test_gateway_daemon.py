"""The daemon serves the gateway (issue 16 items 5-6): the `gateway` config
section, push agents on the status board (pending, proven, unreachable with a
log line, recovered), their metrics, `run --once` waiting one interval. Real
mTLS on loopback with the project's push agent, a real HTTP /status.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import grpc
import pytest
from daemons import running

from poller.config import ConfigError, parse_config
from poller.daemon.daemon import PollerDaemon
from poller.daemon.status import MAX_UNCONFIGURED_CHECKS
from poller.identity.reasons import Reason
from poller.nats.health import HealthTracker
from poller.pki.authority import poller_chain_path
from poller.testing import ForgePki, MemorySink
from poller.testing.push_agent import PushAgent, refusal_of

ACME, XYZ = "acme-corp", "xyz-inc"
SERVER_NAME = "poller-1.serviceradar"


def config(pki: ForgePki, agents: dict, **top) -> dict:
    return {
        "poller_id": "poller-1",
        "certs_dir": str(pki.directory),
        "poll_interval": "30s",
        "gateway": {
            "listen": "127.0.0.1:0",
            "cert": str(poller_chain_path(pki.layout)),
            "key": str(pki.layout.service_key("poller")),
        },
        "agents": agents,
        # Beside the certificates, not in the working directory (the default for a config with no file).
        "crl_state": str(pki.directory.parent / "crl-state.json"),
        **top,
    }


def push_entry(tenant: str, **extra) -> dict:
    return {"push": True, "tenant": tenant, **extra}


CHECK = {"service_type": "port", "service_name": "ssh", "details": "127.0.0.1", "port": 22}


def agent_for(daemon: PollerDaemon, pki: ForgePki, *args, **options) -> PushAgent:
    assert daemon.gateway_port is not None
    cert = pki.agent(*args)
    return PushAgent.for_cert(f"127.0.0.1:{daemon.gateway_port}", cert, ca_pem=pki.root_pem, server_name=SERVER_NAME, **options)


async def status_of(daemon: PollerDaemon) -> dict[str, dict]:
    url = f"http://127.0.0.1:{daemon.metrics_port}/status"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    doc = json.loads(body)
    agents = doc["agents"] if isinstance(doc, dict) else doc
    return {a["name"]: a for a in agents}


async def page_of(daemon: PollerDaemon) -> str:
    url = f"http://127.0.0.1:{daemon.metrics_port}/"
    return (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())).decode()


def sample(daemon: PollerDaemon, name: str, **labels) -> float | None:
    return daemon.metrics.registry.get_sample_value(name, labels)


# -- config --------------------------------------------------------------------------


def test_the_gateway_section_and_push_agents(pki):
    settings = parse_config(
        config(
            pki,
            {
                "edge-1": push_entry(ACME, checks=[CHECK]),
                "edge-2": push_entry(XYZ, component="agent-007", partition="site-b", interval="10s"),
                "polled": {"address": "10.0.0.5:50051", "tenant": ACME},
            },
        )
        | {"gateway": {"listen": "0.0.0.0:50052"}}
    )
    assert settings.gateway is not None and settings.gateway.listen == "0.0.0.0:50052"
    assert settings.gateway.cert == pki.directory / "gateway.pem" and settings.gateway.key == pki.directory / "gateway-key.pem"
    assert (settings.gateway.max_services, settings.gateway.max_status_bytes, settings.gateway.max_results_bytes) == (
        5000,
        4096,
        15 * 1024 * 1024,
    )
    assert (settings.gateway.max_connections, settings.gateway.max_connections_per_tenant) == (20000, 10000)
    assert settings.gateway.connection_idle == 300.0
    assert settings.gateway.audit_accepted == "connection"  # an accept audited per connection and method, not per push
    push = {a.name: a for a in settings.push_agents}
    assert push["edge-1"].component_id == "edge-1" and push["edge-1"].push and push["edge-1"].partition is None
    assert (push["edge-2"].component_id, push["edge-2"].partition, settings.push_interval(push["edge-2"])) == (
        "agent-007",
        "site-b",
        10.0,
    )
    assert settings.push_interval(push["edge-1"]) == 30.0
    assert [a.name for a in settings.polled_agents] == ["polled"]
    assert settings.tenants == (ACME, XYZ)


@pytest.mark.parametrize(
    "agents, gateway, problem",
    [
        ({"e": push_entry(ACME)}, None, "gateway: required"),
        ({"e": push_entry(ACME, address="10.0.0.5:1")}, {"listen": "127.0.0.1:0"}, "agents.e.address"),
        ({"Edge 1": push_entry(ACME)}, {"listen": "127.0.0.1:0"}, 'agents["Edge 1"].component'),
        ({"e": {"address": "h:1", "tenant": ACME, "interval": "5s"}}, {"listen": "127.0.0.1:0"}, "agents.e.interval"),
        ({"e": push_entry(ACME)}, {"listen": "127.0.0.1:0", "max_services": 0}, "gateway.max_services"),
        ({"e": push_entry(ACME)}, {"listen": ":0", "max_connections_per_tenant": 0}, "gateway.max_connections_per_tenant"),
        ({"e": push_entry(ACME)}, {"listen": ":0", "max_calls_per_agent": 0}, "gateway.max_calls_per_agent"),
        ({"e": push_entry(ACME)}, {"listen": ":0", "push_rate_per_agent": -1}, "gateway.push_rate_per_agent"),
        ({"e": push_entry(ACME)}, {"listen": ":0", "push_burst_per_agent": "10"}, "gateway.push_burst_per_agent"),
        ({"e": push_entry(ACME)}, {"listen": ":0", "push_burst_per_agent": 5}, "gateway.push_burst_per_agent"),  # no rate
        ({"e": push_entry(ACME)}, {"listen": ":0", "push_rate_per_agent": 10**308}, "gateway.push_rate_per_agent"),
        # grpc takes these as options, a C int: past it `run` would not start (OverflowError)
        ({"e": push_entry(ACME)}, {"listen": ":0", "max_results_bytes": 2**31}, "gateway.max_results_bytes"),
        ({"e": push_entry(ACME)}, {"listen": ":0", "max_connections": 2**31}, "gateway.max_connections"),
        ({"e": push_entry(ACME)}, {"listen": "127.0.0.1:0", "connection_idle": 30}, "gateway.connection_idle"),
        # grpc's options are a C int of milliseconds: past 24.8 days the server would not start
        ({"e": push_entry(ACME)}, {"listen": ":0", "connection_idle": "600h"}, "gateway.connection_idle"),
        ({"e": push_entry(ACME)}, {"listen": ":0", "keepalive": "600h"}, "gateway.keepalive"),
        ({"e": push_entry(ACME)}, {"listen": ":0", "keepalive_timeout": "600h"}, "gateway.keepalive_timeout"),
        ({"e": push_entry(ACME)}, {"cert": "x.pem"}, "gateway.listen"),
        ({"e": push_entry(ACME)}, {"listen": "127.0.0.1:0", "acept_unlisted": True}, "gateway.acept_unlisted"),
        ({"e": push_entry(ACME)}, {"listen": "127.0.0.1:0", "audit_accepted": "never"}, "gateway.audit_accepted"),
        ({"e": push_entry(ACME)}, {"listen": "127.0.0.1:0", "audit_accepted": 1}, "gateway.audit_accepted"),
        (
            {"a": push_entry(ACME, component="agent-001"), "b": push_entry(ACME, component="agent-001")},
            {"listen": "127.0.0.1:0"},
            "agents.b",
        ),
        ({"unlisted:acme-corp/p.s": push_entry(ACME, component="p")}, {"listen": ":0"}, 'agents["unlisted:acme-corp/p.s"]'),
    ],
)
def test_bad_push_config_is_named(pki, agents, gateway, problem):
    doc = config(pki, agents)
    if gateway is None:
        del doc["gateway"]
    else:
        doc["gateway"] = gateway
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert any(str(issue).startswith(problem) for issue in info.value.issues), [str(i) for i in info.value.issues]
    if gateway is not None:  # a gateway section with a bad value is not also said to be missing
        assert not any(str(issue).startswith("gateway: required") for issue in info.value.issues)


def test_two_checks_of_a_push_agent_with_one_service_name_warn(pki):
    """The agent keeps GetConfig's checks in a map by name: of two with one name it would run one."""
    checks = [
        {"service_type": "port", "service_name": "web", "details": "10.0.0.1:80"},
        {"service_type": "icmp", "service_name": "web", "details": "10.0.0.1"},
    ]
    settings = parse_config(config(pki, {"agent-001": push_entry(ACME, checks=checks)}))
    assert len(settings.push_agents[0].checks) == 2  # still sent: a warning, not a refusal
    assert [str(issue) for issue in settings.warnings] == [
        'agents.agent-001.checks[1].service_name: "web" is also the service_name of agents.agent-001.checks[0]: '
        "a push agent keeps its checks by name, so it would run only one of them (give each check its own service_name)"
    ]
    # A polled agent is asked for each check by type and name: there one name may serve two types.
    polled = parse_config(config(pki, {"p": {"address": "10.0.0.5:50051", "tenant": ACME, "checks": checks}}))
    assert [c.service_type for c in polled.agents[0].checks] == ["port", "icmp"]


def check(service_type: str, details: str = "", port: int = 0) -> dict:
    return {"service_type": service_type, "service_name": "c", "details": details, "port": port}


@pytest.mark.parametrize(
    "spec, path, problem",
    [
        # protoCheckToCheckerConfig drops a grpc check whose target has no port
        (check("grpc", "10.0.0.9"), "checks[0]", 'the target "10.0.0.9" has no port, and the push agent drops a grpc'),
        (check("grpc"), "checks[0]", 'the target "localhost" has no port'),  # the agent's own default target
        # NewPortChecker wants host:port, and splits it at every ':'
        (check("port", "10.0.0.9"), "checks[0]", "the push agent cannot run a port check without one"),
        (check("tcp", "db.example.net"), "checks[0]", "cannot run a port check without one"),
        (check("port", "[2001:db8::1]:22"), "checks[0]", "port checker cannot parse an IPv6 address"),
        (check("tcp", "2001:db8::1", 22), "checks[0]", '"[2001:db8::1]:22": the push agent\'s port checker'),
        (check("port", "h:abc", 22), "checks[0]", "not a target the push agent can dial"),
        # no checker of that type: "no checker found", and the check is never reported
        (check("http", "https://example.com/"), "checks[0].service_type", '"http": the push agent has no http checker'),
        (check("https", "example.com"), "checks[0].service_type", "has no https checker"),
        (check("sysmon", "127.0.0.1:50083"), "checks[0].service_type", "has no sysmon checker"),
    ],
)
def test_a_push_check_the_agent_would_drop_or_could_not_run_warns(pki, spec, path, problem):
    settings = parse_config(config(pki, {"e": push_entry(ACME, checks=[spec])}))
    [issue] = [w for w in settings.warnings if w.path.startswith("agents.e.checks")]
    assert issue.path == f"agents.e.{path}" and problem in issue.message, str(issue)
    assert len(settings.push_agents[0].checks) == 1  # still sent (another agent build may run it)
    # A polled agent runs its checks as the poller asks them: the same check is its own business.
    polled = parse_config(config(pki, {"e": {"address": "10.0.0.5:50051", "tenant": ACME, "checks": [spec]}}))
    assert not [w for w in polled.warnings if w.path.startswith("agents.e.checks")]


def test_the_push_checks_the_agent_runs_are_accepted(pki):
    checks = [
        check("port", "127.0.0.1:22"),
        check("tcp", "db.example.net", 5432),
        check("port", port=22),  # localhost:22
        check("grpc", "127.0.0.1:50083"),
        check("grpc", "sysmon.example.net", 50083),
        check("grpc", "[2001:db8::1]:50083"),  # the grpc checker takes bracketed IPv6
        check("icmp", "1.1.1.1"),
        check("ping", "1.1.1.1"),
        check("process", "nginx"),
        check("snmp", "10.0.0.2"),
        check("sweep"),
        check("mapper_discovery", "10.0.0.3"),
    ]
    for i, spec in enumerate(checks):
        spec["service_name"] = f"c{i}"
    settings = parse_config(config(pki, {"e": push_entry(ACME, checks=checks)}))
    assert len(settings.push_agents[0].checks) == len(checks)


def test_push_checks_that_may_take_the_whole_interval_warn_that_the_agent_would_flap(pki):
    """7 checks at 3 s: each gets 1 s, and one after another they may take 7 s before a push."""
    checks = [{"service_type": "port", "service_name": f"c{i}", "details": "127.0.0.1:22"} for i in range(7)]
    settings = parse_config(config(pki, {"e": push_entry(ACME, interval="3s", checks=checks)}))
    assert [str(w) for w in settings.warnings] == [
        "agents.e.checks: 7 checks of up to 1s each (timeout_sec) run one after another before each push: 7s, "
        "not under the interval (3s), so pushes may come more than 2 intervals apart and the board would call "
        "the agent unreachable between them; give it an interval of at least 14s, or fewer checks (docs/gateway.md)"
    ]
    inherited = parse_config(config(pki, {"e": push_entry(ACME, checks=checks)}, poll_interval="5s"))
    assert [w.path for w in inherited.warnings] == ["agents.e.checks"]
    for fine in ("14s", "8s"):  # 1 s each (7 s) is under 8 s; from 14 s on they get half the interval
        assert not parse_config(config(pki, {"e": push_entry(ACME, interval=fine, checks=checks)})).warnings
    polled = {"address": "10.0.0.5:50051", "tenant": ACME, "checks": checks}  # the poller bounds its own calls
    assert not parse_config(config(pki, {"p": polled, "e": push_entry(ACME, checks=[CHECK])}, poll_interval="3s")).warnings


GATEWAY_REFUSES_ALL = (
    'gateway: no agent has "push": true and accept_unlisted is false, so the gateway refuses every caller '
    "(unknown_agent): list the push agents, set accept_unlisted, or remove the section"
)


def test_a_gateway_without_push_agents_that_accepts_no_unlisted_one_warns_that_it_refuses_all(pki):
    polled = {"address": "10.0.0.5:50051", "tenant": ACME, "checks": [CHECK]}
    assert [str(w) for w in parse_config(config(pki, {"p": polled})).warnings] == [GATEWAY_REFUSES_ALL]
    open_to_all = config(pki, {"p": polled})
    open_to_all["gateway"]["accept_unlisted"] = True
    assert not parse_config(open_to_all).warnings
    assert not parse_config(config(pki, {"p": polled, "e": push_entry(ACME, checks=[CHECK])})).warnings
    # An entry refused for another problem still lists a push agent: the error says what is wrong.
    with pytest.raises(ConfigError) as info:
        parse_config(config(pki, {"e": push_entry(ACME, interval="soon", checks=[CHECK])}))
    assert [w.path for w in info.value.warnings if w.path == "gateway"] == []


def test_a_catch_all_push_entry_beside_one_for_a_partition_warns_that_it_hears_only_other_partitions(pki):
    site_a = push_entry(ACME, component="agent-001", partition="site-a", checks=[CHECK])
    anywhere = push_entry(ACME, component="agent-001", checks=[CHECK])
    settings = parse_config(config(pki, {"edge-a": site_a, "any": anywhere}))
    assert [str(w) for w in settings.warnings] == [
        "agents.any: a catch-all entry (no partition) for push agent agent-001 of tenant acme-corp, beside "
        "agents.edge-a for partition site-a: an agent of partition site-a is matched to agents.edge-a, so agents.any "
        "hears only from agent-001 in other partitions (and stays pending if there is none)"
    ]
    site_b = push_entry(ACME, component="agent-001", partition="site-b", checks=[CHECK])
    [warning] = parse_config(config(pki, {"any": anywhere, "edge-a": site_a, "edge-b": site_b})).warnings
    assert "beside agents.edge-a for partition site-a and agents.edge-b for partition site-b: an agent of one" in str(warning)
    others = {  # another component, another tenant: each entry is the only one for its agent
        "edge-a": site_a,
        "other": push_entry(ACME, component="agent-002", checks=[CHECK]),
        "xyz": push_entry(XYZ, component="agent-001", checks=[CHECK]),
    }
    assert not parse_config(config(pki, others)).warnings


def test_config_check_prints_these_warnings_and_still_exits_0(pki, tmp_path, capsys):
    from poller.cli.main import main

    site_a = push_entry(ACME, component="agent-001", partition="site-a", checks=[CHECK])
    path = tmp_path / "poller.json"
    path.write_text(json.dumps(config(pki, {"edge-a": site_a, "any": push_entry(ACME, component="agent-001")})))
    assert main(["config", "check", str(path), "--no-files"]) == 0
    assert "warning: agents.any: a catch-all entry (no partition)" in capsys.readouterr().err
    path.write_text(json.dumps(config(pki, {"p": {"address": "10.0.0.5:50051", "tenant": ACME, "checks": [CHECK]}})))
    assert main(["config", "check", str(path), "--no-files"]) == 0
    out, err = capsys.readouterr()
    assert f"warning: {GATEWAY_REFUSES_ALL}\n" in err and out.startswith("ok: 1 agent, 1 check")


# -- the running daemon --------------------------------------------------------------


async def test_push_agents_on_the_board_pending_proven_unreachable_recovered(pki, log_events):
    doc = config(
        pki,
        {"edge-1": push_entry(ACME, component="agent-001", interval="1s", checks=[CHECK]), "edge-2": push_entry(XYZ)},
        metrics_listen="127.0.0.1:0",
    )
    sink = MemorySink()
    daemon = PollerDaemon(parse_config(doc), sink=sink)
    task = asyncio.ensure_future(daemon.run(install_signals=False))
    agent = None
    try:
        async with asyncio.timeout(60):
            await daemon.started.wait()
            board = await status_of(daemon)
            assert board["edge-1"]["mode"] == "push" and board["edge-1"]["state"] == "pending"
            assert board["edge-1"]["last_push"] is None and board["edge-2"]["state"] == "pending"
            assert sample(daemon, "poller_gateway_pushes_total", tenant=XYZ, outcome="ok") == 0
            assert sample(daemon, "poller_gateway_connected_agents", tenant=XYZ) == 0

            agent = agent_for(daemon, pki, ACME, "agent-001")
            hello = await agent.hello()
            assert hello.heartbeat_interval_sec == 1 and hello.gateway_id == "poller-1"
            [check] = (await agent.get_config()).checks
            assert (check.check_type, check.target) == ("port", "127.0.0.1:22")
            await agent.push([agent.status("ssh")])
            board = await status_of(daemon)
            edge = board["edge-1"]
            assert (edge["state"], edge["mode"]) == ("proven", "push")
            assert edge["last_push"] and edge["peer_address"].startswith("127.0.0.1:") and edge["address"] == edge["peer_address"]
            assert edge["identity"]["cn"] == "agent-001.partition-1.acme-corp.serviceradar"
            assert [c["outcome"] for c in edge["checks"]] == ["ok"]
            assert "push from 127.0.0.1:" in await page_of(daemon)
            from poller.cli.status import fetch_status, format_table

            table = format_table(await asyncio.to_thread(fetch_status, f"http://127.0.0.1:{daemon.metrics_port}/status"))
            assert "edge-1 (push)" in table and "proven" in table
            [row] = [line for line in table.splitlines() if "edge-1 (push)" in line]
            assert row.endswith(f"push from {edge['peer_address']}") and "never" not in row  # the last push, the peer
            assert sample(daemon, "poller_gateway_pushes_total", tenant=ACME, outcome="ok") == 1

            # Silent for more than 2 intervals: unreachable, timeout, a result and a log line.
            await sink.wait_for(lambda rs: any(r.reason is not None and r.reason.value == "timeout" for r in rs))
            board = await status_of(daemon)
            assert (board["edge-1"]["state"], board["edge-1"]["reason"]) == ("unreachable", "timeout")
            [line] = [e for e in log_events() if e["event"] == "push_agent_unreachable"]
            assert (line["tenant"], line["agent"], line["reason"]) == (ACME, "edge-1", "timeout")
            assert sample(daemon, "poller_gateway_connected_agents", tenant=ACME) == 0

            await agent.push([agent.status("ssh")])
            board = await status_of(daemon)
            assert board["edge-1"]["state"] == "proven" and board["edge-1"]["reason"] is None
    finally:
        if agent is not None:
            await agent.close()
        daemon.request_stop()
        assert await task == 0
    # The health events a NATS sink derives from these results: accepted, unreachable, recovered.
    tracker = HealthTracker()
    events = [json.loads(m.payload)["event"] for r in sink.results if r.agent == "edge-1" for m in tracker.observe(r)]
    assert events == ["accepted", "unreachable", "recovered"]
    proven = [r for r in sink.results if r.proven]
    assert {r.tenant for r in proven} == {ACME} and all(r.context.tenant == ACME for r in proven)
    assert not any(r.tenant == XYZ for r in sink.results)  # edge-2 never pushed: pending, no result


async def test_a_listed_agent_never_heard_from_stays_pending_and_is_named_once(pki, log_events):
    # A typo in an entry, a wrong gateway address or certificate: the agent never calls,
    # and it was `pending` for ever with nothing saying so. It stays pending (it never
    # pushed), but after 2 intervals of waiting a line and the board's detail say so.
    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001", interval="5s", checks=[CHECK])})
    daemon = PollerDaemon(parse_config(doc | {"metrics_listen": "127.0.0.1:0"}), sink=MemorySink())
    task = asyncio.ensure_future(daemon.run(install_signals=False))
    try:
        async with asyncio.timeout(60):
            await daemon.started.wait()
            assert daemon.pushes is not None
            began = time.time()
            await daemon.pushes.check_silence(began)
            await daemon.pushes.check_silence(began + 2 * 5.0)  # not yet: 2 intervals, not more
            assert not [e for e in log_events() if e["event"] == "push_agent_not_seen"]
            await daemon.pushes.check_silence(began + 2 * 5.0 + 1.0)
            await daemon.pushes.check_silence(began + 6 * 5.0)  # named once
            [line] = [e for e in log_events() if e["event"] == "push_agent_not_seen"]
            assert (line["tenant"], line["agent"], line["component"], line["reason"]) == (ACME, "edge-1", "agent-001", "pending")
            board = (await status_of(daemon))["edge-1"]
            assert (board["state"], board["reason"]) == ("pending", "pending")
            assert board["detail"].startswith("no call from agent-001 of acme-corp in ")
    finally:
        daemon.request_stop()
        assert await task == 0


def test_push_counters_start_at_0_for_every_tenant_and_outcome(pki):
    # Dashboards and rate() show 0, not "No data": every configured tenant, each outcome,
    # also a tenant with no push agent (it may get an unlisted one refused), from the start.
    from poller.metrics import GATEWAY_OUTCOMES

    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001")})
    doc["agents"]["poll-1"] = {"address": "127.0.0.1:1", "tenant": XYZ, "checks": [CHECK]}
    daemon = PollerDaemon(parse_config(doc), sink=MemorySink())
    for tenant in (ACME, XYZ):
        for outcome in GATEWAY_OUTCOMES:
            assert sample(daemon, "poller_gateway_pushes_total", tenant=tenant, outcome=outcome.value) == 0
        assert sample(daemon, "poller_gateway_connected_agents", tenant=tenant) == 0


async def test_refusals_reach_the_board_and_the_metrics(pki):
    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001")}, metrics_listen="127.0.0.1:0")
    daemon = PollerDaemon(parse_config(doc), sink=MemorySink())
    task = asyncio.ensure_future(daemon.run(install_signals=False))
    agents = []
    try:
        async with asyncio.timeout(60):
            await daemon.started.wait()
            liar = agent_for(daemon, pki, ACME, "agent-001", claim_tenant=XYZ)
            unknown = agent_for(daemon, pki, ACME, "agent-009")
            agents += [liar, unknown]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await liar.push([liar.status("x")])
            assert refusal_of(info.value) == (grpc.StatusCode.PERMISSION_DENIED, "payload_mismatch")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await unknown.hello()
            assert refusal_of(info.value) == (grpc.StatusCode.PERMISSION_DENIED, "unknown_agent")
            board = await status_of(daemon)
            assert (board["edge-1"]["state"], board["edge-1"]["reason"]) == ("refused", "payload_mismatch")
            assert XYZ in board["edge-1"]["detail"]  # what the lie was
            assert sample(daemon, "poller_gateway_pushes_total", tenant=ACME, outcome="payload_mismatch") == 1
            assert "agent-009" not in json.dumps(board)
    finally:
        for a in agents:
            await a.close()
        daemon.request_stop()
        assert await task == 0


async def test_an_unlisted_agent_never_stands_in_for_a_listed_one_on_the_board(pki):
    # accept_unlisted, and a listed entry named like an unlisted agent once was ("<component>.<partition>").
    doc = config(pki, {"probe.site-a": push_entry(ACME, component="agent-001")}, metrics_listen="127.0.0.1:0")
    doc["gateway"]["accept_unlisted"] = True
    sink = MemorySink()
    async with running(PollerDaemon(parse_config(doc), sink=sink)) as daemon:
        other = agent_for(daemon, pki, ACME, "probe", "site-a")  # unlisted; agent-001 never calls
        try:
            assert (await other.push([other.status("ssh")])).received
        finally:
            await other.close()
        board = await status_of(daemon)
        assert set(board) == {"probe.site-a"}  # an unlisted agent is not on the board
        assert board["probe.site-a"]["state"] == "pending" and board["probe.site-a"]["last_push"] is None
    assert [r.agent for r in sink.results] == ["unlisted:acme-corp/probe.site-a"]


async def test_an_agent_refused_at_hello_is_refused_while_it_calls_then_unreachable(pki, log_events):
    # The real agent with another agent_id in its config.json is refused at Hello and
    # retries Hello; it never pushes. It calls, so it is not silent: `refused`, with
    # one result per check with the reason each interval, never `pending` forever.
    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001", interval="5s", checks=[CHECK])})
    sink = MemorySink()
    daemon = PollerDaemon(parse_config(doc | {"metrics_listen": "127.0.0.1:0"}), sink=sink)
    task = asyncio.ensure_future(daemon.run(install_signals=False))
    liar = None
    try:
        async with asyncio.timeout(60):
            await daemon.started.wait()
            assert daemon.pushes is not None
            liar = agent_for(daemon, pki, ACME, "agent-001", agent_id="agent-007")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await liar.hello()
            assert refusal_of(info.value) == (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch")
            board = await status_of(daemon)
            assert (board["edge-1"]["state"], board["edge-1"]["reason"]) == ("refused", "identity_mismatch")
            assert sample(daemon, "poller_gateway_pushes_total", tenant=ACME, outcome="identity_mismatch") == 0  # not a push

            record = daemon.pushes.tracker.get(ACME, "edge-1")
            assert record is not None and record.last_seen is not None and record.last_push is None
            await daemon.pushes.check_silence(record.last_seen + 5.0)
            [result] = [r for r in sink.results if r.agent == "edge-1"]
            assert (result.reason, result.proven, result.service_name) == (Reason.IDENTITY_MISMATCH, False, "ssh")
            assert not [e for e in log_events() if e["event"] == "push_agent_unreachable"]

            # No call for more than two intervals since: unreachable, not refused (or pending) for ever.
            silent_at = record.last_seen + 2 * 5.0 + 1.0
            await daemon.pushes.check_silence(silent_at)
            board = await status_of(daemon)
            assert (board["edge-1"]["state"], board["edge-1"]["reason"]) == ("unreachable", "timeout")
            [line] = [e for e in log_events() if e["event"] == "push_agent_unreachable"]
            assert (line["tenant"], line["agent"]) == (ACME, "edge-1") and "refused identity_mismatch" in line["why"]
            assert [r.reason for r in sink.results if r.agent == "edge-1"][-1] is Reason.TIMEOUT

            # It calls again, less often than every 2 intervals (the real agent backs off): it flaps
            # refused -> unreachable, named once, not at every turn.
            with pytest.raises(grpc.aio.AioRpcError):
                await liar.hello()
            assert (await status_of(daemon))["edge-1"]["state"] == "refused"
            record = daemon.pushes.tracker.get(ACME, "edge-1")
            assert record is not None and record.last_seen is not None
            # (an instant past both this silence and the interval the last one began)
            await daemon.pushes.check_silence(max(record.last_seen + 2 * 5.0 + 1.0, silent_at + 5.0))
            assert (await status_of(daemon))["edge-1"]["state"] == "unreachable"
            assert len([e for e in log_events() if e["event"] == "push_agent_unreachable"]) == 1
    finally:
        if liar is not None:
            await liar.close()
        daemon.request_stop()
        assert await task == 0


async def test_a_revoked_push_agent_is_refused_revoked_while_it_calls_and_unreachable_once_silent(pki, log_events):
    # The interval is long enough that the daemon's own once-a-second watch never finds the agent
    # silent while the test runs; the test asks at chosen instants instead.
    edge_1 = push_entry(ACME, component="agent-001", interval="5s", checks=[CHECK])
    edge_2 = push_entry(ACME, component="agent-002", interval="5s")  # revoked before it ever pushed
    doc = config(pki, {"edge-1": edge_1, "edge-2": edge_2}, metrics_listen="127.0.0.1:0")
    sink = MemorySink()
    daemon = PollerDaemon(parse_config(doc), sink=sink)
    task = asyncio.ensure_future(daemon.run(install_signals=False))
    agents = []
    try:
        async with asyncio.timeout(60):
            await daemon.started.wait()
            assert daemon.pushes is not None
            address = f"127.0.0.1:{daemon.gateway_port}"
            cert = pki.agent(ACME, "agent-001")
            agent = PushAgent.for_cert(address, cert, ca_pem=pki.root_pem, server_name=SERVER_NAME)
            forged = pki.agent(ACME, "agent-001", issuer_tenant=XYZ, dns=[])
            impostor = PushAgent.for_cert(address, forged, ca_pem=pki.root_pem, server_name=SERVER_NAME)
            agents += [agent, impostor]
            await agent.push([agent.status("ssh")])
            with pytest.raises(grpc.aio.AioRpcError):
                await impostor.push([impostor.status("ssh")])
            assert (await status_of(daemon))["edge-1"]["state"] == "proven"  # the impostor names nobody

            pki.revoke(ACME, cert)
            never = pki.agent(ACME, "agent-002")
            pki.revoke(ACME, never)
            daemon.trust.reload()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await agent.push([agent.status("ssh")])
            assert refusal_of(info.value) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
            second = PushAgent.for_cert(address, never, ca_pem=pki.root_pem, server_name=SERVER_NAME, agent_id="agent-002")
            agents.append(second)
            with pytest.raises(grpc.aio.AioRpcError):
                await second.hello()
            board = await status_of(daemon)
            assert (board["edge-1"]["state"], board["edge-1"]["reason"]) == ("refused", "revoked")
            assert (board["edge-2"]["state"], board["edge-2"]["reason"]) == ("refused", "revoked")
            # Why, and the certificate it presented, as a polled agent's refusal has them.
            assert board["edge-1"]["detail"] and "agent-001" in board["edge-1"]["peer"]["subject"]
            assert board["edge-2"]["peer"]["subject"] != board["edge-1"]["peer"]["subject"]

            # Two intervals after its last accepted push, but it called within them: refused, not silent.
            record = daemon.pushes.tracker.get(ACME, "edge-1")
            assert record is not None and record.last_seen is not None
            await daemon.pushes.check_silence(record.last_seen + 2 * 5.0)
            board = await status_of(daemon)
            assert (board["edge-1"]["state"], board["edge-1"]["reason"]) == ("refused", "revoked")
            [result] = [r for r in sink.results if r.agent == "edge-1" and r.reason is Reason.REVOKED]
            assert (result.proven, result.service_name, result.tenant) == (False, "ssh", ACME)
            [result] = [r for r in sink.results if r.agent == "edge-2"]  # never pushed, but named: not silence
            assert (result.reason, result.proven, result.service_name) == (Reason.REVOKED, False, "push")
            assert not [e for e in log_events() if e["event"] == "push_agent_unreachable"]

            # Silent since that refusal for more than two intervals: unreachable after all.
            await daemon.pushes.check_silence(record.last_seen + 2 * 5.0 + 5.0)
            board = await status_of(daemon)
            assert (board["edge-1"]["state"], board["edge-1"]["reason"]) == ("unreachable", "timeout")
            assert (board["edge-2"]["state"], board["edge-2"]["reason"]) == ("unreachable", "timeout")  # never pushed
            lines = [e for e in log_events() if e["event"] == "push_agent_unreachable"]
            assert sorted(e["agent"] for e in lines) == ["edge-1", "edge-2"]  # each named once, as it fell silent
    finally:
        for a in agents:
            await a.close()
        daemon.request_stop()
        assert await task == 0


async def test_a_listed_agent_that_calls_but_never_pushes_is_named_for_what_it_does(pki, log_events):
    # It says Hello and asks GetConfig, but its entry lists no checks, so ServiceRadar's
    # agent has nothing to push: pending, and named as calling, not as never heard from.
    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001", interval="5s")}, metrics_listen="127.0.0.1:0")
    async with running(PollerDaemon(parse_config(doc), sink=MemorySink())) as daemon:
        assert daemon.pushes is not None
        agent = agent_for(daemon, pki, ACME, "agent-001")
        try:
            began = time.time()
            await daemon.pushes.check_silence(began)
            await agent.hello()
            await agent.get_config()
            await daemon.pushes.check_silence(began + 2 * 5.0 + 1.0)
            await daemon.pushes.check_silence(began + 4 * 5.0)  # named once
            assert not [e for e in log_events() if e["event"] == "push_agent_not_seen"]
            [line] = [e for e in log_events() if e["event"] == "push_agent_not_pushing"]
            assert (line["tenant"], line["agent"], line["reason"]) == (ACME, "edge-1", "pending")
            board = (await status_of(daemon))["edge-1"]
            assert (board["state"], board["reason"]) == ("pending", "pending")
            assert board["detail"].startswith("agent-001 of acme-corp calls (last ")
            assert "lists no checks" in board["detail"] and board["peer_address"]
            assert (await agent.push([agent.status("x")])).received
            assert (await status_of(daemon))["edge-1"]["state"] == "proven"
        finally:
            await agent.close()


async def test_a_silent_agent_whose_certificate_has_expired_is_said_to_be(pki, log_events):
    # grpcio's TLS refuses an expired client certificate before any call: the agent is
    # silent here, `unreachable` with reason timeout, and the detail says what is likely.
    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001", checks=[CHECK])}, metrics_listen="127.0.0.1:0")
    async with running(PollerDaemon(parse_config(doc), sink=MemorySink())) as daemon:
        assert daemon.pushes is not None
        agent = agent_for(daemon, pki, ACME, "agent-001")
        try:
            assert (await agent.push([agent.status("ssh")])).received
        finally:
            await agent.close()
        record = daemon.pushes.tracker.get(ACME, "edge-1")
        assert record is not None and record.identity is not None
        await daemon.pushes.check_silence(record.identity.not_after.timestamp() + 60.0)
        board = (await status_of(daemon))["edge-1"]
        assert (board["state"], board["reason"]) == ("unreachable", "timeout")
        assert board["detail"].startswith(f"its certificate (serial {record.identity.serial}) expired at ")
        [line] = [e for e in log_events() if e["event"] == "push_agent_unreachable"]
        assert "expired at" in line["why"] and line["tenant"] == ACME


async def test_an_agent_inventing_service_names_cannot_grow_its_board_row(pki):
    # Each push may carry 5,000 statuses of names the agent chose: the row keeps its
    # configured check and the most recently reported of the rest, MAX_UNCONFIGURED_CHECKS.
    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001", checks=[CHECK])}, metrics_listen="127.0.0.1:0")
    async with running(PollerDaemon(parse_config(doc), sink=MemorySink())) as daemon:
        agent = agent_for(daemon, pki, ACME, "agent-001")
        try:
            for push in range(5):
                invented = [agent.status(f"made-up-{push}-{n}", service_type="port") for n in range(200)]
                # and the configured name under invented types: other rows, capped as well
                retyped = [agent.status("ssh", service_type=f"type-{push}-{n}") for n in range(200)]
                assert (await agent.push([agent.status("ssh", service_type="port"), *invented, *retyped])).received
        finally:
            await agent.close()
        checks = (await status_of(daemon))["edge-1"]["checks"]
    assert len(checks) == 1 + MAX_UNCONFIGURED_CHECKS
    kept = {(c["service_type"], c["service_name"]) for c in checks}
    assert ("port", "ssh") in kept and {("type-4-199", "ssh"), ("type-4-168", "ssh")} <= kept


async def test_a_revoked_other_certificate_of_a_pushing_agent_does_not_make_it_look_refused(pki, log_events):
    # A thief with the agent's old (stolen, then revoked) key calls between the agent's own
    # pushes: each call is refused, audited and counted, but the board keeps the agent proven
    # while it pushes under its own certificate. Its own certificate's refusal shows at once.
    doc = config(
        pki, {"edge-1": push_entry(ACME, component="agent-001", interval="5s", checks=[CHECK])}, metrics_listen="127.0.0.1:0"
    )
    async with running(PollerDaemon(parse_config(doc), sink=MemorySink())) as daemon:
        address = f"127.0.0.1:{daemon.gateway_port}"
        stolen, current = pki.agent(ACME, "agent-001"), pki.agent(ACME, "agent-001")
        thief = PushAgent.for_cert(address, stolen, ca_pem=pki.root_pem, server_name=SERVER_NAME)
        agent = PushAgent.for_cert(address, current, ca_pem=pki.root_pem, server_name=SERVER_NAME)
        try:
            pki.revoke(ACME, stolen)
            daemon.trust.reload()
            assert (await agent.push([agent.status("ssh")])).received
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await thief.push([thief.status("ssh")])
                assert refusal_of(info.value) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
            board = await status_of(daemon)
            assert (board["edge-1"]["state"], board["edge-1"]["reason"]) == ("proven", None)
            assert sample(daemon, "poller_gateway_pushes_total", tenant=ACME, outcome="revoked") == 3
            refused = [e for e in log_events() if e["event"] == "server_call_refused" and e["reason"] == "revoked"]
            assert len(refused) == 3 and all(e["tenant"] == ACME and e["component"] == "agent-001" for e in refused)

            pki.revoke(ACME, current)  # now the certificate it pushes with: its own refusal, shown at once
            daemon.trust.reload()
            with pytest.raises(grpc.aio.AioRpcError):
                await agent.push([agent.status("ssh")])
            board = await status_of(daemon)
            assert (board["edge-1"]["state"], board["edge-1"]["reason"]) == ("refused", "revoked")
        finally:
            await thief.close()
            await agent.close()


async def test_run_once_waits_one_interval_for_pushes(pki):
    doc = config(
        pki,
        {
            "edge-1": push_entry(ACME, component="agent-001", interval="2s", checks=[CHECK]),
            "quiet": push_entry(ACME, component="agent-002", interval="1s"),
        },
    )
    sink = MemorySink()
    daemon = PollerDaemon(parse_config(doc), sink=sink)
    once = asyncio.ensure_future(daemon.run_once())
    assert daemon.pushes is not None
    async with asyncio.timeout(60):
        await daemon.pushes.listening.wait()
        agent = agent_for(daemon, pki, ACME, "agent-001")
        try:
            await agent.push([agent.status("ssh")])
        finally:
            await agent.close()
        results = await once
    assert daemon.scheduler.take_tally() == {ACME: {"ok": 1, "timeout": 1}}
    by_agent = {r.agent: r for r in results}
    assert by_agent["edge-1"].proven and by_agent["edge-1"].service_name == "ssh"
    assert (by_agent["quiet"].reason.value, by_agent["quiet"].proven) == ("timeout", False)


async def test_run_once_names_the_refusal_of_a_revoked_push_agent(pki):
    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001", interval="2s", checks=[CHECK])})
    sink = MemorySink()
    cert = pki.agent(ACME, "agent-001")
    pki.revoke(ACME, cert)
    daemon = PollerDaemon(parse_config(doc), sink=sink)
    once = asyncio.ensure_future(daemon.run_once())
    assert daemon.pushes is not None
    async with asyncio.timeout(60):
        await daemon.pushes.listening.wait()
        agent = PushAgent.for_cert(f"127.0.0.1:{daemon.gateway_port}", cert, ca_pem=pki.root_pem, server_name=SERVER_NAME)
        try:
            with pytest.raises(grpc.aio.AioRpcError):
                await agent.push([agent.status("ssh")])
        finally:
            await agent.close()
        results = await once
    assert daemon.scheduler.take_tally() == {ACME: {"refused": 1}}
    [result] = [r for r in results if r.agent == "edge-1"]
    assert (result.reason, result.proven, result.service_name) == (Reason.REVOKED, False, "ssh")


async def test_a_missing_gateway_certificate_is_a_named_error(pki, tmp_path):
    doc = config(pki, {"edge-1": push_entry(ACME)})
    doc["gateway"]["cert"] = str(tmp_path / "nope.pem")
    daemon = PollerDaemon(parse_config(doc), sink=MemorySink())
    with pytest.raises(ConfigError) as info:
        await daemon.run(install_signals=False)
    assert str(info.value.issues[0]).startswith("gateway.cert")


def test_audit_accepted_per_call_can_be_chosen(pki):
    doc = config(pki, {"e": push_entry(ACME)})
    doc["gateway"] = {"listen": "127.0.0.1:0", "audit_accepted": "call"}
    settings = parse_config(doc)
    assert settings.gateway is not None and settings.gateway.audit_accepted == "call"


async def test_a_reload_names_the_push_agents_it_added_removed_and_changed(pki, tmp_path, log_events):
    from poller.config import load_config

    path = tmp_path / "poller.json"
    path.write_text(json.dumps(config(pki, {"edge-1": push_entry(ACME), "edge-2": push_entry(XYZ)})))
    async with running(PollerDaemon(load_config(path), sink=MemorySink())) as daemon:
        path.write_text(
            json.dumps(config(pki, {"edge-1": push_entry(ACME, interval="10s"), "edge-3": push_entry(ACME, component="a-3")}))
        )
        assert await daemon.reload()
    [line] = [e for e in log_events() if e["event"] == "reloaded"]
    assert (line["added"], line["removed"], line["changed"]) == (["edge-3"], ["edge-2"], ["edge-1"])


def write_push_config(path, pki: ForgePki, interval: str, **entry) -> None:
    """A config file with one push agent, edge-1 of acme-corp, at `interval` (for reloads)."""
    path.write_text(
        json.dumps(config(pki, {"edge-1": push_entry(ACME, interval=interval, **entry)}, metrics_listen="127.0.0.1:0"))
    )


async def test_a_reload_that_shortens_an_interval_judges_by_the_old_one_until_the_agent_is_told(pki, tmp_path, log_events):
    # ServiceRadar's agent learns an interval at Hello, or from a GetConfig every 5 minutes:
    # until then it pushes at the old pace, which is not silence.
    from poller.config import load_config

    path = tmp_path / "poller.json"
    entry = {"component": "agent-001", "checks": [CHECK]}
    write_push_config(path, pki, "10s", **entry)
    async with running(PollerDaemon(load_config(path), sink=MemorySink())) as daemon:
        assert daemon.pushes is not None
        agent = agent_for(daemon, pki, ACME, "agent-001")
        try:
            assert (await agent.hello()).heartbeat_interval_sec == 10
            config_version = (await agent.get_config()).config_version
            assert (await agent.push([agent.status("ssh")])).received
            pushed = time.time()
            write_push_config(path, pki, "3s", **entry)
            assert await daemon.reload()
            await daemon.pushes.check_silence(pushed + 2 * 3.0 + 1.0)  # past the new window, inside the old
            assert (await status_of(daemon))["edge-1"]["state"] != "unreachable"
            assert not [e for e in log_events() if e["event"] == "push_agent_unreachable"]
            await daemon.pushes.check_silence(pushed + 2 * 10.0 + 1.0)  # past the old one too: silent
            assert (await status_of(daemon))["edge-1"]["state"] == "unreachable"

            changed = await agent.get_config(config_version=config_version)  # its next config poll: told 3 s
            assert not changed.not_modified and changed.heartbeat_interval_sec == 3
            assert (await agent.push([agent.status("ssh")])).received
            pushed = time.time()
            await daemon.pushes.check_silence(pushed + 2 * 3.0 + 1.0)
            assert (await status_of(daemon))["edge-1"]["state"] == "unreachable"
        finally:
            await agent.close()


async def test_a_config_poll_answered_not_modified_tells_the_agent_no_new_interval(pki, tmp_path, log_events):
    # A check with its own results_interval, and timeout_sec at its cap: 60 s -> 20 s leaves
    # config_version as it was, so GetConfig answers not_modified (no heartbeat_interval_sec)
    # and the agent keeps pushing every 60 s: it is still judged by 60.
    from poller.config import load_config

    path = tmp_path / "poller.json"
    entry = {"component": "agent-001", "checks": [CHECK | {"results_interval": "30s"}]}
    write_push_config(path, pki, "60s", **entry)
    async with running(PollerDaemon(load_config(path), sink=MemorySink())) as daemon:
        assert daemon.pushes is not None
        agent = agent_for(daemon, pki, ACME, "agent-001")
        try:
            await agent.hello()
            version = (await agent.get_config()).config_version
            assert (await agent.push([agent.status("ssh")])).received
            pushed = time.time()
            write_push_config(path, pki, "20s", **entry)
            assert await daemon.reload()
            assert (await agent.get_config(config_version=version)).not_modified
            await daemon.pushes.check_silence(pushed + 2 * 20.0 + 5.0)
            assert (await status_of(daemon))["edge-1"]["state"] != "unreachable"
            assert not [e for e in log_events() if e["event"] == "push_agent_unreachable"]
        finally:
            await agent.close()


def test_a_push_interval_under_a_second_warns_that_the_agent_would_flap(pki):
    """Hello announces whole seconds (at least 1): under 1 s the agent pushes late by the entry's clock."""
    own = parse_config(config(pki, {"e": push_entry(ACME, interval="500ms")}))
    assert [w.path for w in own.warnings if "under 1s" in w.message] == ["agents.e.interval"]
    inherited = parse_config(config(pki, {"e": push_entry(ACME)}, poll_interval="500ms"))
    assert [w.path for w in inherited.warnings if "under 1s" in w.message] == ["poll_interval"]
    assert not [w for w in parse_config(config(pki, {"e": push_entry(ACME, interval="1s")})).warnings if "under 1s" in w.message]


async def test_an_agent_admitted_unlisted_is_counted_connected_while_it_pushes(pki):
    doc = config(pki, {}, metrics_listen="127.0.0.1:0")
    doc["gateway"]["accept_unlisted"] = True
    async with running(PollerDaemon(parse_config(doc), sink=MemorySink())) as daemon:
        assert daemon.pushes is not None
        agent = agent_for(daemon, pki, ACME, "probe", "site-a")
        try:
            assert (await agent.push([agent.status("ssh")])).received
            pushed_at = time.time()
            await daemon.pushes.check_silence(pushed_at)
            assert sample(daemon, "poller_gateway_connected_agents", tenant=ACME) == 1
            # Silent for more than 2 of the default interval (poll_interval, 30 s): no longer connected.
            await daemon.pushes.check_silence(pushed_at + 2 * 30.0 + 1.0)
            assert sample(daemon, "poller_gateway_connected_agents", tenant=ACME) == 0
            name = "unlisted:acme-corp/probe.site-a"
            assert daemon.pushes.tracker.get(ACME, name) is not None
            # Twice that window without a call: forgotten, so minted identities do not pile up.
            await daemon.pushes.check_silence(pushed_at + 4 * 30.0 + 1.0)
            assert daemon.pushes.tracker.get(ACME, name) is None
            assert sample(daemon, "poller_gateway_connected_agents", tenant=ACME) == 0
        finally:
            await agent.close()


async def test_a_silent_tcp_check_is_the_same_row_as_its_pushed_port_results(pki):
    """The agent runs a `tcp` check as `port` and reports that type: its silence is filed under it too."""
    tcp = {"service_type": "tcp", "service_name": "ssh", "details": "127.0.0.1", "port": 22}
    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001", interval="5s", checks=[tcp])})
    sink = MemorySink()
    async with running(PollerDaemon(parse_config(doc | {"metrics_listen": "127.0.0.1:0"}), sink=sink)) as daemon:
        assert daemon.pushes is not None
        agent = agent_for(daemon, pki, ACME, "agent-001")
        try:
            [check] = (await agent.get_config()).checks
            assert check.check_type == "port"
            assert (await agent.push([agent.status("ssh", service_type=check.check_type)])).received
        finally:
            await agent.close()
        record = daemon.pushes.tracker.get(ACME, "edge-1")
        assert record is not None and record.last_push is not None
        await daemon.pushes.check_silence(record.last_push + 2 * 5.0 + 1.0)
        board = await status_of(daemon)
        assert [(c["service_type"], c["outcome"]) for c in board["edge-1"]["checks"]] == [("port", "timeout")]
    assert {(r.service_type, r.service_name) for r in sink.results} == {("port", "ssh")}


async def test_a_configured_check_a_pushing_agent_never_reports_is_named_and_times_out(pki, log_events):
    """An agent whose release does not run a check type pushes on without it: the check had
    no row, no result and no line. It is named once and gets a timeout result each interval;
    a later agent's `icmp_checks` batch counts for every icmp check."""
    ssh = {"service_type": "port", "service_name": "ssh", "details": "127.0.0.1", "port": 22}
    db = {"service_type": "port", "service_name": "db", "details": "127.0.0.1", "port": 5432}
    gw = {"service_type": "icmp", "service_name": "gw", "details": "127.0.0.1"}
    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001", interval="5s", checks=[ssh, db, gw])})
    sink = MemorySink()
    async with running(PollerDaemon(parse_config(doc | {"metrics_listen": "127.0.0.1:0"}), sink=sink)) as daemon:
        assert daemon.pushes is not None
        # It has pushed since 20 s ago (4 intervals, the window 3): its first push, as recorded.
        daemon.pushes.unreported.reported(daemon.pushes.settings.agents_by_name["edge-1"], [], now=time.time() - 20)
        agent = agent_for(daemon, pki, ACME, "agent-001")
        batch = agent.status("icmp_checks", service_type="icmp", source="results")
        try:
            assert (await agent.push([agent.status("ssh", service_type="port"), batch])).received
        finally:
            await agent.close()
        record = daemon.pushes.tracker.get(ACME, "edge-1")
        assert record is not None and record.last_push is not None
        await daemon.pushes.check_silence(record.last_push + 1.0)
        await daemon.pushes.check_silence(record.last_push + 2.0)  # named once, its results once an interval
        [line] = [e for e in log_events() if e["event"] == "push_check_not_reported"]
        assert (line["tenant"], line["agent"], line["check"], line["service_type"]) == (ACME, "edge-1", "db", "port")
        board = await status_of(daemon)
        assert board["edge-1"]["state"] == "proven"
        outcomes = {(c["service_type"], c["service_name"]): c["outcome"] for c in board["edge-1"]["checks"]}
        assert outcomes[("port", "db")] == "timeout" and outcomes[("port", "ssh")] == "ok"
        assert ("icmp", "gw") not in outcomes  # its batch reported it
    timeouts = [(r.service_name, r.reason) for r in sink.results if not r.available]
    assert timeouts == [("db", Reason.TIMEOUT)]


@pytest.mark.parametrize(
    "material, problem",
    [
        ("client-only", "is not for serving: its extended key usage has no serverAuth"),
        ("other-key", "the key does not match certificate"),
        ("expired", "expired at"),
    ],
)
async def test_gateway_material_that_cannot_serve_is_named_before_listening(pki, tmp_path, material, problem):
    """grpc would call a mismatched key a failure to bind, and serve a clientAuth-only
    certificate that every agent then refuses: `config check` warns, `run` refuses, naming the file."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from poller.config import check_files

    if material == "client-only":
        forged = pki.agent(ACME, "gw", eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
        chain, key = forged.chain_pem, forged.key_pem
    elif material == "other-key":
        chain, key = poller_chain_path(pki.layout).read_bytes(), pki.agent(ACME, "gw").key_pem
    else:
        from datetime import UTC, datetime, timedelta

        forged = pki.agent(ACME, "gw", not_after=datetime.now(UTC) - timedelta(days=1))
        chain, key = forged.chain_pem, forged.key_pem
    (tmp_path / "gw.pem").write_bytes(chain)
    (tmp_path / "gw-key.pem").write_bytes(key)
    doc = config(pki, {"edge-1": push_entry(ACME)})
    doc["gateway"] |= {"cert": str(tmp_path / "gw.pem"), "key": str(tmp_path / "gw-key.pem")}
    settings = parse_config(doc)
    warned = [str(issue) for issue in check_files(settings) if issue.path == "gateway.cert"]
    assert len(warned) == 1 and problem in warned[0] and str(tmp_path / "gw.pem") in warned[0]
    daemon = PollerDaemon(settings, sink=MemorySink())
    with pytest.raises(ConfigError) as info:
        await daemon.run(install_signals=False)
    [issue] = info.value.issues
    assert issue.path == "gateway.cert" and problem in str(issue)
    assert daemon.gateway_port is None  # it never listened


def test_a_gateway_certificate_issued_moments_ahead_of_this_clock_is_not_refused(pki):
    from datetime import UTC, datetime, timedelta

    from poller.trust.serving import serving_problems

    now = datetime.now(UTC)
    soon = pki.agent(ACME, "gw", not_before=now + timedelta(minutes=2))
    assert serving_problems(soon.chain_pem, soon.key_pem, where="gw.pem", now=now) == []
    later = pki.agent(ACME, "gw", not_before=now + timedelta(hours=1))
    [problem] = serving_problems(later.chain_pem, later.key_pem, where="gw.pem", now=now)
    assert "is not valid before" in problem
