"""What an onboarding package holds: member names and the config.json shape (no I/O).

The archive is a gzip'd tar of exactly these regular files (no directories
need to be present, no links, nothing else)::

    config.json                the agent's configuration, only the agent's own keys
                               (agent_config for poll mode, push_agent_config for push mode)
    identity.json              the tenant identifiers (package_identity), checked by verify
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

import ipaddress
from typing import Any

from poller.address import show_value, split_host_port
from poller.identity.names import (
    SPIFFE_TRUST_DOMAIN,
    CnForm,
    format_deployment_cn,
    format_deployment_spiffe_id,
    format_edge_cn,
    format_spiffe_id,
    format_tenant_ca_cn,
)
from poller.identity.reasons import InvalidArgument

CONFIG = "config.json"
IDENTITY = "identity.json"
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
    IDENTITY: 0o644,
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
#: host_ip when none is given: empty, so that the agent finds the host's address itself
#: (the push agent's getSourceIP); it sends any other string verbatim as source_ip.
DETECT_HOST_IP = ""
# What packages made before 2026-12-08 hold (upstream's own config template has it too):
# still a valid package, though the agent sends it as its address until it is set.
LEGACY_HOST_IP_PLACEHOLDER = "PLACEHOLDER_HOST_IP"
#: The push agent's own default (ServerConfig.PushInterval); the gateway's Hello answer overrides it.
DEFAULT_PUSH_INTERVAL = "30s"
#: Package modes: the agent listens for the poller, or dials the gateway.
PACKAGE_MODES: tuple[str, ...] = ("poll", "push")


def nats_subject_prefix(tenant: str) -> str:
    """The tenant's NATS subject prefix: its subjects are `<prefix>.<channel>`."""
    return tenant


def package_identity(
    *,
    tenant: str,
    component_id: str,
    partition_id: str,
    component_type: str,
    listen_addr: str = DEFAULT_LISTEN_ADDR,
    gateway_addr: str | None = None,
    server_name: str | None = None,
    push_interval: str = DEFAULT_PUSH_INTERVAL,
    cn_form: CnForm = CnForm.TENANT,
    tenant_ca: str | None = None,
) -> dict[str, Any]:
    """The package's identity.json: the tenant identifiers that are no key of the agent's config.

    For a tenant bound to a deployment CA (`cn_form` DEPLOYMENT, poller.trust.binding)
    cn and spiffe_id are in the deployment form, `tenant_ca` is that CA's CN and
    identity.json says `"cn_form": "deployment"`.

    `mode` is "poll" (the agent listens on `listen_addr`; the poller dials it)
    or "push" (the agent dials `gateway_addr` every `push_interval` and checks
    the gateway's certificate for `gateway_server_name`). `onboard verify`
    checks the identifiers against the certificate, and that config.json is
    exactly what these values make.

    >>> package_identity(tenant="acme-corp", component_id="agent-001",
    ...                  partition_id="partition-1", component_type="agent")["spiffe_id"]
    'spiffe://serviceradar.local/agent/acme-corp/partition-1/agent-001'
    """
    identity: dict[str, Any] = {
        "mode": "poll" if gateway_addr is None else "push",
        "tenant": tenant,
        "tenant_ca": format_tenant_ca_cn(tenant),
        "component_id": component_id,
        "partition_id": partition_id,
        "component_type": component_type,
        "cn": edge_cn(component_id, partition_id, tenant, cn_form),
        "spiffe_id": format_spiffe_id(component_type, tenant, partition_id, component_id),
        "nats_subject_prefix": nats_subject_prefix(tenant),
    }
    if cn_form is CnForm.DEPLOYMENT:
        identity["tenant_ca"] = tenant_ca or ""
        identity["spiffe_id"] = format_deployment_spiffe_id(component_type, partition_id, component_id)
        identity["cn_form"] = cn_form.value
    if gateway_addr is None:
        identity["listen_addr"] = listen_addr
    else:
        identity["gateway_addr"] = gateway_addr
        identity["gateway_server_name"] = server_name if server_name is not None else gateway_host(gateway_addr)
        identity["push_interval"] = push_interval
    return identity


def edge_cn(component_id: str, partition_id: str, tenant: str, cn_form: CnForm = CnForm.TENANT) -> str:
    """The component's CN in its tenant's form (validated)."""
    cn = format_edge_cn(component_id, partition_id, tenant)
    return format_deployment_cn(component_id, partition_id) if cn_form is CnForm.DEPLOYMENT else cn


def gateway_host(gateway_addr: str) -> str:
    """The host of HOST:PORT ("[v6]:port" too): a push package's default server_name.

    >>> gateway_host("[::1]:50052")
    '::1'
    """
    return split_host_port(gateway_addr)[0]


def check_host_ip(value: object) -> str:
    """host_ip as config.json holds it: "" (the agent finds its own address) or an IP
    address, in its canonical form. InvalidArgument (a ValueError) otherwise.

    >>> check_host_ip("2001:DB8::1")
    '2001:db8::1'
    """
    hint = 'expected the host\'s IP address, or "" for the agent to find its own'
    if not isinstance(value, str):  # ip_address() would take an int; the agent's host_ip is a string
        raise InvalidArgument(f"host_ip {show_value(value)} is not a string ({hint})")
    if value == DETECT_HOST_IP:
        return value
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidArgument(f"host_ip {show_value(value)} is not an IP address ({hint})") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # ServiceRadar reads source_ip with Go's net.ParseIP, which takes no zone.
        raise InvalidArgument(f"host_ip {show_value(value)} has a zone (%{address.scope_id}); {hint}")
    return str(address)


def logging_config(*, level: str = "info", output: str = "stdout") -> dict[str, Any]:
    """The `logging` block (logger.Config: level, debug, output, time_format, otel)."""
    return {"level": level, "debug": False, "output": output, "time_format": "", "otel": {"enabled": False}}


def _tls() -> dict[str, str]:
    return {"cert_file": _base(COMPONENT_CHAIN), "key_file": _base(COMPONENT_KEY), "ca_file": _base(ROOT_CA)}


def agent_config(
    *,
    tenant: str,
    component_id: str,
    partition_id: str,
    component_type: str,
    listen_addr: str = DEFAULT_LISTEN_ADDR,
    host_ip: str = DETECT_HOST_IP,
    logging: dict[str, Any] | None = None,
    cn_form: CnForm = CnForm.TENANT,
) -> dict[str, Any]:
    """A poll-mode package's config.json: only keys ServiceRadar's poll agent decodes.

    The keys are those of `ServerConfig` in serviceradar's pkg/agent/types.go at
    commit 4cef9e43b8b5d4e1461c2baf480bf84578266edc (the last agent that listens
    for pollers on `listen_addr`): agent_id, partition, host_ip, listen_addr,
    checkers_dir, logging, and `security` (models.SecurityConfig: mode,
    cert_dir, server_name, role, trust_domain, tls {cert_file, key_file,
    ca_file, client_ca_file}). The tenant identifiers are in identity.json
    (package_identity): the newer agents decode with DisallowUnknownFields.
    This agent reads host_ip only for its ICMP results' device_id
    (`partition:host_ip`), which that commit's core keeps as metadata only:
    it files ICMP results under the agent's own device. Empty (the default)
    invents no address.

    >>> agent_config(tenant="acme-corp", component_id="agent-001", partition_id="partition-1",
    ...              component_type="agent")["security"]["server_name"]
    'agent-001.partition-1.acme-corp.serviceradar'
    """
    return {
        "agent_id": component_id,
        "partition": partition_id,
        "host_ip": host_ip,
        "listen_addr": listen_addr,
        "checkers_dir": INSTALL_CHECKERS_DIR,
        "security": {
            "mode": "mtls",
            "cert_dir": INSTALL_CERT_DIR,
            "server_name": edge_cn(component_id, partition_id, tenant, cn_form),
            "role": component_type,
            "trust_domain": SPIFFE_TRUST_DOMAIN,
            "tls": {**_tls(), "client_ca_file": _base(ROOT_CA)},
        },
        "logging": logging if logging is not None else logging_config(),
    }


def push_agent_config(
    *,
    component_id: str,
    partition_id: str,
    gateway_addr: str,
    server_name: str | None = None,
    push_interval: str = DEFAULT_PUSH_INTERVAL,
    host_ip: str = DETECT_HOST_IP,
    logging: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A push package's config.json: exactly the keys ServiceRadar's push agent decodes.

    The agent (serviceradar cmd/agent at commit cac9ec1af, and HEAD) decodes
    its config into `agent.ServerConfig` with DisallowUnknownFields, so only
    its keys appear: agent_id, partition, host_ip, checkers_dir, gateway_addr,
    push_interval, gateway_security {mode, cert_dir, server_name, role "agent",
    tls {cert_file, key_file, ca_file}} and logging. The agent checks the
    gateway's certificate against root.pem (the platform root: `pki gateway`
    issues from it or from the platform CA) for `server_name`, and presents
    component-chain.pem, which the gateway proves exactly as the poller does.
    host_ip is empty unless given: the agent then reports the address it
    finds on its interfaces (push_loop.go getSourceIP) as source_ip; any other
    string it sends verbatim.

    >>> push_agent_config(component_id="agent-001", partition_id="partition-1",
    ...                   gateway_addr="gw.example.net:50052")["gateway_security"]["server_name"]
    'gw.example.net'
    """
    return {
        "agent_id": component_id,
        "partition": partition_id,
        "host_ip": host_ip,
        "checkers_dir": INSTALL_CHECKERS_DIR,
        "gateway_addr": gateway_addr,
        "push_interval": push_interval,
        "gateway_security": {
            "mode": "mtls",
            "cert_dir": INSTALL_CERT_DIR,
            "server_name": server_name if server_name is not None else gateway_host(gateway_addr),
            "role": "agent",
            "tls": _tls(),
        },
        "logging": logging if logging is not None else logging_config(),
    }


def _base(member: str) -> str:
    return member.rsplit("/", 1)[-1]
