"""Turns presence events into device events: payload by consent scope, outbox, emit, audit, visit,
and the blended queue of each zone whose occupants changed.

Called after ingest or the sweeper has committed presence state; everything here is per event,
and events are rare next to sightings.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from flask import Flask
from sqlalchemy import (
    JSON,
    Connection,
    Row,
    bindparam,
    cast,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from store_server import blend, journal, outbox
from store_server.crypto import pseudonym
from store_server.db import reading
from store_server.keys import Keys
from store_server.models import Merchant, Subscriber
from store_server.payloads import push_payload, queue_payload, revoke_payload
from store_server.presence import PresenceEvent
from store_server.redis_store import get_keys, get_redis, run_script
from store_server.topology import VenueInfo, get_topology

log = logging.getLogger(__name__)
NAMESPACE = "/device"
PORTAL = "/portal"


@dataclass(frozen=True)
class Occurrence:
    """A presence event of one subscriber at one venue, under the consent that allowed it."""

    subscriber_id: int
    venue: VenueInfo
    consent: dict[str, Any]
    event: PresenceEvent
    # False for a presence replayed from a scanner's backlog: recorded (visits), never disclosed.
    disclose: bool = True
    # For an exit: the devices its zone had when the presence was entered (ingest keeps them in
    # the tracking state, PUSHED_TO), which its revoke reaches even if the zone lost them since
    # (the zones redrawn while someone sat there: their devices are bound to no zone any more).
    devices: tuple[int, ...] = ()


# The tracking state's field holding the devices of the zone its presence entered (Occurrence).
PUSHED_TO = "dv"
# The tracking state's field holding when its presence's push was last sent (wall clock): a
# push lasts PUSH_TTL_S on the device (`expires_at`), so a presence that outlasts half of it is
# pushed again (ingest._occurrences), and a long visit keeps its playlist.
PUSHED_AT = "pa"
# The reason of such a renewed enter: a push sent again, not a presence change (the portal's
# live view is not told).
RENEWED = "renewed"


def pushed_to(state: dict[str, Any]) -> tuple[int, ...]:
    """The devices a tracking state's presence was pushed to when it entered (PUSHED_TO)."""
    return tuple(state.get(PUSHED_TO, ()))


def revoked_on(o: Occurrence) -> list[int]:
    """The devices an exit's revoke goes to: its zone's now, and those its enter was pushed to
    that are still the venue's (a device revoked since may receive nothing more)."""
    devices = list(o.venue.devices_by_zone.get(o.event.zone, []))
    devices += [d for d in o.devices if d in o.venue.device_names and d not in devices]
    return devices


def device_room(device_id: int) -> str:
    """The Socket.IO room a device joins on connect."""
    return f"device:{device_id}"


def venue_room(venue_id: int) -> str:
    """The Socket.IO room (portal namespace) of staff watching a venue live."""
    return f"venue:{venue_id}"


def socket_event(body: dict[str, Any]) -> str:
    """The Socket.IO event name for an outbox event: blended queues travel apart, so that
    devices that only play per-subscriber pushes never see them."""
    return "queue" if body.get("type") == "queue" else "event"


def expiry(now: float, ttl_s: float, consents: list[dict[str, Any]]) -> float:
    """When a disclosure must stop being used: the push TTL, or earlier if a consent ends."""
    ends = [c["until"] for c in consents if c.get("until") is not None]
    return min([now + ttl_s, *ends])


# The states of a venue's subscribers whose occupant index entry names one of the zones (ARGV),
# in one round trip: only the zone's occupants are read, not every state at the venue.
_PRESENT_LUA = """
local index = redis.call('HGETALL', KEYS[1])
local want = {}
for i = 1, #ARGV do want[ARGV[i]] = true end
local subs = {}
for i = 1, #index, 2 do
  if want[index[i + 1]] then subs[#subs + 1] = index[i] end
end
local states = {}
for c = 1, #subs, 4000 do
  local part = redis.call('HMGET', KEYS[2], unpack(subs, c, math.min(c + 3999, #subs)))
  for k = 1, #part do states[#states + 1] = part[k] end
end
return {subs, states}
"""


def _present(
    r: redis.Redis, keys: Keys, rooms: dict[tuple[int, str], VenueInfo], now: float
) -> dict[tuple[int, str], list[tuple[int, float, dict[str, Any]]]]:
    """(subscriber, since, consent) present in each room, from the committed track states of
    the subscribers the occupant index places there (the states decide: a stale index entry
    is read past), leaving out anyone whose consent ended by `now`."""
    zones: dict[int, set[str]] = defaultdict(set)
    for v, zone in rooms:
        zones[v].add(zone)
    out: dict[tuple[int, str], list[tuple[int, float, dict[str, Any]]]] = {k: [] for k in rooms}
    for v in sorted(zones):
        subs, raws = run_script(
            r, _PRESENT_LUA, 2, keys.occupants(v), keys.tracks(v), *sorted(zones[v])
        )
        for sub, raw in zip(subs, raws, strict=True):
            if raw is None:
                continue
            state = orjson.loads(raw)
            p, consent = state.get("p", {}), state.get("c")
            if consent and (v, p.get("zone")) in out and not _ended(consent, now):
                out[(v, p["zone"])].append((int(sub), float(p.get("since", 0.0)), consent))
    return out


def _ended(consent: dict[str, Any], now: float) -> bool:
    # A state keeps the consent its presence was disclosed under until ingest hears the
    # subscriber again (and re-scopes it), or the sweeper ends it: until then that consent
    # may have run out, and nothing may be disclosed under it.
    return consent.get("until") is not None and consent["until"] <= now


# Appends the blended queues, each only while the room holds exactly the members it was
# computed from: a queue read before someone's presence ended (a withdrawal, an erasure, an
# expiry) and appended after that presence's revoke would be the device's newest queue, replayed
# with her tracks after the revoke. Whoever ends or begins a presence sends the room a queue
# computed after it, so one refused here is superseded. Mirrors _PRESENT_LUA and _present's
# filter. KEYS: per venue its occupant index and track states, then the items' outboxes. ARGV:
# maxlen, ttl, now, #venues, #queues, #items; per queue its venue's number, zone and member
# count, then each member's subscriber and since; per item its queue's number and body. Returns
# each queue's verdict (1 sent), then each item's event id ('' when refused).
_QUEUE_HELD_LUA = (
    outbox.ADD_LUA
    + """
local maxlen, ttl, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nv, nq, ni = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local index = {}
local out = {}
local at = 7
for q = 1, nq do
  local v, zone, n = tonumber(ARGV[at]), ARGV[at + 1], tonumber(ARGV[at + 2])
  at = at + 3
  local want = {}
  for i = 0, n - 1 do want[ARGV[at + 2 * i]] = tonumber(ARGV[at + 2 * i + 1]) end
  at = at + 2 * n
  if not index[v] then index[v] = redis.call('HGETALL', KEYS[2 * v - 1]) end
  local idx, found, held = index[v], 0, 1
  for i = 1, #idx, 2 do
    if idx[i + 1] == zone then
      local raw = redis.call('HGET', KEYS[2 * v], idx[i])
      if raw then
        local st = cjson.decode(raw)
        local p, c = st['p'], st['c']
        if type(p) == 'table' and p['zone'] == zone and type(c) == 'table' and next(c) ~= nil
            and not (type(c['until']) == 'number' and c['until'] <= now) then
          if want[idx[i]] ~= nil and want[idx[i]] == p['since'] then
            found = found + 1
          else
            held = 0
          end
        end
      end
    end
  end
  if found ~= n then held = 0 end
  out[q] = held
end
local base = 2 * nv
for i = 1, ni do
  local q = tonumber(ARGV[at])
  if out[q] == 1 then
    out[nq + i] = outbox_add(KEYS[base + i], ARGV[at + 1], maxlen, ttl)
  else
    out[nq + i] = ''
  end
  at = at + 2
end
return out
"""
)


# Appends each device's event only while the presence a push belongs to still holds, in one
# atomic step: a withdrawal that ends it after the delivery's own checks has revoked first, and
# a push appended behind that revoke would be replayed to the device after it. Each event
# appended puts its audit entry in the journal in the same step, and so do the visits: nothing
# reaches a device unrecorded, whatever fails next. The same step drops the pending presence
# events being delivered (events.py): once their pushes are in the outboxes they are done, and a
# failure after it (the database or Redis lost while the blended queues are made, the process
# killed) must not have them delivered again, with new event ids and a second audit entry each.
# KEYS: the items' outboxes, the venues' track states, the journal, then the pending events.
# ARGV: maxlen, ttl, #guards, #items, #visits; per guard its venue's KEYS offset, subscriber,
# zone and since; per item its guard's number (0: none), body, subscriber and audit entry; per
# visit its subscriber and row; then the pending event ids. Returns each guard's verdict
# (1 holds), each item's event id ('' when withheld), then the journal ids of the audit entries
# written and of the visits.
_APPEND_HELD_LUA = (
    outbox.ADD_LUA
    + """
local maxlen, ttl = ARGV[1], ARGV[2]
local m, n, v = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local journal, pending = KEYS[#KEYS - 1], KEYS[#KEYS]
local out = {}
for g = 1, m do
  local at = 5 + 4 * (g - 1)
  local raw = redis.call('HGET', KEYS[n + tonumber(ARGV[at + 1])], ARGV[at + 2])
  out[g] = 0
  if raw then
    local p = cjson.decode(raw)['p']
    if type(p) == 'table' and p['zone'] == ARGV[at + 3]
        and p['since'] == tonumber(ARGV[at + 4]) then
      out[g] = 1
    end
  end
end
local base = 5 + 4 * m
local written = {}
for i = 1, n do
  local at = base + 4 * (i - 1)
  local guard = tonumber(ARGV[at + 1])
  if guard == 0 or out[guard] == 1 then
    local id = outbox_add(KEYS[i], ARGV[at + 2], maxlen, ttl)
    out[m + i] = id
    written[#written + 1] = redis.call(
      'XADD', journal, '*', 's', ARGV[at + 3], 'a', ARGV[at + 4], 'e', id)
  else
    out[m + i] = ''
  end
end
base = base + 4 * n
for i = 1, v do
  written[#written + 1] = redis.call(
    'XADD', journal, '*', 's', ARGV[base + 2 * i - 1], 'v', ARGV[base + 2 * i])
end
for i = base + 2 * v + 1, #ARGV do redis.call('XDEL', pending, ARGV[i]) end
for i = 1, #written do out[m + n + i] = written[i] end
return out
"""
)


def _append_held(
    r: redis.Redis,
    keys: Keys,
    items: list[tuple[int, dict[str, Any]]],
    audit: list[dict[str, Any]],
    guard_of: list[int],
    guards: list[Occurrence],
    visits: list[dict[str, Any]],
    maxlen: int,
    ttl_s: int,
    pending_ids: Sequence[str] = (),
) -> tuple[list[bool], list[str], list[journal.Entry]]:
    """Append (device, event) items in one round trip, each a push only while its enter's
    presence holds (guard_of: 1-based into guards, 0 for none), with each appended item's audit
    entry and every visit to the journal, and drop the pending events they come from; returns
    whether each guard held, each item's event id ('' for a push withheld) and the journal
    entries written."""
    venues = list(dict.fromkeys(o.venue.id for o in guards))
    args: list[Any] = [maxlen, ttl_s, len(guards), len(items), len(visits)]
    for o in guards:
        args += [venues.index(o.venue.id) + 1, o.subscriber_id, o.event.zone, repr(o.event.since)]
    for g, raw, row in zip(guard_of, outbox.encode(items), audit, strict=True):
        args += [g, raw, row["subscriber_id"], journal.encode(row)]
    for row in visits:
        args += [row["subscriber_id"], journal.encode(row)]
    args += pending_ids
    names = [keys.outbox(d) for d, _ in items] + [keys.tracks(v) for v in venues]
    names += [keys.journal(), keys.pending_events()]
    answer = run_script(r, _APPEND_HELD_LUA, len(names), *names, *args)
    held = [x == 1 for x in answer[: len(guards)]]
    event_ids = list(answer[len(guards) : len(guards) + len(items)])
    rows = [
        ("a", {**row, "event_id": event_id})
        for row, event_id in zip(audit, event_ids, strict=True)
        if event_id
    ] + [("v", row) for row in visits]
    ids = answer[len(guards) + len(items) :]
    return held, event_ids, [(i, kind, row) for i, (kind, row) in zip(ids, rows, strict=True)]


# Only the columns a disclosure may use: no ORM objects on the hot path, and nothing (name, email,
# directory id) that a payload must never carry is even loaded.
PROFILE = (Subscriber.id, Subscriber.public_id, Subscriber.playlists, Subscriber.taste)


# Built once, run with the ids as expanding parameters: a statement built per call made new
# bind parameters whose reference cycles were most of a loaded server's cyclic garbage, and the
# garbage collector's pauses sat in the push latency tail (bench/push_latency.py).
_IDS = bindparam("ids", expanding=True)
_MERCHANTS = bindparam("merchants", expanding=True)
_PROFILES = select(*PROFILE).where(Subscriber.id.in_(_IDS))
_RULES = select(Merchant.id, Merchant.rules).where(Merchant.id.in_(_MERCHANTS))
_NO_JSON = cast(null(), JSON)
_PROFILES_AND_RULES = union_all(
    select(literal("s").label("kind"), *PROFILE, _NO_JSON.label("rules")).where(
        Subscriber.id.in_(_IDS)
    ),
    select(literal("m"), Merchant.id, null(), _NO_JSON, _NO_JSON, Merchant.rules).where(
        Merchant.id.in_(_MERCHANTS)
    ),
)


def _profiles(db: Session | Connection, ids: set[int]) -> dict[int, Row[Any]]:
    """id -> (id, public_id, playlists, taste) of the subscribers that still exist."""
    if not ids:
        return {}
    return {row.id: row for row in db.execute(_PROFILES, {"ids": sorted(ids)})}


def _profiles_and_rules(
    db: Session | Connection, ids: set[int], merchants: set[int]
) -> tuple[dict[int, Row[Any]], dict[int, Any]]:
    """_profiles, and the rules of these merchants, in one round trip (a UNION ALL: every POST
    that changes a zone needs both, and each round trip costs more than the rows)."""
    if not merchants:
        return _profiles(db, ids), {}
    if not ids:
        return {}, _rules(db, merchants)
    rows = db.execute(
        _PROFILES_AND_RULES, {"ids": sorted(ids), "merchants": sorted(merchants)}
    ).all()
    subs = {row.id: row for row in rows if row.kind == "s"}
    return subs, {row.id: row.rules for row in rows if row.kind == "m"}


def _rules(db: Session | Connection, merchants: set[int]) -> dict[int, Any]:
    """Merchant id -> its rules JSON."""
    return dict(db.execute(_RULES, {"merchants": sorted(merchants)}).all())


def _member(sub: Row[Any], pseudo: str, consent: dict[str, Any], dwell: float) -> blend.Member:
    """What a blend may use of one present subscriber: exactly their consent scope."""
    if consent["share"] == "playlist":
        pl = sub.playlists[0] if sub.playlists else {}
        return blend.Member(pseudo, "playlist", dwell, tracks=tuple(pl.get("tracks", [])))
    return blend.Member(pseudo, "preferences", dwell, genres=sub.taste.get("genres", {}))


def _emit(sio: Any, items: list[tuple[int, dict[str, Any]]], event_ids: list[str]) -> None:
    for (device_id, body), event_id in zip(items, event_ids, strict=True):
        sio.emit(
            socket_event(body),
            {**body, "event_id": event_id},
            to=device_room(device_id),
            namespace=NAMESPACE,
        )


def _rooms(occurrences: list[Occurrence]) -> dict[tuple[int, str], VenueInfo]:
    """The zones (with devices) someone entered or left."""
    return {
        (o.venue.id, o.event.zone): o.venue
        for o in occurrences
        if o.venue.devices_by_zone.get(o.event.zone)
    }


Queue = tuple[VenueInfo, str, dict[str, Any], list[tuple[int, float]]]


def _zone_queues(
    app: Flask,
    db: Session | Connection,
    rooms: dict[tuple[int, str], VenueInfo],
    subs: dict[int, Row[Any]],
    now: float,
    present: dict[tuple[int, str], list[tuple[int, float, dict[str, Any]]]] | None = None,
    rules: dict[int, Any] | None = None,
) -> list[Queue]:
    """The blended queue of each room, from who is present there now (`present`, else read)
    under its merchant's rules (`rules`, else read), with the (subscriber, since) it rests on."""
    if not rooms:
        return []
    ttl = app.config["PUSH_TTL_S"]
    if present is None:
        present = _present(get_redis(app), get_keys(app), rooms, now)
    missing = {sub for members in present.values() for sub, _, _ in members} - set(subs)
    if missing:
        subs = {**subs, **_profiles(db, missing)}
    if rules is None:
        rules = _rules(db, {v.merchant_id for v in rooms.values()})
    out = []
    for (venue_id, zone), venue in rooms.items():
        members = [
            _member(subs[sub], pseudonym(venue.merchant_key, subs[sub].public_id), c, now - t)
            for sub, t, c in present[(venue_id, zone)]
            if sub in subs
        ]
        queue = blend.blend(members, blend.parse_rules(rules.get(venue.merchant_id)))
        consents = [c for sub, _, c in present[(venue_id, zone)] if sub in subs]
        body = queue_payload(
            zone, [m.pseudonym for m in members], queue, now, expiry(now, ttl, consents)
        )
        basis = [(sub, since) for sub, since, _ in present[(venue_id, zone)]]
        out.append((venue, zone, body, basis))
    return out


def _send_queues(app: Flask, queues: list[Queue]) -> int:
    """Queue bodies to the zones' devices (outbox, then emit) and to the venue's portal room,
    each only while its room holds the members it was computed from; returns the device events
    sent."""
    if not queues:
        return 0
    r, keys, sio = get_redis(app), get_keys(app), app.extensions["socketio"]
    venues = list(dict.fromkeys(venue.id for venue, _zone, _body, _basis in queues))
    items = [(d, body) for venue, zone, body, _ in queues for d in venue.devices_by_zone[zone]]
    owner = [
        q for q, (venue, zone, _, _) in enumerate(queues, 1) for _ in venue.devices_by_zone[zone]
    ]
    args: list[Any] = []
    for venue, zone, _body, basis in queues:
        args += [venues.index(venue.id) + 1, zone, len(basis)]
        for sub, since in basis:
            args += [sub, repr(since)]
    for q, raw in zip(owner, outbox.encode(items), strict=True):
        args += [q, raw]
    names = [k for v in venues for k in (keys.occupants(v), keys.tracks(v))]
    names += [keys.outbox(d) for d, _ in items]
    maxlen, ttl = app.config["OUTBOX_MAXLEN"], app.config["PUSH_TTL_S"]
    head = [maxlen, ttl, repr(time.time()), len(venues), len(queues), len(items)]
    answer = run_script(r, _QUEUE_HELD_LUA, len(names), *names, *head, *args)
    held, event_ids = answer[: len(queues)], answer[len(queues) :]
    kept = [i for i, event_id in enumerate(event_ids) if event_id]
    _emit(sio, [items[i] for i in kept], [event_ids[i] for i in kept])
    for (venue, _zone, body, _basis), ok in zip(queues, held, strict=True):
        if ok == 1:
            # Staff see what their own devices play: the same merchant, the same scope.
            sio.emit(
                "queue", {**body, "venue_id": venue.id}, to=venue_room(venue.id), namespace=PORTAL
            )
    return len(kept)


def _venue_rooms(app: Flask, venue_id: int) -> dict[tuple[int, str], VenueInfo]:
    venue = get_topology(app).venue(venue_id)
    if venue is None:
        return {}
    return {(venue.id, zone): venue for zone in venue.devices_by_zone}


def skip(app: Flask, venue_id: int, zone: str, track: str) -> int:
    """Tell a zone's devices to skip the track now playing (outboxed like every device event);
    returns how many devices were told."""
    venue = get_topology(app).venue(venue_id)
    devices = venue.devices_by_zone.get(zone, []) if venue else []
    body = {"type": "control", "action": "skip", "zone": zone, "track": track}
    r, keys = get_redis(app), get_keys(app)
    items = [(d, body) for d in devices]
    ids = outbox.append_many(r, keys, items, app.config["OUTBOX_MAXLEN"], app.config["PUSH_TTL_S"])
    _emit(app.extensions["socketio"], items, ids)
    return len(items)


def current_queues(app: Flask, venue_id: int) -> dict[str, dict[str, Any]]:
    """Zone -> the blended queue its devices play now (for the portal's first paint)."""
    with reading(app) as db:
        queues = _zone_queues(app, db, _venue_rooms(app, venue_id), {}, time.time())
    return {zone: body for _venue, zone, body, _basis in queues}


def refresh_queues(app: Flask, venue_id: int) -> dict[str, dict[str, Any]]:
    """Recompute and send every zone's queue of a venue (after the merchant's rules changed)."""
    with reading(app) as db:
        queues = _zone_queues(app, db, _venue_rooms(app, venue_id), {}, time.time())
    _send_queues(app, queues)
    return {zone: body for _venue, zone, body, _basis in queues}


def deliver(app: Flask, occurrences: list[Occurrence], pending_ids: Sequence[str] = ()) -> None:
    """Write outboxes, with their audit entries and the visits to the journal, and emit to
    connected devices, pushes and revokes first; then recompute and send the blended queue of
    every zone someone entered or left; then write the journal's new entries to SQL.
    `pending_ids`, the pending events the occurrences come from, are dropped in the same step
    as the outboxes are written (`_APPEND_HELD_LUA`)."""
    if not occurrences:
        return
    r, keys = get_redis(app), get_keys(app)
    now = time.time()
    ttl = app.config["PUSH_TTL_S"]
    sio = app.extensions["socketio"]
    disclosed = [o for o in occurrences if o.disclose]
    rooms = _rooms(disclosed)
    # Reads in autocommit: the pushes wait for one SQL round trip, not for BEGIN as well; the
    # audit and visits reach SQL in a transaction of their own once the devices have them.
    # Who else is in the changed zones is read only once the pushes are out: the blended
    # queues need it, the pushes do not.
    with reading(app) as db:
        ids = {o.subscriber_id for o in occurrences}
        subs, rules = _profiles_and_rules(db, ids, {v.merchant_id for v in rooms.values()})
        items: list[tuple[int, dict[str, Any]]] = []
        audit: list[dict[str, Any]] = []
        guards: list[Occurrence] = []  # the enters, each pushed only while its presence holds
        guard_of: list[int] = []
        # An enter delivered once its consent has run out (a retry after a failed delivery) is
        # withheld like one whose presence ended: nothing is disclosed after a consent's end.
        lapsed = {id(o) for o in occurrences if o.event.kind == "enter" and _ended(o.consent, now)}
        for o in occurrences:
            sub = subs.get(o.subscriber_id)
            if sub is None or not o.disclose or id(o) in lapsed:
                continue  # erased meanwhile: nothing may be disclosed
            pseudo = pseudonym(o.venue.merchant_key, sub.public_id)
            guard = 0
            if o.event.kind == "enter":
                devices = o.venue.devices_by_zone.get(o.event.zone, [])
                guards.append(o)
                guard = len(guards)
                body = push_payload(
                    o.consent["share"],
                    pseudo,
                    sub.playlists,
                    sub.taste,
                    o.event.zone,
                    expiry(now, ttl, [o.consent]),
                )
            else:
                devices = revoked_on(o)
                outbox.drop_for(r, keys, devices, pseudo)
                body = revoke_payload(pseudo, o.event.zone, o.event.reason)
            # When it happened: an occurrence delivered again after a failure (events.flush)
            # gets new event ids, and (type, subscriber, zone, at) still tells it is the same.
            body["at"] = o.event.at
            entry = {
                "at": now,
                "subscriber_id": o.subscriber_id,
                "action": body["type"],
                "pseudonym": pseudo,
                "merchant_id": o.venue.merchant_id,
                "scope": o.consent["share"] if body["type"] == "push" else None,
                "receipt_id": o.consent["receipt"],
                "reason": body.get("reason"),
            }
            for d in devices:
                items.append((d, body))
                audit.append({**entry, "device_id": d})
                guard_of.append(guard)
        visits = [
            journal.visit_row(
                o.subscriber_id,
                o.venue.merchant_id,
                o.venue.id,
                o.event.zone,
                o.event.since,
                o.event.at,
                o.event.reason,
            )
            for o in occurrences
            if o.event.kind == "exit" and o.consent.get("stats") and o.subscriber_id in subs
        ]
        held: list[bool] = []
        event_ids: list[str] = []
        written: list[journal.Entry] = []
        if items or guards or visits:
            maxlen = app.config["OUTBOX_MAXLEN"]
            held, event_ids, written = _append_held(
                r, keys, items, audit, guard_of, guards, visits, maxlen, ttl, pending_ids
            )
        # An enter whose presence ended meanwhile (a withdrawal after the checks above) is
        # neither pushed, nor shown on the portal, nor audited: it was never disclosed.
        withheld = {id(o) for o, ok in zip(guards, held, strict=True) if not ok}
        if withheld:
            kept = [i for i, event_id in enumerate(event_ids) if event_id]
            items, event_ids = [items[i] for i in kept], [event_ids[i] for i in kept]
        _emit(sio, items, event_ids)
        # Let the sockets' writers send these now: the blended queues below are CPU work that
        # would otherwise hold every push back until their own outbox write yields.
        sio.sleep(0)
        withheld |= lapsed
        for o in occurrences:
            if o.event.reason == RENEWED:
                continue
            if o.subscriber_id in subs and o.disclose and id(o) not in withheld:
                portal_event = {
                    "venue_id": o.venue.id,
                    "kind": o.event.kind,
                    "zone": o.event.zone,
                    "subscriber": pseudonym(o.venue.merchant_key, subs[o.subscriber_id].public_id),
                    "at": o.event.at,
                    "reason": o.event.reason,
                }
                sio.emit("presence", portal_event, to=venue_room(o.venue.id), namespace=PORTAL)
        # Derived from the pushes these devices got (audited): queues are not audited.
        # The states are committed (ingest wrote them first), so the entrants are among these.
        present = _present(r, keys, rooms, now)
        queued = _send_queues(app, _zone_queues(app, db, rooms, subs, now, present, rules))
    # Recorded already: if SQL refuses them now, the jobs write them later (journal.drain), and
    # the devices are not sent the same events again.
    journal.write(app, written, check_referents=False)
    metrics = app.extensions.get("cm_metrics")
    if metrics is not None:
        metrics.push_seconds.observe(time.time() - now)
    log.info(
        "delivered",
        extra={"events": len(occurrences), "device_events": len(items) + queued},
    )
