"""Policies: each predicate allows what it names and denies the rest, with a reason.

The identities here are made without proof (poller.testing helpers): what is
under test is the decision over an identity, not how it was proven.
"""

from __future__ import annotations

import pytest

from poller import Access, Reason, all_of, any_of, any_tenant, component_type_in, platform_admin, same_tenant, tenant_in
from poller.identity.names import InvalidName
from poller.testing import unverified_platform_identity, unverified_tenant_context

ACME = unverified_tenant_context("acme-corp", component_type="agent")
XYZ = unverified_tenant_context("xyz-inc", "agent-007", "site-b", component_type="gateway")
UNTYPED = unverified_tenant_context("acme-corp", component_type=None)
ADMIN = unverified_platform_identity("ops-admin")


def allowed(policy, identity=None, platform=None) -> bool:
    return policy.evaluate(Access(identity=identity, platform=platform)).allowed


def test_same_tenant_allows_only_that_proven_tenant():
    policy = same_tenant("acme-corp")
    assert allowed(policy, ACME)
    assert not allowed(policy, XYZ)
    assert not allowed(policy)  # no proof: never the tenant's
    assert not allowed(policy, platform=ADMIN)  # a platform identity is not a tenant's
    denial = policy.evaluate(Access(identity=XYZ))
    assert denial.reason is Reason.POLICY_DENIED and "xyz-inc" in denial.detail


def test_tenant_in_and_component_type_in():
    assert allowed(tenant_in({"acme-corp", "xyz-inc"}), XYZ)
    assert not allowed(tenant_in({"acme-corp"}), XYZ)
    assert allowed(component_type_in({"gateway"}), XYZ)
    assert not allowed(component_type_in({"gateway"}), ACME)
    # A certificate without a SPIFFE type has no proven type, so it is in no set.
    assert not allowed(component_type_in({"agent", "gateway", "checker"}), UNTYPED)
    assert not allowed(component_type_in({"agent"}))


def test_platform_admin_only_for_platform_identities():
    assert allowed(platform_admin(), platform=ADMIN)
    assert not allowed(platform_admin(), ACME)
    assert not allowed(any_tenant(), platform=ADMIN)
    assert allowed(any_tenant(), XYZ)


def test_composition():
    gateway_of_acme = all_of(same_tenant("acme-corp"), component_type_in({"gateway"}))
    assert not allowed(gateway_of_acme, ACME)  # acme, but an agent
    assert not allowed(gateway_of_acme, XYZ)  # a gateway, but of xyz-inc
    acme_or_admin = any_of(same_tenant("acme-corp"), platform_admin())
    assert allowed(acme_or_admin, ACME) and allowed(acme_or_admin, platform=ADMIN)
    denial = acme_or_admin.evaluate(Access(identity=XYZ))
    assert not denial.allowed and "same_tenant" in denial.detail and "platform_admin" in denial.detail
    assert allowed(same_tenant("xyz-inc") & component_type_in({"gateway"}), XYZ)
    assert allowed(same_tenant("acme-corp") | same_tenant("xyz-inc"), XYZ)


@pytest.mark.parametrize("slug", ["Acme", "acme.corp", "*", ">", "", "acme corp", "acme-corp\n"])
def test_policies_refuse_malformed_slugs_when_built(slug):
    with pytest.raises(InvalidName):
        same_tenant(slug)
    with pytest.raises(InvalidName):
        tenant_in({slug})


def test_constructors_refuse_what_would_allow_by_accident():
    with pytest.raises(TypeError):
        tenant_in("acme-corp")  # one string is not a set of slugs
    with pytest.raises(ValueError):
        tenant_in(set())
    with pytest.raises(ValueError):
        all_of()
    with pytest.raises(TypeError):
        any_of(lambda access: True)  # a bare callable is not a policy
