"""Make an onboarding package: a new component certificate from the tenant's CA,
the tenant's CA certificate and chain, the agent's config.json (only the
agent's own keys) and identity.json (the tenant identifiers), in one tar.gz.

A poll-mode package configures an agent that listens for the poller; with
`gateway_addr` it is a push package: the agent dials the gateway there.

The component is issued with poller.pki.issue_component (so its certificate is
also recorded in the certs directory, where `pki revoke` finds it by serial).
The package is verified against the certs directory before it is written, and
written 0600 because it holds a private key. It never holds a CA key, nor any
other tenant's material: its members are built from the one tenant's files.

>>> made = create_package("certs", tenant="acme-corp", component_id="agent-001",
...                       partition_id="partition-1", component_type="agent")   # doctest: +SKIP
>>> write_package(Path("agent-001.tar.gz"), made)                              # doctest: +SKIP
>>> pushed = create_package("certs", tenant="acme-corp", component_id="agent-002",
...                         partition_id="partition-1", gateway_addr="gw.example.net:50052")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from poller.address import split_host_port
from poller.identity import certinfo
from poller.identity.names import format_edge_cn
from poller.identity.reasons import InvalidArgument
from poller.logs import get_logger
from poller.onboard.archive import read_archive_bytes, write_archive
from poller.onboard.members import (
    COMPONENT_CERT,
    COMPONENT_CHAIN,
    COMPONENT_KEY,
    CONFIG,
    DEFAULT_LISTEN_ADDR,
    DEFAULT_PUSH_INTERVAL,
    DETECT_HOST_IP,
    IDENTITY,
    PACKAGE_TYPES,
    ROOT_CA,
    TENANT_CA,
    TENANT_CHAIN,
    agent_config,
    check_host_ip,
    gateway_host,
    package_identity,
    push_agent_config,
)
from poller.onboard.verify import VerifiedPackage, verify_files
from poller.pki.authority import StrPath, as_layout, issue_component, load_tenant_authority, tenant_cn_form
from poller.pki.build import cert_pem, chain_pem
from poller.pki.errors import PkiError
from poller.pki.files import PRIVATE_MODE, atomic_write, read_certificate
from poller.pki.gateway import gateway_sans
from poller.trust.store import TrustStore

audit = get_logger("poller.audit")


@dataclass(frozen=True, slots=True)
class Package:
    """A made (and verified) package: the archive bytes and what it proves."""

    data: bytes = field(repr=False)
    verified: VerifiedPackage


def create_package(
    certs_dir: StrPath,
    *,
    tenant: str,
    component_id: str,
    partition_id: str,
    component_type: str = "agent",
    listen_addr: str = DEFAULT_LISTEN_ADDR,
    gateway_addr: str | None = None,
    server_name: str | None = None,
    push_interval: str = DEFAULT_PUSH_INTERVAL,
    host_ip: str = DETECT_HOST_IP,
    days: int = 365,
) -> Package:
    """Issue the component's certificate and build its package (nothing written but
    the certs directory's component files). PkiError for anything the PKI refuses.

    With `gateway_addr` (HOST:PORT) the package is for a push agent: its
    config.json points at the gateway, whose certificate the agent checks for
    `server_name` (default: HOST). When the certs directory holds the gateway's
    serving certificate (`gateway.pem`, from `pki gateway`), server_name must
    be one of its SANs, or the agent could never connect.

    `host_ip` is config.json's host_ip: empty (the default) lets the agent
    find the host's address; an IP address is what it then reports as its own.
    """
    if component_type not in PACKAGE_TYPES:
        raise PkiError(f"component type {component_type!r} is not one of {', '.join(PACKAGE_TYPES)}")
    format_edge_cn(component_id, partition_id, tenant)  # InvalidName before anything is issued
    try:
        host_ip = check_host_ip(host_ip)
    except InvalidArgument as exc:
        raise PkiError(str(exc)) from None
    layout = as_layout(certs_dir)
    if gateway_addr is not None:
        server_name = _check_gateway(layout.service_cert("gateway"), gateway_addr, server_name, component_type)
    ca = load_tenant_authority(layout, tenant)  # refuses a missing tenant before issuing
    root = read_certificate(layout.root_ca, what="root CA")
    issued = issue_component(
        layout,
        tenant=tenant,
        component_id=component_id,
        partition_id=partition_id,
        component_type=component_type,
        days=days,
    )
    leaf = read_certificate(issued.cert_path)
    cn_form = tenant_cn_form(layout, tenant)  # the form issue_component used
    if gateway_addr is None:
        config = agent_config(
            tenant=tenant,
            component_id=component_id,
            partition_id=partition_id,
            component_type=component_type,
            listen_addr=listen_addr,
            host_ip=host_ip,
            cn_form=cn_form,
        )
    else:
        config = push_agent_config(
            component_id=component_id,
            partition_id=partition_id,
            gateway_addr=gateway_addr,
            server_name=server_name,
            push_interval=push_interval,
            host_ip=host_ip,
        )
    identity = package_identity(
        tenant=tenant,
        component_id=component_id,
        partition_id=partition_id,
        component_type=component_type,
        listen_addr=listen_addr,
        gateway_addr=gateway_addr,
        server_name=server_name,
        push_interval=push_interval,
        cn_form=cn_form,
        tenant_ca=certinfo.subject_cn(ca.cert),
    )
    files = {
        CONFIG: (json.dumps(config, indent=2) + "\n").encode(),
        IDENTITY: (json.dumps(identity, indent=2) + "\n").encode(),
        TENANT_CA: cert_pem(ca.cert),
        TENANT_CHAIN: chain_pem([ca.cert, root]),
        ROOT_CA: cert_pem(root),
        COMPONENT_CERT: cert_pem(leaf),
        COMPONENT_CHAIN: chain_pem([leaf, ca.cert]),
        COMPONENT_KEY: issued.key_path.read_bytes(),
    }
    data = write_archive(files)
    # The same checks `onboard verify` makes: a package that would not verify is never handed out.
    trust = TrustStore(layout.root, require_client=False).snapshot
    verified = verify_files(read_archive_bytes(data), trust=trust)  # audited below as the issuance
    ctx = verified.context
    audit.info(
        "package_issued",
        audit=True,
        **ctx.log_fields(),
        component_type=ctx.component_type,
        not_after=ctx.as_dict()["not_after"],
    )
    return Package(data=data, verified=verified)


def _check_gateway(served: Path, gateway_addr: str, server_name: str | None, component_type: str) -> str:
    """The push package's server_name, after checking what can be checked before issuing."""
    if component_type != "agent":
        raise PkiError(f"only an agent pushes to a gateway, not a {component_type}")
    try:
        split_host_port(gateway_addr)
    except InvalidArgument as exc:
        raise PkiError(f"gateway address: {exc}") from None
    name = server_name if server_name is not None else gateway_host(gateway_addr)
    if served.exists():
        sans = gateway_sans(served)
        if f"DNS:{name}" not in sans and f"IP:{name}" not in sans:
            raise PkiError(
                f"the agent would check the gateway's certificate for {name!r}, but {served} has only "
                f"{', '.join(sans) or 'no SANs'} (give --server-name, or re-issue with `pki gateway --dns/--ip`)"
            )
    return name


def write_package(path: Path, package: Package, *, force: bool = False) -> None:
    """Write the archive 0600 (it holds a private key); an existing file only with force."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists (use --force to replace it)")
    atomic_write(path, package.data, PRIVATE_MODE)
