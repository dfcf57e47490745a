"""The identity grammar: strict parsing, round trips, and what is never an identity."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller.identity.names import (
    COMPONENT_TYPES,
    EdgeName,
    InvalidName,
    format_edge_cn,
    format_spiffe_id,
    format_tenant_ca_cn,
    parse_edge_cn,
    parse_spiffe_id,
    parse_tenant_ca_cn,
    spiffe_agrees_with,
)

_alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
labels = st.builds(
    lambda first, middle, last: first + middle + last if middle or last else first,
    st.sampled_from(_alnum),
    st.text(alphabet=_alnum + "-", max_size=20),
    st.text(alphabet=_alnum, min_size=1, max_size=1),
) | st.sampled_from(_alnum)


@given(labels, labels, labels)
def test_edge_cn_round_trip(component, partition, tenant):
    cn = format_edge_cn(component, partition, tenant)
    assert parse_edge_cn(cn) == EdgeName(component, partition, tenant)
    assert parse_edge_cn(cn).cn == cn


@given(labels)
def test_tenant_ca_cn_round_trip(slug):
    assert parse_tenant_ca_cn(format_tenant_ca_cn(slug)) == slug


@given(st.sampled_from(sorted(COMPONENT_TYPES)), labels, labels, labels)
def test_spiffe_round_trip(ctype, tenant, partition, component):
    uri = format_spiffe_id(ctype, tenant, partition, component)
    parsed = parse_spiffe_id(uri)
    assert (parsed.component_type, parsed.tenant, parsed.partition_id, parsed.component_id) == (
        ctype,
        tenant,
        partition,
        component,
    )
    assert parsed.uri == uri


FORBIDDEN = ["*", ">", " ", "\t", "\n", "A", "É", "ä", "_", "/", "\x00", "\u0661"]


@given(labels, labels, labels, st.sampled_from(FORBIDDEN), st.integers(0, 2), st.integers(0, 30))
def test_no_cn_with_a_forbidden_character_parses(component, partition, tenant, bad, which, pos):
    parts = [component, partition, tenant]
    target = parts[which]
    parts[which] = target[: pos % (len(target) + 1)] + bad + target[pos % (len(target) + 1) :]
    with pytest.raises(InvalidName):
        parse_edge_cn(".".join(parts) + ".serviceradar")


@given(labels, labels, labels, labels)
def test_a_fifth_label_is_not_an_identity(a, b, c, d):
    with pytest.raises(InvalidName):
        parse_edge_cn(f"{a}.{b}.{c}.{d}.serviceradar")


@pytest.mark.parametrize(
    "cn",
    [
        "agent-001.acme-corp.serviceradar",  # 3 labels
        "a.b.c.d.serviceradar",  # 5 labels
        "agent-001.partition-1.acme-corp.example",  # wrong suffix
        "agent-001.partition-1.acme-corp.serviceradar.",  # trailing dot
        "agent-001.partition-1.*.serviceradar",
        "agent-001.partition-1.>.serviceradar",
        "agent-001.partition-1.ACME.serviceradar",
        "Agent-001.partition-1.acme-corp.serviceradar",
        "agent-001..acme-corp.serviceradar",
        ".partition-1.acme-corp.serviceradar",
        "agent-001.partition-1.-acme.serviceradar",
        "agent-001.partition-1.acme-.serviceradar",
        "agent-001.partition-1.acme corp.serviceradar",
        "agent-001.partition-1.acme-corp.SERVICERADAR",
        "agent-001.partition-1.acme-corp.serviceradar\n",
        "agent-001.partition-1." + "a" * 64 + ".serviceradar",
        "",
    ],
)
def test_malformed_edge_cns_are_refused(cn):
    with pytest.raises(InvalidName):
        parse_edge_cn(cn)


def test_label_length_limit_is_63():
    assert parse_edge_cn("a.b." + "c" * 63 + ".serviceradar").tenant == "c" * 63


@pytest.mark.parametrize(
    "cn",
    [
        "acme-corp.ca.serviceradar",
        "tenant-.ca.serviceradar",
        "tenant-acme.ca.example",
        "tenant-ACME.ca.serviceradar",
        "tenant-a.b.ca.serviceradar",
    ],
)
def test_malformed_tenant_ca_cns_are_refused(cn):
    with pytest.raises(InvalidName):
        parse_tenant_ca_cn(cn)


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://example.org/agent/acme-corp/p/a",
        "spiffe://serviceradar.local/robot/acme-corp/p/a",  # unknown type
        "spiffe://serviceradar.local/agent/acme-corp/p",  # 3 segments: component, tenant, partition -> fine shape
        "spiffe://serviceradar.local/agent/acme-corp/p/a/extra",
        "spiffe://serviceradar.local/agent/*/p/a",
        "spiffe://serviceradar.local/agent//p/a",
        "https://serviceradar.local/agent/acme-corp/p/a",
    ],
)
def test_spiffe_grammar(uri):
    if uri == "spiffe://serviceradar.local/agent/acme-corp/p":
        parsed = parse_spiffe_id(uri)
        assert (parsed.component_id, parsed.tenant, parsed.partition_id, parsed.component_type) == (
            "agent",
            "acme-corp",
            "p",
            None,
        )
        return
    with pytest.raises(InvalidName):
        parse_spiffe_id(uri)


def test_spiffe_agreement():
    name = parse_edge_cn("agent-001.partition-1.acme-corp.serviceradar")
    assert spiffe_agrees_with(parse_spiffe_id("spiffe://serviceradar.local/agent/acme-corp/partition-1/agent-001"), name)
    assert spiffe_agrees_with(parse_spiffe_id("spiffe://serviceradar.local/agent/acme-corp/partition-1"), name)
    assert spiffe_agrees_with(parse_spiffe_id("spiffe://serviceradar.local/agent-001/acme-corp/partition-1"), name)
    assert not spiffe_agrees_with(parse_spiffe_id("spiffe://serviceradar.local/agent/xyz-inc/partition-1/agent-001"), name)
    assert not spiffe_agrees_with(parse_spiffe_id("spiffe://serviceradar.local/agent/acme-corp/partition-2/agent-001"), name)
    assert not spiffe_agrees_with(parse_spiffe_id("spiffe://serviceradar.local/agent/acme-corp/partition-1/agent-002"), name)
    assert not spiffe_agrees_with(parse_spiffe_id("spiffe://serviceradar.local/agent-002/acme-corp/partition-1"), name)
