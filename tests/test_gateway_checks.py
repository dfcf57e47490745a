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
