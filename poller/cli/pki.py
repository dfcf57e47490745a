"""`serviceradar-poller pki ...`: create and inspect a ServiceRadar certs directory.

Every subcommand prints a short summary of what it wrote (paths, CN, serial)
on stdout, never key material. Errors go to stderr as `error: <message>` with
exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from poller.cli.common import EXIT_OK, EXIT_USAGE
from poller.identity.names import InvalidName, check_label

_EPILOG = """\
examples:
  serviceradar-poller pki init certs
  serviceradar-poller pki tenant certs acme-corp
  serviceradar-poller pki tenant certs globex --deployment
  serviceradar-poller pki issue certs --tenant acme-corp --component agent-001 --partition partition-1
  serviceradar-poller pki gateway certs --dns gw.example.net --ip 10.0.0.5
  serviceradar-poller pki revoke certs --tenant acme-corp certs/tenants/acme-corp/components/agent-001-partition-1.pem
  serviceradar-poller pki show certs/tenants/acme-corp/ca.pem
  serviceradar-poller pki dev certs
"""


_KEEPS = (
    "The revocations of an existing crl.pem (made by another tool, such as openssl ca -gencrl) are kept: "
    "when it is a complete CRL signed by the tenant CA, the entries revoked.json lacks are carried over "
    "and recorded there, and the new CRL number is above its number. A crl.pem that does not read, is "
    "signed by another key, or is a delta or issuingDistributionPoint CRL is refused (exit 2) and left "
    "unchanged; move it away to replace it."
)


def _label(what: str) -> Callable[[str], str]:
    """An argparse type that accepts one lowercase DNS label (exit 2 otherwise)."""

    def parse(value: str) -> str:
        try:
            return check_label(value, what)
        except InvalidName as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = what  # argparse names the type in its message
    return parse


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _run(action: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the PKI's expected errors into `error: ...` and exit 2."""

    def handler(args: argparse.Namespace) -> int:
        from poller.pki import PkiError

        try:
            return action(args)
        except (PkiError, InvalidName) as exc:
            return _fail(str(exc))
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            return _fail(f"{exc.strerror or exc}{where}")

    return handler


def _status(created: bool) -> str:
    return "created" if created else "kept   "


# --- handlers -------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    from poller.pki import init_pki

    result = init_pki(args.dir, poller_id=args.poller_id, force=args.force)
    written = set(result.written)
    print(f"root CA      {_status(result.root_cert in written)} {result.root_cert}  CN=ServiceRadar Root CA")
    print(f"             sha256 {result.root_fingerprint}")
    print(f"platform CA  {_status(result.platform_ca in written)} {result.platform_ca}  CN=platform.ca.serviceradar")
    print(
        f"poller       {_status(result.poller_cert in written)} {result.poller_cert}  "
        f"CN={result.poller_cn}  serial={result.poller_serial}"
    )
    print(f"             key {result.poller_key}  chain {result.poller_chain}")
    if not written:
        print("everything already existed; nothing written (use --force to regenerate)")
    for slug in result.stale_tenants:
        print(
            f"warning: tenant CA {slug!r} was not issued by this root; "
            f"regenerate it with `serviceradar-poller pki tenant {args.dir} {slug} --force`",
            file=sys.stderr,
        )
    return EXIT_OK


def _tenant(args: argparse.Namespace) -> int:
    from poller.pki import create_tenant_ca

    ca = create_tenant_ca(args.dir, args.slug, force=args.force, deployment=args.deployment)
    kind = "deployment CA" if args.deployment else "tenant CA   "
    print(f"{kind} {_status(ca.created)} {ca.cert_path}  CN={ca.cn}  serial={ca.serial}")
    print(f"             key {ca.key_path}  chain {ca.chain_path}")
    print(f"             sha256 {ca.fingerprint}")
    if args.deployment:
        print(f'             bound to tenant {ca.slug} by {ca.cert_path.with_name("tenant.json")} {{"cn_form": "deployment"}}')
    if not ca.created:
        print("the tenant CA already existed and was kept (use --force to regenerate it)")
    return EXIT_OK


def _issue(args: argparse.Namespace) -> int:
    from poller.pki import issue_component

    issued = issue_component(
        args.dir,
        tenant=args.tenant,
        component_id=args.component,
        partition_id=args.partition,
        component_type=args.type,
        days=args.days,
        dns=args.dns or (),
        ips=args.ip or (),
    )
    print(f"certificate  {issued.cert_path}  CN={issued.cn}  serial={issued.serial}")
    print(f"key          {issued.key_path}")
    print(f"chain        {issued.chain_path}")
    print(f"SPIFFE ID    {issued.spiffe_id}")
    print(f"not after    {issued.not_after.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    return EXIT_OK


def _gateway(args: argparse.Namespace) -> int:
    from poller.pki.gateway import issue_gateway_cert

    issued = issue_gateway_cert(
        args.dir, dns=args.dns or (), ips=args.ip or (), issuer=args.issuer, days=args.days, name=args.name
    )
    print(f"gateway      {issued.cert_path}  CN={issued.cn}  serial={issued.serial}  issuer={issued.issuer}")
    print(f"key          {issued.key_path}")
    print(f"SANs         {' '.join(issued.sans)}")
    print(f"not after    {issued.not_after.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    from poller.pki import revoke

    result = revoke(args.dir, args.tenant, args.target)
    state = "was already revoked" if result.already_revoked else "revoked"
    print(f"serial {result.serial} {state}; CRL written to {result.crl_path}")
    _print_carried(result.carried)
    return EXIT_OK


def _print_carried(carried: tuple[str, ...]) -> None:
    if carried:
        print(f"kept {len(carried)} revocation(s) of the previous CRL that revoked.json lacked: {' '.join(carried)}")


def _crl(args: argparse.Namespace) -> int:
    from poller.pki import write_crl

    info = write_crl(args.dir, args.tenant, days=args.days)
    print(
        f"CRL #{info.number} written to {info.path}: {len(info.revoked)} revoked serial(s), "
        f"next update {info.next_update.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )
    for serial in info.revoked:
        print(f"  {serial}")
    _print_carried(info.carried)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from poller.pki import describe_certificate

    description: dict[str, Any] = describe_certificate(args.file)
    print(json.dumps(description, indent=2))
    if description["validity"] == "expired":
        print(f"warning: {args.file}: the certificate expired at {description['not_after']}", file=sys.stderr)
    elif description["validity"] == "not_yet_valid":
        print(f"warning: {args.file}: the certificate is not valid before {description['not_before']}", file=sys.stderr)
    return EXIT_OK


def _dev(args: argparse.Namespace) -> int:
    from poller.pki import create_dev_pki

    dev = create_dev_pki(args.dir, poller_id=args.poller_id)
    written = set(dev.init.written)
    print(f"root CA      {_status(dev.init.root_cert in written)} {dev.init.root_cert}")
    print(f"poller       {_status(dev.init.poller_cert in written)} {dev.init.poller_cert}  CN={dev.init.poller_cn}")
    for ca in dev.tenants.values():
        print(f"tenant CA    {_status(ca.created)} {ca.cert_path}  CN={ca.cn}")
    for component in dev.components:
        print(f"component    {_status(component.created)} {component.cert_path}  CN={component.cn}  serial={component.serial}")
    if dev.impostor is not None:
        print(
            f"impostor     {_status(dev.impostor.created)} {dev.impostor.cert_path}  "
            f"CN={dev.impostor.cn} (issued by tenant {dev.impostor.tenant}'s CA: must be refused)"
        )
    return EXIT_OK


# --- parser ----------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `pki` and its subcommands to the top-level parser."""
    parser = subparsers.add_parser(
        "pki",
        help="create and inspect a certs directory (root, tenant CAs, agent certificates)",
        description=(
            "Create and inspect a ServiceRadar certs directory: the platform root and the "
            "poller's certificate, one intermediate CA per tenant, edge component certificates "
            "and CRLs. Keys are ECDSA P-256, written with mode 0600."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    directory_help = "the certs directory (created if missing)"

    p = sub.add_parser(
        "init",
        help="create the root CA, the platform CA and the poller's client certificate",
        description=(
            "Create root.pem (CN 'ServiceRadar Root CA'), platform/ca.pem (CN platform.ca.serviceradar) "
            "and the poller's client certificate poller.pem / poller-key.pem / poller-chain.pem "
            "(CN poller-<ID>.serviceradar). Existing files are kept; nothing is overwritten without --force."
        ),
    )
    p.add_argument("dir", metavar="DIR", type=Path, help=directory_help)
    p.add_argument(
        "--poller-id",
        default="1",
        type=_label("poller id"),
        metavar="ID",
        help="the poller's id; its CN is poller-<ID>.serviceradar (default: 1)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="regenerate root, platform CA and poller certificate (existing tenant CAs become invalid)",
    )
    p.set_defaults(func=_run(_init))

    p = sub.add_parser(
        "tenant",
        help="create a tenant's intermediate CA",
        description=(
            "Create tenants/SLUG/ca.pem, ca-key.pem and ca-chain.pem: CN tenant-SLUG.ca.serviceradar, "
            "signed by the root, pathlen 0, with a name constraint permitting only SLUG.serviceradar. "
            "With --deployment: a deployment CA instead, a self-signed root (no root CA needed) bound to the "
            'tenant by tenants/SLUG/tenant.json {"cn_form": "deployment"}; the components it issues have CNs '
            "<ID>.<PARTITION>.serviceradar without a tenant label, as in ServiceRadar's later one-deployment-"
            "per-tenant releases. An existing tenant CA is kept unless --force is given."
        ),
    )
    p.add_argument("dir", metavar="DIR", type=Path, help="the certs directory (must hold a root CA)")
    p.add_argument("slug", metavar="SLUG", type=_label("tenant slug"), help="the tenant slug, e.g. acme-corp")
    p.add_argument(
        "--force",
        action="store_true",
        help="regenerate the tenant CA (certificates it issued stop verifying; revocations are reset)",
    )
    p.add_argument(
        "--deployment",
        action="store_true",
        help="make a deployment CA (self-signed root) and bind it to the tenant with tenants/SLUG/tenant.json",
    )
    p.set_defaults(func=_run(_tenant))

    p = sub.add_parser(
        "issue",
        help="issue an edge component certificate from a tenant's CA",
        description=(
            "Issue tenants/TENANT/components/ID-PARTITION.pem (+ -key.pem, -chain.pem) with CN "
            "<ID>.<PARTITION>.<TENANT>.serviceradar and SPIFFE ID "
            "spiffe://serviceradar.local/<TYPE>/<TENANT>/<PARTITION>/<ID>. Extra DNS names must lie "
            "under TENANT.serviceradar (the tenant CA's name constraint). For a tenant bound to a deployment "
            "CA (pki tenant --deployment) the CN is <ID>.<PARTITION>.serviceradar and the SPIFFE ID "
            "spiffe://serviceradar.local/<TYPE>/<PARTITION>/<ID>. Re-issuing replaces the files."
        ),
    )
    p.add_argument("dir", metavar="DIR", type=Path, help="the certs directory")
    p.add_argument("--tenant", required=True, metavar="SLUG", type=_label("tenant slug"), help="the tenant slug")
    p.add_argument(
        "--component", required=True, metavar="ID", type=_label("component id"), help="the component id, e.g. agent-001"
    )
    p.add_argument(
        "--partition", required=True, metavar="ID", type=_label("partition id"), help="the partition id, e.g. partition-1"
    )
    p.add_argument(
        "--type",
        default="agent",
        choices=("agent", "checker", "gateway", "sync"),
        help="the component type in the SPIFFE ID (default: agent)",
    )
    p.add_argument("--days", default=365, type=_positive, metavar="N", help="validity in days (default: 365)")
    p.add_argument("--dns", action="append", metavar="NAME", help="an extra DNS SAN under TENANT.serviceradar (repeatable)")
    p.add_argument("--ip", action="append", metavar="IP", help="an IP address SAN (repeatable)")
    p.set_defaults(func=_run(_issue))

    p = sub.add_parser(
        "gateway",
        help="issue the gateway's serving certificate (what push agents check)",
        description=(
            "Issue NAME.pem (the served chain: the leaf, then the platform CA when it issued it) and "
            "NAME-key.pem (default NAME: gateway, the daemon's gateway.cert / gateway.key defaults): "
            "EKU serverAuth only, the SANs given, CN the first of them, issued by the platform CA "
            "(default) or the root. Push agents check it against root.pem for their server_name, "
            "which must be one of the SANs. Re-issuing replaces the files."
        ),
    )
    p.add_argument(
        "dir",
        metavar="DIR",
        type=Path,
        help="the certs directory: with --issuer platform it must hold platform/ca.pem and platform/ca-key.pem, "
        "with --issuer root root.pem and root-key.pem",
    )
    p.add_argument("--dns", action="append", metavar="NAME", help="a DNS SAN, e.g. gw.example.net (repeatable)")
    p.add_argument("--ip", action="append", metavar="IP", help="an IP address SAN (repeatable)")
    p.add_argument("--issuer", default="platform", choices=("platform", "root"), help="the issuing CA (default: platform)")
    p.add_argument("--days", default=365, type=_positive, metavar="N", help="validity in days (default: 365)")
    p.add_argument(
        "--name", default="gateway", type=_label("certificate name"), metavar="NAME", help="file name stem (default: gateway)"
    )
    p.set_defaults(func=_run(_gateway))

    p = sub.add_parser(
        "revoke",
        help="revoke a component certificate and rewrite the tenant's CRL",
        description=(
            "Record a revoked serial in tenants/TENANT/revoked.json and rewrite tenants/TENANT/crl.pem. "
            "SERIAL_OR_CERTFILE is a hex serial (with or without 0x or colons) or a certificate file "
            "issued by the tenant's CA. " + _KEEPS
        ),
    )
    p.add_argument("dir", metavar="DIR", type=Path, help="the certs directory")
    p.add_argument("--tenant", required=True, metavar="SLUG", type=_label("tenant slug"), help="the tenant slug")
    p.add_argument("target", metavar="SERIAL_OR_CERTFILE", help="hex serial or path to the certificate")
    p.set_defaults(func=_run(_revoke))

    p = sub.add_parser(
        "crl",
        help="(re)write a tenant's CRL",
        description="Rewrite tenants/TENANT/crl.pem from the recorded revocations, signed by the tenant CA. " + _KEEPS,
    )
    p.add_argument("dir", metavar="DIR", type=Path, help="the certs directory")
    p.add_argument("--tenant", required=True, metavar="SLUG", type=_label("tenant slug"), help="the tenant slug")
    p.add_argument("--days", default=7, type=_positive, metavar="N", help="days until nextUpdate (default: 7)")
    p.set_defaults(func=_run(_crl))

    p = sub.add_parser(
        "show",
        help="describe a certificate as JSON",
        description=(
            "Print subject, ServiceRadar identity, SANs, issuer, serial, validity and fingerprints "
            "of the first certificate in FILE (PEM or DER) as JSON."
        ),
    )
    p.add_argument("file", metavar="FILE", type=Path, help="a certificate file")
    p.set_defaults(func=_run(_show))

    p = sub.add_parser(
        "dev",
        help="create the development PKI (what `make certs` runs)",
        description=(
            "init + tenant CAs acme-corp and xyz-inc + agents agent-001/agent-002 (acme-corp, partition-1) "
            "and agent-007 (xyz-inc, site-b), plus an impostor minted by xyz-inc's CA that claims "
            "acme-corp (tenants/xyz-inc/components/impostor-agent-666-partition-1.pem). Existing files are kept."
        ),
    )
    p.add_argument("dir", metavar="DIR", type=Path, help=directory_help)
    p.add_argument("--poller-id", default="1", type=_label("poller id"), metavar="ID", help="the poller's id (default: 1)")
    p.set_defaults(func=_run(_dev))
