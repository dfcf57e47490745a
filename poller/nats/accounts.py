"""The NATS account layout that isolates tenants in the server itself (used by `nats-config`).

    account "platform"            user "poller"
        imports, per tenant T:    service T.>        from "tenant-T"   (publish results, get the JetStream ack back)
                                  service $JS.API.>  from "tenant-T" as $JS.T.API.>  (create/check T's stream)
        poller may publish:       T.>, $JS.T.API.STREAM.{INFO,CREATE,UPDATE}.tenant-T, $JS.T.API.INFO
        poller may subscribe:     _INBOX.>  (replies only)
    account "tenant-T"            user "T"; stream "tenant-T" (subjects T.>) lives here
        exports:                  service T.> and service $JS.API.> to "platform" only
        T may subscribe:          T.>, _INBOX.>
        T may publish:            only the JetStream API of its own stream's consumers, its
                                  stream's INFO/MSG.GET, acks and flow control replies

Why accounts rather than permissions in one account: an account is a separate
subject space, so another tenant's subjects and stream do not exist for a
tenant's connection at all, and the per-user permissions on top make the
server refuse (permissions violation) a subscription outside `T.>`, a publish
of a result, or any change to the stream. Why service exports from the tenant
to the platform (and not the stream in the platform account): the stream and
its consumers then live in the tenant's account, so the tenant reads them
without any cross-account import, and the poller publishes from one connection
and receives JetStream's ack (and `duplicate` for a repeated Msg-Id) through
the service import. One stream per tenant also gives per-tenant limits.

>>> layout = plan_layout(["acme-corp"], listen=("127.0.0.1", 4222), store_dir=Path("js"))  # doctest: +SKIP
>>> write_layout(Path("nats"), layout)                                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poller.cluster.records import kv_permissions
from poller.nats.creds import NatsCredentials, write_credentials
from poller.nats.subjects import stream_name, stream_subjects
from poller.pki.files import write_private

__all__ = [
    "PLATFORM_ACCOUNT",
    "POLLER_USER",
    "NatsLayout",
    "client_url",
    "creds_path",
    "plan_layout",
    "server_config",
    "tenant_account",
    "write_layout",
]

PLATFORM_ACCOUNT = "platform"
POLLER_USER = "poller"
POLLER_CREDS = "poller.creds"
SERVER_CONF = "nats-server.conf"
MAX_PAYLOAD = 8 * 1024 * 1024  # reassembled sweep results exceed NATS's 1 MiB default


def tenant_account(tenant: str) -> str:
    return stream_name(tenant)  # "tenant-<slug>": the slug is validated there


def creds_path(out_dir: Path, tenant: str | None) -> Path:
    """OUTDIR/poller.creds, or OUTDIR/tenant-<slug>.creds (the prefix keeps a tenant named "poller" apart)."""
    return Path(out_dir) / (POLLER_CREDS if tenant is None else f"{tenant_account(tenant)}.creds")


def _password() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class NatsLayout:
    tenants: tuple[str, ...]
    listen: tuple[str, int]
    store_dir: Path
    poller: NatsCredentials
    tenant_creds: Mapping[str, NatsCredentials]

    @property
    def url(self) -> str:
        return client_url(self.listen)


def client_url(listen: tuple[str, int]) -> str:
    """The URL a client on this machine uses for a server listening on `listen`."""
    host, port = listen
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
    return f"nats://[{shown}]:{port}" if ":" in shown else f"nats://{shown}:{port}"


def plan_layout(
    tenants: Iterable[str],
    *,
    listen: tuple[str, int],
    store_dir: Path,
    existing: Mapping[str | None, NatsCredentials] | None = None,
) -> NatsLayout:
    """Users and passwords for the poller and each tenant. Passwords in `existing`
    (keyed by tenant, None for the poller) are kept, so re-running nats-config to
    add a tenant does not cut off the others."""
    existing = existing or {}
    slugs = tuple(sorted(set(tenants)))
    url = client_url(listen)
    old = existing.get(None)
    poller = NatsCredentials(
        role="poller",
        account=PLATFORM_ACCOUNT,
        user=POLLER_USER,
        password=old.password if old is not None and old.role == "poller" else _password(),
        url=url,
        jetstream_api="$JS.{tenant}.API",
    )
    per_tenant: dict[str, NatsCredentials] = {}
    for slug in slugs:
        old = existing.get(slug)
        per_tenant[slug] = NatsCredentials(
            role="tenant",
            account=tenant_account(slug),
            user=slug,
            password=old.password if old is not None and old.tenant == slug else _password(),
            tenant=slug,
            url=url,
            stream=stream_name(slug),
        )
    return NatsLayout(slugs, listen, Path(store_dir), poller, per_tenant)


def _tenant_permissions(slug: str) -> dict[str, Any]:
    stream = stream_name(slug)
    return {
        "publish": {
            "allow": [
                "$JS.API.INFO",
                f"$JS.API.STREAM.INFO.{stream}",
                f"$JS.API.STREAM.MSG.GET.{stream}",
                f"$JS.API.CONSUMER.*.{stream}",
                f"$JS.API.CONSUMER.*.{stream}.>",
                f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
                f"$JS.ACK.{stream}.>",
                f"$JS.FC.{stream}.>",
            ]
        },
        "subscribe": {"allow": [*stream_subjects(slug), "_INBOX.>"]},
    }


def _poller_permissions(tenants: Iterable[str], cluster_bucket: str | None = None) -> dict[str, Any]:
    allow: list[str] = [*kv_permissions(cluster_bucket)] if cluster_bucket else []
    for slug in tenants:
        stream = stream_name(slug)
        api = f"$JS.{slug}.API"
        allow += [*stream_subjects(slug), f"{api}.INFO"]
        allow += [f"{api}.STREAM.{op}.{stream}" for op in ("INFO", "CREATE", "UPDATE")]
    return {"publish": {"allow": allow}, "subscribe": {"allow": ["_INBOX.>"]}}


def server_config(layout: NatsLayout, *, cluster_bucket: str | None = None) -> dict[str, Any]:
    """The nats-server configuration as a JSON-shaped document (nats-server reads JSON).

    With `cluster_bucket`, the platform account gets JetStream of its own and the
    poller's user may use that KV bucket (dynamic cluster mode, poller.cluster),
    so one credentials file serves the sink and the cluster.
    """
    host, port = layout.listen
    accounts: dict[str, Any] = {
        PLATFORM_ACCOUNT: {
            "users": [
                {
                    "user": layout.poller.user,
                    "password": layout.poller.password,
                    "permissions": _poller_permissions(layout.tenants, cluster_bucket),
                }
            ],
            "imports": [
                imp
                for slug in layout.tenants
                for imp in (
                    {"service": {"account": tenant_account(slug), "subject": stream_subjects(slug)[0]}},
                    {"service": {"account": tenant_account(slug), "subject": "$JS.API.>"}, "to": f"$JS.{slug}.API.>"},
                )
            ],
        }
    }
    if cluster_bucket:
        accounts[PLATFORM_ACCOUNT]["jetstream"] = "enabled"
    for slug in layout.tenants:
        creds = layout.tenant_creds[slug]
        accounts[tenant_account(slug)] = {
            "jetstream": "enabled",
            "users": [{"user": creds.user, "password": creds.password, "permissions": _tenant_permissions(slug)}],
            "exports": [
                {"service": stream_subjects(slug)[0], "accounts": [PLATFORM_ACCOUNT]},
                {"service": "$JS.API.>", "accounts": [PLATFORM_ACCOUNT]},
            ],
        }
    return {
        "listen": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "max_payload": MAX_PAYLOAD,
        "jetstream": {"store_dir": str(layout.store_dir)},
        "accounts": accounts,
    }


def render_server_config(layout: NatsLayout, *, cluster_bucket: str | None = None) -> str:
    header = (
        "# nats-server configuration written by `serviceradar-poller nats-config`.\n"
        "# One account per tenant (its stream lives there) and a platform account for the poller;\n"
        "# see docs/nats.md. Holds passwords: keep it 0600. Re-run nats-config to add tenants.\n"
    )
    return header + json.dumps(server_config(layout, cluster_bucket=cluster_bucket), indent=2) + "\n"


def write_layout(out_dir: Path, layout: NatsLayout, *, cluster_bucket: str | None = None) -> list[Path]:
    """Write OUTDIR/nats-server.conf and every credentials file, all 0600; returns the paths."""
    out_dir = Path(out_dir)
    written = [out_dir / SERVER_CONF]
    write_private(written[0], render_server_config(layout, cluster_bucket=cluster_bucket).encode("utf-8"))
    for tenant, creds in [(None, layout.poller), *layout.tenant_creds.items()]:
        path = creds_path(out_dir, tenant)
        write_credentials(path, creds)
        written.append(path)
    return written
