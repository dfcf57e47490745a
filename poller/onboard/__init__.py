"""Onboarding packages: hand a new agent, checker or gateway its certificate.

`create_package` issues a component certificate from the tenant's CA and
packs it with the tenant's CA certificate and chain and a config.json in the
shape of ServiceRadar's Go agent; `verify_package` proves a package complete,
consistent and issued by the right tenant CA; `extract_package` unpacks a
verified package without ever writing outside the target directory. The same
operations are `serviceradar-poller onboard ...` on the command line.

>>> from poller import onboard
>>> made = onboard.create_package("certs", tenant="acme-corp", component_id="agent-001",
...                               partition_id="partition-1", component_type="agent")  # doctest: +SKIP
>>> onboard.write_package(Path("agent-001.tar.gz"), made)                              # doctest: +SKIP
>>> onboard.verify_package(Path("agent-001.tar.gz"), trust=trust.snapshot).context.tenant  # doctest: +SKIP
'acme-corp'
"""

from poller.onboard.archive import MemberFile, PackageRefused, read_archive
from poller.onboard.extract import ExtractError, extract_package, write_verified
from poller.onboard.members import MEMBERS, PACKAGE_TYPES, agent_config, nats_subject_prefix
from poller.onboard.package import Package, create_package, write_package
from poller.onboard.verify import VerifiedPackage, verify_package, verify_package_bytes

__all__ = [
    "MEMBERS",
    "PACKAGE_TYPES",
    "ExtractError",
    "MemberFile",
    "Package",
    "PackageRefused",
    "VerifiedPackage",
    "agent_config",
    "create_package",
    "extract_package",
    "nats_subject_prefix",
    "read_archive",
    "verify_package",
    "verify_package_bytes",
    "write_package",
    "write_verified",
]
