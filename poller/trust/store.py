"""TrustStore: the trust material a poller uses, from a certs directory or PEM bytes.

It holds an immutable TrustSnapshot (platform root, every tenant intermediate
with the CRL in force for it, the poller's own client identity). reload()
builds a new one and swaps it in; a piece that does not read cleanly keeps
the material in force for it (see poller.trust.material). After each swap the
store tells its listeners (live agent connections), which re-check their
identity locally.

From a certs directory:

>>> trust = TrustStore("certs")  # doctest: +SKIP
>>> trust.tenant("acme-corp").ca_cn  # doctest: +SKIP
'tenant-acme-corp.ca.serviceradar'

From bytes kept elsewhere (a control plane's database):

>>> trust = TrustStore.from_pem(tenants={"acme-corp": ca_pem}, crls={"acme-corp": crl_pem},
...                             client_cert=poller_pem, client_key=poller_key_pem)  # doctest: +SKIP
>>> trust.update_pem(tenants={"acme-corp": ca_pem}, crls={"acme-corp": newer_crl_pem},
...                  client_cert=poller_pem, client_key=poller_key_pem)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from poller.identity.names import CnForm
from poller.identity.reasons import PollerError
from poller.logs import get_logger
from poller.trust.binding import BindingError, parse_binding
from poller.trust.crlstate import CrlMemory, CrlStateError
from poller.trust.layout import CertsLayout
from poller.trust.material import TenantMaterial, TrustMaterial, build_snapshot
from poller.trust.snapshot import ClientIdentity, CrlInForce, TenantAuthority, TrustSnapshot

log = get_logger("poller.trust")

__all__ = [
    "ClientIdentity",
    "CrlInForce",
    "ReloadReport",
    "TenantAuthority",
    "TrustListener",
    "TrustSnapshot",
    "TrustStore",
    "TrustStoreError",
]


class TrustStoreError(PollerError):
    """The trust material could not be loaded; `problems` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class TrustListener(Protocol):
    """Told after each swap of the snapshot (live connections re-check themselves)."""

    def trust_changed(self, snapshot: TrustSnapshot) -> None: ...


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What a reload did. `problems` were refused (the material in force stays)."""

    warnings: tuple[str, ...]
    problems: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    client_changed: bool

    @property
    def changes(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.client_changed)


class TrustStore:
    """Loads and holds a TrustSnapshot; satisfies poller.trust.TrustSource.

    client_cert / client_key default to <dir>/poller.pem and poller-key.pem.
    require_client=False allows a store for verification only (no dialing).
    require_crl=True refuses agents of tenants that have no CRL (crl_expired).
    crl_state: a file that remembers the newest CRL per tenant and CA key across
    restarts (poller.trust.crlstate); without it they are remembered for the
    store's lifetime, across reloads, in memory only.
    """

    def __init__(
        self,
        certs_dir: str | os.PathLike[str],
        *,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        require_client: bool = True,
        require_crl: bool = False,
        crl_state: str | os.PathLike[str] | None = None,
    ) -> None:
        self.layout: CertsLayout | None = CertsLayout(Path(certs_dir))
        self._client_cert: Path | None = Path(client_cert) if client_cert else self.layout.service_cert("poller")
        self._client_key: Path | None = Path(client_key) if client_key else self.layout.service_key("poller")
        self._require_client = require_client
        self._pem: TrustMaterial | None = None
        self._init_state(require_crl, crl_state)

    def _init_state(self, require_crl: bool, crl_state: str | os.PathLike[str] | None) -> None:
        self._require_crl = require_crl
        self._listeners: weakref.WeakSet[TrustListener] = weakref.WeakSet()
        try:
            self._crls = CrlMemory(Path(crl_state) if crl_state is not None else None)
        except CrlStateError as exc:
            raise TrustStoreError([str(exc)]) from None
        outcome = build_snapshot(self._material(), previous=None, require_crl=require_crl, memory=self._crls)
        if outcome.problems:
            raise TrustStoreError(list(outcome.problems))
        self._snapshot = outcome.snapshot
        self._crls.remember(self._snapshot.tenants.values())

    @classmethod
    def load(cls, certs_dir: str | os.PathLike[str], **kwargs: object) -> TrustStore:
        return cls(certs_dir, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_pem(
        cls,
        *,
        tenants: Mapping[str, bytes],
        crls: Mapping[str, bytes] | None = None,
        root: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        platform_ca: bytes | None = None,
        require_crl: bool = False,
        crl_state: str | os.PathLike[str] | None = None,
        cn_forms: Mapping[str, CnForm | str] | None = None,
    ) -> TrustStore:
        """A store over PEM bytes (e.g. from a database): tenants maps a slug to
        its intermediate CA, crls a slug to its CRL; client_cert is the poller's
        chain (leaf first). Change it later with update_pem(). crl_state: as for
        TrustStore(). cn_forms maps a slug to its binding, as tenant.json would
        (`{"acme-corp": "deployment"}` binds acme-corp's CA to it as its
        deployment CA; poller.trust.binding)."""
        store = cls.__new__(cls)
        store.layout = None
        store._client_cert = store._client_key = None
        store._require_client = client_cert is not None
        store._pem = _pem_material(tenants, crls, root, client_cert, client_key, platform_ca, cn_forms)
        store._init_state(require_crl, crl_state)
        return store

    # -- what dialers read ----------------------------------------------------

    @property
    def snapshot(self) -> TrustSnapshot:
        return self._snapshot

    @property
    def certs_dir(self) -> Path | None:
        """The certs directory, or None for a store made from PEM bytes."""
        return self.layout.root if self.layout is not None else None

    @property
    def client_files(self) -> tuple[Path, ...]:
        """The poller certificate and key files (none for a store made from PEM bytes)."""
        return tuple(p for p in (self._client_cert, self._client_key) if p is not None)

    def tenant(self, slug: str) -> TenantAuthority:
        """The tenant's authority; KeyError when no CA is loaded for it."""
        return self._snapshot.tenants[slug]

    @property
    def tenants(self) -> Mapping[str, TenantAuthority]:
        return self._snapshot.tenants

    @property
    def client(self) -> ClientIdentity:
        if self._snapshot.client is None:
            raise TrustStoreError([f"no client identity loaded from {self._client_cert or 'the PEM material'}"])
        return self._snapshot.client

    @property
    def crl_state(self) -> Path | None:
        """The file remembering the newest CRL per tenant and CA key (None: memory only)."""
        return self._crls.path

    @property
    def require_crl(self) -> bool:
        return self._require_crl

    @require_crl.setter
    def require_crl(self, value: bool) -> None:
        """Changing the policy re-checks every live identity."""
        if value != self._require_crl:
            self._require_crl = value
            self._reload(self._material())

    # -- change ----------------------------------------------------------------

    def subscribe(self, listener: TrustListener) -> None:
        """Call listener.trust_changed(snapshot) after each swap (held weakly)."""
        self._listeners.add(listener)

    def unsubscribe(self, listener: TrustListener) -> None:
        self._listeners.discard(listener)

    def reload(self) -> ReloadReport:
        """Re-read the material. A piece that does not read cleanly is refused
        and the one in force stays (report.problems says which); TrustStoreError
        only when nothing can be read at all (e.g. the directory is gone)."""
        return self._reload(self._material())

    def update_pem(
        self,
        *,
        tenants: Mapping[str, bytes],
        crls: Mapping[str, bytes] | None = None,
        root: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        platform_ca: bytes | None = None,
        cn_forms: Mapping[str, CnForm | str] | None = None,
    ) -> ReloadReport:
        """Replace the material of a store made by from_pem() (same arguments);
        the same rules as reload() apply (rollbacks refused, broken pieces kept)."""
        if self._pem is None:
            raise TrustStoreError(["update_pem() is for stores made by from_pem(); a directory store reloads its files"])
        self._pem = _pem_material(tenants, crls, root, client_cert, client_key, platform_ca, cn_forms)
        return self._reload(self._pem)

    def _reload(self, material: TrustMaterial) -> ReloadReport:
        old = self._snapshot
        outcome = build_snapshot(material, previous=old, require_crl=self._require_crl, memory=self._crls)
        new = outcome.snapshot
        report = ReloadReport(
            warnings=new.warnings,
            problems=outcome.problems + (new.refused if new is not old else ()),
            added=tuple(s for s in new.tenants if s not in old.tenants),
            removed=tuple(s for s in old.tenants if s not in new.tenants),
            changed=tuple(s for s in new.tenants if s in old.tenants and new.tenants[s] != old.tenants[s]),
            client_changed=old.client != new.client,
        )
        self._snapshot = new
        self._crls.remember(new.tenants.values())
        for listener in list(self._listeners):
            try:
                listener.trust_changed(new)
            except Exception:  # one listener's bug must not spare the others their re-check
                log.exception("trust_listener_failed", listener=repr(listener))
        return report

    # -- reading ---------------------------------------------------------------

    def _material(self) -> TrustMaterial:
        if self._pem is not None:
            return self._pem
        assert self.layout is not None
        return _read_directory(self.layout, self._client_cert, self._client_key, self._require_client)


def _pem_material(
    tenants: Mapping[str, bytes],
    crls: Mapping[str, bytes] | None,
    root: bytes | None,
    client_cert: bytes | None,
    client_key: bytes | None,
    platform_ca: bytes | None,
    cn_forms: Mapping[str, CnForm | str] | None = None,
) -> TrustMaterial:
    crls = crls or {}
    cn_forms = cn_forms or {}
    problems = tuple(f"CRL given for tenant {slug!r}, which has no CA" for slug in sorted(set(crls) - set(tenants)))
    problems += tuple(f"cn_form given for tenant {slug!r}, which has no CA" for slug in sorted(set(cn_forms) - set(tenants)))
    forms = {slug: _binding(json.dumps({"cn_form": form}).encode(), f"cn_forms[{slug!r}]") for slug, form in cn_forms.items()}
    return TrustMaterial(
        tenants={
            slug: TenantMaterial(
                ca_pem=pem,
                crl_pem=crls.get(slug),
                where=f"tenant {slug} CA",
                crl_where=f"tenant {slug} CRL",
                cn_form=forms.get(slug, (CnForm.TENANT, None))[0],
                binding_problem=forms.get(slug, (CnForm.TENANT, None))[1],
            )
            for slug, pem in tenants.items()
        },
        root_pem=root,
        platform_ca_pem=platform_ca,
        client_cert_pem=client_cert,
        client_key_pem=client_key,
        require_client=client_cert is not None or client_key is not None,
        problems=problems,
    )


def _binding(data: bytes | None, where: object) -> tuple[CnForm, str | None]:
    """A tenant.json's CN form (TENANT when absent) and why it was refused, if it was."""
    if data is None:
        return CnForm.TENANT, None
    try:
        return parse_binding(data, where=str(where)), None
    except BindingError as exc:
        return CnForm.TENANT, str(exc)


def _read_directory(
    layout: CertsLayout, client_cert: Path | None, client_key: Path | None, require_client: bool
) -> TrustMaterial:
    root_dir = layout.root
    if not root_dir.is_dir():
        raise TrustStoreError([f"certs directory {root_dir} does not exist or is not a directory"])
    problems: list[str] = []
    warnings: list[str] = []

    def read(path: Path) -> bytes | None:
        """The file's bytes; None when it does not exist. An unreadable file is a
        problem and reads as empty, so that it is refused like a broken one
        (on a reload the material in force for it stays)."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            problems.append(f"{path}: unreadable ({exc.strerror or exc})")
            return b""

    tenants: dict[str, TenantMaterial] = {}
    if layout.tenants_dir.is_dir():
        for entry in sorted(layout.tenants_dir.iterdir()):
            if not entry.is_dir():
                continue
            ca_path = layout.tenant_ca(entry.name)
            ca_pem = read(ca_path)
            if ca_pem is None:
                warnings.append(f"tenants/{entry.name}: no ca.pem, tenant skipped")
                continue
            crl_path = layout.tenant_crl(entry.name)
            cn_form, binding_problem = _binding(read(layout.tenant_binding(entry.name)), layout.tenant_binding(entry.name))
            tenants[entry.name] = TenantMaterial(
                ca_pem=ca_pem,
                crl_pem=read(crl_path),
                where=str(ca_path),
                crl_where=str(crl_path),
                cn_form=cn_form,
                binding_problem=binding_problem,
            )
    else:
        warnings.append(f"no tenant CAs under {layout.tenants_dir}")

    cert_pem = key_pem = None
    if client_cert is not None and (require_client or client_cert.exists()):
        cert_pem = read(client_cert)  # absence is reported when the identity is built
        if cert_pem is not None and client_key is not None:
            key_pem = read(client_key)
    return TrustMaterial(
        tenants=tenants,
        root_pem=read(layout.root_ca),
        platform_ca_pem=read(layout.platform_ca),
        client_cert_pem=cert_pem,
        client_key_pem=key_pem,
        client_where=str(client_cert),
        client_key_where=str(client_key),
        require_client=require_client,
        problems=tuple(problems),
        warnings=tuple(warnings),
    )
