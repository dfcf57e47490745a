"""Where things live in a certs directory (paths only, no I/O).

Compatible with ServiceRadar's generate-certs.sh layout:

    root.pem root-key.pem                         platform root
    platform/ca.pem ca-key.pem                    platform services CA (optional)
    <name>.pem <name>-key.pem                     platform service certs (poller.pem ...)
    tenants/<slug>/ca.pem ca-key.pem ca-chain.pem tenant intermediate (or deployment CA)
    tenants/<slug>/tenant.json                    optional binding, {"cn_form": "deployment"}
    tenants/<slug>/components/<component>-<partition>.pem -key.pem -chain.pem
    tenants/<slug>/crl.pem                        optional revocation list
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


class ComponentFiles(NamedTuple):
    """The three files of one component certificate."""

    cert: Path
    key: Path
    chain: Path


@dataclass(frozen=True, slots=True)
class CertsLayout:
    """Paths inside one certs directory.

    >>> CertsLayout(Path("certs")).tenant_ca("acme-corp")
    PosixPath('certs/tenants/acme-corp/ca.pem')
    """

    root: Path

    @property
    def root_ca(self) -> Path:
        return self.root / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.root / "root-key.pem"

    @property
    def platform_ca(self) -> Path:
        return self.root / "platform" / "ca.pem"

    @property
    def platform_key(self) -> Path:
        return self.root / "platform" / "ca-key.pem"

    def service_cert(self, name: str) -> Path:
        return self.root / f"{name}.pem"

    def service_key(self, name: str) -> Path:
        return self.root / f"{name}-key.pem"

    @property
    def tenants_dir(self) -> Path:
        return self.root / "tenants"

    def tenant_dir(self, slug: str) -> Path:
        return self.tenants_dir / slug

    def tenant_ca(self, slug: str) -> Path:
        return self.tenant_dir(slug) / "ca.pem"

    def tenant_key(self, slug: str) -> Path:
        return self.tenant_dir(slug) / "ca-key.pem"

    def tenant_chain(self, slug: str) -> Path:
        return self.tenant_dir(slug) / "ca-chain.pem"

    def tenant_binding(self, slug: str) -> Path:
        """tenants/<slug>/tenant.json: how the tenant's CA is bound to it (poller.trust.binding)."""
        return self.tenant_dir(slug) / "tenant.json"

    def tenant_crl(self, slug: str) -> Path:
        return self.tenant_dir(slug) / "crl.pem"

    def component_files(self, slug: str, component_id: str, partition_id: str) -> ComponentFiles:
        return ComponentFiles(
            self.component_cert(slug, component_id, partition_id),
            self.component_key(slug, component_id, partition_id),
            self.component_chain(slug, component_id, partition_id),
        )

    def component_stem(self, slug: str, component_id: str, partition_id: str) -> Path:
        return self.tenant_dir(slug) / "components" / f"{component_id}-{partition_id}"

    def component_cert(self, slug: str, component_id: str, partition_id: str) -> Path:
        stem = self.component_stem(slug, component_id, partition_id)
        return stem.with_name(stem.name + ".pem")

    def component_key(self, slug: str, component_id: str, partition_id: str) -> Path:
        stem = self.component_stem(slug, component_id, partition_id)
        return stem.with_name(stem.name + "-key.pem")

    def component_chain(self, slug: str, component_id: str, partition_id: str) -> Path:
        stem = self.component_stem(slug, component_id, partition_id)
        return stem.with_name(stem.name + "-chain.pem")
