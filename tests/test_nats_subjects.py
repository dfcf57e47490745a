"""Tenant subjects: `<slug>.<channel>` both ways; anything that could widen or drop the prefix is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller import Reason, SubjectError, tenant_from_subject, tenant_subject
from poller.nats.subjects import split_subject, stream_name, stream_subjects
from poller.testing.identity import unverified_tenant_context


def test_subject_from_slug_and_from_proven_context() -> None:
    assert tenant_subject("acme-corp", "agents.status") == "acme-corp.agents.status"
    ctx = unverified_tenant_context("xyz-inc")
    assert tenant_subject(ctx, "agents.results.sweep") == "xyz-inc.agents.results.sweep"
    assert tenant_from_subject("acme-corp.events.poller.health") == "acme-corp"
    assert split_subject("acme-corp.pollers.heartbeat") == ("acme-corp", "pollers.heartbeat")
    assert stream_name("acme-corp") == "tenant-acme-corp"
    assert stream_subjects("acme-corp") == ["acme-corp.>"]


@pytest.mark.parametrize(
    "tenant",
    ["", "*", ">", "acme.corp", "Acme-corp", "acme corp", " acme-corp", "acme-corp\n", "-acme", "acme-", "a" * 64, "acmé"],
)
def test_bad_tenants_are_refused(tenant: str) -> None:
    with pytest.raises(SubjectError) as caught:
        tenant_subject(tenant, "agents.status")
    assert caught.value.reason is Reason.INVALID_SUBJECT


def test_an_empty_tenant_is_an_error_never_an_unprefixed_subject() -> None:
    with pytest.raises(SubjectError, match="empty tenant"):
        tenant_subject("", "agents.status")
    with pytest.raises(SubjectError):
        tenant_from_subject(".agents.status")


@pytest.mark.parametrize(
    "channel",
    ["", "*", ">", "agents.*", "agents.>", "agents..status", ".agents", "agents.", "agents status", "agents.\tstatus", "ag$ents"],
)
def test_bad_channels_are_refused(channel: str) -> None:
    with pytest.raises(SubjectError):
        tenant_subject("acme-corp", channel)


@pytest.mark.parametrize(
    "subject", ["acme-corp", "*.agents.status", ">.agents", "acme-corp.>", "acme-corp.*", "acme-corp..x", "acme-corp. x", ""]
)
def test_bad_subjects_are_refused(subject: str) -> None:
    with pytest.raises(SubjectError):
        tenant_from_subject(subject)


_label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_channel = st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), min_size=1, max_size=4).map(".".join)


@given(_label, _channel)
def test_round_trip(tenant: str, channel: str) -> None:
    assert split_subject(tenant_subject(tenant, channel)) == (tenant, channel)


@given(st.text(max_size=30), _channel)
def test_whatever_the_tenant_string_the_subject_starts_with_that_exact_slug(tenant: str, channel: str) -> None:
    try:
        subject = tenant_subject(tenant, channel)
    except SubjectError:
        return
    assert subject.startswith(tenant + ".") and tenant_from_subject(subject) == tenant
    assert "*" not in subject and ">" not in subject
