"""Per-device outboxes on real Redis: order, revokes first, latest queue only, expiry, acks and
dropping everything about a revoked pseudonym."""

from __future__ import annotations

import json
import time

from store_server import outbox
from store_server.keys import Keys


def _keys() -> Keys:
    return Keys(f"cmt:outbox:{time.monotonic_ns()}:")


def push(who: str, expires_at: float | None = None) -> dict:
    return {"type": "push", "subscriber": who, "expires_at": expires_at or time.time() + 60}


def queue(members: list[str]) -> dict:
    return {"type": "queue", "members": members, "expires_at": time.time() + 60}


def test_pending_orders_revokes_first_then_pushes_then_newest_queue(redis):
    keys, now = _keys(), time.time()
    items = [
        (1, push("a")),
        (1, queue(["a"])),
        (1, push("b")),
        (1, {"type": "revoke", "subscriber": "c", "reason": "absent"}),
        (1, queue(["a", "b"])),
        (1, push("old", expires_at=now - 1)),
        (2, push("other-device")),
    ]
    ids = outbox.append_many(redis, keys, items, 1000, 60)
    # Event ids are stream ids: unique and increasing per device (each device has its stream).
    assert ids[:6] == sorted(set(ids[:6]))
    got = outbox.pending(redis, keys, 1, now)
    assert [(e["type"], e.get("subscriber") or e.get("members")) for e in got] == [
        ("revoke", "c"),
        ("push", "a"),
        ("push", "b"),
        ("queue", ["a", "b"]),
    ]
    assert [e["event_id"] for e in got] == [ids[3], ids[0], ids[2], ids[4]]
    # The expired push and the superseded queue are gone for good.
    assert redis.xlen(keys.outbox(1)) == 4
    assert outbox.ack(redis, keys, 1, ids[0]) is True
    assert outbox.ack(redis, keys, 1, ids[0]) is False
    assert outbox.ack(redis, keys, 1, "not-an-id") is False
    assert [e["event_id"] for e in outbox.pending(redis, keys, 1, now)] == [ids[3], ids[2], ids[4]]
    redis.delete(keys.outbox(1), keys.outbox(2))


def test_drop_for_removes_pushes_and_queues_about_a_pseudonym_on_every_device(redis):
    keys = _keys()
    outbox.append_many(
        redis,
        keys,
        [(1, push("a")), (1, queue(["a", "b"])), (1, push("b")), (2, push("a")), (3, push("b"))],
        1000,
        60,
    )
    assert outbox.drop_for(redis, keys, [1, 2, 3], "a") == 3
    left = {d: outbox.pending(redis, keys, d, time.time()) for d in (1, 2, 3)}
    assert [e["subscriber"] for e in left[1]] == ["b"]
    assert left[2] == []
    assert outbox.drop_for(redis, keys, [], "b") == 0
    redis.delete(*(keys.outbox(d) for d in (1, 2, 3)))


def test_outbox_expires_and_is_bounded(redis):
    keys = _keys()
    outbox.append_many(redis, keys, [(1, push(str(i))) for i in range(300)], 100, 30)
    assert 0 < redis.ttl(keys.outbox(1)) <= 30
    # Approximate trimming: bounded near the limit, never unbounded.
    assert redis.xlen(keys.outbox(1)) < 300
    redis.delete(keys.outbox(1))


def test_ack_many_answers_each_ack_in_order_in_one_round_trip(redis):
    keys = _keys()
    ids = outbox.append_many(redis, keys, [(1, push("a")), (2, push("b")), (1, push("c"))], 100, 60)
    acks = [(1, ids[0]), (2, "nope"), (2, ids[1]), (1, ids[0]), (2, ids[2]), (1, ids[2])]
    # (2, ids[2]): a real id, but another device's; it must not remove device 1's event.
    assert outbox.ack_many(redis, keys, acks) == [True, False, True, False, False, True]
    assert redis.xlen(keys.outbox(1)) == 0 and redis.xlen(keys.outbox(2)) == 0
    redis.delete(keys.outbox(1), keys.outbox(2))


def test_an_id_past_64_bits_is_refused_without_failing_the_acks_beside_it(redis):
    keys = _keys()
    ids = outbox.append_many(redis, keys, [(1, push("a")), (2, push("b"))], 100, 60)
    # Twenty digits fit the pattern but not Redis: its error used to fail the whole group.
    huge = [f"{2**64}-0", f"1-{2**64}", "99999999999999999999-0"]
    acks = [(1, ids[0]), *((2, h) for h in huge), (2, ids[1])]
    assert outbox.ack_many(redis, keys, acks) == [True, False, False, False, True]
    assert outbox.is_stream_id(f"{2**64 - 1}-{2**64 - 1}")
    assert redis.xlen(keys.outbox(1)) == 0 and redis.xlen(keys.outbox(2)) == 0
    redis.delete(keys.outbox(1), keys.outbox(2))


def test_a_zone_body_is_stored_for_each_device_under_its_stream_id(redis):
    keys = _keys()
    body = queue(["a", "b"])
    ids = outbox.append_many(redis, keys, [(d, body) for d in (1, 2, 3)], 100, 60)
    for d, event_id in zip((1, 2, 3), ids, strict=True):
        (got,) = outbox.pending(redis, keys, d, time.time())
        assert got == {**body, "event_id": event_id}
    redis.delete(*(keys.outbox(d) for d in (1, 2, 3)))


def revoke(who: str) -> dict:
    return {"type": "revoke", "subscriber": who, "reason": "absent"}


def test_a_full_outbox_drops_what_is_superseded_then_the_oldest_and_revokes_last(redis):
    keys = _keys()
    # A revoke of "a" waiting, then queues and pushes of a busy zone, "b" revoked twice.
    items = [(1, revoke("a")), (1, revoke("b"))]
    items += [(1, queue([str(i)])) for i in range(5)] + [(1, push(str(i))) for i in range(3)]
    ids = outbox.append_many(redis, keys, items, 10, 60)
    assert redis.xlen(keys.outbox(1)) == 10  # at its bound: nothing dropped yet
    (last,) = outbox.append_many(redis, keys, [(1, revoke("b"))], 10, 60)
    # Compacted to a tenth below: the older queues and b's first revoke went, nothing else.
    left = [entry_id for entry_id, _ in redis.xrange(keys.outbox(1))]
    assert left == [ids[0], ids[6], *ids[7:], last]
    # Pushes (and queues) go before any revoke; revokes last, oldest first.
    outbox.append_many(redis, keys, [(1, revoke(f"r{i}")) for i in range(9)], 10, 60)
    got = [(e["type"], e.get("subscriber")) for e in outbox.pending(redis, keys, 1, time.time())]
    assert len(got) <= 10 and all(kind == "revoke" for kind, _ in got)
    assert ("revoke", "r8") in got and ("revoke", "a") not in got
    redis.delete(keys.outbox(1))


def test_events_older_than_the_ttl_go_first_from_a_full_outbox(redis):
    keys = _keys()
    old = int(time.time() * 1000) - 120_000
    for i in range(3):  # from two minutes ago: any push these revokes cancel has expired
        redis.xadd(keys.outbox(1), {"e": json.dumps(revoke(f"old{i}"))}, id=f"{old + i}-0")
    outbox.append_many(redis, keys, [(1, push(str(i))) for i in range(8)], 10, 60)
    assert redis.xlen(keys.outbox(1)) == 8
    assert {e["type"] for e in outbox.pending(redis, keys, 1, time.time())} == {"push"}
    redis.delete(keys.outbox(1))
