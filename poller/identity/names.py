"""The naming grammar of ServiceRadar identities (pure functions, no I/O).

Edge CN, tenant form:     <component_id>.<partition_id>.<tenant_slug>.serviceradar
Edge CN, deployment form: <component_id>.<partition_id>.serviceradar (the tenant is
                          not in the name: it is the one the issuing CA is bound to)
Tenant CA CN:             tenant-<slug>.ca.serviceradar
SPIFFE ID:                spiffe://serviceradar.local/<type>/<tenant>/<partition>/<component>
                          spiffe://serviceradar.local/<component>/<tenant>/<partition>
                          spiffe://serviceradar.local/<type>/<partition>/<component> (deployment)

The two 3-segment SPIFFE forms cannot be told apart by their text
(`agent/default/agent-001`): the CN form decides which one is meant.

Each part is one DNS label: a-z, 0-9 and '-', 1 to 63 characters, no leading
or trailing '-'. Anything else is not an identity and raises InvalidName.

>>> parse_edge_cn("agent-001.partition-1.acme-corp.serviceradar").tenant
'acme-corp'
>>> read_edge_cn("agent-001.default.serviceradar", tenant="acme-corp", form=CnForm.DEPLOYMENT).tenant
'acme-corp'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from poller.identity.reasons import PollerError

SUFFIX = "serviceradar"
SPIFFE_TRUST_DOMAIN = "serviceradar.local"
COMPONENT_TYPES = frozenset({"agent", "checker", "gateway", "poller", "sync"})
#: The middle labels of platform and CA names (`<name>.platform.serviceradar`,
#: `tenant-<slug>.ca.serviceradar`): never a partition of a deployment-form CN,
#: so neither can be read as an edge component.
RESERVED_PARTITIONS = frozenset({"platform", "ca"})

# fullmatch on a str pattern with explicit ASCII classes: no re.IGNORECASE, no
# Unicode digits, and `$` cannot match before a trailing newline.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class InvalidName(PollerError, ValueError):
    """A string that is not a well-formed ServiceRadar identity."""


def is_label(value: str) -> bool:
    """True if value is one lowercase DNS label (the grammar of every part)."""
    return isinstance(value, str) and _LABEL.fullmatch(value) is not None


def check_label(value: str, what: str) -> str:
    """Return value if it is a label, else raise InvalidName naming `what`."""
    if not is_label(value):
        raise InvalidName(f"{what} {value!r} is not a lowercase DNS label")
    return value


class CnForm(StrEnum):
    """How a tenant's edge CNs name it (a tenant's `cn_form`, poller.trust.binding).

    TENANT: the CN carries the tenant (4 labels) and the tenant's intermediate
    CA must agree with it. DEPLOYMENT: the CN carries no tenant (3 labels);
    the tenant is the one the issuing CA is explicitly bound to.
    """

    TENANT = "tenant"
    DEPLOYMENT = "deployment"


@dataclass(frozen=True, slots=True)
class EdgeName:
    """The parts of an edge component's CN; `form` says which CN it was read from."""

    component_id: str
    partition_id: str
    tenant: str
    form: CnForm = CnForm.TENANT

    def __post_init__(self) -> None:
        check_label(self.component_id, "component id")
        check_label(self.partition_id, "partition id")
        check_label(self.tenant, "tenant slug")

    @property
    def cn(self) -> str:
        if self.form is CnForm.DEPLOYMENT:
            return format_deployment_cn(self.component_id, self.partition_id)
        return format_edge_cn(self.component_id, self.partition_id, self.tenant)


def format_edge_cn(component_id: str, partition_id: str, tenant: str) -> str:
    """`agent-001`, `partition-1`, `acme-corp` -> the edge CN (validated)."""
    for value, what in ((component_id, "component id"), (partition_id, "partition id"), (tenant, "tenant slug")):
        check_label(value, what)
    return f"{component_id}.{partition_id}.{tenant}.{SUFFIX}"


def parse_edge_cn(cn: str) -> EdgeName:
    """Parse an edge CN strictly; raise InvalidName for anything else."""
    if not isinstance(cn, str):
        raise InvalidName("CN is not a string")
    labels = cn.split(".")
    if len(labels) != 4:
        raise InvalidName(f"CN {cn!r} has {len(labels)} labels, expected 4")
    if labels[3] != SUFFIX:
        raise InvalidName(f"CN {cn!r} does not end in .{SUFFIX}")
    return EdgeName(component_id=labels[0], partition_id=labels[1], tenant=labels[2])


def format_deployment_cn(component_id: str, partition_id: str) -> str:
    """`agent-001`, `default` -> `agent-001.default.serviceradar` (validated)."""
    check_label(component_id, "component id")
    if check_label(partition_id, "partition id") in RESERVED_PARTITIONS:
        raise InvalidName(f"partition id {partition_id!r} is reserved for platform and CA names")
    return f"{component_id}.{partition_id}.{SUFFIX}"


def read_edge_cn(cn: str, *, tenant: str, form: CnForm) -> EdgeName:
    """Read an edge CN under a tenant's CN form; InvalidName for anything else.

    TENANT form: only `<component>.<partition>.<tenant>.serviceradar`.
    DEPLOYMENT form: `<component>.<partition>.serviceradar`, whose tenant is
    `tenant` (the binding's), or the 4-label form (whose tenant the caller
    must still compare with the binding's).
    """
    if form is not CnForm.DEPLOYMENT or not isinstance(cn, str) or cn.count(".") == 3:
        return parse_edge_cn(cn)
    if cn.count(".") != 2:
        raise InvalidName(f"CN {cn!r} has {cn.count('.') + 1} labels, expected 3 (deployment form) or 4")
    component, partition, suffix = cn.split(".")
    if suffix != SUFFIX:
        raise InvalidName(f"CN {cn!r} does not end in .{SUFFIX}")
    if partition in RESERVED_PARTITIONS:
        raise InvalidName(f"CN {cn!r} is a platform or CA name, not an edge component")
    return EdgeName(component_id=component, partition_id=partition, tenant=tenant, form=CnForm.DEPLOYMENT)


def format_tenant_ca_cn(tenant: str) -> str:
    check_label(tenant, "tenant slug")
    return f"tenant-{tenant}.ca.{SUFFIX}"


def parse_tenant_ca_cn(cn: str) -> str:
    """`tenant-acme-corp.ca.serviceradar` -> `acme-corp`."""
    if not isinstance(cn, str):
        raise InvalidName("CN is not a string")
    labels = cn.split(".")
    if len(labels) != 3 or labels[1:] != ["ca", SUFFIX] or not labels[0].startswith("tenant-"):
        raise InvalidName(f"{cn!r} is not a tenant CA name (tenant-<slug>.ca.{SUFFIX})")
    if not is_label(labels[0]):
        raise InvalidName(f"{cn!r} is not a tenant CA name")
    return check_label(labels[0][len("tenant-") :], "tenant slug")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A ServiceRadar SPIFFE ID. component_type is None for the 3-segment
    `<component>/<tenant>/<partition>` form; tenant is None for the deployment
    form `<type>/<partition>/<component>`, which names no tenant."""

    tenant: str | None
    partition_id: str
    component_id: str
    component_type: str | None

    @property
    def uri(self) -> str:
        if self.tenant is None:
            assert self.component_type is not None
            return format_deployment_spiffe_id(self.component_type, self.partition_id, self.component_id)
        if self.component_type is None:
            return f"spiffe://{SPIFFE_TRUST_DOMAIN}/{self.component_id}/{self.tenant}/{self.partition_id}"
        return format_spiffe_id(self.component_type, self.tenant, self.partition_id, self.component_id)


def format_spiffe_id(component_type: str, tenant: str, partition_id: str, component_id: str) -> str:
    """The control plane's form: spiffe://serviceradar.local/<type>/<tenant>/<partition>/<component>."""
    if component_type not in COMPONENT_TYPES:
        raise InvalidName(f"component type {component_type!r} is not one of {sorted(COMPONENT_TYPES)}")
    for value, what in ((tenant, "tenant slug"), (partition_id, "partition id"), (component_id, "component id")):
        check_label(value, what)
    return f"spiffe://{SPIFFE_TRUST_DOMAIN}/{component_type}/{tenant}/{partition_id}/{component_id}"


def format_deployment_spiffe_id(component_type: str, partition_id: str, component_id: str) -> str:
    """The deployment form: spiffe://serviceradar.local/<type>/<partition>/<component>."""
    if component_type not in COMPONENT_TYPES:
        raise InvalidName(f"component type {component_type!r} is not one of {sorted(COMPONENT_TYPES)}")
    for value, what in ((partition_id, "partition id"), (component_id, "component id")):
        check_label(value, what)
    return f"spiffe://{SPIFFE_TRUST_DOMAIN}/{component_type}/{partition_id}/{component_id}"


def parse_spiffe_id(uri: str, *, cn_form: CnForm = CnForm.TENANT) -> SpiffeId:
    """Parse a ServiceRadar SPIFFE ID; raise InvalidName otherwise.

    A 3-segment ID is read as `<component>/<tenant>/<partition>` next to a
    tenant-form CN and as the deployment form `<type>/<partition>/<component>`
    next to a deployment-form CN (`cn_form`): the text alone cannot say which.

    >>> parse_spiffe_id("spiffe://serviceradar.local/agent/default/agent-001", cn_form=CnForm.DEPLOYMENT).tenant is None
    True
    """
    prefix = f"spiffe://{SPIFFE_TRUST_DOMAIN}/"
    if not isinstance(uri, str) or not uri.startswith(prefix):
        raise InvalidName(f"{uri!r} is not a spiffe://{SPIFFE_TRUST_DOMAIN}/ ID")
    segments = uri[len(prefix) :].split("/")
    if len(segments) == 4:
        ctype, tenant, partition, component = segments
        if ctype not in COMPONENT_TYPES:
            raise InvalidName(f"SPIFFE ID {uri!r} has unknown component type {ctype!r}")
        return SpiffeId(
            tenant=check_label(tenant, "SPIFFE tenant"),
            partition_id=check_label(partition, "SPIFFE partition"),
            component_id=check_label(component, "SPIFFE component"),
            component_type=ctype,
        )
    if len(segments) == 3 and cn_form is CnForm.DEPLOYMENT:
        ctype, partition, component = segments
        if ctype not in COMPONENT_TYPES:
            raise InvalidName(f"SPIFFE ID {uri!r} has unknown component type {ctype!r}")
        return SpiffeId(
            tenant=None,
            partition_id=check_label(partition, "SPIFFE partition"),
            component_id=check_label(component, "SPIFFE component"),
            component_type=ctype,
        )
    if len(segments) == 3:
        component, tenant, partition = segments
        return SpiffeId(
            tenant=check_label(tenant, "SPIFFE tenant"),
            partition_id=check_label(partition, "SPIFFE partition"),
            component_id=check_label(component, "SPIFFE component"),
            component_type=None,
        )
    raise InvalidName(f"SPIFFE ID {uri!r} has {len(segments)} path segments, expected 3 or 4")


def spiffe_agrees_with(spiffe: SpiffeId, name: EdgeName) -> bool:
    """True if the SPIFFE ID names the same tenant, partition and component as the CN.

    In the 3-segment form written by generate-certs.sh the first segment may be
    the component id or a component type (`agent`), so either is accepted there.
    The deployment form names no tenant: it agrees only with a deployment-form
    CN (whose tenant comes from the binding, not from either name).
    """
    if spiffe.tenant is None:
        return (
            name.form is CnForm.DEPLOYMENT
            and spiffe.partition_id == name.partition_id
            and spiffe.component_id == name.component_id
        )
    if spiffe.tenant != name.tenant or spiffe.partition_id != name.partition_id:
        return False
    if spiffe.component_type is None:
        return spiffe.component_id in (name.component_id, *COMPONENT_TYPES)
    return spiffe.component_id == name.component_id
