"""Who is present where, as a merchant may see it: per-merchant pseudonyms, zones and dwell;
and ending presences at once when consent ends (withdrawal, expiry, erasure)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from flask import Flask
from sqlalchemy import select

from store_server import events as pending
from store_server import ingest
from store_server.crypto import pseudonym
from store_server.db import sessions
from store_server.models import Subscriber
from store_server.presence import PresenceEvent
from store_server.push import Occurrence, pushed_to
from store_server.redis_store import get_keys, get_redis
from store_server.topology import get_topology

# Attempts at ending a subscriber's presences while sightings or the sweeper change them.
END_RETRIES = 8


def present(app: Flask, venue_id: int) -> list[dict[str, Any]]:
    """Subscribers present at a venue now: pseudonym, zone, since and dwell seconds."""
    venue = get_topology(app).venue(venue_id)
    if venue is None:
        return []
    states = get_redis(app).hgetall(get_keys(app).tracks(venue_id))
    now = time.time()
    entered = {}
    for sub, raw in states.items():
        state = json.loads(raw)
        p, until = state.get("p", {}), (state.get("c") or {}).get("until")
        # Shown only as disclosed to the devices: not a presence ingest withheld (a backlog's,
        # one whose consent ended before its batch came), nor one past its consent's end.
        if p.get("zone") and not state.get("h") and (until is None or until > now):
            entered[int(sub)] = p
    if not entered:
        return []
    with sessions(app)() as db:
        ids = dict(
            db.execute(
                select(Subscriber.id, Subscriber.public_id).where(Subscriber.id.in_(list(entered)))
            ).all()
        )
    out = [
        {
            "subscriber": pseudonym(venue.merchant_key, ids[s]),
            "zone": p["zone"],
            "since": p["since"],
            "dwell_s": round(max(0.0, now - p["since"]), 1),
        }
        for s, p in entered.items()
        if s in ids
    ]
    return sorted(out, key=lambda x: (x["zone"], x["since"]))


def whereabouts(app: Flask, subscriber_id: int) -> list[dict[str, Any]]:
    """Where one subscriber is being tracked now (venue id, zone or None, since, last heard),
    from the live state: part of what is held about her, so her export shows it."""
    r, keys = get_redis(app), get_keys(app)
    suffix = f":{subscriber_id}"
    venue_ids = sorted(
        {int(m.split(":")[0]) for m in r.zrange(keys.last_seen(), 0, -1) if m.endswith(suffix)}
    )
    if not venue_ids:
        return []
    pipe = r.pipeline(transaction=False)
    for venue_id in venue_ids:
        pipe.hget(keys.tracks(venue_id), str(subscriber_id))
    out = []
    for venue_id, raw in zip(venue_ids, pipe.execute(), strict=True):
        if raw is None:
            continue
        p = json.loads(raw).get("p", {})
        zone = p.get("zone") or None
        out.append(
            {
                "venue_id": venue_id,
                "zone": zone,
                "since": p.get("since") if zone else None,
                "last_heard": p.get("last"),
            }
        )
    return out


def end_presence(app: Flask, subscriber_id: int, reason: str) -> int:
    """End every presence of a subscriber now and revoke on devices; returns presences ended.

    Call after the consent change is committed and the resolver refreshed, so no new sighting
    can re-create the presence.
    """
    r, keys, topo = get_redis(app), get_keys(app), get_topology(app)
    suffix = f":{subscriber_id}"
    members = [m for m in r.zrange(keys.last_seen(), 0, -1) if m.endswith(suffix)]
    venue_ids = [int(m.split(":")[0]) for m in members]
    tkeys = sorted({keys.tracks(v) for v in venue_ids})
    occurrences: list[Occurrence] = []
    event_ids: list[str] = []
    for _attempt in range(END_RETRIES):
        try:
            with r.pipeline(transaction=True) as pipe:
                # WATCH, as the sweeper does: a presence it ends meanwhile is not ended twice
                # (two revokes), and a sighting folded in meanwhile is read again.
                if tkeys:
                    pipe.watch(*tkeys)
                reader = r.pipeline(transaction=False)
                for venue_id in venue_ids:
                    reader.hget(keys.tracks(venue_id), str(subscriber_id))
                raws = reader.execute() if members else []
                now = time.time()
                occurrences = []
                pipe.multi()
                for m, venue_id, raw in zip(members, venue_ids, raws, strict=True):
                    pipe.hdel(keys.tracks(venue_id), str(subscriber_id))
                    pipe.hdel(keys.occupants(venue_id), str(subscriber_id))
                    pipe.zrem(keys.last_seen(), m)
                    venue = topo.venue(venue_id)
                    if raw is None or venue is None:
                        continue
                    state = json.loads(raw)
                    zone = state.get("p", {}).get("zone")
                    if zone and state.get("c"):
                        event = PresenceEvent("exit", zone, now, state["p"]["since"], reason)
                        disclose = not state.get("h")
                        occurrences.append(
                            Occurrence(
                                subscriber_id,
                                venue,
                                state["c"],
                                event,
                                disclose,
                                pushed_to(state),
                            )
                        )
                pending.queue(pipe, keys, occurrences)
                event_ids = pending.committed_ids(pipe.execute(), len(occurrences))
            break
        except redis.WatchError:
            continue
    else:
        raise redis.exceptions.ConnectionError("tracking state kept changing; retry later")
    # Other workers' copies are never used again (the state's version is gone) and age out
    # within StateCache.hold_s; this process drops its own now.
    ingest.forget_held(subscriber_id)
    pending.deliver_now(app, occurrences, event_ids)
    return len(occurrences)


def forget_everywhere(app: Flask, subscriber_id: int) -> int:
    """Delete a subscriber's tracking state and occupancy at every venue, found by scanning
    rather than through the sweeper's index: a state the index lost (its venue was deleted
    meanwhile) must not outlive an erasure. Returns the entries deleted."""
    r, keys = get_redis(app), get_keys(app)
    found = [
        key for pattern in keys.venue_state_patterns() for key in r.scan_iter(pattern, count=1000)
    ]
    if not found:
        return 0
    pipe = r.pipeline(transaction=False)
    for key in found:
        pipe.hdel(key, str(subscriber_id))
    return sum(pipe.execute())
