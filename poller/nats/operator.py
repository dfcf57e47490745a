"""nats-config's account layout in NATS operator mode: operator, account and user JWTs (`--operator`).

The same accounts, exports, imports and permissions as the config-file layout
(poller.nats.accounts), expressed as JWTs: the operator signs one account JWT
per account (platform, tenant-<slug>, and SYS for the server), each with
finite JetStream limits for a tenant (memory, disk, streams, consumers); each
account signs its user's JWT, which carries the user's permissions. The
server holds no secret: the account JWTs are preloaded (`resolver: MEMORY`)
or kept in a directory (`resolver: full`). The users get standard `.creds`
files (user JWT + seed) that `nats --creds`, nats-py and the poller read.

Service exports are public in the JWTs (activation tokens would add nothing
here: only the operator signs accounts, and no account but platform imports).

Seeds (OUTDIR/operator.nk, OUTDIR/accounts/<account>.nk and the users' seeds
in their .creds files) are kept on a re-run, so the public keys stay the same.

>>> jwts = plan_operator(layout, out_dir=Path("nats"))   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from poller.nats.accounts import (
    PLATFORM_ACCOUNT,
    NatsLayout,
    creds_path,
    poller_permissions,
    tenant_account,
    tenant_permissions,
    write_layout,
)
from poller.nats.creds import CredentialsError, load_credentials, nkey_seed_text, user_creds_text
from poller.nats.keys import encode_jwt, new_seed, public_key
from poller.nats.subjects import stream_subjects
from poller.pki.files import write_private

__all__ = ["SYSTEM_ACCOUNT", "OperatorLayout", "plan_operator", "resolver_config", "write_operator", "write_operator_layout"]

SYSTEM_ACCOUNT = "SYS"
OPERATOR_NAME = "serviceradar"
Resolver = Literal["memory", "full"]
_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}


def _seed_file(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / ("operator.nk" if name == OPERATOR_NAME else f"accounts/{name}.nk")


def _kept_seed(path: Path, role: Literal["operator", "account", "user"]) -> str:
    """The seed in `path` if there is a usable one of that role, else a new one."""
    prefix = {"operator": "SO", "account": "SA", "user": "SU"}[role]
    try:
        text = path.read_text()
    except OSError:
        return new_seed(role)
    for token in text.split():
        if token.startswith(prefix):
            try:
                public_key(token)
            except ValueError:
                break
            return token
    return new_seed(role)


def _kept_user_seed(out_dir: Path, tenant: str | None) -> str:
    path = creds_path(out_dir, tenant, kind="creds")
    try:
        seed = load_credentials(path).seed if path.exists() else None
    except CredentialsError:
        seed = None
    return seed or new_seed("user")


@dataclass(frozen=True)
class OperatorLayout:
    """The operator's and accounts' seeds and every JWT; `users` maps tenant (None: poller) to (jwt, seed)."""

    operator_seed: str = field(repr=False)
    operator_jwt: str
    account_seeds: dict[str, str] = field(repr=False)
    account_jwts: dict[str, str]
    users: dict[str | None, tuple[str, str]] = field(repr=False)

    def public(self, account: str) -> str:
        return public_key(self.account_seeds[account])


def _user_claims(permissions: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "user",
        "pub": {"allow": permissions["publish"]["allow"]},
        "sub": {"allow": permissions["subscribe"]["allow"]},
        "subs": -1,
        "data": -1,
        "payload": -1,
    }


def plan_operator(layout: NatsLayout, *, out_dir: Path, cluster_bucket: str | None = None) -> OperatorLayout:
    """Every key and JWT of the layout (existing seeds in out_dir kept)."""
    out_dir = Path(out_dir)
    operator_seed = _kept_seed(_seed_file(out_dir, OPERATOR_NAME), "operator")
    names = [SYSTEM_ACCOUNT, PLATFORM_ACCOUNT, *(tenant_account(t) for t in layout.tenants)]
    seeds = {name: _kept_seed(_seed_file(out_dir, name), "account") for name in names}
    pub = {name: public_key(seed) for name, seed in seeds.items()}
    operator_jwt = encode_jwt(
        operator_seed, public_key(operator_seed), OPERATOR_NAME, {"type": "operator", "system_account": pub[SYSTEM_ACCOUNT]}
    )
    jwts: dict[str, str] = {}
    jwts[SYSTEM_ACCOUNT] = encode_jwt(
        operator_seed,
        pub[SYSTEM_ACCOUNT],
        SYSTEM_ACCOUNT,
        {
            "type": "account",
            "limits": _UNLIMITED,
            "exports": [
                {
                    "name": "account-monitoring-services",
                    "subject": "$SYS.REQ.ACCOUNT.*.*",
                    "type": "service",
                    "response_type": "Stream",
                },
                {"name": "account-monitoring-streams", "subject": "$SYS.ACCOUNT.*.>", "type": "stream"},
            ],
        },
    )
    imports = []
    for slug in layout.tenants:
        account = pub[tenant_account(slug)]
        imports += [
            {"name": f"{slug} results", "subject": stream_subjects(slug)[0], "account": account, "type": "service"},
            {
                "name": f"{slug} jetstream",
                "subject": "$JS.API.>",
                "local_subject": f"$JS.{slug}.API.>",
                "account": account,
                "type": "service",
            },
        ]
    platform_js = {"mem_storage": 0, "disk_storage": -1, "streams": -1, "consumer": -1} if cluster_bucket else {}
    jwts[PLATFORM_ACCOUNT] = encode_jwt(
        operator_seed,
        pub[PLATFORM_ACCOUNT],
        PLATFORM_ACCOUNT,
        {"type": "account", "imports": imports, "limits": {**_UNLIMITED, **platform_js}},
    )
    limits = layout.limits
    for slug in layout.tenants:
        name = tenant_account(slug)
        jwts[name] = encode_jwt(
            operator_seed,
            pub[name],
            name,
            {
                "type": "account",
                "exports": [
                    {"name": "results", "subject": stream_subjects(slug)[0], "type": "service"},
                    {"name": "jetstream", "subject": "$JS.API.>", "type": "service"},
                ],
                "limits": {
                    **_UNLIMITED,
                    "mem_storage": limits.max_memory,
                    "disk_storage": limits.max_file,
                    "streams": limits.max_streams,
                    "consumer": limits.max_consumers,
                },
            },
        )
    users: dict[str | None, tuple[str, str]] = {}
    for tenant in [None, *layout.tenants]:
        seed = _kept_user_seed(out_dir, tenant)
        account = PLATFORM_ACCOUNT if tenant is None else tenant_account(tenant)
        permissions = poller_permissions(layout.tenants, cluster_bucket) if tenant is None else tenant_permissions(tenant)
        user = "poller" if tenant is None else tenant
        jwt = encode_jwt(seeds[account], public_key(seed), user, _user_claims(permissions))
        users[tenant] = (jwt, seed)
    return OperatorLayout(operator_seed, operator_jwt, seeds, jwts, users)


def resolver_config(jwts: OperatorLayout, resolver: Resolver, store_dir: Path) -> dict[str, Any]:
    """The server config's operator part: the operator JWT, the system account, the resolver."""
    conf: dict[str, Any] = {
        "operator": jwts.operator_jwt,
        "system_account": jwts.public(SYSTEM_ACCOUNT),
        "resolver_preload": {jwts.public(name): jwt for name, jwt in jwts.account_jwts.items()},
    }
    if resolver == "memory":
        conf["resolver"] = "MEMORY"
    else:
        conf["resolver"] = {"type": "full", "dir": str(Path(store_dir) / "jwt"), "allow_delete": False}
    return conf


def write_operator(out_dir: Path, jwts: OperatorLayout) -> list[Path]:
    """The seeds (0600) and every user's `.creds` file (0600); returns the .creds paths."""
    out_dir = Path(out_dir)
    write_private(
        _seed_file(out_dir, OPERATOR_NAME),
        nkey_seed_text(jwts.operator_seed, comment="the operator's seed (signs the accounts); keep it offline").encode(),
    )
    for name, seed in jwts.account_seeds.items():
        write_private(_seed_file(out_dir, name), nkey_seed_text(seed, comment=f"account {name}'s seed").encode())
    written = []
    for tenant, (jwt, seed) in jwts.users.items():
        path = creds_path(out_dir, tenant, kind="creds")
        write_private(path, user_creds_text(jwt, seed).encode())
        written.append(path)
    return written


def write_operator_layout(
    out_dir: Path, layout: NatsLayout, *, resolver: Resolver = "memory", cluster_bucket: str | None = None
) -> list[Path]:
    """nats-config --operator: the seeds, each server's config in operator mode and the users'
    `.creds` files, all 0600; returns the paths (server configs first, then the .creds files)."""
    jwts = plan_operator(layout, out_dir=out_dir, cluster_bucket=cluster_bucket)
    blocks = {node.name: resolver_config(jwts, resolver, node.store_dir) for node in layout.nodes}
    creds = write_operator(out_dir, jwts)
    return write_layout(out_dir, layout, cluster_bucket=cluster_bucket, operator_blocks=blocks) + creds
