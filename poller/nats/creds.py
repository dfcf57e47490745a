"""NATS credentials files: an NKey seed, a standard `.creds` file (user JWT + seed), or the old JSON format.

Three formats are read, all refused when readable by group or others (as ssh
refuses such a key), and none of them is ever logged or shown in repr():

- an **NKey seed file** (what `nats-config` writes: `poller.nk`,
  `tenant-<slug>.nk`): the user's seed `SU...`, bare or decorated between
  `-----BEGIN USER NKEY SEED-----` lines, as `nats --nkey` reads it; the
  server knows only the public key, so no secret is stored on its side;
- a **`.creds` file** as `nsc` and `nats-config --operator` write it: the
  user JWT and its seed, for an operator-mode server;
- the **JSON format** `serviceradar-poller/nats-credentials/v1` (user and
  password) of earlier versions, for compatibility.

`jetstream_api` is where the holder reaches a tenant's JetStream API: a tenant
user in its own account (`$JS.API`); the poller through the per-tenant import
its account makes (`$JS.{tenant}.API`, see docs/nats.md). An NKey or JWT file
does not say whose it is; it is taken as the poller's of nats-config's layout.

>>> creds = load_credentials(Path("nats/poller.nk"))   # doctest: +SKIP
>>> creds.kind, creds.api_prefix("acme-corp")          # doctest: +SKIP
('nkey', '$JS.acme-corp.API')
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from poller.identity.names import is_label
from poller.identity.reasons import PollerError, Reason
from poller.pki.files import write_private

__all__ = [
    "CREDS_FORMAT",
    "CredentialsError",
    "NatsCredentials",
    "load_credentials",
    "nkey_seed_text",
    "user_creds_text",
    "write_credentials",
]

CREDS_FORMAT = "serviceradar-poller/nats-credentials/v1"
Role = Literal["poller", "tenant"]
Kind = Literal["nkey", "jwt", "password"]
POLLER_API = "$JS.{tenant}.API"
_SEED = re.compile(rb"\bSU[A-Z2-7]{56}\b")  # a user seed: 'S' + 'U', base32 of 1+1+32+2 bytes
_JWT = re.compile(rb"-----BEGIN NATS USER JWT-----\s*([A-Za-z0-9_.-]+)\s*------END NATS USER JWT------")


class CredentialsError(PollerError, ValueError):
    """A credentials file that cannot be used; the message names the file and the problem, never the secret."""

    reason = Reason.BAD_CREDENTIALS

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.reason.value}: {detail}")
        self.detail = detail


@dataclass(frozen=True, slots=True)
class NatsCredentials:
    """What a credentials file says: how to authenticate, and (JSON format only) whose it is."""

    role: Role | None
    account: str | None
    user: str | None
    password: str | None = field(default=None, repr=False)
    tenant: str | None = None
    url: str | None = None
    stream: str | None = None
    jetstream_api: str = "$JS.API"
    kind: Kind = "password"
    seed: str | None = field(default=None, repr=False)
    path: Path | None = None  # the file (nats-py reads a .creds file itself, at every connect)

    def api_prefix(self, tenant: str) -> str:
        """The JetStream API prefix to manage `tenant`'s stream with these credentials."""
        return self.jetstream_api.replace("{tenant}", tenant)

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for nats.connect()."""
        if self.kind == "nkey":
            return {"nkeys_seed_str": self.seed}
        if self.kind == "jwt":
            return {"user_credentials": str(self.path)}
        return {"user": self.user, "password": self.password}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CREDS_FORMAT,
            "role": self.role,
            "tenant": self.tenant,
            "account": self.account,
            "user": self.user,
            "password": self.password,
            "url": self.url,
            "stream": self.stream,
            "jetstream_api": self.jetstream_api,
        }


def nkey_seed_text(seed: str, *, comment: str = "") -> str:
    """An NKey seed file's text (decorated, as `nsc` writes it; `nats --nkey` reads it)."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return f"{head}-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"


def user_creds_text(jwt: str, seed: str) -> str:
    """A standard NATS `.creds` file's text: the user JWT and its seed."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def write_credentials(path: Path, creds: NatsCredentials) -> None:
    """Write the JSON format (kept for compatibility), atomically, mode 0600 from the first byte."""
    write_private(Path(path), (json.dumps(creds.to_json(), indent=2) + "\n").encode("utf-8"))


def _read_private(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read: {exc.strerror or exc.__class__.__name__}") from None
    if not stat.S_ISREG(mode):
        raise CredentialsError(f"{path}: not a regular file")
    if os.name == "posix" and mode & 0o077:
        raise CredentialsError(f"{path}: readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    return raw


def _valid_seed(path: Path, seed: bytes) -> str:
    from poller.nats.keys import check_user_seed

    try:
        return check_user_seed(seed)
    except ValueError:
        raise CredentialsError(f"{path}: the NKey seed is not valid") from None


def load_credentials(path: Path | str) -> NatsCredentials:
    """Read and check a credentials file of any of the three formats; raises CredentialsError naming the problem."""
    path = Path(path)
    raw = _read_private(path)
    if raw.lstrip().startswith(b"{"):
        return _load_json(path, raw)
    seeds = _SEED.findall(raw)
    if len(seeds) != 1:
        raise CredentialsError(f"{path}: not an NKey seed file, a NATS .creds file or a nats-config JSON file")
    seed = _valid_seed(path, seeds[0])
    jwt = _JWT.search(raw)
    if b"BEGIN NATS USER JWT" in raw and jwt is None:
        raise CredentialsError(f"{path}: the user JWT block is not well formed")
    common: dict[str, Any] = {"role": None, "account": None, "user": None, "jetstream_api": POLLER_API, "path": path}
    if jwt is not None:
        return NatsCredentials(kind="jwt", seed=seed, **common)
    return NatsCredentials(kind="nkey", seed=seed, **common)


def _load_json(path: Path, raw: bytes) -> NatsCredentials:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise CredentialsError(f"{path}: not a JSON credentials file written by nats-config") from None
    if not isinstance(doc, dict) or doc.get("format") != CREDS_FORMAT:
        raise CredentialsError(f"{path}: not a credentials file of format {CREDS_FORMAT}")
    role = doc.get("role")
    if role not in ("poller", "tenant"):
        raise CredentialsError(f"{path}: role must be poller or tenant")
    for key in ("account", "user", "password", "jetstream_api"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise CredentialsError(f"{path}: {key} missing or not a string")
    tenant = doc.get("tenant")
    if role == "tenant" and not (isinstance(tenant, str) and is_label(tenant)):
        raise CredentialsError(f"{path}: a tenant's credentials name a valid tenant slug")
    for key in ("url", "stream"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise CredentialsError(f"{path}: {key} must be a string")
    return NatsCredentials(
        role=role,
        account=doc["account"],
        user=doc["user"],
        password=doc["password"],
        tenant=tenant if role == "tenant" else None,
        url=doc.get("url"),
        stream=doc.get("stream"),
        jetstream_api=doc["jetstream_api"],
        kind="password",
        path=path,
    )
