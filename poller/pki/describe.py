"""describe_certificate: what `serviceradar-poller pki show` prints.

>>> describe_certificate("certs/tenants/acme-corp/ca.pem")["identity"]  # doctest: +SKIP
{'kind': 'tenant_ca', 'tenant': 'acme-corp'}
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from poller.identity import certinfo
from poller.identity.names import (
    CnForm,
    InvalidName,
    parse_spiffe_id,
    parse_tenant_ca_cn,
    read_edge_cn,
    spiffe_agrees_with,
)
from poller.identity.reasons import Reason
from poller.pki.errors import NotACertificate
from poller.pki.files import read_certificates


def _rfc3339(cert_time: Any) -> str:
    return str(cert_time.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _identity(cert: x509.Certificate, cn: str | None, spiffe: list[str]) -> dict[str, Any]:
    if cn is None:
        return {}
    try:
        return {"kind": "tenant_ca", "tenant": parse_tenant_ca_cn(cn)}
    except InvalidName:
        pass
    try:
        # A deployment-form CN names no tenant: which one it proves depends on the
        # CA it chains to and that CA's binding, which a lone file cannot show;
        # "x" stands in for it here and is never printed.
        name = read_edge_cn(cn, tenant="x", form=CnForm.DEPLOYMENT)
    except InvalidName:
        pass
    else:
        deployment = name.form is CnForm.DEPLOYMENT
        identity: dict[str, Any] = {
            "kind": "edge_deployment" if deployment else "edge",
            "tenant": None if deployment else name.tenant,
            "component_id": name.component_id,
            "partition_id": name.partition_id,
        }
        if spiffe:
            agrees = True
            for uri in spiffe:
                try:
                    parsed = parse_spiffe_id(uri, cn_form=name.form)
                except InvalidName:
                    agrees = False
                    continue
                named = replace(name, tenant=parsed.tenant) if deployment and parsed.tenant else name
                agrees = agrees and spiffe_agrees_with(parsed, named)
            identity["spiffe_agrees"] = agrees
        return identity
    return {}


def _key_description(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


def _path_length(cert: x509.Certificate) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        return None


def validity(cert: x509.Certificate, now: datetime | None = None) -> str:
    """ "valid", or the Reason code of a certificate outside its validity period.

    A certificate is valid from not_before through not_after inclusive.
    """
    now = now or certinfo.utcnow()
    if now < cert.not_valid_before_utc:
        return Reason.NOT_YET_VALID.value
    if now > cert.not_valid_after_utc:
        return Reason.EXPIRED.value
    return "valid"


def describe_certificate(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-ready description of the first certificate in a PEM (or DER) file.

    Keys: path, subject, subject_cn, identity ({} unless the CN is an edge CN
    (kind "edge": tenant, component_id, partition_id, spiffe_agrees), a
    deployment-form edge CN (kind "edge_deployment": tenant None, since the
    tenant is the binding's of the CA it chains to) or a tenant CA CN (kind
    "tenant_ca": tenant)), spiffe_ids, dns_names,
    ip_addresses, issuer_cn, serial (lowercase hex), not_before / not_after
    (RFC 3339 UTC), validity ("valid", "expired" or "not_yet_valid", now),
    sha256_fingerprint (of the DER), spki_sha256, is_ca,
    path_length, key, chain_length (certificates in the file).

    Any certificate is described; a file without one raises NotACertificate.

    >>> describe_certificate("certs/root.pem")["subject_cn"]  # doctest: +SKIP
    'ServiceRadar Root CA'
    """
    file_path = Path(path)
    certs = read_certificates(file_path)
    cert = certs[0]
    try:
        _ = cert.extensions  # parsed lazily; a malformed extension raises here, not halfway through
    except ValueError as exc:
        raise NotACertificate(f"{file_path}: the certificate's extensions do not parse ({exc})") from None
    cn = certinfo.subject_cn(cert)
    spiffe = certinfo.spiffe_uris(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        ips = []
    issuer_cns = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {
        "path": str(file_path),
        "subject": cert.subject.rfc4514_string(),
        "subject_cn": cn,
        "identity": _identity(cert, cn, spiffe),
        "spiffe_ids": spiffe,
        "dns_names": certinfo.dns_names(cert),
        "ip_addresses": ips,
        "issuer_cn": str(issuer_cns[0].value) if issuer_cns else None,
        "serial": certinfo.serial_hex(cert),
        "not_before": _rfc3339(cert.not_valid_before_utc),
        "not_after": _rfc3339(cert.not_valid_after_utc),
        "validity": validity(cert),
        "sha256_fingerprint": certinfo.fingerprint_sha256(cert),
        "spki_sha256": certinfo.spki_sha256(cert),
        "is_ca": certinfo.is_ca(cert),
        "path_length": _path_length(cert),
        "key": _key_description(cert),
        "chain_length": len(certs),
    }
