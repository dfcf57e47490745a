"""NATS credentials files written by `serviceradar-poller nats-config` (one per tenant, one for the poller).

Format: one JSON object, mode 0600 (a file readable by group or others is
refused, as ssh refuses such a key):

    {
      "format": "serviceradar-poller/nats-credentials/v1",
      "role": "tenant",                 # or "poller"
      "tenant": "acme-corp",            # null for the poller
      "account": "tenant-acme-corp",    # the server account the user lives in
      "user": "acme-corp",
      "password": "<43 random URL-safe characters>",
      "url": "nats://127.0.0.1:4222",   # the server's client URL at generation time
      "stream": "tenant-acme-corp",     # null for the poller
      "jetstream_api": "$JS.API"        # the poller's is "$JS.{tenant}.API"
    }

`jetstream_api` is where the holder reaches a tenant's JetStream API: a tenant
user in its own account; the poller through the per-tenant import its account
makes (see docs/nats.md). The password is never logged or shown in repr().

>>> creds = load_credentials(Path("nats/tenant-acme-corp.creds"))  # doctest: +SKIP
>>> creds.tenant, creds.api_prefix("acme-corp")                    # doctest: +SKIP
('acme-corp', '$JS.API')
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from poller.identity.names import is_label
from poller.identity.reasons import PollerError, Reason
from poller.pki.files import write_private

__all__ = ["CREDS_FORMAT", "CredentialsError", "NatsCredentials", "load_credentials", "write_credentials"]

CREDS_FORMAT = "serviceradar-poller/nats-credentials/v1"
Role = Literal["poller", "tenant"]


class CredentialsError(PollerError, ValueError):
    """A credentials file that cannot be used; the message names the file and the problem, never the secret."""

    reason = Reason.BAD_CREDENTIALS

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.reason.value}: {detail}")
        self.detail = detail


@dataclass(frozen=True, slots=True)
class NatsCredentials:
    role: Role
    account: str
    user: str
    password: str = field(repr=False)
    tenant: str | None = None
    url: str | None = None
    stream: str | None = None
    jetstream_api: str = "$JS.API"

    def api_prefix(self, tenant: str) -> str:
        """The JetStream API prefix to manage `tenant`'s stream with these credentials."""
        return self.jetstream_api.replace("{tenant}", tenant)

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for nats.connect()."""
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


def write_credentials(path: Path, creds: NatsCredentials) -> None:
    """Write atomically, mode 0600 from the first byte."""
    write_private(Path(path), (json.dumps(creds.to_json(), indent=2) + "\n").encode("utf-8"))


def load_credentials(path: Path) -> NatsCredentials:
    """Read and check a credentials file; raises CredentialsError naming the problem."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read: {exc.strerror or exc.__class__.__name__}") from None
    if not stat.S_ISREG(mode):
        raise CredentialsError(f"{path}: not a regular file")
    if os.name == "posix" and mode & 0o077:
        raise CredentialsError(f"{path}: readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it")
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
    )
