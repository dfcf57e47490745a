"""TrustStore: the certificates a poller trusts, loaded from a certs directory.

It reads the platform root, every tenant intermediate under tenants/<slug>/
(with its CRL when there is one) and the poller's own client identity. The
loaded state is an immutable TrustSnapshot; reload() builds a new one and
swaps it in only when every file read cleanly, so a broken edit never
replaces a good state.

>>> trust = TrustStore.load("certs")
>>> trust.tenant("acme-corp").ca_cn
'tenant-acme-corp.ca.serviceradar'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from poller.identity import certinfo
from poller.identity.certinfo import CertificateError
from poller.identity.names import InvalidName, parse_tenant_ca_cn
from poller.identity.reasons import PollerError
from poller.trust.layout import CertsLayout


class TrustStoreError(PollerError):
    """The certs directory could not be loaded; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class TenantAuthority:
    """One tenant's intermediate CA: the only anchor for that tenant's agents."""

    slug: str
    cert: x509.Certificate
    pem: bytes
    spki_sha256: str
    revoked_serials: frozenset[int] = frozenset()
    crl_next_update: object | None = None

    @property
    def ca_cn(self) -> str:
        return certinfo.subject_cn(self.cert) or ""

    def issued(self, cert: x509.Certificate) -> bool:
        """True if this CA's key signed cert (names and signature both match)."""
        if cert.issuer != self.cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except Exception:
            return False
        return True


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The poller's own certificate chain and key (the key is never logged)."""

    cert: x509.Certificate
    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    chain_path: Path
    key_path: Path

    @property
    def cn(self) -> str:
        return certinfo.subject_cn(self.cert) or ""


@dataclass(frozen=True, slots=True)
class TrustSnapshot:
    root: x509.Certificate | None
    tenants: Mapping[str, TenantAuthority]
    client: ClientIdentity | None
    warnings: tuple[str, ...] = ()
    by_spki: Mapping[str, TenantAuthority] = field(default_factory=dict)

    def tenant_by_spki(self, spki_sha256: str) -> TenantAuthority | None:
        """The tenant whose intermediate has this public key (SHA-256 of its SPKI)."""
        return self.by_spki.get(spki_sha256)

    def issuer_tenant(self, cert: x509.Certificate) -> TenantAuthority | None:
        """The tenant whose intermediate signed cert, if any."""
        for authority in self.tenants.values():
            if authority.issued(cert):
                return authority
        return None


class TrustStore:
    """Loads and holds a TrustSnapshot of one certs directory.

    client_cert / client_key default to <dir>/poller.pem and poller-key.pem.
    require_client=False allows a store for verification only (no dialing).
    """

    def __init__(
        self,
        certs_dir: str | os.PathLike[str],
        *,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        require_client: bool = True,
    ) -> None:
        self.layout = CertsLayout(Path(certs_dir))
        self._client_cert = Path(client_cert) if client_cert else self.layout.service_cert("poller")
        self._client_key = Path(client_key) if client_key else self.layout.service_key("poller")
        self._require_client = require_client
        self._chain_tmp: tempfile.TemporaryDirectory[str] | None = None
        self._snapshot = self._read()

    @classmethod
    def load(cls, certs_dir: str | os.PathLike[str], **kwargs: object) -> TrustStore:
        return cls(certs_dir, **kwargs)  # type: ignore[arg-type]

    @property
    def snapshot(self) -> TrustSnapshot:
        return self._snapshot

    @property
    def certs_dir(self) -> Path:
        return self.layout.root

    def tenant(self, slug: str) -> TenantAuthority:
        """The tenant's authority; KeyError when the directory has no CA for it."""
        return self._snapshot.tenants[slug]

    @property
    def tenants(self) -> Mapping[str, TenantAuthority]:
        return self._snapshot.tenants

    @property
    def client(self) -> ClientIdentity:
        if self._snapshot.client is None:
            raise TrustStoreError([f"no client identity loaded from {self._client_cert}"])
        return self._snapshot.client

    def reload(self) -> list[str]:
        """Re-read everything; on any problem keep the old state and raise TrustStoreError."""
        self._snapshot = self._read()
        return list(self._snapshot.warnings)

    # -- reading -----------------------------------------------------------

    def _read(self) -> TrustSnapshot:
        problems: list[str] = []
        warnings: list[str] = []
        root_dir = self.layout.root
        if not root_dir.is_dir():
            raise TrustStoreError([f"certs directory {root_dir} does not exist or is not a directory"])

        root = _read_optional_cert(self.layout.root_ca, problems)
        tenants: dict[str, TenantAuthority] = {}
        tenants_dir = self.layout.tenants_dir
        if tenants_dir.is_dir():
            for entry in sorted(tenants_dir.iterdir()):
                if entry.is_dir():
                    authority = _read_tenant(self.layout, entry.name, root, problems, warnings)
                    if authority is not None:
                        tenants[authority.slug] = authority
        if not tenants:
            warnings.append(f"no tenant CAs under {tenants_dir}")

        client = None
        if self._client_cert.exists() or self._require_client:
            client = self._read_client(problems)
        by_spki: dict[str, TenantAuthority] = {}
        for authority in tenants.values():
            other = by_spki.setdefault(authority.spki_sha256, authority)
            if other is not authority:  # one key for two tenants would blur who issued what
                problems.append(f"tenants {other.slug!r} and {authority.slug!r} have CAs with the same public key")
        if problems:
            raise TrustStoreError(problems)
        return TrustSnapshot(root=root, tenants=tenants, client=client, warnings=tuple(warnings), by_spki=by_spki)

    def _read_client(self, problems: list[str]) -> ClientIdentity | None:
        try:
            chain = certinfo.load_pem_chain(self._client_cert.read_bytes(), what=str(self._client_cert))
        except (OSError, CertificateError) as exc:
            problems.append(f"client certificate: {exc}")
            return None
        try:
            key_pem = self._client_key.read_bytes()
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (OSError, ValueError, TypeError) as exc:
            # The exception text of a key parser never includes key bytes, but
            # say only the path and the kind of failure to be sure.
            kind = "unreadable" if isinstance(exc, OSError) else "not an unencrypted PEM private key"
            problems.append(f"client key {self._client_key}: {kind}")
            return None
        leaf = chain[0]
        if _public_der(key.public_key()) != _public_der(leaf.public_key()):
            problems.append(f"client key {self._client_key} does not match certificate {self._client_cert}")
            return None

        # A leaf-only poller.pem issued by the platform services CA gets that CA
        # appended, so agents that trust only the root can build the chain.
        chain_path = self._client_cert
        if len(chain) == 1 and self.layout.platform_ca.exists():
            try:
                platform = certinfo.load_pem_chain(self.layout.platform_ca.read_bytes())[0]
            except (OSError, CertificateError) as exc:
                problems.append(f"platform CA: {exc}")
                return None
            if leaf.issuer == platform.subject and leaf.subject != platform.subject:
                chain = [leaf, platform]
                chain_path = self._write_chain(chain)
        chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        return ClientIdentity(cert=leaf, chain_pem=chain_pem, key_pem=key_pem, chain_path=chain_path, key_path=self._client_key)

    def _write_chain(self, chain: list[x509.Certificate]) -> Path:
        # ssl.SSLContext.load_cert_chain reads files only; the assembled chain
        # (public certificates, no key) goes to a private temporary directory.
        if self._chain_tmp is None:
            self._chain_tmp = tempfile.TemporaryDirectory(prefix="poller-chain-")
        path = Path(self._chain_tmp.name) / "client-chain.pem"
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        return path


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read_optional_cert(path: Path, problems: list[str]) -> x509.Certificate | None:
    if not path.exists():
        return None
    try:
        return certinfo.load_pem_chain(path.read_bytes(), what=str(path))[0]
    except (OSError, CertificateError) as exc:
        problems.append(str(exc))
        return None


def _read_tenant(
    layout: CertsLayout,
    dirname: str,
    root: x509.Certificate | None,
    problems: list[str],
    warnings: list[str],
) -> TenantAuthority | None:
    ca_path = layout.tenant_ca(dirname)
    if not ca_path.exists():
        warnings.append(f"tenants/{dirname}: no ca.pem, tenant skipped")
        return None
    try:
        pem = ca_path.read_bytes()
        cert = certinfo.load_pem_chain(pem, what=str(ca_path))[0]
    except (OSError, CertificateError) as exc:
        problems.append(str(exc))
        return None
    cn = certinfo.subject_cn(cert) or ""
    try:
        slug = parse_tenant_ca_cn(cn)
    except InvalidName as exc:
        problems.append(f"{ca_path}: {exc}")
        return None
    if slug != dirname:
        problems.append(f"{ca_path}: CA is for tenant {slug!r} but lives in tenants/{dirname}/")
        return None
    if not certinfo.is_ca(cert):
        problems.append(f"{ca_path}: not a CA certificate (basicConstraints CA:FALSE or missing)")
        return None
    if root is not None and cert.issuer == root.subject:
        try:
            cert.verify_directly_issued_by(root)
        except Exception:
            problems.append(f"{ca_path}: names the root as issuer but the root did not sign it")
            return None

    revoked: frozenset[int] = frozenset()
    next_update = None
    crl_path = layout.tenant_crl(slug)
    if crl_path.exists():
        try:
            crl = x509.load_pem_x509_crl(crl_path.read_bytes())
        except (OSError, ValueError) as exc:
            problems.append(f"{crl_path}: not a readable PEM CRL ({exc})")
            return None
        if crl.issuer != cert.subject or not crl.is_signature_valid(cert.public_key()):  # type: ignore[arg-type]
            problems.append(f"{crl_path}: not signed by {cn}")
            return None
        revoked = frozenset(r.serial_number for r in crl)
        next_update = crl.next_update_utc
        if next_update is not None and next_update < certinfo.utcnow():
            warnings.append(f"{crl_path}: CRL is past its next update ({next_update:%Y-%m-%d}); still applied")
    return TenantAuthority(
        slug=slug,
        cert=cert,
        pem=cert.public_bytes(serialization.Encoding.PEM),
        spki_sha256=certinfo.spki_sha256(cert),
        revoked_serials=revoked,
        crl_next_update=next_update,
    )
