"""Per-device outboxes in Redis Streams: what a device has not acknowledged yet, in order.

Socket.IO does not buffer for a disconnected client, so delivery is guaranteed here: every event is
appended before it is emitted and removed only on acknowledgement; reconnects replay what is left.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import redis

from store_server.keys import Keys

STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}\Z")
_U64 = 2**64


def is_stream_id(value: object) -> bool:
    """Whether a device's ack names an id Redis can hold: two unsigned 64-bit parts."""
    if not isinstance(value, str) or not STREAM_ID.match(value):
        return False
    # Twenty digits can exceed 64 bits, and Redis refuses such an id with an error: inside
    # a group commit of acks, that error failed every other device's ack in the group.
    ms, seq = value.split("-")
    return int(ms) < _U64 and int(seq) < _U64


def encode(items: list[tuple[int, dict[str, Any]]]) -> list[bytes]:
    """Each item's event as stored; a zone's devices share one body, encoded once (orjson)."""
    encoded: dict[int, bytes] = {}
    out = []
    for _device, event in items:
        raw = encoded.get(id(event))
        if raw is None:
            raw = encoded[id(event)] = orjson.dumps(event)
        out.append(raw)
    return out


def append_many(
    r: redis.Redis, keys: Keys, items: list[tuple[int, dict[str, Any]]], maxlen: int, ttl_s: int
) -> list[str]:
    """Append (device id, event) pairs in one round trip; returns the stream ids (event ids)."""
    if not items:
        return []
    pipe = r.pipeline(transaction=False)
    for (device_id, _event), raw in zip(items, encode(items), strict=True):
        pipe.xadd(keys.outbox(device_id), {"e": raw}, maxlen=maxlen, approximate=True)
    for device_id in dict.fromkeys(d for d, _ in items):
        pipe.expire(keys.outbox(device_id), ttl_s)
    return pipe.execute()[: len(items)]


def pending(r: redis.Redis, keys: Keys, device_id: int, now: float) -> list[dict[str, Any]]:
    """Unacknowledged events for a device: revokes first, then the rest in order, then the latest
    blended queue; expired events and superseded queues are deleted on the way."""
    key = keys.outbox(device_id)
    revokes, others, queues, doomed = [], [], [], []
    for entry_id, fields in r.xrange(key):
        event = orjson.loads(fields["e"])
        event["event_id"] = entry_id
        if event.get("expires_at") is not None and event["expires_at"] <= now:
            doomed.append(entry_id)
        elif event["type"] == "revoke":
            revokes.append(event)
        elif event["type"] == "queue":
            queues.append(event)
        else:
            others.append(event)
    # Only the newest queue describes the room; older ones would replay people who left.
    doomed.extend(q["event_id"] for q in queues[:-1])
    if doomed:
        r.xdel(key, *doomed)
    return revokes + others + queues[-1:]


def ack(r: redis.Redis, keys: Keys, device_id: int, event_id: str) -> bool:
    """Remove an acknowledged event; False when the id is malformed or already gone."""
    return ack_many(r, keys, [(device_id, event_id)])[0]


def ack_many(r: redis.Redis, keys: Keys, acks: list[tuple[int, str]]) -> list[bool]:
    """Remove acknowledged (device id, event id) pairs in one round trip; False for an id that
    is malformed or already gone."""
    valid = [is_stream_id(e) for _d, e in acks]
    pipe = r.pipeline(transaction=False)
    for (d, e), ok in zip(acks, valid, strict=True):
        if ok:
            pipe.xdel(keys.outbox(d), e)
    removed = iter(pipe.execute() if any(valid) else [])
    return [ok and bool(next(removed)) for ok in valid]


def drop_for(r: redis.Redis, keys: Keys, device_ids: list[int], pseudonym: str) -> int:
    """Remove every pending event about a pseudonym (revoked meanwhile, or erased), including
    blended queues they were part of."""
    if not device_ids:
        return 0
    pipe = r.pipeline(transaction=False)
    for d in device_ids:
        pipe.xrange(keys.outbox(d))
    doomed: list[tuple[int, str]] = []
    for d, entries in zip(device_ids, pipe.execute(), strict=True):
        for entry_id, fields in entries:
            event = orjson.loads(fields["e"])
            if event.get("subscriber") == pseudonym or pseudonym in event.get("members", ()):
                doomed.append((d, entry_id))
    if doomed:
        pipe = r.pipeline(transaction=False)
        for d, entry_id in doomed:
            pipe.xdel(keys.outbox(d), entry_id)
        pipe.execute()
    return len(doomed)


def clear(r: redis.Redis, keys: Keys, device_ids: list[int]) -> None:
    """Forget everything pending for these devices (revoked: they may receive nothing more)."""
    if device_ids:
        r.delete(*(keys.outbox(d) for d in device_ids))
