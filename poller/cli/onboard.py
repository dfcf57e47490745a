"""`serviceradar-poller onboard`: make and verify onboarding packages.

    onboard --certs DIR --tenant SLUG --component ID --partition ID --type agent|checker|gateway --out FILE.tar.gz
    onboard --certs DIR --tenant SLUG --component ID --partition ID --gateway HOST:PORT --out FILE.tar.gz
    onboard verify FILE.tar.gz --certs DIR [--extract DIR]

Both print exactly one JSON object on stdout, as probe does: `created` /
`valid` true with the component's proven identity, or false with `reason` and
`detail`. With `--gateway` the package is for a push agent (config.json
points at the gateway; `--type` is then agent). Exit 0: package written / package valid; 3: package refused; 2: bad
usage, unreadable certs directory or package file (`reason` `usage`, the
message also on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

from poller.cli.common import EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from poller.config.durations import DurationError, parse_duration
from poller.identity.names import InvalidName
from poller.identity.reasons import IdentityRefused, InvalidArgument, Reason
from poller.logs import configure_logging
from poller.onboard import (
    PACKAGE_TYPES,
    ExtractError,
    PackageRefused,
    create_package,
    verify_package,
    write_package,
    write_verified,
)
from poller.onboard.members import DEFAULT_LISTEN_ADDR, DEFAULT_PUSH_INTERVAL, DETECT_HOST_IP, check_host_ip
from poller.pki.errors import PkiError
from poller.trust.store import TrustStore, TrustStoreError

#: What a create without --type lacks: one of the two forms.
_TYPE_OR_GATEWAY = f"--type {'|'.join(PACKAGE_TYPES)} (a polled component's package) or --gateway HOST:PORT (a push agent's)"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "onboard",
        help="make (or verify) a component's onboarding package",
        description=(
            "Issue a component certificate from the tenant's CA and write a tar.gz with the tenant CA "
            "certificate and chain, the component's certificate and key (0600), a config.json that "
            "ServiceRadar's agent loads as is (only its own keys; with --gateway, a push agent's) and an "
            "identity.json with the tenant identifiers. `onboard verify FILE --certs DIR` checks a package. Prints one JSON "
            "object. Exit status: 0 ok, 3 package refused (reason in the JSON), 2 bad usage or unreadable input."
        ),
    )
    p.add_argument("--certs", type=Path, metavar="DIR", help="certs directory holding the tenant's CA and key")
    p.add_argument("--tenant", metavar="SLUG", help="the tenant the component belongs to")
    p.add_argument("--component", metavar="ID", help="component id, e.g. agent-001")
    p.add_argument("--partition", metavar="ID", help="partition id, e.g. partition-1")
    p.add_argument(
        "--type",
        dest="component_type",
        choices=PACKAGE_TYPES,
        metavar="|".join(PACKAGE_TYPES),
        help="the component a polled package is for; `gateway` is a gateway component's own certificate, "
        "not a push agent's package (that is --gateway HOST:PORT)",
    )
    p.add_argument("--out", type=Path, metavar="FILE.tar.gz", help="where to write the package (mode 0600)")
    p.add_argument("--listen", metavar="ADDR", help="listen_addr in config.json (default :50051; a push agent listens nowhere)")
    p.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        help="make a push agent's package: the agent dials the gateway at HOST:PORT (gateway_addr in config.json); "
        "not --type gateway, which is a gateway component's own certificate",
    )
    p.add_argument(
        "--server-name",
        metavar="NAME",
        help="with --gateway: the name the agent checks in the gateway's certificate (default: HOST)",
    )
    p.add_argument(
        "--push-interval",
        default=DEFAULT_PUSH_INTERVAL,
        metavar="DURATION",
        help="with --gateway: push_interval in config.json (default 30s; the gateway's Hello answer overrides it)",
    )
    p.add_argument(
        "--host-ip",
        default=DETECT_HOST_IP,
        metavar="ADDR",
        help="host_ip in config.json: the agent host's IP address, which the agent reports as its own "
        "(default: empty, the agent finds its address itself)",
    )
    p.add_argument("--days", type=int, default=365, help="certificate validity in days (default 365)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_create)
    _json_errors(p, "created")

    # The action is optional (without it, onboard creates a package): say so in the usage,
    # which argparse would otherwise draw with a required-looking ACTION.
    p.usage = (
        "%(prog)s --certs DIR --tenant SLUG --component ID --partition ID --type T --out FILE.tar.gz [options]\n"
        "       %(prog)s --certs DIR --tenant SLUG --component ID --partition ID --gateway HOST:PORT --out FILE.tar.gz\n"
        "       %(prog)s verify FILE.tar.gz --certs DIR [--extract DIR] [-v]"
    )
    # Its own prog: argparse would otherwise prefix the parent's whole usage (set above).
    actions = p.add_subparsers(
        dest="onboard_action", metavar="verify", help="optional: check a package instead of creating one", prog=p.prog
    )
    v = actions.add_parser(
        "verify",
        help="check that a package is complete, consistent and issued by the right tenant CA",
        description="Check a package against a certs directory. Exit 0 valid, 3 refused, 2 bad usage or unreadable input.",
    )
    v.add_argument("package", type=Path, metavar="FILE.tar.gz")
    v.add_argument(
        "--certs", dest="verify_certs", type=Path, required=True, metavar="DIR", help="certs directory to check against"
    )
    v.add_argument("--extract", type=Path, metavar="DIR", help="after a successful check, unpack into DIR (new or empty)")
    v.add_argument("-v", "--verbose", action="store_true", help="log the audit line to stderr")
    v.set_defaults(func=run_verify)
    _json_errors(v, "valid")


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _usage(message: str, verdict: str = "created") -> int:
    print(f"error: {message}", file=sys.stderr)
    _emit({verdict: False, "reason": Reason.USAGE.value, "detail": message})
    return EXIT_USAGE


def _json_errors(parser: argparse.ArgumentParser, verdict: str) -> None:
    """argparse's own errors (a missing FILE, a bad --type) keep the one-JSON-object contract."""

    def error(message: str) -> NoReturn:
        sys.stderr.write(parser.format_usage())
        sys.exit(_usage(message, verdict))

    parser.error = error  # type: ignore[method-assign]


def run_create(args: argparse.Namespace) -> int:
    configure_logging("auto")  # issuing a certificate is always audited (stderr)
    needed: list[tuple[str, object]] = [("--certs", args.certs), ("--tenant", args.tenant), ("--component", args.component)]
    if args.gateway is not None and args.component_type is None:
        args.component_type = "agent"  # only agents push
    needed += [("--partition", args.partition), ("--type", args.component_type), ("--out", args.out)]
    missing = [flag for flag, value in needed if value is None]
    if missing:
        wanted = ", ".join(flag for flag in missing if flag != "--type")
        if "--type" in missing:  # either form may have been meant: name both
            wanted = f"{wanted} and {_TYPE_OR_GATEWAY}" if wanted else _TYPE_OR_GATEWAY
        return _usage(f"onboard needs {wanted}; or `onboard verify FILE --certs DIR` to check a package")
    if args.gateway is None and (args.server_name is not None or args.push_interval != DEFAULT_PUSH_INTERVAL):
        return _usage("--server-name and --push-interval need --gateway (they configure a push agent)")
    if args.gateway is not None and args.listen is not None:
        return _usage("--listen configures an agent that is polled; a push agent (--gateway) dials out and listens nowhere")
    try:
        if parse_duration(args.push_interval) <= 0:
            return _usage(f"--push-interval {args.push_interval!r} must be positive")
    except DurationError as exc:
        return _usage(f"--push-interval: {exc}")
    try:
        host_ip = check_host_ip(args.host_ip)
    except InvalidArgument as exc:
        return _usage(f"--host-ip: {exc}")
    if args.out.exists() and not args.force:
        return _usage(f"{args.out} already exists (use --force to replace it)")
    if not args.certs.is_dir():
        return _usage(f"certs directory {args.certs} does not exist")
    try:
        made = create_package(
            args.certs,
            tenant=args.tenant,
            component_id=args.component,
            partition_id=args.partition,
            component_type=args.component_type,
            listen_addr=DEFAULT_LISTEN_ADDR if args.listen is None else args.listen,
            gateway_addr=args.gateway,
            server_name=args.server_name,
            push_interval=args.push_interval,
            host_ip=host_ip,
            days=args.days,
        )
        write_package(args.out, made, force=args.force)
    except (PackageRefused, IdentityRefused) as exc:  # the self-check refused it: the certs directory is inconsistent
        # A package refused (3, with the proof's reason), as `onboard verify` says it; nothing was written.
        detail = f"the package made from {args.certs} does not verify: {exc.detail}"
        print(f"error: {detail}", file=sys.stderr)
        _emit({"created": False, "reason": exc.reason.value, "detail": detail})
        return EXIT_REFUSED
    except (InvalidName, PkiError, TrustStoreError, OSError) as exc:
        return _usage(str(exc))
    _emit({"created": True, "package": str(args.out), **made.verified.as_dict()})
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    configure_logging("auto", level=logging.INFO if args.verbose else logging.ERROR)
    try:
        trust = TrustStore(args.verify_certs, require_client=False).snapshot
    except TrustStoreError as exc:
        return _usage(f"cannot load certs directory {args.verify_certs}: {exc}", "valid")
    try:
        verified = verify_package(args.package, trust=trust)
    except (PackageRefused, IdentityRefused) as err:
        _emit({"valid": False, "reason": err.reason.value, "detail": err.detail})
        return EXIT_REFUSED
    except OSError as exc:
        return _usage(f"cannot read {args.package}: {exc.strerror or exc}", "valid")
    if args.extract is not None:
        try:
            write_verified(verified, args.extract)
        except (ExtractError, OSError) as exc:
            return _usage(f"cannot extract into {args.extract}: {exc}", "valid")
    _emit({"valid": True, **verified.as_dict()})
    return EXIT_OK
