"""The check mapping (poller.gateway.checks): what GetConfig hands a push agent,
read against ServiceRadar's push agent (cac9ec1af, pkg/agent/push_loop.go)."""

from __future__ import annotations

from poller.config import CheckConfig
from poller.gateway.checks import agent_checks


def test_a_process_check_without_details_looks_for_the_process_named_by_the_check():
    """The agent turns an empty target into "localhost": it would look for a process of that name."""
    [check] = agent_checks([CheckConfig("process", "nginx")], interval=30)
    assert (check.check_type, check.target) == ("process", "nginx")
    [given] = agent_checks([CheckConfig("process", "web", "nginx")], interval=30)
    assert given.target == "nginx"


def test_each_check_gets_its_share_of_half_the_push_interval():
    """The agent runs its checks one after another before each push: together they get half
    the interval, each a whole second at least and the agent's default of 10 s at most."""
    seven = [CheckConfig("port", f"c{i}", "127.0.0.1:22") for i in range(7)]
    assert {c.timeout_sec for c in agent_checks(seven, interval=3)} == {1}
    assert {c.timeout_sec for c in agent_checks(seven, interval=70)} == {5}
    assert {c.timeout_sec for c in agent_checks(seven[:2], interval=30)} == {7}
    assert {c.timeout_sec for c in agent_checks(seven[:1], interval=300)} == {10}
