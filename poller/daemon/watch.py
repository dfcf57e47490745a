"""Trust material reloads for the daemon: the certs-directory watcher, and
one reload routine shared by the watcher and SIGHUP.

The watcher polls: every WATCH_INTERVAL seconds (2 s) it stats the files
trust is read from (root.pem, platform/ca.pem, the poller's certificate and
key, tenants/*/ca.pem and crl.pem; the gateway's certificate and key, which
its server re-reads at each reload) and compares mtime, size and inode with
the previous scan. A change is acted on once the files hold still for one
short settle delay (so a file written in several steps is read whole), then
the trust store reloads exactly as on SIGHUP. Polling works on every file
system (also network and container mounts, where change notification does
not) and costs a few stat() calls per tenant every two seconds.

>>> watcher = CertsWatcher(trust.layout, [client_cert, client_key], on_change=reload)  # doctest: +SKIP
>>> task = asyncio.create_task(watcher.run())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import Gauge

from poller.logs import get_logger
from poller.metrics import PollerMetrics
from poller.trust.layout import CertsLayout
from poller.trust.store import ReloadReport, TrustStore, TrustStoreError

log = get_logger("poller.trust")

WATCH_INTERVAL = 2.0
SETTLE_DELAY = 0.25
MAX_SETTLES = 20  # a file rewritten without pause is read after 5 s anyway

Signature = frozenset[tuple[str, int, int, int]]


def watched_files(layout: CertsLayout, extra: Iterable[Path] = ()) -> Iterator[Path]:
    """Every file a TrustStore over this layout reads (present or not)."""
    yield layout.root_ca
    yield layout.platform_ca
    yield from extra
    try:
        tenants = sorted(layout.tenants_dir.iterdir())
    except OSError:
        return
    for entry in tenants:
        yield layout.tenant_ca(entry.name)
        yield layout.tenant_crl(entry.name)
        yield layout.tenant_binding(entry.name)


def scan(paths: Iterable[Path]) -> Signature:
    """(path, mtime_ns, size, inode) of each existing file; a removal or a
    replacement by rename changes it as much as an edit in place."""
    seen = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        seen.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return frozenset(seen)


class CertsWatcher:
    """Calls on_change() whenever the watched trust files change (see module doc)."""

    def __init__(
        self,
        layout: CertsLayout,
        extra: Iterable[Path],
        *,
        on_change: Callable[[], Awaitable[object]],
        interval: float | None = None,
        settle: float | None = None,
    ) -> None:
        self.layout = layout
        self.extra = tuple(extra)
        self.on_change = on_change
        self.interval = WATCH_INTERVAL if interval is None else interval
        self.settle = SETTLE_DELAY if settle is None else settle

    def signature(self) -> Signature:
        return scan(watched_files(self.layout, self.extra))

    async def run(self, baseline: Signature | None = None) -> None:
        """Poll until cancelled; baseline: the scan to compare the first poll with."""
        last = self.signature() if baseline is None else baseline
        while True:
            await asyncio.sleep(self.interval)
            current = self.signature()
            if current == last:
                continue
            for _ in range(MAX_SETTLES):  # wait for the writer to finish, but not forever
                await asyncio.sleep(self.settle)
                settled = self.signature()
                if settled == current:
                    break
                current = settled
            last = current
            log.info("certs_changed", certs_dir=str(self.layout.root))
            try:
                await self.on_change()
            except Exception:  # the watcher outlives any one reload
                log.exception("certs_reload_failed", certs_dir=str(self.layout.root))


def certs_watcher(
    trust: TrustStore, *, on_change: Callable[[], Awaitable[object]], extra: Iterable[Path] = ()
) -> CertsWatcher | None:
    """A watcher over the store's certs directory (None for a store made from PEM bytes).
    `extra`: more files whose change calls for a reload (the gateway's certificate and key,
    which the server re-reads at each reload)."""
    if trust.layout is None:
        return None
    return CertsWatcher(trust.layout, (*trust.client_files, *extra), on_change=on_change)


def reload_trust(trust: TrustStore, *, why: str, metrics: PollerMetrics) -> ReloadReport | None:
    """Reload trust material and log what happened: each refused file on its
    own error line (the material in force stays), the warnings, the changes.
    Live identities re-check themselves (TrustStore tells them)."""
    try:
        report = trust.reload()
    except TrustStoreError as exc:
        log.error("trust_reload_refused", why=why, certs_dir=str(trust.certs_dir), problems=exc.problems)
        return None
    for problem in report.problems:
        log.error("trust_material_refused", why=why, problem=problem)
    report_trust_state(trust, report.warnings, metrics=metrics, removed=report.removed)
    log.info(
        "trust_reloaded",
        why=why,
        added=list(report.added),
        removed=list(report.removed),
        changed=list(report.changed),
        client_changed=report.client_changed,
        refused=len(report.problems),
    )
    return report


def report_trust_state(
    trust: TrustStore,
    warnings: Iterable[str],
    *,
    metrics: PollerMetrics,
    removed: Iterable[str] = (),
    refused: Iterable[str] = (),
) -> None:
    """At start and after each reload: one warning per tenant without a CRL,
    the other trust warnings, and the poller_tenant_crl_loaded and CRL nextUpdate
    gauges. `refused`: at start, the CRLs refused while the remembered CRL in
    force stayed (a reload logs its own as trust_material_refused)."""
    for problem in refused:
        log.error("trust_material_refused", why="start", problem=problem)
    absent = {slug for slug, authority in trust.tenants.items() if not authority.crl_loaded}
    for slug in sorted(absent):
        log.warning(
            "tenant_crl_absent",
            tenant=slug,
            require_crl=trust.require_crl,
            detail="its agents are refused (crl_expired)" if trust.require_crl else "revocation is not checked for this tenant",
        )
    for warning in warnings:
        if not any(warning.startswith(f"tenant {slug}: no CRL") for slug in absent):
            log.warning("trust_warning", detail=warning)
    for slug, authority in trust.tenants.items():
        metrics.tenant_crl_loaded.labels(tenant=slug).set(1 if authority.crl_loaded else 0)
        next_update = authority.crl_next_update
        if next_update is not None:
            metrics.tenant_crl_next_update.labels(tenant=slug).set(next_update.timestamp())
        else:
            _forget(metrics.tenant_crl_next_update, slug)
    for slug in removed:
        _forget(metrics.tenant_crl_loaded, slug)
        _forget(metrics.tenant_crl_next_update, slug)


def _forget(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass
