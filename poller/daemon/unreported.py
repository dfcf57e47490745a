"""Configured checks that a pushing agent leaves out of its pushes.

A polled agent answers every configured check every cycle, or the cycle says
why not. A push agent runs what GetConfig gave it *if its release runs that
checker*: ServiceRadar's agent of cac9ec1af runs `port` checks, a later one
only `icmp` (docs/gateway.md), and neither says when it skips one. Such a
check would otherwise leave no row, no result and no line while its agent
pushes on. Here each configured check has the time it was last reported (or
since when it has been waited for); one unreported for more than 2 of its
intervals is named once (`push_check_not_reported`) and gets a `timeout`
result each interval, as the checks of a silent agent do.

Later agents report all their `icmp` checks in one results document named
`icmp_checks` (upstream pkg/agent/push_loop.go, pushICMPResults): a
`<type>_checks` report counts for every configured check of that type.

>>> from poller.config import AgentConfig, CheckConfig
>>> agent = AgentConfig(name="edge-1", address="", tenant="acme-corp", push=True, checks=(
...     CheckConfig(service_type="port", service_name="ssh", port=22), CheckConfig(service_type="icmp", service_name="gw")))
>>> checks = UnreportedChecks()
>>> checks.reported(agent, [("port", "ssh")], now=0.0)  # its first push: ssh, not gw
>>> checks.reported(agent, [("port", "ssh")], now=10.0)
>>> [c.service_name for c in checks.missing(agent, window=lambda check: 10.0, now=11.0)]
['gw']
>>> checks.reported(agent, [("port", "ssh"), ("icmp", "icmp_checks")], now=12.0)  # a later agent's icmp batch
>>> checks.missing(agent, window=lambda check: 10.0, now=13.0)
[]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from poller.config import AgentConfig, CheckConfig
from poller.gateway.checks import check_type_for

__all__ = ["BATCH_SUFFIX", "UnreportedChecks"]

#: A later agent's one results document for all its checks of a type: `icmp_checks`.
BATCH_SUFFIX = "_checks"


def _key(check: CheckConfig) -> tuple[str, str]:
    # The type the agent reports for a check is its checker's (tcp runs as port).
    return check_type_for(check.service_type), check.service_name


class UnreportedChecks:
    """Per push agent (by name): when each configured check was last reported."""

    def __init__(self) -> None:
        self._last: dict[str, dict[tuple[str, str], float]] = {}
        self._named: dict[str, set[tuple[str, str]]] = {}  # named unreported, until reported again
        self._due: dict[str, float] = {}  # when an agent's next timeout results are due

    def reported(self, agent: AgentConfig, reports: Iterable[tuple[str, str]], *, now: float) -> None:
        """An accepted push of `agent` carried these (service_type, service_name). Only its
        configured checks and type batches are kept: an agent's invented names grow nothing."""
        configured = {_key(check) for check in agent.checks}
        got = [key for key in reports if key in configured or key[1] == key[0] + BATCH_SUFFIX]
        last = self._last.setdefault(agent.name, {})
        for key in got:
            last[key] = now
        for key in configured:  # its first push here: every check is waited for from now
            last.setdefault(key, now)
        named = self._named.get(agent.name)
        if named and got:  # reported again (itself, or in its type's batch): named again if it goes missing
            batches = {key[0] for key in got if key[1] == key[0] + BATCH_SUFFIX}
            named.difference_update([key for key in named if key in got or key[0] in batches])

    def missing(self, agent: AgentConfig, *, window: Callable[[CheckConfig], float], now: float) -> list[CheckConfig]:
        """The configured checks of `agent` not reported for longer than `window(check)`;
        none before its first accepted push here. A check it has not been waited for
        yet (new, or new by a reload) is waited for from `now`."""
        last = self._last.get(agent.name)
        if last is None:
            return []
        return [check for check in agent.checks if now - self._seen(last, _key(check), now) > window(check)]

    def newly_missing(self, agent: str, missing: list[CheckConfig]) -> list[CheckConfig]:
        """Of `missing`, those not named yet (each is named once, until it is reported again)."""
        named = self._named.setdefault(agent, set())
        fresh = [check for check in missing if _key(check) not in named]
        named.update(_key(check) for check in fresh)
        return fresh

    def due(self, agent: str, *, now: float, interval: float) -> bool:
        """Whether the agent's unreported checks get their timeout results now (once an interval)."""
        if now < self._due.get(agent, 0.0):
            return False
        self._due[agent] = now + interval
        return True

    def restart(self, agent: str) -> None:
        """The agent is back from silence: its checks are waited for from its next push (an
        agent that reconnects sends its check results some time after its first push)."""
        self._last.pop(agent, None)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the agents no longer listed."""
        kept = set(keep)
        for records in (self._last, self._named, self._due):
            for name in [n for n in records if n not in kept]:
                del records[name]

    @staticmethod
    def _seen(last: dict[tuple[str, str], float], key: tuple[str, str], now: float) -> float:
        own = last.setdefault(key, now)
        return max(own, last.get((key[0], key[0] + BATCH_SUFFIX), own))
