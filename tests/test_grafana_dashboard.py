"""docs/grafana-dashboard.json cannot drift from the code: every PromQL
expression in it names only metrics the poller exports, and the dashboard
covers what the operator's issue asks for."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from poller.metrics import PollerMetrics
from poller.nats.metrics import DeliveryMetrics

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"

_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"})
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_NAME = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, labels and ranges removed)."""
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    text = _GROUPING.sub(" ", text)
    label_values = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,.*\)\s*", text)
    if label_values:
        return {label_values.group(1)}
    return {name for name in _NAME.findall(text) if name not in _KEYWORDS}


def exported_names() -> set[str]:
    """Every sample name the poller's metrics can produce, from the registry a daemon serves."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created")}
    names: set[str] = set()
    # What PollerDaemon makes and serves on metrics_listen: its metrics, and the NATS sink's in the same registry.
    registry = PollerMetrics().registry
    DeliveryMetrics(registry)
    for collector in list(registry._collector_to_names):
        describe = getattr(collector, "describe", None)
        for family in describe() if describe else []:
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [
        (panel.get("title", "?"), target["expr"])
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            found.append((f"${variable['name']}", query["query"] if isinstance(query, dict) else query))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (tenant, outcome) (rate(poller_polls_total{tenant=~"$tenant"}[$__rate_interval]))', {"poller_polls_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[5m])))", {"x_seconds_bucket"}),
        ('count(a{kind="agent"} < 14) or vector(0)', {"a"}),
        ("rate(a_sum[1m]) / on (method) rate(b_count[1m])", {"a_sum", "b_count"}),
        ("label_values(poller_polls_total, tenant)", {"poller_polls_total"}),
        ('sum(rate(poller_polsl_total{outcome!="ok"}[5m]))', {"poller_polsl_total"}),
    ],
)
def test_metric_names_are_read_from_promql(expr, names):
    assert metric_names(expr) == names


def test_every_expression_names_an_exported_metric(dashboard):
    exported = exported_names()
    assert {"poller_polls_total", "poller_call_latency_seconds_bucket", "poller_connected_agents"} <= exported
    exprs = expressions(dashboard)
    assert len(exprs) >= 10
    unknown = {(where, name) for where, expr in exprs for name in metric_names(expr) if name not in exported}
    assert not unknown, f"the dashboard names metrics the poller does not export: {sorted(unknown)}"
    assert all(metric_names(expr) for _, expr in exprs)  # every expression selects something


def test_dashboard_covers_the_operators_questions(dashboard):
    used = {name for _, expr in expressions(dashboard) for name in metric_names(expr)}
    assert {
        "poller_polls_total",  # polls by tenant and outcome
        "poller_identity_refusals_total",  # refusals by reason
        "poller_call_latency_seconds_bucket",  # latency quantiles
        "poller_connected_agents",
        "poller_certificate_expiry_timestamp_seconds",
        "poller_outbox_pending",  # outbox depth (NATS sink)
    } <= used
    exprs = [expr for _, expr in expressions(dashboard)]
    assert any("by (tenant, outcome)" in e and "poller_polls_total" in e for e in exprs)
    assert any("by (tenant, reason)" in e and "poller_identity_refusals_total" in e for e in exprs)
    assert any(e.startswith("histogram_quantile(") for e in exprs)


def test_dashboard_is_importable_grafana_json(dashboard):
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"  # no hard-coded data source uid
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


_AGGREGATION = re.compile(r"\b(sum|min|max|avg|count|topk|bottomk|quantile|stddev|group)\s*(?:by\s*\(([^)]*)\))?\s*\(")


def test_legends_name_only_labels_the_expression_keeps(dashboard):
    """A legend's {{label}} must survive the query: `min(x)` drops every label, so
    `{{name}}` on it renders blank (the poller-certificate panel did)."""
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            aggregations = _AGGREGATION.findall(target.get("expr", ""))
            if not wanted or not aggregations:
                continue
            # The outermost aggregation decides which labels remain.
            kept = {label.strip() for label in aggregations[0][1].split(",")} if aggregations[0][1] else set()
            assert wanted <= kept, f"{panel['title']}: legend {sorted(wanted)} but the query keeps only {sorted(kept)}"


def test_every_counter_the_dashboard_reads_has_series_before_anything_fails(dashboard):
    """A healthy system shows 0, not "No data": once the daemon primes its metrics for
    its tenants (PollerMetrics.prime, DeliveryMetrics.prime), every counter a panel
    reads already has a series for them."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    PollerMetrics(registry).prime(["acme-corp"], handlers=["nats-sink"])
    DeliveryMetrics(registry).prime(["acme-corp"])
    have = {s.name for family in registry.collect() for s in family.samples}
    counters = {n for _, expr in expressions(dashboard) for n in metric_names(expr) if n.endswith("_total")}
    # The latency histogram and the gauges get their series from the first poll and the first connection.
    assert counters and not counters - have, sorted(counters - have)
