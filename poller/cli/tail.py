"""`serviceradar-poller tail`: read one tenant's messages from NATS, one JSON line each.

Each line is {"subject": ..., "msg_id": ... (the Nats-Msg-Id header or null),
"payload": ... (the JSON the poller published, or the text if it is not JSON)}.
It reads the tenant's JetStream stream `tenant-<slug>` through an ordered
consumer: new messages, or with --from-start everything the stream holds.

Exit status: 0 after --count messages or when --timeout passes; 3 when the
server refuses the credentials for what was asked (wrong password, or another
tenant's subjects or stream); 4 when NATS is unreachable or the connection is
lost; 2 on bad usage or an unusable credentials file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any

from poller.cli.common import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from poller.delivery.channels import is_token
from poller.identity.names import is_label

if TYPE_CHECKING:
    from poller.nats.connect import NatsTarget


def register(sub: Any) -> None:
    p = sub.add_parser(
        "tail",
        help="print a tenant's messages from NATS JetStream as JSON lines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nats", required=True, metavar="URL", help="NATS server URL(s), comma-separated, e.g. tls://nats:4222")
    p.add_argument("--creds", required=True, metavar="FILE", help="credentials: NKey seed (.nk), .creds, or nats-config JSON")
    add_tls_arguments(p)
    p.add_argument("--tenant", required=True, metavar="SLUG", help="the tenant whose subjects to read")
    p.add_argument("--channel", default=">", metavar="C", help="channel under the tenant, e.g. agents.status (default: all)")
    p.add_argument("--from-start", action="store_true", help="read the tenant's stream from its first message")
    p.add_argument("--count", type=int, metavar="N", help="exit 0 after N messages")
    p.add_argument("--timeout", type=float, metavar="S", help="exit 0 after S seconds")
    p.set_defaults(func=run)


def add_tls_arguments(p: Any) -> None:
    """--tls-ca / --tls-cert / --tls-key (tail and cluster status)."""
    p.add_argument("--tls-ca", metavar="FILE", help="CA that verifies the NATS servers (tls:// URLs)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate (chain) for mTLS")
    p.add_argument("--tls-key", metavar="FILE", help="its private key")


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _filter_ok(channel: str) -> bool:
    tokens = channel.split(".")
    # The one subject-token rule (poller.delivery.channels), plus the wildcards.
    return all(t == "*" or is_token(t) for t in tokens[:-1]) and (tokens[-1] in (">", "*") or is_token(tokens[-1]))


def run(args: argparse.Namespace) -> int:
    from poller.nats.connect import NatsUrlError, target_of
    from poller.nats.creds import CredentialsError

    if not is_label(args.tenant):
        return _usage(f"--tenant: {args.tenant!r} is not a tenant slug")
    if not _filter_ok(args.channel):
        return _usage(f"--channel: {args.channel!r} is not a channel (tokens of letters, digits, '_', '-'; '*' or a final '>')")
    if args.count is not None and args.count < 1:
        return _usage("--count must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        return _usage("--timeout must be positive")
    try:
        target = target_of(args.nats, args.creds, args.tls_ca, args.tls_cert, args.tls_key)
        target.credentials()
    except (NatsUrlError, CredentialsError) as exc:
        return _usage(exc.detail)
    return asyncio.run(_tail(args, target))


class _Tail:
    def __init__(self, count: int | None) -> None:
        self.count = count
        self.seen = 0
        self.done = asyncio.Event()
        self.refused: str | None = None
        self.lost = False

    async def on_error(self, err: Exception) -> None:
        text = str(err)
        if "permissions violation" in text.lower() or "authorization" in text.lower():
            self.refused = text
            self.done.set()

    async def on_closed(self) -> None:
        self.lost = True
        self.done.set()

    def emit(self, msg: Any) -> None:
        headers = msg.headers or {}
        try:
            payload: Any = json.loads(msg.data)
        except (UnicodeDecodeError, ValueError):
            payload = msg.data.decode("utf-8", "replace")
        line = {"subject": msg.subject, "msg_id": headers.get("Nats-Msg-Id"), "payload": payload}
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        self.seen += 1
        if self.count is not None and self.seen >= self.count:
            self.done.set()


async def _tail(args: argparse.Namespace, target: NatsTarget) -> int:
    import nats.errors
    from nats.js.api import DeliverPolicy
    from nats.js.errors import NotFoundError

    from poller.nats.connect import NatsUrlError, connect

    state = _Tail(args.count)
    step = min(5.0, args.timeout) if args.timeout else 5.0
    try:
        async with asyncio.timeout(step + 1):
            nc = await connect(
                target,
                allow_reconnect=False,
                # nats-py retries a failed first connect forever unless attempts are bounded (> 0)
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=max(1, int(step)),
                on_error=state.on_error,
                on_closed=state.on_closed,
                name="serviceradar-poller tail",
            )
    except NatsUrlError as exc:  # the URL's scheme and the server disagree about TLS
        print(f"error: {exc.detail}", file=sys.stderr)
        return EXIT_USAGE
    except nats.errors.AuthorizationError:
        print("error: the NATS server refused these credentials", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        if state.refused:
            print(f"error: refused by the NATS server: {state.refused}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"error: NATS at {target.shown} is unreachable: {exc or exc.__class__.__name__}", file=sys.stderr)
        return EXIT_UNREACHABLE
    subject = f"{args.tenant}.{args.channel}"

    async def on_msg(msg: Any) -> None:
        if not state.done.is_set():
            state.emit(msg)

    async def subscribe() -> None:
        js = nc.jetstream(timeout=step)
        policy = DeliverPolicy.ALL if args.from_start else DeliverPolicy.NEW
        try:
            await js.subscribe(subject, stream=f"tenant-{args.tenant}", ordered_consumer=True, deliver_policy=policy, cb=on_msg)
        except NotFoundError:
            # No stream yet (nothing published for this tenant): read new messages as they come.
            await nc.subscribe(subject, cb=on_msg)
        await nc.flush(timeout=max(1, int(step)))

    loop = asyncio.get_running_loop()
    deadline = None if args.timeout is None else loop.time() + args.timeout

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - loop.time())

    try:
        setup = asyncio.ensure_future(subscribe())
        waiter = asyncio.ensure_future(state.done.wait())
        await asyncio.wait({setup, waiter}, timeout=left(), return_when=asyncio.FIRST_COMPLETED)
        if setup.done() and not waiter.done():
            err = setup.exception()
            if err is not None:
                # The server's permissions error arrives on its own, a little after the failed request.
                await asyncio.wait({waiter}, timeout=1.0)
                if not state.refused:
                    print(f"error: cannot read {subject}: {err or err.__class__.__name__}", file=sys.stderr)
                    return EXIT_UNREACHABLE
            else:
                await asyncio.wait({waiter}, timeout=left())
        setup.cancel()
        waiter.cancel()
        if state.refused:
            print(f"error: refused by the NATS server: {state.refused}", file=sys.stderr)
            return EXIT_REFUSED
        if state.lost and (args.count is None or state.seen < args.count):
            print("error: lost the connection to NATS", file=sys.stderr)
            return EXIT_UNREACHABLE
        return EXIT_OK
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
