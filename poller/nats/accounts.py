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

Users prove themselves with NKeys: the server config holds only their public
keys, the seeds go to `poller.nk` and `tenant-<slug>.nk` (0600). With TLS
(poller.nats.tlsfiles) every server requires a client certificate
(`verify: true`); with `cluster` > 1 the servers form one JetStream cluster,
their routes in TLS too.

>>> layout = plan_layout(["acme-corp"], listen=("127.0.0.1", 4222), store_dir=Path("js"))  # doctest: +SKIP
>>> write_layout(Path("nats"), layout)                                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from poller.nats.connect import NatsTarget, TlsFiles
from poller.nats.creds import NatsCredentials, nkey_seed_text
from poller.nats.keys import new_seed, public_key
from poller.nats.subjects import stream_name, stream_subjects
from poller.nats.tlsfiles import NatsTls
from poller.pki.files import write_private

__all__ = [
    "PLATFORM_ACCOUNT",
    "POLLER_USER",
    "AccountLimits",
    "NatsLayout",
    "ServerNode",
    "client_target",
    "client_url",
    "creds_path",
    "kv_permissions",
    "plan_layout",
    "poller_permissions",
    "server_config",
    "server_config_path",
    "tenant_account",
    "tenant_permissions",
    "write_layout",
]

PLATFORM_ACCOUNT = "platform"
POLLER_USER = "poller"
SERVER_CONF = "nats-server.conf"
CLUSTER_NAME = "serviceradar-nats"
MAX_PAYLOAD = 8 * 1024 * 1024  # reassembled sweep results exceed NATS's 1 MiB default
TLS_TIMEOUT = 5.0


def tenant_account(tenant: str) -> str:
    return stream_name(tenant)  # "tenant-<slug>": the slug is validated there


def creds_path(out_dir: Path, tenant: str | None, *, kind: Literal["nk", "creds", "any"] = "any") -> Path:
    """OUTDIR/poller.nk, or OUTDIR/tenant-<slug>.nk (the prefix keeps a tenant named "poller" apart);
    `.creds` in operator mode (user JWT + seed). kind "any": the `.creds` file if there is one."""
    stem = Path(out_dir) / user_name(tenant)
    if kind == "any":
        kind = "creds" if stem.with_suffix(".creds").exists() else "nk"
    return stem.with_suffix(f".{kind}")


def user_name(tenant: str | None) -> str:
    """The name of a layout's NATS user (also its client certificate's file name): poller, tenant-<slug>."""
    return POLLER_USER if tenant is None else tenant_account(tenant)


def kv_permissions(bucket: str) -> list[str]:
    """The subjects a replica publishes to use the cluster bucket (for a NATS user's
    `publish.allow`; it also needs to subscribe to `_INBOX.>`): its keys, the
    bucket's stream API, direct gets, and the member watch's consumers."""
    stream = f"KV_{bucket}"
    return [
        f"$KV.{bucket}.>",
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.*.{stream}",
        f"$JS.API.CONSUMER.*.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """Finite JetStream limits of each tenant account (as ServiceRadar's account manager sets them):
    memory and disk in bytes, streams and consumers in number."""

    max_memory: int = 64 * 1024 * 1024
    max_file: int = 10 * 1024 * 1024 * 1024
    max_streams: int = 4
    max_consumers: int = 64

    def to_config(self) -> dict[str, int]:
        return {
            "max_memory": self.max_memory,
            "max_file": self.max_file,
            "max_streams": self.max_streams,
            "max_consumers": self.max_consumers,
        }


@dataclass(frozen=True, slots=True)
class ServerNode:
    """One nats-server of the layout: its name, client listen address, route port (cluster only) and store."""

    name: str
    listen: tuple[str, int]
    store_dir: Path
    route_port: int | None = None
    host: str | None = None  # the name others reach it by (routes, URLs), when it listens on every interface

    @property
    def reached_at(self) -> str:
        return self.host or self.listen[0]


@dataclass(frozen=True)
class NatsLayout:
    tenants: tuple[str, ...]
    nodes: tuple[ServerNode, ...]
    poller_seed: str = field(repr=False)
    tenant_seeds: Mapping[str, str] = field(repr=False)
    tls: NatsTls | None = None
    limits: AccountLimits = field(default_factory=AccountLimits)

    @property
    def listen(self) -> tuple[str, int]:
        return self.nodes[0].listen

    @property
    def store_dir(self) -> Path:
        return self.nodes[0].store_dir

    @property
    def urls(self) -> list[str]:
        """The client URL of every server (tls:// with TLS): the poller's `url` list."""
        return [client_url((node.reached_at, node.listen[1]), tls=self.tls is not None) for node in self.nodes]

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def poller(self) -> NatsCredentials:
        return NatsCredentials(
            role="poller",
            account=PLATFORM_ACCOUNT,
            user=POLLER_USER,
            kind="nkey",
            seed=self.poller_seed,
            jetstream_api="$JS.{tenant}.API",
        )

    @property
    def tenant_creds(self) -> dict[str, NatsCredentials]:
        return {
            slug: NatsCredentials(
                role="tenant",
                account=tenant_account(slug),
                user=slug,
                tenant=slug,
                kind="nkey",
                seed=seed,
                stream=stream_name(slug),
            )
            for slug, seed in self.tenant_seeds.items()
        }


def client_url(listen: tuple[str, int], *, tls: bool = False) -> str:
    """The URL a client on this machine uses for a server listening on `listen`."""
    host, port = listen
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
    scheme = "tls" if tls else "nats"
    return f"{scheme}://[{shown}]:{port}" if ":" in shown else f"{scheme}://{shown}:{port}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def plan_nodes(
    count: int, *, hosts: Sequence[str], port: int, route_port: int, store_dir: Path, bind: str | None = None
) -> tuple[ServerNode, ...]:
    """`count` servers named nats-1..N: on one host, consecutive client and route ports and
    one store each; on a list of `count` hosts, the same ports on every host. Each listens
    on its host, or on `bind` (e.g. every interface) when given."""
    if count < 1:
        raise ValueError("a layout has at least one server")
    if count == 1:
        return (ServerNode("nats-1", (bind if bind is not None else hosts[0], port), Path(store_dir), host=hosts[0]),)
    if len(hosts) not in (1, count):
        raise ValueError(f"{len(hosts)} hosts for {count} servers: give one host or one per server")
    nodes = []
    for i in range(count):
        same_host = len(hosts) == 1
        host = hosts[0] if same_host else hosts[i]
        step = i if same_host else 0
        nodes.append(
            ServerNode(
                f"nats-{i + 1}",
                (bind if bind is not None else host, port + step if port else 0),
                Path(store_dir) / f"nats-{i + 1}",
                route_port + step,
                host=host,
            )
        )
    return tuple(nodes)


def plan_layout(
    tenants: Iterable[str],
    *,
    listen: tuple[str, int],
    store_dir: Path,
    existing: Mapping[str | None, NatsCredentials] | None = None,
    nodes: Sequence[ServerNode] | None = None,
    tls: NatsTls | None = None,
    limits: AccountLimits | None = None,
) -> NatsLayout:
    """NKeys for the poller and each tenant. Seeds in `existing` (keyed by tenant, None for the
    poller) are kept, so re-running nats-config to add a tenant does not cut off the others.
    `nodes` (default: one server on `listen` with `store_dir`) are the servers of a cluster."""
    existing = existing or {}
    slugs = tuple(sorted(set(tenants)))

    def seed(tenant: str | None) -> str:
        old = existing.get(tenant)
        return old.seed if old is not None and old.kind == "nkey" and old.seed else new_seed("user")

    servers = tuple(nodes) if nodes else (ServerNode("nats-1", listen, Path(store_dir)),)
    return NatsLayout(
        tenants=slugs,
        nodes=servers,
        poller_seed=seed(None),
        tenant_seeds={slug: seed(slug) for slug in slugs},
        tls=tls,
        limits=limits or AccountLimits(),
    )


def tenant_permissions(slug: str) -> dict[str, Any]:
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


def poller_permissions(tenants: Iterable[str], cluster_bucket: str | None = None) -> dict[str, Any]:
    allow: list[str] = [*kv_permissions(cluster_bucket)] if cluster_bucket else []
    for slug in tenants:
        stream = stream_name(slug)
        api = f"$JS.{slug}.API"
        allow += [*stream_subjects(slug), f"{api}.INFO"]
        allow += [f"{api}.STREAM.{op}.{stream}" for op in ("INFO", "CREATE", "UPDATE")]
    return {"publish": {"allow": allow}, "subscribe": {"allow": ["_INBOX.>"]}}


def accounts_config(layout: NatsLayout, *, cluster_bucket: str | None = None) -> dict[str, Any]:
    """The `accounts` block: users by NKey public key, imports, exports, JetStream limits."""
    accounts: dict[str, Any] = {
        PLATFORM_ACCOUNT: {
            "users": [
                {"nkey": public_key(layout.poller_seed), "permissions": poller_permissions(layout.tenants, cluster_bucket)}
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
        accounts[tenant_account(slug)] = {
            "jetstream": layout.limits.to_config(),
            "users": [{"nkey": public_key(layout.tenant_seeds[slug]), "permissions": tenant_permissions(slug)}],
            "exports": [
                {"service": stream_subjects(slug)[0], "accounts": [PLATFORM_ACCOUNT]},
                {"service": "$JS.API.>", "accounts": [PLATFORM_ACCOUNT]},
            ],
        }
    return accounts


def _tls_block(tls: NatsTls, name: str) -> dict[str, Any]:
    return {
        "cert_file": str(tls.server_cert(name).absolute()),
        "key_file": str(tls.server_key(name).absolute()),
        "ca_file": str(tls.clients_ca.absolute()),
        "verify": True,
        "timeout": TLS_TIMEOUT,
    }


def server_config(
    layout: NatsLayout,
    *,
    cluster_bucket: str | None = None,
    node: ServerNode | None = None,
    operator: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One server's nats-server configuration as a JSON-shaped document (nats-server reads JSON).

    With `cluster_bucket`, the platform account gets JetStream of its own and the
    poller's user may use that KV bucket (dynamic cluster mode, poller.cluster),
    so one credentials file serves the sink and the cluster.
    """
    node = node or layout.nodes[0]
    conf: dict[str, Any] = {
        "server_name": node.name,
        "listen": _hostport(*node.listen),
        "max_payload": MAX_PAYLOAD,
        "jetstream": {"store_dir": str(node.store_dir)},
    }
    if layout.tls is not None:
        conf["tls"] = _tls_block(layout.tls, node.name)
    if node.route_port is not None:
        others = [n for n in layout.nodes if n is not node and n.route_port is not None]
        cluster: dict[str, Any] = {
            "name": CLUSTER_NAME,
            "listen": _hostport(node.listen[0], node.route_port),
            "routes": [f"nats-route://{_hostport(n.reached_at, n.route_port or 0)}" for n in others],
        }
        if layout.tls is not None:
            cluster["tls"] = _tls_block(layout.tls, node.name)
        conf["cluster"] = cluster
    if operator is not None:  # operator mode: the accounts are JWTs (poller.nats.operator)
        conf.update(operator)
    else:
        conf["accounts"] = accounts_config(layout, cluster_bucket=cluster_bucket)
    return conf


def server_config_path(out_dir: Path, layout: NatsLayout, node: ServerNode) -> Path:
    """OUTDIR/nats-server.conf for one server, OUTDIR/nats-server-<i>.conf for each of a cluster."""
    if len(layout.nodes) == 1:
        return Path(out_dir) / SERVER_CONF
    return Path(out_dir) / f"nats-server-{layout.nodes.index(node) + 1}.conf"


def render_server_config(
    layout: NatsLayout,
    *,
    cluster_bucket: str | None = None,
    node: ServerNode | None = None,
    operator: dict[str, Any] | None = None,
) -> str:
    header = (
        "# nats-server configuration written by `serviceradar-poller nats-config`.\n"
        "# One account per tenant (its stream lives there) and a platform account for the poller;\n"
        "# users are NKey public keys (no secret here); see docs/nats.md. Re-run nats-config to add tenants.\n"
    )
    conf = server_config(layout, cluster_bucket=cluster_bucket, node=node, operator=operator)
    return header + json.dumps(conf, indent=2) + "\n"


def write_layout(
    out_dir: Path,
    layout: NatsLayout,
    *,
    cluster_bucket: str | None = None,
    operator_blocks: Mapping[str, dict[str, Any]] | None = None,
) -> list[Path]:
    """Write each server's config and every user's NKey seed, all 0600; returns the paths (the
    server configs first). With `operator_blocks` (server name -> its operator/resolver block,
    poller.nats.operator.write_operator_layout) the accounts are JWTs and no seed file is written here."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    creds: list[Path] = []
    blocks = operator_blocks or {}
    for node in layout.nodes:
        path = server_config_path(out_dir, layout, node)
        text = render_server_config(layout, cluster_bucket=cluster_bucket, node=node, operator=blocks.get(node.name))
        write_private(path, text.encode("utf-8"))
        written.append(path)
    if operator_blocks is None:
        for tenant, seed in [(None, layout.poller_seed), *layout.tenant_seeds.items()]:
            path = creds_path(out_dir, tenant, kind="nk")
            who = "the poller (account platform)" if tenant is None else f"tenant {tenant} (account {tenant_account(tenant)})"
            write_private(path, nkey_seed_text(seed, comment=f"NKey seed of {who}, written by nats-config").encode("ascii"))
            creds.append(path)
    return written + creds


def client_target(out_dir: Path, tenant: str | None, servers: str | Sequence[str]) -> NatsTarget:
    """How a user of an OUTDIR written by nats-config connects: its NKey seed, and its client
    certificate with the layout's CA when the layout has TLS (OUTDIR/tls/).

    >>> client_target(Path("nats"), "acme-corp", "tls://127.0.0.1:4222").creds  # doctest: +SKIP
    PosixPath('nats/tenant-acme-corp.nk')
    """
    tls = NatsTls(Path(out_dir) / "tls")
    files = None
    if tls.ca.is_file():
        name = user_name(tenant)
        files = TlsFiles(tls.ca, tls.user_cert(name), tls.user_key(name))
    return NatsTarget.of(servers, creds_path(out_dir, tenant), files)
