"""poller.pki: create and manage a ServiceRadar certs directory.

ECDSA P-256 keys (0600), certificates (0644), atomic writes, paths from
poller.trust.layout.CertsLayout. The same operations are on the command line
as `serviceradar-poller pki ...`.

>>> from poller import pki
>>> pki.init_pki("certs")                                    # doctest: +SKIP
>>> pki.create_tenant_ca("certs", "acme-corp")               # doctest: +SKIP
>>> cert = pki.issue_component("certs", tenant="acme-corp",
...     component_id="agent-001", partition_id="partition-1")  # doctest: +SKIP
>>> pki.revoke("certs", "acme-corp", cert.serial)            # doctest: +SKIP
>>> pki.describe_certificate(cert.cert_path)["identity"]     # doctest: +SKIP
{'kind': 'edge', 'tenant': 'acme-corp', 'component_id': 'agent-001', ...}

Low-level primitives (used by poller.testing.forge) are in poller.pki.build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poller._lazy import lazy_names

if TYPE_CHECKING:
    from poller.pki.authority import (
        EDGE_COMPONENT_TYPES,
        PLATFORM_CA_CN,
        ROOT_CN,
        Authority,
        IssuedCertificate,
        PkiInit,
        TenantCa,
        check_names_permitted,
        create_tenant_ca,
        deployment_ca_cn,
        edge_names,
        init_pki,
        issue_component,
        load_root,
        load_tenant_authority,
        poller_chain_path,
        poller_cn,
        poller_spiffe_id,
        tenant_cn_form,
    )
    from poller.pki.build import build_certificate, new_key
    from poller.pki.crl import CrlInfo, Revocation, parse_serial, revocation_state_path, revoke, write_crl
    from poller.pki.describe import describe_certificate
    from poller.pki.dev import DEV_AGENTS, DEV_TENANTS, DevComponent, DevPki, create_dev_pki
    from poller.pki.errors import AuthorityExists, NameNotPermitted, NotACertificate, PkiError

# Loaded on first use, so that `import poller` (which re-exports PkiError) does
# not load the PKI tool.
_LAZY = {
    "Authority": "authority",
    "AuthorityExists": "errors",
    "CrlInfo": "crl",
    "DEV_AGENTS": "dev",
    "DEV_TENANTS": "dev",
    "DevComponent": "dev",
    "DevPki": "dev",
    "EDGE_COMPONENT_TYPES": "authority",
    "IssuedCertificate": "authority",
    "NameNotPermitted": "errors",
    "NotACertificate": "errors",
    "PLATFORM_CA_CN": "authority",
    "PkiError": "errors",
    "PkiInit": "authority",
    "ROOT_CN": "authority",
    "Revocation": "crl",
    "TenantCa": "authority",
    "build_certificate": "build",
    "check_names_permitted": "authority",
    "create_dev_pki": "dev",
    "create_tenant_ca": "authority",
    "deployment_ca_cn": "authority",
    "describe_certificate": "describe",
    "edge_names": "authority",
    "init_pki": "authority",
    "issue_component": "authority",
    "load_root": "authority",
    "load_tenant_authority": "authority",
    "new_key": "build",
    "parse_serial": "crl",
    "poller_chain_path": "authority",
    "poller_cn": "authority",
    "poller_spiffe_id": "authority",
    "revocation_state_path": "crl",
    "revoke": "crl",
    "tenant_cn_form": "authority",
    "write_crl": "crl",
}


__getattr__ = lazy_names("poller.pki", _LAZY)


__all__ = [
    "DEV_AGENTS",
    "DEV_TENANTS",
    "EDGE_COMPONENT_TYPES",
    "PLATFORM_CA_CN",
    "ROOT_CN",
    "Authority",
    "AuthorityExists",
    "CrlInfo",
    "DevComponent",
    "DevPki",
    "IssuedCertificate",
    "NameNotPermitted",
    "NotACertificate",
    "PkiError",
    "PkiInit",
    "Revocation",
    "TenantCa",
    "build_certificate",
    "check_names_permitted",
    "create_dev_pki",
    "create_tenant_ca",
    "deployment_ca_cn",
    "describe_certificate",
    "edge_names",
    "init_pki",
    "issue_component",
    "load_root",
    "load_tenant_authority",
    "new_key",
    "parse_serial",
    "poller_chain_path",
    "poller_cn",
    "poller_spiffe_id",
    "revocation_state_path",
    "revoke",
    "tenant_cn_form",
    "write_crl",
]
