"""UnreportedChecks on an injected clock: the edges the daemon test does not reach."""

from __future__ import annotations

from dataclasses import replace

from poller.config import AgentConfig, CheckConfig
from poller.daemon.unreported import UnreportedChecks

SSH = CheckConfig(service_type="port", service_name="ssh", port=22)
DB = CheckConfig(service_type="tcp", service_name="db", port=5432)  # runs, and is reported, as port
AGENT = AgentConfig(name="edge-1", address="", tenant="acme-corp", push=True, checks=(SSH, DB))


def missing(checks: UnreportedChecks, now: float, agent: AgentConfig = AGENT) -> list[str]:
    return [c.service_name for c in checks.missing(agent, window=lambda check: 15.0, now=now)]


def test_a_check_is_named_once_until_it_is_reported_again():
    checks = UnreportedChecks()
    checks.reported(AGENT, [("port", "ssh")], now=0.0)
    assert missing(checks, 10.0) == []
    assert [c.service_name for c in checks.newly_missing("edge-1", AGENT.checks[1:])] == ["db"]
    assert checks.newly_missing("edge-1", AGENT.checks[1:]) == []  # named once
    checks.restart("edge-1")  # a silence between: still named
    checks.reported(AGENT, [("port", "ssh")], now=20.0)
    assert checks.newly_missing("edge-1", AGENT.checks[1:]) == []
    checks.reported(AGENT, [("port", "db")], now=21.0)  # reported (as its checker's type): named again if missing
    assert [c.service_name for c in checks.newly_missing("edge-1", AGENT.checks[1:])] == ["db"]


def test_after_a_silence_or_a_reload_checks_are_waited_for_anew():
    checks = UnreportedChecks()
    checks.reported(AGENT, [("port", "ssh"), ("port", "db")], now=0.0)
    checks.restart("edge-1")
    assert missing(checks, 100.0) == []  # no push since it came back: nothing to judge by
    checks.reported(AGENT, [], now=100.0)
    assert missing(checks, 110.0) == [] and missing(checks, 116.0) == ["ssh", "db"]
    added = replace(AGENT, checks=(SSH, DB, CheckConfig(service_type="icmp", service_name="gw")))
    checks.reported(added, [("port", "ssh"), ("port", "db")], now=120.0)
    assert missing(checks, 130.0, added) == [] and missing(checks, 136.0, added) == ["ssh", "db", "gw"]


def test_invented_names_keep_nothing_and_an_unlisted_agent_is_forgotten():
    checks = UnreportedChecks()
    checks.reported(AGENT, [("port", f"invented-{i}") for i in range(1000)], now=0.0)
    assert missing(checks, 16.0) == ["ssh", "db"]
    checks.forget([])
    assert missing(checks, 100.0) == []
