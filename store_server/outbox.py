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
from store_server.redis_store import run_script

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


# Appends one event to a device's outbox (a Lua function the appending scripts start with). A
# full outbox belongs to a device offline while its zone stays busy, and trimming it oldest
# first (XADD MAXLEN) dropped the revoke of a push the device had already played: back online,
# it played a withdrawn subscriber's playlist on until the push expired. So a full outbox is
# compacted, a tenth below its bound so that this is rare: what nobody needs any more goes
# first (events older than the TTL: every push they could cancel has expired; queues but the
# newest, which `pending` would drop; a revoke repeated later for the same subscriber), then
# the oldest pushes, queues and controls, and revokes last, oldest first.
ADD_LUA = """
local function outbox_add(key, body, maxlen, ttl)
  local id = redis.call('XADD', key, '*', 'e', body)
  redis.call('EXPIRE', key, ttl)
  maxlen = tonumber(maxlen)
  if redis.call('XLEN', key) <= maxlen then return id end
  local target = maxlen - math.floor(maxlen / 10)
  local stale = tonumber(string.match(id, '^%d+')) - 1000 * tonumber(ttl)
  local entries = redis.call('XRANGE', key, '-', '+')
  local kinds, doomed, left = {}, {}, #entries
  local queued, revoked = false, {}
  for i = #entries, 1, -1 do
    local ok, event = pcall(cjson.decode, entries[i][2][2])
    local kind = ok and type(event) == 'table' and event['type'] or nil
    local drop = tonumber(string.match(entries[i][1], '^%d+')) < stale
    if kind == 'queue' then
      drop = drop or queued
      queued = true
    elseif kind == 'revoke' then
      local who = tostring(event['subscriber'])
      drop = drop or revoked[who] ~= nil
      revoked[who] = true
    end
    kinds[i] = kind
    if drop then
      doomed[i] = true
      left = left - 1
    end
  end
  for pass = 1, 2 do
    for i = 1, #entries do
      if left <= target then break end
      if not doomed[i] and (kinds[i] == 'revoke') == (pass == 2) then
        doomed[i] = true
        left = left - 1
      end
    end
  end
  for i = 1, #entries do
    if doomed[i] then redis.call('XDEL', key, entries[i][1]) end
  end
  return id
end
"""
_APPEND_LUA = (
    ADD_LUA
    + """
local out = {}
for i = 1, #KEYS do out[i] = outbox_add(KEYS[i], ARGV[i + 2], ARGV[1], ARGV[2]) end
return out
"""
)


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
    names = [keys.outbox(device_id) for device_id, _ in items]
    return list(run_script(r, _APPEND_LUA, len(names), *names, maxlen, ttl_s, *encode(items)))


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
