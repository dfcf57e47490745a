"""PollerDaemon: config + trust store + scheduler + handlers + metrics, with signals.

Results go through a HandlerRegistry (poller.delivery): the sink is a handler
registered for every channel with the platform policy and the poller's own
(local) platform identity, so the same deny-by-default checks apply to it as
to a library user's handlers. At the end of every agent's cycle the registry
flushes the sinks (the file sink fsyncs).

SIGTERM / SIGINT: stop scheduling, let in-flight calls finish within a bound,
flush the sink, return 0. SIGHUP: reload the config and the trust store; a bad
new config (or certs directory) is refused and the running one keeps going.

>>> daemon = PollerDaemon(load_config("poller.json"))  # doctest: +SKIP
>>> await daemon.run()  # until SIGTERM  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from poller._version import __version__
from poller.cluster.node import ClusterNode
from poller.config import AgentConfig, ConfigError, ConfigIssue, PollerConfig, check_files, load_config
from poller.config.overrides import Overrides
from poller.daemon.health import CheckResult, HealthChecks, sink_check, trust_check
from poller.daemon.http import OperatorServer
from poller.daemon.memory import settle_after_first_wave
from poller.daemon.pushes import PushSide
from poller.daemon.scheduler import Scheduler, name_changes
from poller.daemon.watch import certs_watcher, reload_trust, report_trust_state
from poller.delivery.file_sink import FileSink
from poller.delivery.registry import DEFAULT_HANDLER_TIMEOUT, Delivery, HandlerRegistry
from poller.delivery.result import PollResult
from poller.delivery.sink import Sink
from poller.identity import certinfo
from poller.identity.context import format_time
from poller.logs import get_logger
from poller.metrics import PollerMetrics, add_process_metrics
from poller.policy import platform_admin
from poller.trust.platform import local_platform_identity
from poller.trust.store import TrustStore

if TYPE_CHECKING:
    from poller.nats.sink import JetStreamSink

log = get_logger("poller.daemon")


def make_sink(settings: PollerConfig, metrics: PollerMetrics | None = None) -> Sink:
    """The configured sink (its metrics, if any, in `metrics`' registry); a NATS
    sink raises CredentialsError for an unusable creds file."""
    if settings.sink.type == "file":
        assert settings.sink.dir is not None
        return FileSink(settings.sink.dir)
    if settings.sink.type == "nats":
        from poller.nats.sink import sink_from_config  # nats-py and sqlite3 load only when used

        return sink_from_config(settings, metrics.registry if metrics is not None else None)
    raise ConfigError([ConfigIssue("sink.type", f"{settings.sink.type!r} is not available in this version")])


class PollerDaemon:
    def __init__(
        self,
        settings: PollerConfig,
        *,
        sink: Sink | None = None,
        trust: TrustStore | None = None,
        registry: HandlerRegistry | None = None,
        metrics: PollerMetrics | None = None,
        overrides: Overrides | None = None,
    ) -> None:
        self.settings = settings
        # Flags and environment (poller.config.overrides) win over the file at every reload too.
        self.overrides = overrides
        self.trust = trust or TrustStore(settings.certs_dir, require_crl=settings.require_crl, crl_state=settings.crl_state)
        # The daemon's own registry, served on metrics_listen; never the process-global one.
        if metrics is None:
            metrics = PollerMetrics()
            add_process_metrics(metrics.registry, version=__version__)
        self.metrics = metrics
        self.sink = sink or make_sink(settings, self.metrics)
        self._agents = dict(settings.agents_by_name)
        # A handler (the sink included) never holds a cycle longer than this. Not
        # tied to cycle_timeout: a short poll interval must not make a sink that
        # is merely slow for a moment (an fsync under load) count as failed.
        self.registry = registry or HandlerRegistry(
            timeout=DEFAULT_HANDLER_TIMEOUT, strict_labels=self._strict_labels, metrics=self.metrics
        )
        self._sink_name = f"{settings.sink.type}-sink" if sink is None else type(sink).__name__
        self.registry.register(
            ">",
            self.sink,
            policy=platform_admin(),
            platform=local_platform_identity(self.trust.client),
            name=self._sink_name,
        )
        self._prime_metrics()
        # Dynamic cluster mode: the node decides which agents this replica polls, slot by slot.
        self.cluster = ClusterNode(settings, metrics=self.metrics) if settings.cluster is not None else None
        self.scheduler = Scheduler(
            settings, self.trust, self.publish, self.metrics, cycle_done=self.registry.flush, gate=self.cluster
        )
        self._stop = asyncio.Event()
        self._reloads: asyncio.Queue[None] = asyncio.Queue()
        self.shutdown_grace = min(5.0, settings.call_timeout + 1.0)
        self._http: OperatorServer | None = None
        self.metrics_port: int | None = None
        self.gateway_port: int | None = None
        self.started_at: float | None = None
        self.started = asyncio.Event()  # set once run() serves metrics_listen and polls
        # /healthz and /readyz: named checks; a part the daemon starts (the gateway) adds its own.
        self.health = HealthChecks()
        self.health.add_live("loop", self._loop_alive)
        self.health.add_ready("trust", trust_check(self.trust, lambda: self.settings.tenants))
        given = CheckResult(True, f"{type(sink).__name__} (given by the caller)")
        self.health.add_ready("sink", sink_check(self.sink, settings) if sink is None else lambda: given)
        # Push agents dial in (poller.gateway): served when the config has a gateway section.
        self.pushes: PushSide | None = None
        if settings.gateway is not None:
            self.pushes = PushSide(
                settings,
                self.trust,
                self.registry,
                self.scheduler.status,
                self.scheduler.budget,
                self.metrics,
                self.scheduler.note_outcome,
                cluster=self.cluster,
            )

    async def publish(self, result: PollResult) -> Delivery:
        return await self.registry.deliver(result)

    def _strict_labels(self, result: PollResult) -> bool:
        agent = self._agents.get(result.agent)
        return True if agent is None else agent.strict_labels  # an unknown agent gets the strict rule

    def _loop_alive(self) -> CheckResult:
        # Answered on the daemon's loop: that it runs at all is the proof.
        if self._stop.is_set():
            return CheckResult(False, "stopping")
        uptime = 0.0 if self.started_at is None else time.time() - self.started_at
        return CheckResult(True, f"event loop answering, up {uptime:.0f}s")

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reloads.put_nowait(None)

    async def run(self, *, install_signals: bool = True) -> int:
        loop = asyncio.get_running_loop()
        if install_signals:
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.started_at = time.time()
        await self._start_http()
        self._log_config_warnings()
        self._record_own_certificate()
        if self.cluster is not None:
            self.cluster.start()
        try:
            await self._start_gateway()
        except BaseException:
            await self.shutdown()
            raise
        self.scheduler.start()
        self.started.set()
        log.info(
            "poller_started",
            poller_id=self.settings.poller_id,
            agents=len(self.settings.agents),
            tenants=list(self.settings.tenants),
            poll_interval=self.settings.poll_interval,
            certs_dir=str(self.settings.certs_dir),
        )
        helpers = [loop.create_task(self._reload_loop()), loop.create_task(self._summary_loop())]
        if self.pushes is not None:
            helpers.append(loop.create_task(self.pushes.watch()))
        report_trust_state(self.trust, self.trust.snapshot.warnings, metrics=self.metrics, refused=self.trust.snapshot.refused)
        served = (self.settings.gateway.cert, self.settings.gateway.key) if self.settings.gateway is not None else ()
        if (watcher := certs_watcher(self.trust, on_change=self._certs_changed, extra=served)) is not None:
            helpers.append(loop.create_task(watcher.run()))
        try:
            await self._stop.wait()
        finally:
            for task in helpers:
                task.cancel()
            await self.shutdown()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
        return 0

    async def run_once(self) -> list[PollResult]:
        """One cycle of every agent, then shut down (for `run --once`)."""
        self._log_config_warnings()
        report_trust_state(self.trust, self.trust.snapshot.warnings, metrics=self.metrics, refused=self.trust.snapshot.refused)
        self._record_own_certificate()
        self.scheduler.start(loops=False)
        if self.pushes is not None:
            self.pushes.collected = []  # what run --once returns of the pushes
        try:
            await self._start_gateway()
            if self.pushes is None:
                return await self.scheduler.run_once()
            # Pushes come in while the polled agents are polled; each push agent gets one interval.
            polled, pushed = await asyncio.gather(self.scheduler.run_once(), self.pushes.wait_once())
            return [*polled, *pushed]
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        if self.pushes is not None:  # first: no push may arrive after the sink is closed
            await self.pushes.stop(self.shutdown_grace)
            self.health.remove("gateway")
        await self.scheduler.stop(self.shutdown_grace)
        if self.cluster is not None:  # after the last poll: hand the leases over at once
            await self.cluster.stop(self.shutdown_grace)
        await self.registry.close()
        if self._http is not None:
            await self._http.stop()
            self._http = None
        log.info("poller_stopped", poller_id=self.settings.poller_id, cycles=self.scheduler.cycles_completed)

    async def _reload_loop(self) -> None:
        while True:
            await self._reloads.get()
            await self.reload()

    async def _summary_loop(self) -> None:
        """One line per interval counting agents per tenant by outcome, e.g.
        tenants={"acme-corp": {"ok": 2, "refused": 1}}. Problems stand out without a dashboard."""
        frozen = False
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            if not frozen:
                # After the first wave of dials the long-lived objects (channels,
                # certificates, workers) are made: out of the GC's sight, and the
                # wave's freed heap back to the OS (poller.daemon.memory).
                settle_after_first_wave()
                frozen = True
            tally = self.scheduler.take_tally()
            if tally:
                log.info("poll_summary", tenants=tally)

    async def reload(self) -> bool:
        """Re-read config and trust store; keep the running state on any error."""
        # Trust first: a typo in the config must not hold back a revocation.
        trusted = reload_trust(self.trust, why="reload", metrics=self.metrics) is not None
        source = self.settings.source
        if source is None:
            log.warning("reload_skipped", why="configuration was not loaded from a file")
            return False
        try:
            new = load_config(source)
            if self.overrides is not None:
                new = self.overrides.apply(new)
        except ConfigError as exc:
            log.error("reload_refused", config=str(source), problems=[str(i) for i in exc.issues])
            return False
        if not trusted:
            return False
        self.trust.require_crl = new.require_crl
        if _keep(new, self.settings) != new:
            log.warning(
                "reload_partial",
                why="sink, certs_dir, metrics_listen, cluster and gateway changes need a restart; kept the running ones",
            )
            new = _keep(new, self.settings)
        pushed_before = {a.name: a for a in self.settings.push_agents}
        self.settings = new
        self._agents = dict(new.agents_by_name)
        self._prime_metrics()
        if self.cluster is not None:
            self.cluster.set_agents(new.dial_agents)
        changes = await self.scheduler.apply(new)
        if self.pushes is not None:
            self.pushes.apply(new)
        for kind, names in name_changes(pushed_before, {a.name: a for a in new.push_agents}).items():
            changes[kind].extend(names)  # the push entries, beside the polled agents
        log.info("reloaded", config=str(source), **changes)
        self._log_config_warnings()
        return True

    async def _certs_changed(self) -> None:
        reload_trust(self.trust, why="certs_changed", metrics=self.metrics)

    def _log_config_warnings(self) -> None:
        """What `config check` would warn about, once per start and per reload."""
        for issue in (*self.settings.warnings, *check_files(self.settings)):
            log.warning("config_warning", path=issue.path, message=issue.message)

    async def _start_http(self) -> None:
        """/metrics, /status and the targets page on metrics_listen (off when unset)."""
        address = self.settings.metrics_address
        if address is None:
            return
        scheduler = self.scheduler
        self._http = OperatorServer(
            address,
            statuses=lambda tenant: scheduler.status.snapshot(_shown(scheduler.settings), tenant),
            poller_id=self.settings.poller_id,
            refresh_seconds=min(30.0, max(5.0, self.settings.poll_interval)),
            registry=self.metrics.registry,
            health=self.health,
            about=self.about,
        )
        try:
            await self._http.start()
        except OSError as exc:  # e.g. the port is taken: an unusable configuration, said in one line
            self._http = None
            host, port = address
            raise ConfigError(
                [ConfigIssue("metrics_listen", f"cannot listen on {host or '0.0.0.0'}:{port}: {exc.strerror or exc}")]
            ) from None
        self.metrics_port = self._http.port
        host = address[0] or "0.0.0.0"
        log.info(
            "metrics_listening", address=f"{host}:{self.metrics_port}", paths=["/metrics", "/status", "/", "/healthz", "/readyz"]
        )
        if not _is_loopback(address[0]):
            log.warning("status_pages_exposed", address=host, why="/status and / list every tenant's agents")

    async def _start_gateway(self) -> None:
        """Serve push agents (the config's gateway section); readiness says whether it listens."""
        if self.pushes is None:
            return
        port = await self.pushes.start()
        self.gateway_port = port
        self.health.add_ready("gateway", lambda: CheckResult(True, f"serving push agents on port {port}"))

    def about(self) -> dict[str, Any]:
        """How this poller is doing, for the targets page: version, uptime, NATS
        connected and outbox depth (NATS sink; None otherwise), its own client
        certificate, and the gateway's readiness (None when none is configured)."""
        connected: bool | None = None
        pending: int | None = None
        if (nats := self._nats_sink()) is not None:
            connected = nats.connected
            pending = nats.outbox.rows if nats.outbox is not None else 0
        cert = self.trust.client.cert
        not_after = certinfo.not_after(cert)
        gateway = self.health.check("gateway")
        return {
            "version": __version__,
            "uptime_seconds": None if self.started_at is None else time.time() - self.started_at,
            "nats_connected": connected,
            "outbox_pending": pending,
            "certificate": {
                "cn": certinfo.subject_cn(cert) or "",
                "not_after": format_time(not_after),
                "days_left": (not_after - certinfo.utcnow()).total_seconds() / 86400,
            },
            "gateway": None if gateway is None else {"ok": gateway.ok, "detail": gateway.detail},
        }

    @property
    def undelivered(self) -> int:
        """Results not durably handed over so far: the sink's failed or timed-out
        deliveries, flushes and closes, plus what a full NATS outbox dropped.
        Durable means committed to the outbox, acknowledged by JetStream when
        there is no outbox, or written and flushed by the file sink.

        >>> daemon.undelivered  # doctest: +SKIP
        0
        """
        nats = self._nats_sink()
        return self.registry.failures[self._sink_name] + (nats.dropped if nats is not None else 0)

    def _prime_metrics(self) -> None:
        """Every configured tenant's counters at 0 (dashboards show 0, not "No data"), the
        NATS sink's too; at start and after each reload (a reload may add tenants)."""
        self.metrics.prime(self.settings.tenants, handlers=[self._sink_name], gateway=self.settings.gateway is not None)
        if (nats := self._nats_sink()) is not None:
            nats.metrics.prime(self.settings.tenants)

    def _nats_sink(self) -> JetStreamSink | None:
        """The sink when it is the NATS sink this daemon made (None for a file or a caller's sink)."""
        if self.settings.sink.type != "nats":
            return None
        from poller.nats.sink import JetStreamSink  # loaded already when the sink is one

        return self.sink if isinstance(self.sink, JetStreamSink) else None

    def _record_own_certificate(self) -> None:
        cert = self.trust.client.cert
        not_after = certinfo.not_after(cert)
        days = (not_after - certinfo.utcnow()).total_seconds() / 86400
        self.metrics.cert_expiry.labels(kind="poller", tenant="", name=certinfo.subject_cn(cert) or "").set(not_after.timestamp())
        if days < 30:
            log.warning("poller_certificate_expiring", days_left=int(days))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _shown(settings: PollerConfig) -> tuple[AgentConfig, ...]:
    """The agents on the status board: those this replica polls, and the push agents."""
    return (*settings.polled_agents, *settings.push_agents)


def _keep(new: PollerConfig, old: PollerConfig) -> PollerConfig:
    return replace(
        new, sink=old.sink, certs_dir=old.certs_dir, metrics_listen=old.metrics_listen, cluster=old.cluster, gateway=old.gateway
    )
