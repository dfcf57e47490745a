"""What an onboarding package holds: member names and the config.json shape (no I/O).

The archive is a gzip'd tar of exactly these regular files (no directories
need to be present, no links, nothing else)::

    config.json                the agent's configuration (see agent_config)
    certs/ca.pem               the tenant's intermediate CA certificate
    certs/ca-chain.pem         tenant CA + platform root
    certs/root.pem             platform root (the CA of the poller's client certificate)
    certs/component.pem        the component's certificate (leaf)
    certs/component-chain.pem  leaf + tenant CA (what the agent serves)
    certs/component-key.pem    the component's private key, mode 0600

The file names follow ServiceRadar's own tenant bundles (web-ng
BundleGenerator: certs/component.pem, component-key.pem, ca-chain.pem).

>>> sorted(MEMBERS)[0]
'certs/ca-chain.pem'
"""

from __future__ import annotations

from typing import Any

from poller.identity.names import (
    SPIFFE_TRUST_DOMAIN,
    CnForm,
    format_deployment_cn,
    format_deployment_spiffe_id,
    format_edge_cn,
    format_spiffe_id,
    format_tenant_ca_cn,
)

CONFIG = "config.json"
CERTS_DIR = "certs"
TENANT_CA = "certs/ca.pem"
TENANT_CHAIN = "certs/ca-chain.pem"
ROOT_CA = "certs/root.pem"
COMPONENT_CERT = "certs/component.pem"
COMPONENT_CHAIN = "certs/component-chain.pem"
COMPONENT_KEY = "certs/component-key.pem"

#: Every member, with its mode inside the archive. Nothing else may be present.
MEMBERS: dict[str, int] = {
    CONFIG: 0o644,
    TENANT_CA: 0o644,
    TENANT_CHAIN: 0o644,
    ROOT_CA: 0o644,
    COMPONENT_CERT: 0o644,
    COMPONENT_CHAIN: 0o644,
    COMPONENT_KEY: 0o600,
}
#: Directory entries a repacked archive may carry (`tar czf x -C dir .`).
DIRECTORIES = frozenset({"", CERTS_DIR})

#: Component types a package can be made for (the Go agent's ServiceRole values).
PACKAGE_TYPES: tuple[str, ...] = ("agent", "checker", "gateway")

#: Where the Go agent's packaging installs certificates and checker configs.
INSTALL_CERT_DIR = "/etc/serviceradar/certs"
INSTALL_CHECKERS_DIR = "/etc/serviceradar/checkers"
#: The Go agent's default gRPC listen address; the operator may change it.
DEFAULT_LISTEN_ADDR = ":50051"
HOST_IP_PLACEHOLDER = "PLACEHOLDER_HOST_IP"


def nats_subject_prefix(tenant: str) -> str:
    """The tenant's NATS subject prefix: its subjects are `<prefix>.<channel>`."""
    return tenant


def agent_config(
    *,
    tenant: str,
    component_id: str,
    partition_id: str,
    component_type: str,
    listen_addr: str = DEFAULT_LISTEN_ADDR,
    cn_form: CnForm = CnForm.TENANT,
    tenant_ca: str | None = None,
) -> dict[str, Any]:
    """The package's config.json, in the shape ServiceRadar's Go agent reads.

    The Go keys are those of `ServerConfig` in serviceradar's pkg/agent/types.go
    and of its example cmd/agent/config.json (carverauto/serviceradar at commit
    4cef9e43b8b5d4e1461c2baf480bf84578266edc, the last pull-model agent, which
    listens on `listen_addr` for pollers): agent_id, host_ip, partition,
    listen_addr, service_type, service_name, checkers_dir, and `security`
    (models.SecurityConfig: mode, cert_dir, server_name, role, trust_domain,
    tls {cert_file, key_file, ca_file, client_ca_file}); `component_type` is
    the newer agent's key. Go's encoding/json ignores keys a struct does not
    have, so the tenant identifiers ride along at the top level: tenant,
    tenant_ca, component_id, cn, spiffe_id, nats_subject_prefix. For a tenant
    bound to a deployment CA (`cn_form` DEPLOYMENT, `tenant_ca` that CA's CN)
    cn and spiffe_id are in the deployment form and `cn_form` is added.

    >>> agent_config(tenant="acme-corp", component_id="agent-001",
    ...              partition_id="partition-1", component_type="agent")["spiffe_id"]
    'spiffe://serviceradar.local/agent/acme-corp/partition-1/agent-001'
    """
    cn = format_edge_cn(component_id, partition_id, tenant)
    spiffe_id = format_spiffe_id(component_type, tenant, partition_id, component_id)
    if cn_form is CnForm.DEPLOYMENT:  # a tenant bound to a deployment CA (poller.trust.binding)
        cn = format_deployment_cn(component_id, partition_id)
        spiffe_id = format_deployment_spiffe_id(component_type, partition_id, component_id)
    extra = {"cn_form": cn_form.value} if cn_form is CnForm.DEPLOYMENT else {}
    return {
        "agent_id": component_id,
        "component_type": component_type,
        "host_ip": HOST_IP_PLACEHOLDER,
        "partition": partition_id,
        "listen_addr": listen_addr,
        "service_type": "grpc",
        "service_name": "AgentService",
        "checkers_dir": INSTALL_CHECKERS_DIR,
        "security": {
            "mode": "mtls",
            "cert_dir": INSTALL_CERT_DIR,
            "server_name": cn,
            "role": component_type,
            "trust_domain": SPIFFE_TRUST_DOMAIN,
            "tls": {
                "cert_file": _base(COMPONENT_CHAIN),
                "key_file": _base(COMPONENT_KEY),
                "ca_file": _base(ROOT_CA),
                "client_ca_file": _base(ROOT_CA),
            },
        },
        "tenant": tenant,
        "tenant_ca": tenant_ca or format_tenant_ca_cn(tenant),
        "component_id": component_id,
        "cn": cn,
        "spiffe_id": spiffe_id,
        "nats_subject_prefix": nats_subject_prefix(tenant),
        **extra,
    }


def _base(member: str) -> str:
    return member.rsplit("/", 1)[-1]
