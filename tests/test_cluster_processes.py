"""Replicas as real processes sharing one fleet (issue 11), with a real
nats-server and mock agents served by two other processes (bench.agents_server).

Interval 1 s. Every result carries its poller_id; the slot of a result (the
interval it belongs to, the same on every replica) is computed from its
polled_at with poller.cluster.slots. Synchronisation is on the replicas' own
JSON log lines (pipes), never on sleeps: a phase lasts a number of their
per-interval poll_summary lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from spawn import spawn_cli

from poller.cluster.slots import slot_at
from poller.testing import ForgePki, NatsServer
from poller.testing.nats_server import NatsCluster

TENANTS = ("acme-corp", "xyz-inc")
INTERVAL = 1.0
REPO = Path(__file__).resolve().parent.parent


class Replica:
    """One `serviceradar-poller run` process; its JSON log lines are collected as they come."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, data: Path, log: Path, changed: asyncio.Condition) -> None:
        self.name, self.proc, self.data, self.log = name, proc, data, log
        self.lines: list[dict[str, Any]] = []
        self._changed = changed
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        log = self.log.open("ab")  # for a post-mortem
        while raw := await self.proc.stderr.readline():
            log.write(raw)
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "unparsed", "text": raw.decode(errors="replace")}
            async with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        log.close()
        async with self._changed:
            self.lines.append({"event": "exited"})
            self._changed.notify_all()

    def count(self, event: str) -> int:
        return sum(1 for line in self.lines if line.get("event") == event)

    def steady(self) -> bool:
        """In its last three intervals every poll was answered and no lease lapsed
        (first dials and handovers are over)."""
        marks = [i for i, line in enumerate(self.lines) if line.get("event") == "poll_summary"][-4:]
        if len(marks) < 4:
            return False
        recent = self.lines[marks[0] + 1 : marks[-1] + 1]
        outcomes = {o for line in recent if line.get("event") == "poll_summary" for c in line["tenants"].values() for o in c}
        trouble = {"lease_expired", "lease_lost", "cycle_timeout", "cluster_unreachable"}
        return outcomes == {"ok"} and not any(line.get("event") in trouble for line in recent)

    def members(self) -> list[str] | None:
        """The members of the last assignment it logged."""
        for line in reversed(self.lines):
            if line.get("event") == "cluster_assignment":
                return list(line["members"])
        return None


class Cluster:
    def __init__(
        self,
        tmp: Path,
        fast: Path,
        nats: dict[str, Any],
        agents: dict[str, dict[str, Any]],
        certs: Path,
        interval: float = INTERVAL,
    ) -> None:
        """`nats`: the cluster section's connection keys (nats, and creds/tls for a secured layout)."""
        self.tmp, self.fast, self.nats, self.agents, self.certs = tmp, fast, nats, agents, certs
        self.interval = interval
        self.replicas: dict[str, Replica] = {}
        self.changed = asyncio.Condition()
        self._read_to: dict[Path, int] = {}
        self._polls: dict[str, list[tuple[int, str, float]]] = defaultdict(list)

    async def start(self, name: str, *, cluster: dict[str, Any] | None = None, shard: dict[str, int] | None = None) -> Replica:
        data = self.fast / f"data-{name}"
        config = self.tmp / f"{name}.json"
        doc: dict[str, Any] = {
            "poller_id": name,
            "poll_interval": f"{self.interval:g}s",
            "call_timeout": f"{0.4 * self.interval:g}s",
            "certs_dir": str(self.certs),
            "sink": {"type": "file", "dir": str(data)},
            "log_format": "json",
            "agents": self.agents,
        }
        if shard is None:
            doc["cluster"] = {"mode": "dynamic", **self.nats, "bucket": "cluster-test", **(cluster or {})}
        else:
            doc["shard"] = shard
        config.write_text(json.dumps(doc))
        proc = await spawn_cli(
            "run",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        replica = self.replicas[name] = Replica(name, proc, data, self.tmp / f"{name}.log", self.changed)
        return replica

    async def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
        try:
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(predicate)
        except TimeoutError:
            tails = {n: [l.get("event") for l in r.lines[-8:]] for n, r in self.replicas.items()}
            raise AssertionError(f"timed out waiting for {what}; last log events: {tails}") from None

    async def agree_on(self, names: list[str]) -> None:
        """Every named replica's last assignment is over exactly these members."""
        await self.wait(f"members {names}", lambda: all(self.replicas[n].members() == sorted(names) for n in names), timeout=60)

    async def settle(self, names: list[str]) -> None:
        """The named replicas agree on the members and have polled two intervals without trouble."""
        await self.agree_on(names)
        await self.wait(f"{names} steady", lambda: all(self.replicas[n].steady() for n in names), timeout=90)
        await self.agree_on(names)

    async def intervals(self, n: int, by: str) -> None:
        """Wait for n more per-interval summary lines of one replica."""
        target = self.replicas[by].count("poll_summary") + n
        await self.wait(f"{n} intervals of {by}", lambda: self.replicas[by].count("poll_summary") >= target, timeout=30 + 5 * n)

    def polls(self) -> dict[str, list[tuple[int, str, float]]]:
        """agent -> [(slot, poller_id, polled_at)] from every replica's result files.

        Each call reads only what was appended since the last one. Call it in a
        thread: while the event loop is busy, nothing reads the replicas' log
        pipes, and a replica blocked on a full pipe stops dead.
        """
        for replica in self.replicas.values():
            for tenant in TENANTS:
                path = replica.data / tenant / "results.jsonl"
                if not path.exists():
                    continue
                with path.open("rb") as handle:
                    handle.seek(self._read_to.get(path, 0))
                    for raw in handle:
                        if not raw.endswith(b"\n"):
                            break  # a line still being written (or cut short by kill -9)
                        self._read_to[path] = self._read_to.get(path, 0) + len(raw)
                        doc = json.loads(raw)
                        slot = slot_at(doc["agent"], doc["polled_at"], self.interval).index
                        self._polls[doc["agent"]].append((slot, doc["poller_id"], doc["polled_at"]))
        return {agent: list(seen) for agent, seen in self._polls.items()}

    async def stop_all(self) -> None:
        for replica in self.replicas.values():
            if replica.proc.returncode is None:
                replica.proc.send_signal(signal.SIGTERM)
        for replica in self.replicas.values():
            try:
                async with asyncio.timeout(20):
                    await replica.proc.wait()
            except TimeoutError:
                replica.proc.kill()
                await replica.proc.wait()
            await replica._reader


async def serve_agents(tmp: Path, pki: ForgePki, n: int) -> tuple[dict[str, dict[str, Any]], list[asyncio.subprocess.Process]]:
    """n agents (alternating tenants) on 30 ports per tenant, one agents_server process per tenant."""
    procs, ports = [], {}
    for tenant in TENANTS:
        files = []
        for c in range(3):
            cert = pki.agent(tenant, f"agent-{c:03d}")
            chain, key = tmp / f"{tenant}-{c}-chain.pem", tmp / f"{tenant}-{c}-key.pem"
            chain.write_bytes(cert.chain_pem)
            key.write_bytes(cert.key_pem)
            key.chmod(0o600)
            files.append({"chain": str(chain), "key": str(key)})
        spec = tmp / f"agents-{tenant}.json"
        spec.write_text(json.dumps({"client_ca": str(pki.directory / "root.pem"), "agents": [files[p % 3] for p in range(30)]}))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.agents_server", str(spec), stdout=asyncio.subprocess.PIPE, cwd=REPO
        )
        procs.append(proc)
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            ports[tenant] = json.loads(await proc.stdout.readline())["ports"]
    agents = {
        f"edge-{i:03d}": {
            "address": f"127.0.0.1:{ports[TENANTS[i % 2]][(i // 2) % 30]}",
            "tenant": TENANTS[i % 2],
            "checks": [{"service_type": "process", "service_name": "p"}],
        }
        for i in range(n)
    }
    return agents, procs


@pytest.fixture
def fast_dir(tmp_path: Path):
    """Where the replicas' file sinks and the JetStream store go: memory (tmpfs) when
    the machine has it. The file sink fsyncs after every agent's cycle; 300 fsyncs a
    second from four replicas on one shared disk stall nats-server's own writes on
    the file system's journal, which is the disk's limit, not the protocol's."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="cluster-test-", dir=shm))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def replicas_over(tmp_path: Path, fast_dir: Path, pki: ForgePki, nats: dict[str, Any]):
    """make(n) -> Cluster with n mock agents, its replicas using `nats`; every process stopped at the end."""
    procs: list[asyncio.subprocess.Process] = []
    cluster: Cluster | None = None

    async def make(n: int, interval: float = INTERVAL) -> Cluster:
        nonlocal cluster
        agents, started = await serve_agents(tmp_path, pki, n)
        procs.extend(started)
        cluster = Cluster(tmp_path, fast_dir, nats, agents, pki.directory, interval)
        return cluster

    try:
        yield make
    finally:
        if cluster is not None:
            await cluster.stop_all()
        for proc in procs:
            proc.terminate()
            await proc.wait()


@pytest.fixture
async def fleet(tmp_path: Path, fast_dir: Path):
    """(make, nats server) with mock agents running; every process is stopped after the test."""
    pki = ForgePki.create(tmp_path / "certs", tenants=TENANTS)
    nats_server = NatsServer(store_dir=fast_dir / "js").start()
    try:
        async with replicas_over(tmp_path, fast_dir, pki, {"nats": nats_server.url}) as make:
            yield make, nats_server
    finally:
        nats_server.stop()


def doubles(polls: dict[str, list[tuple[int, str, float]]], since: float) -> list[tuple[str, int, list[str]]]:
    """(agent, slot, pollers) of every slot after `since` in which an agent was polled more than once."""
    found = []
    for agent, seen in polls.items():
        by_slot: dict[int, list[str]] = defaultdict(list)
        for slot, poller, at in seen:
            if at < since:
                continue
            by_slot[slot].append(poller)
        found += [(agent, slot, pollers) for slot, pollers in by_slot.items() if len(pollers) > 1]
    return found


def owners_between(polls: dict[str, list[tuple[int, str, float]]], start: float, end: float) -> dict[str, Counter[str]]:
    return {agent: Counter(p for _, p, at in seen if start <= at < end) for agent, seen in polls.items()}


def assert_each_slot_once(
    polls: dict[str, list[tuple[int, str, float]]], agents: list[str], start: float, end: float, interval: float = INTERVAL
) -> None:
    """Every agent polled exactly once in every slot lying wholly inside [start, end)."""
    problems = []
    for agent in agents:
        first = slot_at(agent, start, interval).index + 1
        last = slot_at(agent, end, interval).index - 1
        count = Counter(slot for slot, _, _ in polls.get(agent, []))
        problems += [(agent, s, count[s]) for s in range(first, last + 1) if count[s] != 1]
    assert not problems, f"{len(problems)} (agent, slot, polls) not polled exactly once, e.g. {problems[:10]}"


async def test_three_replicas_share_300_agents_then_a_fourth_joins_then_one_is_killed(fleet) -> None:
    make, _ = fleet
    # A 2 s interval: 300 agents a second polled with a lease renewal each fill most of
    # two cores, and at 1 s any other load (seen on CI) delays event loops by more
    # than the takeover's slack (0.15 interval), missing slots that the design keeps.
    interval = 2.0
    cluster = await make(300, interval)
    agents = sorted(cluster.agents)
    names = ["poller-a", "poller-b", "poller-c"]
    for name in names:
        await cluster.start(name)
    await cluster.settle(names)  # first dials done, handovers of the start over
    # From here on no agent is ever polled twice in one interval. (Before, four processes
    # start and dial 300 agents on two cores: an event loop seconds late can end a poll
    # after its slot, the limit of any lease without fencing; docs/deployment.md.)
    settled = time.time()

    # Three replicas: each agent polled by exactly one replica in each interval.
    start = time.time()
    await cluster.intervals(4, by="poller-a")
    end = time.time()
    polls = await asyncio.to_thread(cluster.polls)  # the pipes of the replicas keep draining
    assert_each_slot_once(polls, agents, start, end, interval)
    before = {agent: owners.most_common(1)[0][0] for agent, owners in owners_between(polls, start, end).items()}
    assert set(Counter(before.values())) == set(names)

    # A fourth replica joins: about 1/4 of the agents move to it, each replica near a fair share.
    await cluster.start("poller-d")
    names.append("poller-d")
    await cluster.settle(names)
    start = time.time()
    await cluster.intervals(4, by="poller-a")
    end = time.time()
    polls = await asyncio.to_thread(cluster.polls)  # the pipes of the replicas keep draining
    assert_each_slot_once(polls, agents, start, end, interval)
    after = {agent: owners.most_common(1)[0][0] for agent, owners in owners_between(polls, start, end).items()}
    shares = Counter(after.values())
    fair = len(agents) / 4
    assert all(abs(shares[n] - fair) <= 0.15 * fair for n in names), shares
    moved = sum(1 for agent in agents if before[agent] != after[agent])
    assert moved <= 0.3 * len(agents), f"{moved} agents moved when one replica joined four"

    # kill -9 one replica: its agents are polled again within 2 intervals, never twice in one.
    victim = cluster.replicas["poller-b"]
    orphans = [agent for agent in agents if after[agent] == "poller-b"]
    killed_at = time.time()
    victim.proc.send_signal(signal.SIGKILL)
    await victim.proc.wait()
    survivors = ["poller-a", "poller-c", "poller-d"]
    await cluster.agree_on(survivors)
    await cluster.intervals(4, by="poller-a")
    end = time.time()
    polls = await asyncio.to_thread(cluster.polls)  # the pipes of the replicas keep draining
    late = []
    for agent in orphans:
        kill_slot = slot_at(agent, killed_at, interval).index
        taken = [slot for slot, poller, at in polls[agent] if poller != "poller-b" and at >= killed_at]
        if not taken or min(taken) > kill_slot + 2:
            late.append((agent, kill_slot, min(taken, default=None)))
    assert not late, f"{len(late)} of {len(orphans)} orphans not polled within 2 intervals, e.g. {late[:5]}"
    assert_each_slot_once(polls, agents, killed_at + 3 * interval, end, interval)

    await cluster.stop_all()
    polls = await asyncio.to_thread(cluster.polls)  # the pipes of the replicas keep draining
    twice = doubles(polls, settled)
    assert not twice, f"{len(twice)} slots with an agent polled twice, e.g. {twice[:10]}"


async def test_a_replica_restricted_to_one_tenant_polls_only_that_tenant(fleet) -> None:
    make, _ = fleet
    cluster = await make(40)
    agents = sorted(cluster.agents)
    await cluster.start("poller-acme", cluster={"tenants": ["acme-corp"]})
    await cluster.start("poller-any")
    names = ["poller-acme", "poller-any"]
    await cluster.settle(names)
    start = time.time()
    await cluster.intervals(3, by="poller-any")
    end = time.time()
    polls = await asyncio.to_thread(cluster.polls)  # the pipes of the replicas keep draining
    assert_each_slot_once(polls, agents, start, end)
    by_poller: dict[str, set[str]] = defaultdict(set)
    for agent, seen in polls.items():
        for _, poller, at in seen:
            if start <= at < end:
                by_poller[poller].add(cluster.agents[agent]["tenant"])
    assert by_poller["poller-acme"] == {"acme-corp"}  # it takes a share of acme-corp, and nothing else
    assert "xyz-inc" in by_poller["poller-any"]


async def test_static_sharding_two_processes_cover_every_agent_once(fleet) -> None:
    make, _ = fleet
    cluster = await make(40)
    procs = []
    for index in range(2):
        config = cluster.tmp / f"shard-{index}.json"
        data = cluster.tmp / f"data-shard-{index}"
        config.write_text(
            json.dumps(
                {
                    "poller_id": f"shard-{index}",
                    "call_timeout": "2s",
                    "certs_dir": str(cluster.certs),
                    "sink": {"type": "file", "dir": str(data)},
                    "log_format": "json",
                    "shard": {"index": index, "count": 2},
                    "agents": cluster.agents,
                }
            )
        )
        procs.append(await spawn_cli("run", "--config", str(config), "--once", stderr=asyncio.subprocess.PIPE, cwd=REPO))
    polled: dict[str, list[str]] = defaultdict(list)
    for index, proc in enumerate(procs):
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()[-2000:]
        for tenant in TENANTS:
            for raw in (cluster.tmp / f"data-shard-{index}" / tenant / "results.jsonl").read_text().splitlines():
                doc = json.loads(raw)
                assert doc["available"], doc
                polled[doc["agent"]].append(doc["poller_id"])
    assert sorted(polled) == sorted(cluster.agents)  # every agent covered ...
    assert all(len(pollers) == 1 for pollers in polled.values())  # ... by exactly one shard
    assert {p for pollers in polled.values() for p in pollers} == {"shard-0", "shard-1"}


@pytest.fixture
async def nats_cluster_fleet(tmp_path: Path, fast_dir: Path):
    """(make, NatsCluster): replicas on a 3-server JetStream cluster (TLS, NKeys), mock agents running."""
    from poller.nats.accounts import client_target

    pki = ForgePki.create(tmp_path / "certs", tenants=TENANTS)
    servers = NatsCluster(fast_dir / "nats", tenants=TENANTS, certs=pki.directory, cluster_bucket="cluster-test").start()
    poller = client_target(servers.directory, None, servers.urls)
    assert poller.tls is not None
    nats = {
        "nats": servers.urls,
        "creds": str(poller.creds),
        "tls": {"ca_file": str(poller.tls.ca_file), "cert_file": str(poller.tls.cert_file), "key_file": str(poller.tls.key_file)},
        "replicas": 3,
    }
    try:
        async with replicas_over(tmp_path, fast_dir, pki, nats) as make:
            yield make, servers
    finally:
        servers.stop()


async def bucket_leader(servers: NatsCluster) -> str:
    from poller.nats.accounts import client_target
    from poller.nats.connect import connect

    nc = await connect(client_target(servers.directory, None, servers.urls), name="test")
    try:
        info = await nc.jetstream(timeout=10).stream_info("KV_cluster-test")
    finally:
        await nc.close()
    assert info.config.num_replicas == 3 and info.cluster is not None and info.cluster.leader
    return info.cluster.leader


async def test_kill_9_of_the_bucket_leader_never_polls_an_agent_twice_in_a_slot(nats_cluster_fleet) -> None:
    """Three replicas on a 3-server NATS cluster, bucket R3. kill -9 of the bucket's leader:
    no agent is polled twice in a slot, no live replica is counted dead, polling resumes
    for every agent with two servers of three, and the bucket is still R3."""
    make, servers = nats_cluster_fleet
    cluster = await make(60)
    agents = sorted(cluster.agents)
    names = ["poller-a", "poller-b", "poller-c"]
    for name in names:
        await cluster.start(name)
    await cluster.settle(names)
    settled = time.time()
    leader = await bucket_leader(servers)
    seen_before = {name: len(replica.lines) for name, replica in cluster.replicas.items()}
    servers.server(leader).stop(kill=True)
    killed_at = time.time()

    def everyone_polled_again() -> bool:
        return all(any(at > killed_at + 10 * INTERVAL for _, _, at in seen) for seen in cluster.polls().values())

    await cluster.intervals(12, by="poller-a")  # the election (about 5 s) and its aftermath
    await cluster.wait("polling resumed", lambda: len(cluster.polls()) == len(agents) and everyone_polled_again(), timeout=90)
    assert await bucket_leader(servers) != leader
    # No false death: every assignment a replica made after the kill was over all three.
    for name, replica in cluster.replicas.items():
        after = [line["members"] for line in replica.lines[seen_before[name] :] if line.get("event") == "cluster_assignment"]
        assert all(sorted(m) == names for m in after), (name, after)
    unreachable = [
        sum(1 for line in r.lines[seen_before[n] :] if line.get("event") == "cluster_unreachable")
        for n, r in cluster.replicas.items()
    ]
    assert all(n <= 1 for n in unreachable), unreachable  # one line per outage, not one per failed call
    await cluster.stop_all()
    polls = await asyncio.to_thread(cluster.polls)
    twice = doubles(polls, settled)
    assert not twice, f"{len(twice)} slots with an agent polled twice, e.g. {twice[:10]}"
