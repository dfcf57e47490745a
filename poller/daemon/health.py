"""Liveness and readiness as named checks: what /healthz and /readyz answer.

The daemon registers its own checks (the loop for liveness; trust and sink
for readiness) and any part it starts adds its own under a name of its own
(the gateway: "gateway", listening). A check is a cheap callable run on the
event loop that returns a `CheckResult`; one that raises counts as failed,
with the exception named, so a broken check never reads as healthy.

>>> checks = HealthChecks()
>>> checks.add_ready("trust", lambda: CheckResult(True, "2 tenants"))
>>> checks.add_ready("sink", lambda: CheckResult(False, "NATS not connected; outbox not writable"))
>>> report = checks.ready()
>>> report["status"], report["reasons"]
('unavailable', ['sink: NATS not connected; outbox not writable'])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poller.config import PollerConfig
    from poller.trust.store import TrustStore

__all__ = ["Check", "CheckResult", "HealthChecks", "sink_check", "trust_check", "writable"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's answer: ok or not, and why, in words an operator reads."""

    ok: bool
    detail: str


Check = Callable[[], CheckResult]


class HealthChecks:
    """Two sets of named checks: liveness (/healthz) and readiness (/readyz).

    Adding a name again replaces its check (a reload re-registers); `remove`
    drops one (a part that stopped).
    """

    def __init__(self) -> None:
        self._live: dict[str, Check] = {}
        self._ready: dict[str, Check] = {}

    def add_live(self, name: str, check: Check) -> None:
        self._live[name] = check

    def add_ready(self, name: str, check: Check) -> None:
        self._ready[name] = check

    def remove(self, name: str) -> None:
        self._live.pop(name, None)
        self._ready.pop(name, None)

    def check(self, name: str) -> CheckResult | None:
        """One readiness check's answer now (None when no check has that name)."""
        check = self._ready.get(name)
        return None if check is None else _run(check)

    def live(self) -> dict[str, Any]:
        """The /healthz report: {"status": "ok"|"unavailable", "checks": {...}, "reasons": [...]}."""
        return _report(self._live)

    def ready(self) -> dict[str, Any]:
        """The /readyz report, in the same shape as live()."""
        return _report(self._ready)


def _run(check: Check) -> CheckResult:
    try:
        return check()
    except Exception as exc:  # a broken check must not read as healthy
        return CheckResult(False, f"the check raised {type(exc).__name__}: {str(exc)[:200]}")


def _report(checks: dict[str, Check]) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    for name, check in sorted(checks.items()):
        result = _run(check)
        results[name] = {"ok": result.ok, "detail": result.detail}
    reasons = [f"{name}: {r['detail']}" for name, r in results.items() if not r["ok"]]
    if not results:
        reasons = ["no checks registered"]
    return {"status": "unavailable" if reasons else "ok", "checks": results, "reasons": reasons}


def writable(path: Path) -> bool:
    """True when `path` can be written: the file (or directory) itself, or,
    when it does not exist yet, the nearest directory above it that does (a
    file in the way means it can never be made)."""
    path = Path(path)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            return False
        existing = existing.parent
    if existing != path and not existing.is_dir():
        return False
    return os.access(existing, os.W_OK)


def trust_check(trust: TrustStore, tenants: Callable[[], Iterable[str]]) -> Check:
    """Ready when the trust store holds a CA for every tenant `tenants()` names (the running config's)."""

    def check() -> CheckResult:
        loaded = set(trust.tenants)
        missing = sorted(set(tenants()) - loaded)
        if missing:
            return CheckResult(False, f"no tenant CA in certs_dir for {', '.join(missing)}")
        return CheckResult(True, f"{len(loaded)} tenant CAs loaded")

    return check


def sink_check(sink: object, settings: PollerConfig) -> Check:
    """Ready when results can be made durable: the NATS sink connected or its
    outbox writable; the file sink's directory writable."""
    if settings.sink.type == "nats":
        from poller.nats.sink import JetStreamSink  # loaded already: the daemon made this sink

        assert isinstance(sink, JetStreamSink)
        outbox = settings.sink.outbox

        def nats() -> CheckResult:
            if sink.connected:
                return CheckResult(True, "connected to NATS")
            if outbox is not None and writable(outbox):
                return CheckResult(True, f"NATS not connected; results wait in the outbox {outbox}")
            why = "no outbox configured" if outbox is None else f"outbox {outbox} not writable"
            return CheckResult(False, f"NATS not connected and {why}")

        return nats
    directory = settings.sink.dir
    assert directory is not None

    def files() -> CheckResult:
        if writable(directory):
            return CheckResult(True, f"result files under {directory}")
        return CheckResult(False, f"result directory {directory} not writable")

    return files
