"""NKeys (ed25519 keys in NATS's encoding) and the JWTs of NATS's operator mode, over the `nkeys` package.

A seed `S<role>...` is the secret; its public key `U...` (user), `A...`
(account), `O...` (operator) is what a server config or a JWT names. A JWT is
`base64url(header).base64url(claims).base64url(ed25519 signature)` with the
header `{"typ":"JWT","alg":"ed25519-nkey"}`, signed by the issuer's seed.

>>> seed = new_seed("user")
>>> public_key(seed).startswith("U")
True
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from typing import Any, Literal

import nkeys  # type: ignore[import-untyped]

__all__ = ["check_user_seed", "encode_jwt", "new_seed", "public_key"]

Role = Literal["operator", "account", "user"]
_PREFIX: dict[Role, int] = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}


def new_seed(role: Role) -> str:
    """A new random seed for an operator, account or user key."""
    return bytes(nkeys.encode_seed(os.urandom(32), _PREFIX[role])).decode("ascii")


def _pair(seed: str | bytes) -> Any:
    raw = bytearray(seed.encode("ascii") if isinstance(seed, str) else seed)
    try:
        return nkeys.from_seed(raw)
    except (nkeys.NkeysError, ValueError, IndexError) as exc:
        raise ValueError("not a valid NKey seed") from exc


def public_key(seed: str | bytes) -> str:
    """The public key (`U...`, `A...`, `O...`) of a seed; ValueError if it is not one."""
    return bytes(_pair(seed).public_key).decode("ascii")


def check_user_seed(seed: bytes) -> str:
    """The seed as text if it decodes to a user key; ValueError otherwise."""
    if not public_key(seed).startswith("U"):
        raise ValueError("not a user seed")
    return seed.decode("ascii")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_jwt(issuer_seed: str, subject: str, name: str, nats: dict[str, Any], *, issued_at: int | None = None) -> str:
    """A NATS JWT for `subject` (a public key) signed by `issuer_seed`; `nats` holds the
    type-specific claims (`type` is one of operator, account, user; `version` 2 is added)."""
    claims: dict[str, Any] = {
        "iat": int(time.time()) if issued_at is None else issued_at,
        "iss": public_key(issuer_seed),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    # jti: the hash of the claims without it, as the Go jwt library computes it.
    digest = hashlib.sha256(json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims = {"jti": base64.b32encode(digest).decode("ascii").rstrip("="), **claims}
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _pair(issuer_seed).sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64(bytes(signature))}"
