"""What the replicas write in the cluster's JetStream KV bucket, and its keys.

    member.<poller_id>          a replica's heartbeat (MemberRecord, JSON)
    lease.<tenant>.<agent>      who may poll an agent, until when (LeaseRecord, JSON)

Agent names and poller ids are free text in the config; a name made only of
letters, digits, `_` and `-` is used as is, anything else is written as `=`
and its UTF-8 in hex (KV keys allow `=`, plain names never contain it, so two
names never share a key). Records read back are checked field by field: a
value another process wrote is data, never trusted to be well formed.

>>> lease_key("acme-corp", "edge.1")
'lease.acme-corp.=656467652e31'
>>> decode_token("=656467652e31")
'edge.1'
>>> LeaseRecord.parse(LeaseRecord("poller-1", "a1b2", 1700000030.5).dump()).until
1700000030.5
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from poller.identity.reasons import PollerError

__all__ = [
    "LEASE_PREFIX",
    "MEMBER_PREFIX",
    "PUSH_PREFIX",
    "LeaseRecord",
    "MemberRecord",
    "PushSighting",
    "RecordError",
    "decode_token",
    "encode_token",
    "lease_key",
    "member_key",
    "parse_lease_key",
    "parse_push_key",
    "push_key",
]

MEMBER_PREFIX = "member."
LEASE_PREFIX = "lease."
PUSH_PREFIX = "push."  # a gateway replica's sighting of a push agent (poller.gateway.replicas)
_MAX_SIGHTING_BYTES = 4096
_MAX_TOLD_INTERVAL = 7 * 86400.0  # seconds: longer than any push interval the config takes
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_HEX = re.compile(r"=(?:[0-9a-f]{2})+")
# A member record lists at most this many unowned agents (it is rewritten every heartbeat).
UNOWNED_SHOWN = 100
# The largest value a replica writes is a member record: well under this.
MAX_RECORD_BYTES = 64 * 1024


class RecordError(PollerError, ValueError):
    """A KV value or key that is not what a replica writes."""


def encode_token(text: str) -> str:
    """One KV key token for any non-empty text (see the module doc)."""
    if not text:
        raise ValueError("an empty name has no key")
    return text if _PLAIN.fullmatch(text) else "=" + text.encode().hex()


def decode_token(token: str) -> str:
    if _PLAIN.fullmatch(token):
        return token
    if _HEX.fullmatch(token):
        try:
            return bytes.fromhex(token[1:]).decode()
        except UnicodeDecodeError:
            pass
    raise RecordError(f"{token[:40]!r} is not a key token a replica writes")


def member_key(poller_id: str) -> str:
    return MEMBER_PREFIX + encode_token(poller_id)


def lease_key(tenant: str, agent: str) -> str:
    return f"{LEASE_PREFIX}{tenant}.{encode_token(agent)}"


def parse_lease_key(key: str) -> tuple[str, str]:
    """(tenant, agent) of a lease key; RecordError if it is not one."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] + "." != LEASE_PREFIX:
        raise RecordError(f"{key[:60]!r} is not a lease key")
    return parts[1], decode_token(parts[2])


def _load(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError(f"{what} is larger than {MAX_RECORD_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise RecordError(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{what} is not a JSON object")
    return doc


def _text(doc: dict[str, Any], key: str, what: str, *, empty: bool = False) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or (not empty and not value):
        raise RecordError(f"{what}: {key} is not a string")
    return value


def _number(doc: dict[str, Any], key: str, what: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"{what}: {key} is not a number")
    return float(value)


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The right to poll one agent: `owner` (a poller_id, in its process
    `instance`) may poll it in every slot that ends at or before `until`
    (epoch seconds). A released lease keeps the end of the last slot its
    owner polled, so the next owner starts after it."""

    owner: str
    instance: str
    until: float
    released: bool = False

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def parse(cls, raw: bytes) -> LeaseRecord:
        doc = _load(raw, "lease")
        released = doc.get("released", False)
        if not isinstance(released, bool):
            raise RecordError("lease: released is not a boolean")
        return cls(_text(doc, "owner", "lease"), _text(doc, "instance", "lease"), _number(doc, "until", "lease"), released)


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A replica's heartbeat. `capacity` weighs its share; `tenants` (None:
    any) restricts it; `fleet` is a digest of its agent list and `interval` its
    poll interval, which every replica must share; the counts and `unowned`
    (agents whose tenant no live member serves, at most UNOWNED_SHOWN) are
    what `cluster status` prints."""

    poller_id: str
    instance: str
    capacity: float
    version: str
    interval: float
    fleet: str
    tenants: tuple[str, ...] | None = None
    agents: int = 0
    held: int = 0
    held_by_tenant: dict[str, int] = field(default_factory=dict)
    unowned: tuple[tuple[str, str], ...] = ()  # (agent, tenant)
    unowned_count: int = 0
    beat: int = 0

    def dump(self) -> bytes:
        doc = asdict(self)
        doc["tenants"] = list(self.tenants) if self.tenants is not None else None
        doc["unowned"] = [list(pair) for pair in self.unowned]
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, raw: bytes) -> MemberRecord:
        what = "member"
        doc = _load(raw, what)
        capacity = _number(doc, "capacity", what)
        interval = _number(doc, "interval", what)
        if not 0 < capacity < 1e9 or interval <= 0:
            raise RecordError("member: capacity (below 1e9) and interval must be positive")
        tenants = doc.get("tenants")
        if tenants is not None and (not isinstance(tenants, list) or not all(isinstance(t, str) and t for t in tenants)):
            raise RecordError("member: tenants is not a list of names")
        held_by_tenant = doc.get("held_by_tenant", {})
        if not isinstance(held_by_tenant, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in held_by_tenant.items()
        ):
            raise RecordError("member: held_by_tenant is not a map of counts")
        unowned = doc.get("unowned", [])
        if not isinstance(unowned, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in unowned
        ):
            raise RecordError("member: unowned is not a list of [agent, tenant]")
        return cls(
            poller_id=_text(doc, "poller_id", what),
            instance=_text(doc, "instance", what),
            capacity=capacity,
            version=_text(doc, "version", what, empty=True),
            interval=interval,
            fleet=_text(doc, "fleet", what, empty=True),
            tenants=tuple(tenants) if tenants is not None else None,
            agents=int(_number(doc, "agents", what)),
            held=int(_number(doc, "held", what)),
            held_by_tenant=dict(held_by_tenant),
            unowned=tuple((p[0], p[1]) for p in unowned[:UNOWNED_SHOWN]),
            unowned_count=int(_number(doc, "unowned_count", what)),
            beat=int(_number(doc, "beat", what)),
        )


def push_key(tenant: str, agent: str) -> str:
    """`push.<tenant>.<agent token>` (tokens as poller.cluster.records encodes them).

    >>> push_key("acme-corp", "edge.1")
    'push.acme-corp.=656467652e31'
    """
    return f"{PUSH_PREFIX}{tenant}.{encode_token(agent)}"


def parse_push_key(key: str) -> tuple[str, str]:
    """(tenant, agent) of a push key; RecordError if it is not one."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] + "." != PUSH_PREFIX or not parts[1]:
        raise RecordError(f"{key[:60]!r} is not a push key")
    return parts[1], decode_token(parts[2])


@dataclass(frozen=True, slots=True)
class PushSighting:
    """A replica (`poller_id`, in its process `instance`) took pushes of the agent; `pushes`
    counts them there (it grows with every push, so each sighting is a change);
    `told_interval`: the push interval that replica last told the agent (None: not
    known there, or written by an earlier release), which the others judge it by too."""

    poller_id: str
    instance: str
    peer: str
    pushes: int
    told_interval: float | None = None

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def parse(cls, raw: bytes) -> PushSighting:
        """Checked field by field: a value another process wrote is data, never trusted."""
        if len(raw) > _MAX_SIGHTING_BYTES:
            raise RecordError("push sighting is too large")
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise RecordError("push sighting is not JSON") from None
        if not isinstance(doc, dict):
            raise RecordError("push sighting is not a JSON object")
        texts = [doc.get(k) for k in ("poller_id", "instance", "peer")]
        if not all(isinstance(t, str) for t in texts) or not texts[0] or not texts[1]:
            raise RecordError("push sighting: poller_id, instance and peer must be strings")
        pushes = doc.get("pushes")
        if isinstance(pushes, bool) or not isinstance(pushes, int) or pushes < 0:
            raise RecordError("push sighting: pushes is not a count")
        told = doc.get("told_interval")
        if told is not None and (
            isinstance(told, bool) or not isinstance(told, int | float) or not 0 < told <= _MAX_TOLD_INTERVAL
        ):
            raise RecordError("push sighting: told_interval is not an interval in seconds")
        return cls(str(texts[0]), str(texts[1]), str(texts[2]), pushes, float(told) if told is not None else None)
