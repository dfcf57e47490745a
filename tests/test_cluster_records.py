"""KV keys and records of the cluster bucket; slots. A record read back is
data another process wrote: anything not exactly what a replica writes is refused."""

from __future__ import annotations

import json

import pytest

from poller.cluster.records import (
    LeaseRecord,
    MemberRecord,
    RecordError,
    decode_token,
    encode_token,
    lease_key,
    member_key,
    parse_lease_key,
)
from poller.cluster.slots import slot_at, slot_offset, slot_start


@pytest.mark.parametrize("name", ["edge-1", "edge.1", "site b", "x>", "*", "=41", "ünï", "a/b", "edge_1"])
def test_any_name_has_one_key_token_that_reads_back(name: str) -> None:
    token = encode_token(name)
    assert decode_token(token) == name
    assert all(c.isalnum() or c in "-_=" for c in token)  # no '.', '*' or '>' to split or widen a subject
    tenant, agent = parse_lease_key(lease_key("acme-corp", name))
    assert (tenant, agent) == ("acme-corp", name)


def test_two_names_never_share_a_key() -> None:
    names = ["edge.1", "=656467652e31", "edge-1", "edge_1"]
    assert len({encode_token(n) for n in names}) == len(names)
    assert member_key("p.1") != member_key("p-1")


@pytest.mark.parametrize("key", ["lease.acme-corp", "member.x", "lease.a.b.c", "lease.acme-corp.=zz", "lease.acme-corp.=ff"])
def test_keys_a_replica_does_not_write_are_refused(key: str) -> None:
    with pytest.raises(RecordError):
        parse_lease_key(key)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"owner": "a", "instance": "i"}',
        b'{"owner": "a", "instance": "i", "until": "soon"}',
        b'{"owner": "a", "instance": "i", "until": NaN}',
        b'{"owner": "", "instance": "i", "until": 1}',
        b'{"owner": "a", "instance": "i", "until": 1, "released": "yes"}',
        b'{"owner": "a", "instance": "i", "until": true}',
    ],
)
def test_a_malformed_lease_is_refused(raw: bytes) -> None:
    with pytest.raises(RecordError):
        LeaseRecord.parse(raw)


def test_member_records_read_back_and_reject_nonsense() -> None:
    record = MemberRecord(
        "p", "i", 2.0, "0.1.0", 30.0, "f", ("acme-corp",), 10, 4, {"acme-corp": 4}, (("edge-9", "xyz-inc"),), 1, 7
    )
    assert MemberRecord.parse(record.dump()) == record
    doc = json.loads(record.dump())
    for key, bad in [
        ("capacity", 0),
        ("interval", -1),
        ("tenants", "acme-corp"),
        ("unowned", ["edge-9"]),
        ("held_by_tenant", []),
    ]:
        with pytest.raises(RecordError):
            MemberRecord.parse(json.dumps({**doc, key: bad}).encode())


def test_slots_tile_time_and_every_replica_places_them_alike() -> None:
    for agent in ("edge-1", "edge-2", "x"):
        assert 0 <= slot_offset(agent, 30.0) < 30.0
        slot = slot_at(agent, 1_800_000_000.0, 30.0)
        assert slot.start <= 1_800_000_000.0 < slot.end == slot_start(agent, slot.index + 1, 30.0)
        assert slot_at(agent, slot.end, 30.0).index == slot.index + 1  # the end belongs to the next slot
    assert len({slot_offset(f"edge-{i}", 1.0) for i in range(100)}) == 100  # spread, not stacked
